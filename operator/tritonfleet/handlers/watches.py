"""The operator's watch streams, and what each event does: update the memory
(``handlers.state.World``) and wake the reconcile or the loader - nothing else.

Streams (``adapters.kube_watch``), per watched namespace or for all of them:
TritonModels, ModelEnsembles and TritonServerPools; the children the operator creates, by the
server-side label selector ``app.kubernetes.io/managed-by=tritonfleet``; and the
operator's Triton pods (read-only, readiness gates included), whose events wake
the loader (``handlers.loading``) and, for a pool's pods, the pool's reconcile.
Namespaces given as globs (``team-*``) are followed through a watch of the
Namespaces themselves: a matching namespace gets its streams when it appears, and
loses them when it is gone.

An event costs a JSON decode and a summary: an owner is kept as compact JSON, a
child as a ``ChildState``, a pod as a ``TritonPod``, and only what a reconcile reads
wakes it (an unchanged owner, a child whose status moved in a way no condition
reads, a pod whose IP, phase, readiness and revision are the same wake nobody).
Nothing here writes: the writes are the reconcile's and the loader's.

A namespace is known (``World.is_synced``) once every stream covering it has listed;
the reconciler holds the objects of a namespace until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections.abc import Sequence
from typing import Any

from tritonfleet.adapters.kube import KubeClient, Obj
from tritonfleet.adapters.kube_watch import ResourceStream
from tritonfleet.desired.kube.loading import (
    TRITON_POD_SELECTOR,
    TritonPod,
    owner_of_pod,
    summarize_pod,
)
from tritonfleet.desired.kube.objects import MANAGED_SELECTOR
from tritonfleet.desired.kube.observed import summarize
from tritonfleet.desired.kube.pool import POOL_KIND
from tritonfleet.desired.kube.views import OwnerViews
from tritonfleet.handlers.loading import pod_fingerprint
from tritonfleet.handlers.reconcile import Reconciler
from tritonfleet.handlers.state import CHILD_KINDS, MODEL_KINDS, OWNER_KINDS, Key, World

log = logging.getLogger("tritonfleet.watches")

GROUP = "tritonfleet.io"
POD = "Pod"
NAMESPACE = "Namespace"
# Every stream of a scope: (kind, server-side label selector).
STREAMS: tuple[tuple[str, str | None], ...] = (
    *((kind, None) for kind in OWNER_KINDS),
    *((kind, MANAGED_SELECTOR) for kind in CHILD_KINDS),
    (POD, TRITON_POD_SELECTOR),
)

Scope = str | None  # a namespace, or None for all of them


def is_pattern(namespace: str) -> bool:
    return any(c in namespace for c in "*?")


def watched(namespace: str, patterns: Sequence[str]) -> bool:
    """Whether ``namespace`` is one the operator serves (a name or a glob of the settings)."""
    return any(fnmatch.fnmatchcase(namespace, p) for p in patterns)


def triggers_for_member(
    world: World, views: OwnerViews, namespace: str, model: str
) -> list[tuple[str, str, str]]:
    """Ensembles in ``namespace`` with a step using TritonModel ``model``."""
    return [
        ("ModelEnsemble", namespace, name)
        for name, body in world.owners_in("ModelEnsemble", namespace).items()
        if model in views.of(body).member_names
    ]


class Watches:
    """Every stream of the operator process, and the sink they deliver to."""

    def __init__(
        self,
        client: KubeClient,
        world: World,
        views: OwnerViews,
        reconciler: Reconciler,
        namespaces: Sequence[str] = (),
    ) -> None:
        self.client = client
        self.world = world
        self.views = views
        self.reconciler = reconciler
        self.patterns = tuple(namespaces)
        self._streams: dict[Scope, list[ResourceStream]] = {}
        self._tasks: dict[Scope, list[asyncio.Task[None]]] = {}
        self._listed: dict[Scope, set[str]] = {}
        self._namespace_task: asyncio.Task[None] | None = None
        self._namespaces_listed = False
        self._started = False
        self._pods_seen: dict[tuple[str, str], tuple[Any, ...]] = {}

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._started = True
        if not self.patterns:
            self._open(None)
        elif not any(is_pattern(p) for p in self.patterns):
            for namespace in self.patterns:
                self._open(namespace)
        else:
            stream = ResourceStream(self.client, NAMESPACE, None, self)
            self._namespace_task = asyncio.create_task(stream.run(), name="watch namespaces")

    async def stop(self) -> None:
        tasks = [t for ts in self._tasks.values() for t in ts]
        if self._namespace_task is not None:
            tasks.append(self._namespace_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def not_ready(self) -> str | None:
        """Why the memory is not complete yet (None: every stream has listed)."""
        if not self._started:
            return "not started"
        if self._namespace_task is not None and not self._namespaces_listed:
            return "listing namespaces"
        pending = [s for s in self._streams if len(self._listed[s]) < len(STREAMS)]
        if pending:
            listed = sum(len(self._listed[s]) for s in self._streams)
            return f"listing: {listed} of {len(STREAMS) * len(self._streams)} streams listed"
        return None

    def _open(self, scope: Scope) -> None:
        if scope in self._streams:
            return
        streams = [
            ResourceStream(self.client, kind, scope, self, label_selector=selector)
            for kind, selector in STREAMS
        ]
        self._streams[scope] = streams
        self._listed[scope] = set()
        self._tasks[scope] = [
            asyncio.create_task(s.run(), name=f"watch {s.where}") for s in streams
        ]

    def _close(self, scope: str) -> None:
        """A watched namespace is gone: stop its streams and forget what they showed."""
        for task in self._tasks.pop(scope, []):
            task.cancel()
        self._streams.pop(scope, None)
        self._listed.pop(scope, None)
        self.world.unmark_synced(scope)
        for kind, _ in STREAMS:
            self.listed(kind, scope, set(), complete=False)

    # --- the sink (adapters.kube_watch.WatchSink) --------------------------------------

    def upsert(self, kind: str, obj: Obj) -> None:
        self._route(kind, obj, deleted=False)

    def delete(self, kind: str, obj: Obj) -> None:
        self._route(kind, obj, deleted=True)

    def _route(self, kind: str, obj: Obj, *, deleted: bool) -> None:
        if kind in OWNER_KINDS:
            self._owner(kind, obj, deleted=deleted)
        elif kind == POD:
            self._pod(obj, deleted=deleted)
        elif kind == NAMESPACE:
            self._namespace(obj, deleted=deleted)
        else:
            self._child(obj, deleted=deleted)

    def listed(
        self,
        kind: str,
        namespace: str | None,
        present: set[tuple[str, str]],
        *,
        complete: bool = True,
    ) -> None:
        """A list is complete: drop what it no longer holds; maybe the scope is known now."""
        gone: list[tuple[str, str]]
        if kind in OWNER_KINDS:
            gone = [k for k in self.world.owner_names(kind, namespace) if k not in present]
        elif kind == POD:
            gone = [k for k in self.world.pod_names(namespace) if k not in present]
        elif kind == NAMESPACE:
            live = {name for _, name in present}
            for scope in [s for s in self._streams if s is not None and s not in live]:
                self._close(scope)
            self._namespaces_listed = True
            return
        else:
            gone = [
                (k[1], k[2]) for k in self.world.child_keys(kind, namespace) if k[1:] not in present
            ]
        for ns, name in gone:
            self.delete(kind, {"kind": kind, "metadata": {"namespace": ns, "name": name}})
        if not complete or namespace not in self._listed:
            return
        listed = self._listed[namespace]
        was_synced = len(listed) == len(STREAMS)
        listed.add(kind)
        if not was_synced and len(listed) == len(STREAMS):
            self.world.mark_synced(namespace)
            log.info(
                "watching %s: memory complete (%s)",
                namespace or "all namespaces",
                ", ".join(f"{n} {k}" for k, n in self.world.counts().items() if n),
            )
            self.reconciler.unpark(namespace)

    # --- what each event does ----------------------------------------------------------

    def _owner(self, kind: str, body: Obj, *, deleted: bool) -> None:
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        key: Key = (kind, namespace, name)
        if deleted:
            self._placement_moved(kind, namespace, name, came_or_went=True)
            self.world.drop_owner(kind, namespace, name)
            self.reconciler.request(key)  # finds it gone: drops what it kept for it
            self.reconciler.request_claim_check(namespace)
            return
        body.setdefault("kind", kind)
        new = self.world.owner_stamp(kind, namespace, name) is None
        if not self.world.put_owner(body):
            return  # the same object listed again: nothing to reconcile
        self._placement_moved(kind, namespace, name, came_or_went=new)
        if not self.world.is_own_echo(body):
            # (Our own write coming back needs no reconcile: the one that wrote saw it.)
            self.reconciler.request(key)

    def _placement_moved(self, kind: str, namespace: str, name: str, *, came_or_went: bool) -> None:
        """Who else re-checks after an owner event: a member's ensembles, the pools of
        the namespace (a pooled object's change may move its placement), and, when a
        pool came or went, the objects of its namespace (their placement)."""
        if kind == "TritonModel":
            # A member changed (or went away): its ensembles re-check themselves.
            for ensemble in triggers_for_member(self.world, self.views, namespace, name):
                self.reconciler.request(ensemble)
        if kind in MODEL_KINDS:
            # (A few pools per namespace; a pool with nothing to do reconciles in memory.)
            for _, pool in self.world.owner_names(POOL_KIND, namespace):
                self.reconciler.request((POOL_KIND, namespace, pool))
        elif came_or_went:
            for key in self.world.owner_keys():
                if key[1] == namespace:
                    self.reconciler.request(key)

    def _child(self, body: Obj, *, deleted: bool) -> None:
        state = summarize(body)
        if deleted:
            # (A child dropped by a relist comes as its name only: its owners are known.)
            state = self.world.drop_child(state.key) or state
            if state.kind == "PersistentVolumeClaim":
                # The shared repository claim went away: every model of the
                # namespace needs it re-created (rare; owners are not listed on it).
                for key in self.world.owner_keys(OWNER_KINDS):
                    if key[1] == state.namespace:
                        self.reconciler.request(key)
        else:
            self.world.put_child(state)
            if not self.world.child_changed(state):
                return
        # The controller owns a child; the shared claim has every model as a plain owner.
        for ref in state.owners:
            if ref.kind in OWNER_KINDS:
                self.reconciler.request((ref.kind, state.namespace, ref.name))

    def _pod(self, body: Obj, *, deleted: bool) -> None:
        meta = body.get("metadata") or {}
        where = (str(meta.get("namespace")), str(meta.get("name")))
        if deleted:
            self._pods_seen.pop(where, None)
            pod = self.world.drop_pod(*where)
            if pod is not None:
                self._pod_changed(pod)
            return
        pod = summarize_pod(body)
        self.world.put_pod(pod)
        # Only what the loader reads (IP, phase, readiness, revision, restarts, what the
        # pod serves and its readiness gate) wakes it up.
        fingerprint = pod_fingerprint(pod)
        if self._pods_seen.get(where) == fingerprint:
            return
        self._pods_seen[where] = fingerprint
        self._pod_changed(pod)

    def _pod_changed(self, pod: TritonPod) -> None:
        self.reconciler.loader.pod_changed(pod.namespace, pod)
        pools = [(POOL_KIND, name) for _, name in self.world.owner_names(POOL_KIND, pod.namespace)]
        pool = owner_of_pod(pod, pools)
        if pool is not None:
            self.reconciler.request((POOL_KIND, pod.namespace, pool[1]))  # replicas bind pods

    def _namespace(self, body: Obj, *, deleted: bool) -> None:
        name = str((body.get("metadata") or {}).get("name"))
        if not watched(name, self.patterns):
            return
        if deleted:
            if name in self._streams:
                self._close(name)
        else:
            self._open(name)
