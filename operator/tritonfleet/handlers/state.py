"""The operator's memory of the cluster: what the watch streams delivered
(kopf indexes), overlaid with what our own writes returned.

Reconciles read only from here, never from the API server, which is how a
reconcile of an unchanged object costs no request at all. kopf fills the
indexes from its watches and holds every handler until they are complete, so
after a restart the operator knows every child before it decides anything
(no "missing" children re-applied by mistake).

A write's response is newer than the index until its watch event arrives
(a few milliseconds, longer under load). The overlay keeps those responses
so a reconcile that runs in between does not repeat the write; the fresher
of the two, by resourceVersion, wins.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import replace
from typing import Any

from tritonfleet.desired.kube.loading import TritonPod
from tritonfleet.desired.kube.observed import ChildState, newer, summarize

Key = tuple[str, str, str]  # kind, namespace, name
IndexLike = Mapping[Any, Collection[Any]]

CHILD_INDEXES = (
    "tf_deployments",
    "tf_jobs",
    "tf_services",
    "tf_configmaps",
    "tf_claims",
    "tf_hpas",
)
OWNER_INDEXES = {
    "TritonModel": "tf_models",
    "ModelEnsemble": "tf_ensembles",
    "TritonServerPool": "tf_pools",
}
MODEL_KINDS = ("TritonModel", "ModelEnsemble")  # what the loader, scaler and collector serve
POD_INDEX = "tf_pods"  # the Triton pods, for the loader (handlers.loading)

# What of an owner body the reconciler needs; managedFields and the rest are dropped
# so that a thousand models stay small in memory (stored as compact JSON text).
_KEPT_META = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "finalizers",
    "deletionTimestamp",
    "labels",
    "annotations",
    "creationTimestamp",
)


def compact_owner(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    kept = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in _KEPT_META if k in meta},
        "spec": body.get("spec") or {},
        "status": body.get("status") or {},
    }
    return json.dumps(kept, separators=(",", ":"))


def child_index_key(state: ChildState) -> tuple[str, ...]:
    """Children are indexed by their controller's uid; the shared claim by its namespace."""
    if state.controller is not None:
        return ("owner", state.controller.uid)
    return ("namespace", state.namespace)


def _controller_uid(state: ChildState) -> str:
    return state.controller.uid if state.controller is not None else ""


