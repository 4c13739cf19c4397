"""An in-memory stand-in for the API server, behind ``adapters.kube.KubeApi``, and the
operator's memory filled the way its watch streams fill it.

Why a fake: the unit tests of ``handlers`` and ``scaling`` check the reconcile's and
the scaler's decisions and writes in-process, in milliseconds; the real API server
(the testbed) checks the same code end to end in the integration suite. The fake
answers like the API server where the operator relies on it: server-side apply
records the field manager's paths in ``managedFields`` (drift detection reads them),
``metadata.resourceVersion`` in a patch makes it conditional (409 on a stale copy),
``metadata.generation`` moves with the spec, ``create`` refuses a name that exists.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from tritonfleet.adapters.kube import ApiError, Obj, PatchType
from tritonfleet.desired.kube.drift import applied_paths
from tritonfleet.desired.kube.observed import summarize
from tritonfleet.handlers.state import CHILD_KINDS, OWNER_KINDS, World

_RESOURCE_VERSIONS = itertools.count(100)

Key = tuple[str, str, str]


def server_object(obj: Mapping[str, Any], **status: Any) -> dict[str, Any]:
    """``obj`` as the API server returns it after our apply (managedFields included);
    ``status`` as a controller would have written it."""
    out = copy.deepcopy(dict(obj))
    meta = out["metadata"]
    meta.setdefault("uid", f"uid-{meta['name']}")
    meta["resourceVersion"] = str(next(_RESOURCE_VERSIONS))
    meta.setdefault("generation", 1)
    tree: dict[str, Any] = {}
    for path in applied_paths(dict(obj)):
        node = tree
        for segment in path:
            node = node.setdefault(segment, {})
    meta["managedFields"] = [
        {"manager": "tritonfleet", "operation": "Apply", "fieldsV1": tree},
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "subresource": "status",
            "fieldsV1": {"f:status": {"f:replicas": {}}},
        },
    ]
    if status:
        out["status"] = status
    return out


def _merge(into: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 merge patch: None removes a key, mappings merge, the rest replaces."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _merge_conditions(into: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """A strategic-merge patch of a status: ``conditions`` merge by ``type`` (their
    patch merge key), other keys as a merge patch."""
    rest = {k: v for k, v in patch.items() if k != "conditions"}
    _merge(into, rest)
    conditions = {c["type"]: c for c in into.get("conditions") or []}
    for condition in patch.get("conditions") or []:
        conditions[condition["type"]] = {**conditions.get(condition["type"], {}), **condition}
    into["conditions"] = list(conditions.values())


class FakeKube:
    """The API server's objects in a dict, and every call the operator made."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name)
        self.events: list[tuple[str, str, str]] = []  # (type, reason, message)
        self.fail: dict[tuple[str, str], ApiError] = {}  # (verb, kind) -> raised once
        self.closed = False

    # --- helpers for tests -----------------------------------------------------------

    def put(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store an object as a user's ``kubectl apply`` would (a new uid if it has none)."""
        obj = copy.deepcopy(dict(body))
        meta = obj["metadata"]
        meta.setdefault("namespace", "default")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(_RESOURCE_VERSIONS))
        self.objects[(obj["kind"], meta["namespace"], meta["name"])] = obj
        return copy.deepcopy(obj)

    def change(self, key: Key, *, status: Mapping[str, Any] | None = None, **meta: Any) -> None:
        """What a controller (``status``) or the API server (``meta``, e.g. a
        ``deletionTimestamp``) writes: a new resourceVersion, as for any write."""
        stored = self.objects[key]
        if status is not None:
            stored["status"] = copy.deepcopy(dict(status))
        stored["metadata"].update(meta)
        stored["metadata"]["resourceVersion"] = str(next(_RESOURCE_VERSIONS))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for (k, _, _), o in sorted(self.objects.items()) if k == kind]

    def writes_since(self, mark: int) -> list[tuple[str, str, str]]:
        return [c for c in self.calls[mark:] if c[0] not in ("get", "list")]

    def _raise_if_told(self, verb: str, kind: str) -> None:
        error = self.fail.pop((verb, kind), None)
        if error is not None:
            raise error

    # --- KubeApi ---------------------------------------------------------------------

    async def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        self.calls.append(("get", kind, name))
        found = self.objects.get((kind, namespace or "default", name))
        return copy.deepcopy(found) if found is not None else None

    async def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        self.calls.append(("list", kind, ""))
        wanted = dict(p.split("=", 1) for p in (label_selector or "").split(",") if p)
        return [
            copy.deepcopy(o)
            for (k, ns, _), o in self.objects.items()
            if k == kind
            and namespace in (None, ns)
            and all((o["metadata"].get("labels") or {}).get(a) == b for a, b in wanted.items())
        ]

    async def apply(self, obj: Obj, *, force: bool = True) -> Obj:
        kind, meta = obj["kind"], obj["metadata"]
        self.calls.append(("apply", kind, meta["name"]))
        self._raise_if_told("apply", kind)
        key = (kind, meta.get("namespace") or "default", meta["name"])
        old = self.objects.get(key)
        stored = server_object(obj, **((old or {}).get("status") or {}))
        if old is not None:
            stored["metadata"]["uid"] = old["metadata"]["uid"]
            generation = old["metadata"].get("generation", 1)
            changed = old.get("spec") != stored.get("spec")
            stored["metadata"]["generation"] = generation + 1 if changed else generation
        self.objects[key] = stored
        return copy.deepcopy(stored)

    async def create(self, obj: Obj) -> Obj:
        kind, meta = obj["kind"], obj["metadata"]
        self.calls.append(("create", kind, meta["name"]))
        self._raise_if_told("create", kind)
        key = (kind, meta.get("namespace") or "default", meta["name"])
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", f"{meta['name']} already exists", "create", "")
        self.objects[key] = server_object(obj)
        return copy.deepcopy(self.objects[key])

    async def patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        sub: str | None = None,
    ) -> Obj:
        self.calls.append(("patch-status" if sub == "status" else "patch", kind, name))
        self._raise_if_told("patch-status" if sub == "status" else "patch", kind)
        key = (kind, namespace or "default", name)
        stored = self.objects.get(key)
        if stored is None:
            raise ApiError(404, "NotFound", f"{kind} {name} not found", "patch", "")
        wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and wanted_rv != stored["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified", "patch", "")
        patch = copy.deepcopy(patch)
        (patch.get("metadata") or {}).pop("resourceVersion", None)
        if sub == "status" and patch_type == "strategic":
            _merge_conditions(stored.setdefault("status", {}), patch.get("status") or {})
        elif sub == "status":
            _merge(stored.setdefault("status", {}), patch.get("status") or {})
        else:
            spec_before = copy.deepcopy(stored.get("spec"))
            _merge(stored, patch)
            if stored.get("spec") != spec_before:
                stored["metadata"]["generation"] = stored["metadata"].get("generation", 1) + 1
        stored["metadata"]["resourceVersion"] = str(next(_RESOURCE_VERSIONS))
        if not stored["metadata"].get("finalizers") and stored["metadata"].get("deletionTimestamp"):
            del self.objects[key]  # the last finalizer went: the object is gone
        return copy.deepcopy(stored)

    async def patch_status(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        return await self.patch(kind, namespace, name, patch, sub="status")

    async def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: Literal["Background", "Foreground", "Orphan"] = "Background",
    ) -> bool:
        self.calls.append(("delete", kind, name))
        self._raise_if_told("delete", kind)
        return self.objects.pop((kind, namespace or "default", name), None) is not None

    async def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        type_: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        component: str = "tritonfleet-operator",
    ) -> None:
        self._raise_if_told("event", str(involved.get("kind")))
        self.calls.append(("event", str(involved.get("kind")), involved["metadata"]["name"]))
        self.events.append((type_, reason, message))

    async def close(self) -> None:
        self.closed = True


def watch(world: World, kube: FakeKube, pods: Iterable[Any] = ()) -> None:
    """Bring ``world`` to ``kube``'s objects the way the watch streams do once they have
    caught up (owners kept, children summarised, Triton pods as given, the rest
    dropped), every namespace listed."""
    owners = {(k, ns, n): o for (k, ns, n), o in kube.objects.items() if k in OWNER_KINDS}
    children = {key: o for key, o in kube.objects.items() if key[0] in CHILD_KINDS}
    for kind in OWNER_KINDS:
        for namespace, name in world.owner_names(kind, None):
            if (kind, namespace, name) not in owners:
                world.drop_owner(kind, namespace, name)
    for kind in CHILD_KINDS:
        for key in world.child_keys(kind, None):
            if key not in children:
                world.drop_child(key)
    for obj in owners.values():
        world.put_owner(obj)
    for obj in children.values():
        world.put_child(summarize(obj))
    given = list(pods)
    for namespace, name in world.pod_names(None):
        if not any((p.namespace, p.name) == (namespace, name) for p in given):
            world.drop_pod(namespace, name)
    for pod in given:
        world.put_pod(pod)
    world.mark_synced(None)
