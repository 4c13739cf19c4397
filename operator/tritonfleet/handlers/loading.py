"""The loader loop: every model loaded on every Triton pod of its Deployment,
in the background, one pass at a time per object.

Where it sits: the reconcile tells the loader what each object wants
(:meth:`Loader.track`, in memory only: the ``Target`` of its rendering, from the
process's shared ``desired.kube.views``, so the loader never parses a spec) and
never waits for it; pod events
(``handlers.operator``, a kopf index on the operator's Triton pods) and a timer
every ``reconcileIntervalSeconds`` wake it too. A pass reads the object's pods
from the index, splits them (``desired.kube.loading.select_pods``: never dial a
pod outside ``dialPodNetworks``), observes and converges the reachable ones
(``adapters.triton_repository.PodRepositories``, parallel, bounded retries), and
writes ``status.pods`` and ``Loaded`` only when they changed, then asks for a
reconcile so ``Ready`` follows. A failing object is retried with backoff.

Each pod is judged against what its own template names (a rollout runs pods of
two revisions side by side), and once ``status.pods`` is written the pods' readiness
gate ``tritonfleet.io/loaded`` follows it (a strategic-merge patch of pods/status):
a Deployment counts a pod available only once the gateways can route to it.

On deletion :meth:`Loader.unloaded` starts one background unload from every
pod (bounded by ``unloadTimeoutSeconds``) and says, from memory, whether the
cleanup Job may remove the files yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tritonfleet.adapters.kube import ApiError, KubeApi
from tritonfleet.adapters.triton_repository import PodEndpoint, PodRepositories
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube.loading import (
    PodKey,
    TritonPod,
    gate_changes,
    in_order,
    load_target,
    loading_events,
    loading_status,
    pod_key_of,
    restrict,
    select_pods,
    unload_gate,
    wanted_by,
)
from tritonfleet.desired.kube.objects import LOADED_GATE, Target
from tritonfleet.desired.kube.placement import PooledPlacement
from tritonfleet.desired.kube.pool import pool_pod_key
from tritonfleet.desired.kube.pool_loading import (
    away_names,
    holds,
    is_pool_pod,
    may_unload_away,
    split_pods,
    with_away,
)
from tritonfleet.desired.kube.views import owner_of
from tritonfleet.desired.triton.loading import (
    LoadPlan,
    LoadTarget,
    plan_loading,
    plan_unloading,
)
from tritonfleet.handlers.state import Key, World

log = logging.getLogger("tritonfleet.loading")

MAX_BACKOFF = 300.0


@dataclass(frozen=True)
class Wanted:
    target: Target
    load: LoadTarget
    pool: PooledPlacement | None = None  # a pooled object: where its pool placed it
    synced: bool = True  # a pooled object: its revision's files are in the repository


@dataclass
class _Unload:
    started: float
    uid: str
    pool: PooledPlacement | None = None  # pooled: every pod of its pool may hold it
    listed: tuple[str, ...] = ()  # the pods its status listed
    task: asyncio.Task[None] | None = None
    done: bool | None = None
    waiting: tuple[str, ...] = ()
    reported: bool = False


class Loader:
    """Background loading passes per object (see the module docstring)."""

    def __init__(
        self,
        client: KubeApi,
        world: World,
        settings: OperatorSettings,
        repositories: PodRepositories,
        *,
        request_reconcile: Callable[[Key], None],
        post_event: Callable[[Mapping[str, Any], str, str, str], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.world = world
        self.settings = settings
        self.repositories = repositories
        self.request_reconcile = request_reconcile
        self.post_event = post_event
        self.clock = clock
        self._wanted: dict[Key, Wanted] = {}
        self._by_pods: dict[PodKey, set[Key]] = {}  # pod index key -> the objects on its pods
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = {}
        self._unloads: dict[Key, _Unload] = {}

    # --- what the reconcile and the watches tell us ----------------------------------

    def track(
        self,
        key: Key,
        target: Target | None,
        pool: PooledPlacement | None = None,
        *,
        synced: bool = True,
    ) -> None:
        """The reconcile's view of a live object (memory only, never waits).

        ``pool``: a pooled object's placement (its pool's status); its loads go to the
        pool pods of its replicas once its revision is ``synced``.
        """
        if target is None:
            self.forget(key)
            return
        wanted = Wanted(target, load_target(target), pool, synced)
        if self._wanted.get(key) != wanted:
            self.forget(key, keep_timer=True)
            self._wanted[key] = wanted
            for pod_key in self._pod_keys(wanted):
                self._by_pods.setdefault(pod_key, set()).add(key)
            self.poke(key)
        elif key not in self._tasks and key not in self._timers:
            self.poke(key)

    @staticmethod
    def _pod_keys(wanted: Wanted) -> list[PodKey]:
        """Whose pods' events wake this object's loader: its own, and its pool's."""
        keys = [pod_key_of(wanted.target)]
        if wanted.pool is not None:
            keys.append(pool_pod_key(wanted.target.namespace, wanted.pool.pool))
        return keys

    def forget(self, key: Key, keep_timer: bool = False) -> None:
        wanted = self._wanted.pop(key, None)
        if wanted is not None:
            for pod_key in self._pod_keys(wanted):
                keys = self._by_pods.get(pod_key)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._by_pods[pod_key]
        timer = None if keep_timer else self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def pod_changed(self, namespace: str, pod: TritonPod) -> None:
        """A Triton pod appeared, changed readiness/IP, or went: re-check the objects on it."""
        for key in list(self._by_pods.get(pod.owner, ())):
            self.poke(key)

    def poke(self, key: Key, delay: float = 0.0) -> None:
        """Run a pass for ``key`` now (or after ``delay``); merged with a running one."""
        if delay > 0:
            loop = asyncio.get_running_loop()
            previous = self._timers.get(key)
            if previous is not None and previous.when() <= loop.time() + delay:
                return
            if previous is not None:
                previous.cancel()
            self._timers[key] = loop.call_later(delay, self._fire, key)
            return
        if key in self._tasks:
            self._dirty.add(key)
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        task = asyncio.create_task(self._run(key))
        self._tasks[key] = task

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        if key in self._wanted:
            self.poke(key)

    async def stop(self) -> None:
        """Cancel every pass and forget what was wanted: a stopped loader stays idle
        until the reconcile tracks objects again (a replica standing by must not
        load or write)."""
        for handle in self._timers.values():
            handle.cancel()
        tasks = [*self._tasks.values(), *(u.task for u in self._unloads.values() if u.task)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for memory in (self._wanted, self._by_pods, self._tasks, self._timers, self._unloads):
            memory.clear()
        self._dirty.clear()
        self._failures.clear()
        await self.repositories.close()

    # --- passes ----------------------------------------------------------------------

    def _pods(self) -> list[TritonPod]:
        return self.world.triton_pods()

    async def _run(self, key: Key) -> None:
        delay = self.settings.reconcile_interval_seconds
        try:
            await self._pass(key)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(2.0**failures, MAX_BACKOFF, delay)
            log.warning("loading pass of %s %s/%s failed: %s; again in %.0fs", *key, error, delay)
        else:
            self._failures.pop(key, None)
        finally:
            self._tasks.pop(key, None)
        if key in self._dirty:
            self._dirty.discard(key)
            self.poke(key)
        elif key in self._wanted:
            # Level-based: re-check every interval even when nothing woke us.
            self.poke(key, delay)

    def _endpoints(self, pods: Collection[TritonPod]) -> list[PodEndpoint]:
        return [PodEndpoint.from_ip(p.name, p.ip, ready=p.usable) for p in pods]

    def _listed(self, key: Key) -> list[str]:
        """The pods the object's status lists now (it may still be loaded there)."""
        body = self.world.owner(*key)
        return [p.name for p in owner_of(body).status.pods] if body is not None else []

    async def _pass(self, key: Key) -> None:
        wanted = self._wanted.get(key)
        if wanted is None:
            return
        split = split_pods(wanted.target, wanted.pool, self._pods(), self._listed(key))
        selection = select_pods(
            split.home,
            may_dial=self.settings.may_dial,
            networks=self.settings.dial_pod_networks,
            pooled_synced=None if wanted.pool is None else wanted.synced,
        )
        # A pool's pods are started for no model: each serves the object's revision
        # (an ensemble's members at theirs), loaded from the shared repository.
        per_pod = {
            p.name: wanted_by(p, wanted.target) if wanted.pool is None else wanted.load
            for p in selection.dial
        }
        names = dict.fromkeys(wanted.load.names)
        for load in per_pod.values():
            names.update(dict.fromkeys(load.names))
        endpoints = self._endpoints(selection.dial)
        observed = await self.repositories.observe(endpoints, tuple(names))
        body = self.world.owner(*key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        generation = owner_of(body).generation
        decided = restrict(
            plan_loading(
                wanted.load,
                in_order(selection, observed),
                generation=generation,
                wanted=per_pod,
            ),
            selection.act,
        )
        if decided.has_work:
            for pod in decided.pods:
                for action in pod.actions:
                    log.info(
                        "%s %s/%s: %s %s on %s (%s)",
                        *key,
                        action.kind,
                        action.model,
                        pod.pod,
                        action.why,
                    )
            observed = await self.repositories.converge(endpoints, decided)
            decided = plan_loading(
                wanted.load, in_order(selection, observed), generation=generation, wanted=per_pod
            )
        if split.away:
            decided = await self._away(key, wanted, split.away, decided)
        if await self._write(key, decided):
            await self._gates(split.home, decided.states)
        # else status.pods does not say it yet (a conflict: the pass runs again): a gate
        # opened now would let the Deployment remove an old pod before any gateway can
        # route to the new one.

    async def _gates(self, pods: Collection[TritonPod], states: Any) -> None:
        """Each pod's readiness gate after status.pods says what it serves: a new pod
        becomes available to its Deployment only once the gateways can know it."""
        now = self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for pod, loaded, why in gate_changes(list(pods), states):
            condition = {
                "type": LOADED_GATE,
                "status": "True" if loaded else "False",
                "reason": "Loaded" if loaded else "NotLoaded",
                "message": why,
                "lastTransitionTime": now,
            }
            try:
                # Strategic merge: conditions merge by type, the kubelet's stay as they are.
                await self.client.patch(
                    "Pod",
                    pod.namespace,
                    pod.name,
                    {"status": {"conditions": [condition]}},
                    patch_type="strategic",
                    sub="status",
                )
            except ApiError as error:
                if not error.not_found:  # a pod that went needs no gate
                    log.warning("readiness gate of pod %s/%s: %s", pod.namespace, pod.name, error)

    async def _away(
        self, key: Key, wanted: Wanted, away: tuple[TritonPod, ...], decided: LoadPlan
    ) -> LoadPlan:
        """Pods the object left (desired.kube.pool_loading): reported while they still
        hold it, unloaded (pool pods only: a Deployment it left goes as a whole) once
        its home serves it, or at once when it is to be served nowhere."""
        reachable = [p for p in away if not p.ip or self.settings.may_dial(p.ip)]
        endpoints = self._endpoints(reachable)
        observed = await self.repositories.observe(endpoints, wanted.load.names)
        names = away_names(wanted.target)
        shared = {p.name for p in reachable if is_pool_pod(p)}
        leaving = [
            e
            for e, o in zip(endpoints, observed, strict=True)
            if e.name in shared and holds(o, names)
        ]
        if leaving and may_unload_away(decided, wanted.pool):
            log.info(
                "%s %s/%s: unloading %s from %s",
                *key,
                ", ".join(names),
                ", ".join(e.name for e in leaving),
            )
            await self.repositories.unload_everywhere(
                leaving, names, wait=float(self.settings.unload_timeout_seconds)
            )
            observed = await self.repositories.observe(endpoints, wanted.load.names)
        return with_away(decided, wanted.target, observed, wanted.pool)

    async def _write(self, key: Key, decided: Any) -> bool:
        """Write what the pass decided to the owner's status; whether the status says it
        now (written, or already so)."""
        body = self.world.owner(*key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return False
        owner = owner_of(body)
        now = self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        new = loading_status(owner.status, decided, now, generation=owner.generation)
        if new is None:
            return True
        wire = new.to_wire()
        patch = {
            "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
            "status": {"pods": wire.get("pods", []), "conditions": wire.get("conditions", [])},
        }
        try:
            updated = await self.client.patch_status(key[0], key[1], key[2], patch)
        except ApiError as error:
            if error.conflict or error.not_found:
                self._dirty.add(key)  # changed under us: plan again on the newer object
                return False
            raise
        self.world.remember_owner(updated)
        for event in loading_events(owner.status, new, decided):
            self.post_event(updated, event.type, event.reason, event.message)
        self.request_reconcile(key)  # Ready follows Loaded
        return True

    # --- deletion --------------------------------------------------------------------

    def unloaded(self, key: Key, target: Target | None, body: Mapping[str, Any]) -> bool:
        """Whether a deleted object's files may go: every pod unloaded it, or the
        bounded wait is over. Starts the unload in the background the first time.

        A deleted object may no longer render (an ensemble whose members are being
        deleted with it): what it last wanted loaded is unloaded then."""
        known = self._wanted.get(key)
        self.forget(key)
        if (target is None or not target.load_models) and known is not None:
            target = known.target
        if target is None or not target.load_models:
            return True
        state = self._unloads.get(key)
        if state is None or state.uid != target.uid:  # (a re-created object starts afresh)
            pool = target.serving.pool
            state = _Unload(
                started=time.monotonic(),
                uid=target.uid,
                pool=PooledPlacement(pool.name, found=True) if pool is not None else None,
                listed=tuple(p.name for p in owner_of(body).status.pods),
            )
            self._unloads[key] = state
            state.task = asyncio.create_task(self._unload(key, state, target))
        gate = unload_gate(
            state.done,
            state.waiting,
            time.monotonic() - state.started,
            float(self.settings.unload_timeout_seconds),
        )
        if gate.event is not None and not state.reported:
            state.reported = True
            self.post_event(body, gate.event.type, gate.event.reason, gate.event.message)
        return gate.proceed

    async def _unload(self, key: Key, state: _Unload, target: Target) -> None:
        # From a pool's pods only the object itself goes: they are shared, and an
        # ensemble's members there are pooled objects of their own.
        shared = away_names(target)
        own = shared if target.serving.pool is not None else load_target(target).unload_order
        try:
            split = split_pods(target, state.pool, self._pods(), state.listed)
            selection = select_pods(
                (*split.home, *split.away),
                may_dial=self.settings.may_dial,
                networks=self.settings.dial_pod_networks,
            )
            endpoints = [e for e in self._endpoints(selection.dial) if e.url]
            pooled = {p.name for p in selection.dial if is_pool_pod(p)}
            wait = float(self.settings.unload_timeout_seconds)
            waiting: list[str] = []
            done = True
            for names, group in (
                (own, [e for e in endpoints if e.name not in pooled]),
                (shared, [e for e in endpoints if e.name in pooled]),
            ):
                if not group:
                    continue
                observed = await self.repositories.unload_everywhere(group, names, wait=wait)
                result = plan_unloading(names, observed)
                waiting.extend(result.waiting)
                done = done and result.done
            blocked = [f"{o.name} ({o.error})" for o in selection.blocked]
            state.waiting = (*waiting, *blocked)
            state.done = done and not blocked
            log.info(
                "%s %s/%s: unloaded %s from %d pod(s)%s",
                *key,
                ", ".join(own),
                len(endpoints),
                "" if state.done else f"; not confirmed: {'; '.join(state.waiting)}",
            )
        except Exception as error:  # never block deletion on the loader itself
            log.warning("unloading %s %s/%s failed: %s", *key, error)
            state.done = False
            state.waiting = (str(error),)
        self.request_reconcile(key)

    def deleted(self, key: Key) -> None:
        """The object is gone: drop its memory."""
        self.forget(key)
        self._unloads.pop(key, None)
        self._failures.pop(key, None)