def _rv(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class World:
    """Read access to the indexes plus the write-through overlay."""

    def __init__(self) -> None:
        self.indexes: dict[str, IndexLike] = {}
        self._children: dict[Key, ChildState] = {}
        # The overlay by controller uid: children() must not scan every overlay entry
        # (thousands right after a burst of creates) for each of a thousand owners.
        self._children_of: dict[str, set[Key]] = {}
        self._gone: dict[Key, str] = {}  # deleted by us: uid, until the watch confirms
        self._owners: dict[Key, tuple[int, str, str]] = {}  # rv, uid, compact JSON
        self._seen: dict[Key, int] = {}  # fingerprint of what reconciles read of a child

    @property
    def ready(self) -> bool:
        return all(name in self.indexes for name in (*CHILD_INDEXES, *OWNER_INDEXES.values()))

    def capture(self, kwargs: Mapping[str, Any]) -> None:
        """Keep references to kopf's live index objects (passed to every handler)."""
        for name in (*CHILD_INDEXES, *OWNER_INDEXES.values(), POD_INDEX):
            if name not in self.indexes and name in kwargs:
                self.indexes[name] = kwargs[name]

    # --- owners ------------------------------------------------------------------------

    def owner(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The freshest body of an owner, or None once the watch reported it gone."""
        index = self.indexes.get(OWNER_INDEXES[kind])
        watched: dict[str, Any] | None = None
        if index is not None and (namespace, name) in index:
            for text in index[(namespace, name)]:
                watched = json.loads(text)
        key = (kind, namespace, name)
        mine = self._owners.get(key)
        if mine is None:
            return watched
        rv, uid, text = mine
        same = watched is not None and watched["metadata"].get("uid") == uid
        if watched is None or not same or _rv(watched) >= rv:
            del self._owners[key]
            return watched
        parsed: dict[str, Any] = json.loads(text)
        return parsed

    def remember_owner(self, body: Mapping[str, Any]) -> None:
        """A write's response: newer than the index until the watch catches up."""
        meta = body["metadata"]
        key = (str(body["kind"]), meta["namespace"], meta["name"])
        self._owners[key] = (_rv(body), str(meta.get("uid")), compact_owner(body))

    def forget_owner(self, kind: str, namespace: str, name: str) -> None:
        self._owners.pop((kind, namespace, name), None)

    def owner_keys(self, kinds: Collection[str] = MODEL_KINDS) -> Iterator[Key]:
        """Every TritonModel and ModelEnsemble (``kinds``: also TritonServerPools)."""
        for kind in kinds:
            index = self.indexes.get(OWNER_INDEXES[kind])
            if index is None:
                continue
            for namespace, name in list(index):
                yield (kind, namespace, name)

    def owner_bodies(self) -> list[dict[str, Any]]:
        """Every owner as its watch last saw it, for the per-model metrics.

        Called from the metrics server's thread: reads the indexes only (never the
        overlay, which the event loop changes) and retries a snapshot the loop changed
        under it.
        """
        for _ in range(3):
            try:
                texts = [
                    texts[-1]
                    for index_name in OWNER_INDEXES.values()
                    if (index := self.indexes.get(index_name)) is not None
                    for texts in (list(index[key]) for key in list(index))
                    if texts
                ]
            except (RuntimeError, KeyError):
                continue  # changed while we read it: take a new snapshot
            return [json.loads(text) for text in texts]
        return []

    def owners_in(self, kind: str, namespace: str) -> dict[str, dict[str, Any]]:
        """Every object of ``kind`` in ``namespace`` by name (ensembles look members up here)."""
        index = self.indexes.get(OWNER_INDEXES[kind])
        out: dict[str, dict[str, Any]] = {}
        if index is None:
            return out
        for ns, name in list(index):
            if ns == namespace:
                body = self.owner(kind, ns, name)
                if body is not None:
                    out[name] = body
        return out

    def triton_pods(self) -> list[TritonPod]:
        """Every managed Triton pod, from the one pod watch (loader and queue collector)."""
        index = self.indexes.get(POD_INDEX)
        if index is None:
            return []
        out: list[TritonPod] = []
        for key in list(index):
            out.extend(index[key])
        return out

    # --- children ----------------------------------------------------------------------

    def _indexed(self, key: tuple[str, ...]) -> Iterator[ChildState]:
        for index_name in CHILD_INDEXES:
            index = self.indexes.get(index_name)
            if index is not None and key in index:
                yield from index[key]

    def children(self, owner_uid: str) -> dict[Key, ChildState]:
        """Children controlled by ``owner_uid``, freshest observation of each."""
        out: dict[Key, ChildState] = {}
        for state in self._indexed(("owner", owner_uid)):
            out[state.key] = state
        for key in list(self._children_of.get(owner_uid, ())):
            state = self._children[key]
            indexed = out.get(key)
            best = newer(indexed, state)
            if best is indexed:
                self._drop_overlay(key)  # the watch caught up
            if best is not None:
                out[key] = best
        for key in list(out):
            uid = self._gone.get(key)
            if uid is None:
                continue
            if out[key].uid == uid:
                out[key] = _deleting(out[key])
            else:
                del self._gone[key]  # a new object of that name
        return out

    def claim(self, namespace: str, name: str) -> ChildState | None:
        key = ("PersistentVolumeClaim", namespace, name)
        indexed = None
        for state in self._indexed(("namespace", namespace)):
            if state.key == key:
                indexed = state
        mine = self._children.get(key)
        best = newer(indexed, mine)
        if best is indexed and mine is not None:
            self._drop_overlay(key)
        return best

    def remember_child(self, body: Mapping[str, Any]) -> ChildState:
        state = summarize(body)
        self._drop_overlay(state.key)
        self._children[state.key] = state
        self._children_of.setdefault(_controller_uid(state), set()).add(state.key)
        self._gone.pop(state.key, None)
        return state

    def _drop_overlay(self, key: Key) -> None:
        state = self._children.pop(key, None)
        if state is None:
            return
        uid = _controller_uid(state)
        keys = self._children_of.get(uid)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._children_of[uid]

    def forget_child(self, key: Key, uid: str) -> None:
        """We deleted it: treat it as deleting until the watch says it is gone."""
        self._drop_overlay(key)
        self._gone[key] = uid

    def child_deleted(self, key: Key) -> None:
        """The watch reported a deletion: drop our overlay for it."""
        self._drop_overlay(key)
        self._gone.pop(key, None)

    def is_own_echo(self, body: Mapping[str, Any]) -> bool:
        """True for the watch event of an object exactly as our last write left it."""
        meta = body.get("metadata") or {}
        key = (str(body.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
        mine = self._owners.get(key)
        return mine is not None and mine[0] == _rv(body)

    def child_changed(self, body: Mapping[str, Any], deleted: bool) -> bool:
        """Whether a child event changes anything a reconcile reads (else: no reconcile).

        Controllers update children's status many times (a Job's active count, a
        Deployment's intermediate replica counts); only some of it matters.
        """
        state = summarize(body)
        if deleted:
            self._seen.pop(state.key, None)
            return True
        # An HPA's live metric value moves every sync; the condition quotes it only
        # while the replica count changes, which changes the fingerprint anyway.
        hpa = replace(state.hpa, queue_time="") if state.hpa is not None else None
        fingerprint = hash(
            replace(state, resource_version="", available_replicas=0, active=0, hpa=hpa)
        )
        if self._seen.get(state.key) == fingerprint:
            return False
        self._seen[state.key] = fingerprint
        return True

    def claim_namespaces(self) -> list[str]:
        """Namespaces where a repository claim of ours exists."""
        index = self.indexes.get("tf_claims")
        return [key[1] for key in list(index or {}) if key[0] == "namespace"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for kind, index_name in OWNER_INDEXES.items():
            out[kind] = len(self.indexes.get(index_name) or {})
        for index_name in CHILD_INDEXES:
            index = self.indexes.get(index_name)
            if index is None:
                continue
            total = 0
            for key in list(index):
                total += len(index[key])
            out[index_name.removeprefix("tf_")] = total
        return out


def _deleting(state: ChildState) -> ChildState:
    return replace(state, deleting=True)
