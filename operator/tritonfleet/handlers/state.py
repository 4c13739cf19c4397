"""The operator's memory of the cluster: what the watch streams delivered
(``handlers.watches``), overlaid with what our own writes returned.

Reconciles read only from here, never from the API server, which is how a
reconcile of an unchanged object costs no request at all. Every stream lists
before it watches, and a namespace counts as known (:meth:`World.is_synced`) only
once every stream covering it has listed: the reconciler waits for that, so after a
restart the operator knows every child before it decides anything (no "missing"
children re-applied by mistake).

What is kept is small on purpose: an owner as compact JSON text (spec, status and
the metadata a reconcile reads; no managedFields), a child as a
``desired.kube.observed.ChildState``, a Triton pod as a
``desired.kube.loading.TritonPod``. Each is indexed the way it is looked up (owners
by namespace, children by their controller's uid, the shared claim by namespace,
pods by the object they serve), so no lookup scans the fleet.

A write's response is newer than the watched copy until its watch event arrives
(a few milliseconds, longer under load). The overlay keeps those responses
so a reconcile that runs in between does not repeat the write; the fresher
of the two, by resourceVersion, wins.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from tritonfleet.desired.kube.loading import PodKey, TritonPod
from tritonfleet.desired.kube.observed import ChildState, newer, summarize

Key = tuple[str, str, str]  # kind, namespace, name

OWNER_KINDS = ("TritonModel", "ModelEnsemble", "TritonServerPool")
MODEL_KINDS = ("TritonModel", "ModelEnsemble")  # what the loader, scaler and collector serve
# Every child kind the operator creates (labelled app.kubernetes.io/managed-by=tritonfleet).
CHILD_KINDS = (
    "Deployment",
    "Job",
    "Service",
    "ConfigMap",
    "PersistentVolumeClaim",
    "HorizontalPodAutoscaler",
)

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


def _controller_uid(state: ChildState) -> str:
    return state.controller.uid if state.controller is not None else ""


def _rv(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class World:
    """The watched objects, indexed for their lookups, plus the write-through overlay."""

    def __init__(self) -> None:
        # --- what the watches delivered
        # kind -> namespace -> name -> (resourceVersion, uid, compact JSON, generation)
        self._watched_owners: dict[str, dict[str, dict[str, tuple[int, str, str, int]]]] = {
            k: {} for k in OWNER_KINDS
        }
        self._watched: dict[Key, ChildState] = {}
        self._watched_of: dict[str, set[Key]] = {}  # controller uid (or "ns:<namespace>")
        self._pods: dict[PodKey, dict[str, TritonPod]] = {}
        self._pod_keys: dict[tuple[str, str], PodKey] = {}  # (namespace, name) -> its owner key
        self._synced: set[str | None] = set()  # namespaces whose streams all listed (None: all)
        # --- the overlay of our own writes
        self._children: dict[Key, ChildState] = {}
        # The overlay by controller uid: children() must not scan every overlay entry
        # (thousands right after a burst of creates) for each of a thousand owners.
        self._children_of: dict[str, set[Key]] = {}
        self._gone: dict[Key, str] = {}  # deleted by us: uid, until the watch confirms
        self._owners: dict[Key, tuple[int, str, str]] = {}  # rv, uid, compact JSON
        self._seen: dict[Key, int] = {}  # fingerprint of what reconciles read of a child
        # Move whenever an owner or a child changes (``version``), or an owner comes, goes
        # or gets a new spec (``spec_version``): readers that derive something from the
        # whole fleet (the queue collector's models) recompute only when it moved.
        self.version = 0
        self.spec_version = 0
        self._marked: dict[Key, ChildState] = {}  # Deployments scale to zero marked

    # --- what the watch streams deliver (handlers.watches) ------------------------------

    def put_owner(self, body: Mapping[str, Any]) -> bool:
        """Keep the watched copy of an owner; False when it is the one already kept."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        by_ns = self._watched_owners[str(body.get("kind"))].setdefault(namespace, {})
        text = compact_owner(body)
        old = by_ns.get(name)
        if old is not None and old[2] == text:
            return False
        uid, generation = str(meta.get("uid") or ""), int(meta.get("generation") or 0)
        by_ns[name] = (_rv(body), uid, text, generation)
        if old is None or (old[1], old[3]) != (uid, generation):
            self.spec_version += 1
        self.version += 1
        return True

    def drop_owner(self, kind: str, namespace: str, name: str) -> None:
        by_ns = self._watched_owners[kind].get(namespace)
        if by_ns is not None and by_ns.pop(name, None) is not None:
            if not by_ns:
                del self._watched_owners[kind][namespace]
            self.version += 1
            self.spec_version += 1
        self._owners.pop((kind, namespace, name), None)

    def put_child(self, state: ChildState) -> None:
        old = self._watched.get(state.key)
        if old is not None:
            self._unindex(old)
        self._watched[state.key] = state
        self._watched_of.setdefault(self._index_of(state), set()).add(state.key)
        if state.scaled_to_zero:
            self._marked[state.key] = state
        else:
            self._marked.pop(state.key, None)
        self.version += 1

    def drop_child(self, key: Key) -> ChildState | None:
        """The watch reported a deletion; the last watched state, if any."""
        old = self._watched.pop(key, None)
        if old is not None:
            self._unindex(old)
            self.version += 1
        self._marked.pop(key, None)
        self._seen.pop(key, None)
        self._drop_overlay(key)
        self._gone.pop(key, None)
        return old

    @staticmethod
    def _index_of(state: ChildState) -> str:
        """Children are found by their controller's uid; the shared claim by its namespace."""
        return state.controller.uid if state.controller is not None else f"ns:{state.namespace}"

    def _unindex(self, state: ChildState) -> None:
        keys = self._watched_of.get(self._index_of(state))
        if keys is not None:
            keys.discard(state.key)
            if not keys:
                del self._watched_of[self._index_of(state)]

    def put_pod(self, pod: TritonPod) -> None:
        where = (pod.namespace, pod.name)
        previous = self._pod_keys.get(where)
        if previous is not None and previous != pod.owner:
            self.drop_pod(pod.namespace, pod.name)
        self._pods.setdefault(pod.owner, {})[pod.name] = pod
        self._pod_keys[where] = pod.owner

    def drop_pod(self, namespace: str, name: str) -> TritonPod | None:
        owner = self._pod_keys.pop((namespace, name), None)
        if owner is None:
            return None
        pods = self._pods.get(owner, {})
        pod = pods.pop(name, None)
        if not pods:
            self._pods.pop(owner, None)
        return pod

    # What a stream's list may have to drop: everything known of a kind in a scope.

    def owner_names(self, kind: str, namespace: str | None) -> list[tuple[str, str]]:
        owners = self._watched_owners[kind]
        spaces = owners if namespace is None else {namespace: owners.get(namespace, {})}
        return [(ns, name) for ns, names in spaces.items() for name in names]

    def child_keys(self, kind: str, namespace: str | None) -> list[Key]:
        return [k for k in self._watched if k[0] == kind and namespace in (None, k[1])]

    def pod_names(self, namespace: str | None) -> list[tuple[str, str]]:
        return [k for k in self._pod_keys if namespace in (None, k[0])]

    def mark_synced(self, namespace: str | None) -> None:
        """Every stream covering ``namespace`` (None: every namespace) has listed."""
        self._synced.add(namespace)

    def unmark_synced(self, namespace: str) -> None:
        self._synced.discard(namespace)

    def is_synced(self, namespace: str) -> bool:
        return None in self._synced or namespace in self._synced

    @property
    def ready(self) -> bool:
        """Some scope is fully listed (the operator's memory is usable)."""
        return bool(self._synced)

    # --- owners ------------------------------------------------------------------------

    def owner(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The freshest body of an owner, or None once the watch reported it gone."""
        kept = self._watched_owners[kind].get(namespace, {}).get(name)
        watched: dict[str, Any] | None = json.loads(kept[2]) if kept is not None else None
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

    def owner_stamp(self, kind: str, namespace: str, name: str) -> tuple[int, str] | None:
        """(resourceVersion, uid) of the freshest copy of an owner, without parsing it."""
        kept = self._watched_owners[kind].get(namespace, {}).get(name)
        mine = self._owners.get((kind, namespace, name))
        if mine is not None and (kept is None or (kept[1] == mine[1] and mine[0] > kept[0])):
            return mine[0], mine[1]
        return (kept[0], kept[1]) if kept is not None else None

    def remember_owner(self, body: Mapping[str, Any]) -> None:
        """A write's response: newer than the watched copy until the watch catches up."""
        meta = body["metadata"]
        key = (str(body["kind"]), meta["namespace"], meta["name"])
        self._owners[key] = (_rv(body), str(meta.get("uid")), compact_owner(body))

    def forget_owner(self, kind: str, namespace: str, name: str) -> None:
        self._owners.pop((kind, namespace, name), None)

    def owner_keys(self, kinds: Collection[str] = MODEL_KINDS) -> Iterator[Key]:
        """Every TritonModel and ModelEnsemble (``kinds``: also TritonServerPools)."""
        for kind in kinds:
            for namespace, names in list(self._watched_owners[kind].items()):
                for name in list(names):
                    yield (kind, namespace, name)

    def owner_count(self, namespace: str) -> int:
        """Owners of every kind in ``namespace`` (pools too: they use the shared claim)."""
        return sum(len(spaces.get(namespace, ())) for spaces in self._watched_owners.values())

    def owner_bodies(self) -> list[dict[str, Any]]:
        """Every owner as its watch last saw it, for the per-model metrics.

        Called from the metrics server's thread: reads the watched copies only (never
        the overlay) and retries a snapshot the event loop changed under it.
        """
        for _ in range(3):
            try:
                texts = [
                    entry[2]
                    for spaces in list(self._watched_owners.values())
                    for names in list(spaces.values())
                    for entry in list(names.values())
                ]
            except RuntimeError:
                continue  # changed while we read it: take a new snapshot
            return [json.loads(text) for text in texts]
        return []

    def owners_in(self, kind: str, namespace: str) -> dict[str, dict[str, Any]]:
        """Every object of ``kind`` in ``namespace`` by name (ensembles look members up here)."""
        out: dict[str, dict[str, Any]] = {}
        for name in list(self._watched_owners[kind].get(namespace, ())):
            body = self.owner(kind, namespace, name)
            if body is not None:
                out[name] = body
        return out

    def triton_pods(self) -> list[TritonPod]:
        """Every managed Triton pod, from the one pod watch (loader and queue collector)."""
        return [pod for pods in self._pods.values() for pod in pods.values()]

    def pods_of(self, key: PodKey) -> list[TritonPod]:
        """The Triton pods serving one object (``desired.kube.loading.pod_key_of``)."""
        return list(self._pods.get(key, {}).values())

    # --- children ----------------------------------------------------------------------

    def _indexed(self, index: str) -> Iterable[ChildState]:
        return [self._watched[k] for k in self._watched_of.get(index, ())]

    def children(self, owner_uid: str) -> dict[Key, ChildState]:
        """Children controlled by ``owner_uid``, freshest observation of each."""
        out: dict[Key, ChildState] = {}
        for state in self._indexed(owner_uid):
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
        indexed = self._watched.get(key)
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

    def is_own_echo(self, body: Mapping[str, Any]) -> bool:
        """True for the watch event of an object exactly as our last write left it."""
        meta = body.get("metadata") or {}
        key = (str(body.get("kind")), str(meta.get("namespace")), str(meta.get("name")))
        mine = self._owners.get(key)
        return mine is not None and mine[0] == _rv(body)

    def child_changed(self, state: ChildState) -> bool:
        """Whether a child event changes anything a reconcile reads (else: no reconcile).

        Controllers update children's status many times (a Job's active count, a
        Deployment's intermediate replica counts); only some of it matters.
        """
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

    def marked_owners(self) -> list[Key]:
        """Owners whose Deployment carries scale to zero's mark (a few, if any)."""
        return [
            (state.controller.kind, state.namespace, state.controller.name)
            for state in self._marked.values()
            if state.controller is not None
        ]

    def claim_namespaces(self) -> list[str]:
        """Namespaces where a repository claim of ours exists."""
        return sorted(index[3:] for index in self._watched_of if index.startswith("ns:"))

    def counts(self) -> dict[str, int]:
        out = {kind: sum(len(n) for n in s.values()) for kind, s in self._watched_owners.items()}
        for kind in CHILD_KINDS:
            out[kind] = 0
        for kind, _, _ in self._watched:
            out[kind] = out.get(kind, 0) + 1
        return out


def _deleting(state: ChildState) -> ChildState:
    return replace(state, deleting=True)
