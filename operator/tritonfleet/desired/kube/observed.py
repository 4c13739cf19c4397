"""Compact summaries of the children the operator watches.

The handlers keep one :class:`ChildState` per child in memory (fed by watch
streams), not the full objects: a thousand models have five thousand
children, and the reconciler needs only a few fields of each - who owns it,
the spec hash we applied, which fields we still own, and the bits of status
that conditions are computed from. Pure: turns a dict into a frozen value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tritonfleet.desired.kube.autoscaling import (
    ACTIVATED_AT_ANNOTATION,
    QUEUE_TIME_METRIC,
    SCALED_TO_ZERO_ANNOTATION,
    HpaState,
)
from tritonfleet.desired.kube.drift import Path, owned_paths
from tritonfleet.desired.kube.objects import (
    FIELD_MANAGER,
    LABEL_REVISION,
    REVISION_ANNOTATION,
    SERVES_ANNOTATION,
    SPEC_HASH_ANNOTATION,
)


@dataclass(frozen=True, slots=True)
class OwnerRef:
    kind: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class ChildState:
    """What the reconciler needs to know about one child object."""

    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: str
    spec_hash: str = ""
    owned: frozenset[Path] = field(default_factory=frozenset, repr=False)
    owners: tuple[OwnerRef, ...] = ()
    controller: OwnerRef | None = None
    revision: str = ""  # revision label (Jobs/ConfigMaps) or served revision (Deployments)
    deleting: bool = False
    # Deployment
    generation: int = 0
    observed_generation: int = 0
    replicas: int = 0
    status_replicas: int = 0  # every pod, the old template's included
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    problem: str = ""  # a Deployment/Job condition message worth showing to the user
    serves: str = ""  # the pod template's tritonfleet.io/serves (what its pods load)
    scaled_to_zero: str = ""  # the scaler's annotation (desired.kube.autoscaling.ZeroMark)
    activated_at: str = ""  # when the scaler last brought it back from zero (RFC 3339)
    # Job
    succeeded: bool = False
    failed: bool = False
    active: int = 0
    # PersistentVolumeClaim
    phase: str = ""
    # HorizontalPodAutoscaler
    hpa: HpaState | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)


def _owners(meta: Mapping[str, Any]) -> tuple[tuple[OwnerRef, ...], OwnerRef | None]:
    owners = []
    controller = None
    for ref in meta.get("ownerReferences") or ():
        owner = OwnerRef(str(ref.get("kind")), str(ref.get("name")), str(ref.get("uid")))
        owners.append(owner)
        if ref.get("controller"):
            controller = owner
    return tuple(owners), controller


def _condition(conditions: Any, type_: str) -> Mapping[str, Any] | None:
    for cond in conditions or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def _deployment_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    template_meta = (spec.get("template") or {}).get("metadata") or {}
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    problem = ""
    for type_, bad in (("ReplicaFailure", "True"), ("Progressing", "False")):
        cond = _condition(status.get("conditions"), type_)
        if cond and cond.get("status") == bad:
            problem = f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
    return {
        "generation": int(body["metadata"].get("generation") or 0),
        "observed_generation": int(status.get("observedGeneration") or 0),
        "replicas": int(spec["replicas"]) if spec.get("replicas") is not None else 1,
        "status_replicas": int(status.get("replicas") or 0),
        "ready_replicas": int(status.get("readyReplicas") or 0),
        "updated_replicas": int(status.get("updatedReplicas") or 0),
        "available_replicas": int(status.get("availableReplicas") or 0),
        "revision": str((template_meta.get("annotations") or {}).get(REVISION_ANNOTATION, "")),
        "serves": str((template_meta.get("annotations") or {}).get(SERVES_ANNOTATION, "")),
        "problem": problem,
        "scaled_to_zero": str(annotations.get(SCALED_TO_ZERO_ANNOTATION) or ""),
        "activated_at": str(annotations.get(ACTIVATED_AT_ANNOTATION) or ""),
    }


def _hpa_state(body: Mapping[str, Any]) -> HpaState:
    status = body.get("status") or {}
    active = _condition(status.get("conditions"), "ScalingActive") or {}
    limited = _condition(status.get("conditions"), "ScalingLimited") or {}
    queue_time = ""
    for metric in status.get("currentMetrics") or ():
        external = metric.get("external") or {}
        if (external.get("metric") or {}).get("name") == QUEUE_TIME_METRIC:
            queue_time = str((external.get("current") or {}).get("value") or "")
    return HpaState(
        current_replicas=int(status.get("currentReplicas") or 0),
        desired_replicas=int(status.get("desiredReplicas") or 0),
        active=str(active.get("status") or ""),
        active_reason=str(active.get("reason") or ""),
        active_message=str(active.get("message") or ""),
        limited_reason=str(limited.get("reason") or "") if limited.get("status") == "True" else "",
        limited_message=(
            str(limited.get("message") or limited.get("reason") or "")
            if limited.get("status") == "True"
            else ""
        ),
        queue_time=queue_time,
        reported=bool(status),
    )


def _job_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    complete = _condition(status.get("conditions"), "Complete")
    failed = _condition(status.get("conditions"), "Failed")
    is_failed = bool(failed and failed.get("status") == "True")
    problem = ""
    if is_failed and failed is not None:
        problem = f"{failed.get('reason', '')}: {failed.get('message', '')}".strip(": ")
    return {
        "succeeded": bool(complete and complete.get("status") == "True"),
        "failed": is_failed,
        "active": int(status.get("active") or 0),
        "problem": problem,
    }


def summarize(body: Mapping[str, Any], manager: str = FIELD_MANAGER) -> ChildState:
    """The :class:`ChildState` of a raw object as the API server returns it."""
    meta = body.get("metadata") or {}
    kind = str(body.get("kind") or "")
    owners, controller = _owners(meta)
    labels = meta.get("labels") or {}
    extra: dict[str, Any] = {"revision": str(labels.get(LABEL_REVISION, ""))}
    if kind == "Deployment":
        extra.update(_deployment_fields(body))
    elif kind == "Job":
        extra.update(_job_fields(body))
    elif kind == "PersistentVolumeClaim":
        extra["phase"] = str((body.get("status") or {}).get("phase") or "")
    elif kind == "HorizontalPodAutoscaler":
        extra["hpa"] = _hpa_state(body)
    return ChildState(
        kind=kind,
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
        spec_hash=str((meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION, "")),
        owned=owned_paths(meta.get("managedFields") or (), manager),
        owners=owners,
        controller=controller,
        deleting=bool(meta.get("deletionTimestamp")),
        **extra,
    )


def newer(a: ChildState | None, b: ChildState | None) -> ChildState | None:
    """The fresher of two observations of the same object (by resourceVersion).

    resourceVersions are opaque by contract but etcd's are integers; when they
    are not, the later observation (``b``) wins.
    """
    if a is None or b is None:
        return b if a is None else a
    if a.uid != b.uid:
        return b
    try:
        return a if int(a.resource_version) > int(b.resource_version) else b
    except ValueError:
        return b
