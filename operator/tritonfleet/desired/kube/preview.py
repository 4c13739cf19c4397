"""Every object the operator would create for a set of TritonModel/ModelEnsemble documents.

Why: ``tritonfleet render --objects`` shows a user what an apply will lead to (like
``helm template``), and ``make lint``'s policy scan checks those objects without a
cluster. The objects are the reconciler's own builders (``desired.kube.objects``,
``desired.kube.autoscaling``) in the state after a successful sync: the namespace's
repository claim, and per object its ConfigMap, sync Job, Triton Deployment (at the
synced revision), headless Service and, with autoscaling, its HPA. Invalid documents
give no objects (``render`` reports their problems).

Pure: documents and settings in, objects out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube.autoscaling import hpa
from tritonfleet.desired.kube.objects import (
    Target,
    deployment,
    model_configmap,
    repository_claim,
    service,
    sync_job,
)
from tritonfleet.desired.kube.views import render_ensemble_object, render_model_object

Obj = dict[str, Any]


def _with_namespace(doc: Mapping[str, Any]) -> Obj:
    meta = dict(doc.get("metadata") or {})
    meta.setdefault("namespace", "default")
    return {**doc, "metadata": meta}


def _objects_of(target: Target, settings: OperatorSettings) -> list[Obj]:
    out = [
        model_configmap(target),
        sync_job(target, settings),
        deployment(target, settings, target.serves),
        service(target),
    ]
    autoscaler = hpa(target, settings.scale_down_stabilization_seconds)
    if autoscaler is not None:
        out.append(autoscaler)
    return out


def preview_objects(docs: Sequence[Mapping[str, Any]], settings: OperatorSettings) -> list[Obj]:
    """The children of ``docs`` (ensembles find their members among the same documents)."""
    bodies = [_with_namespace(d) for d in docs if d.get("kind") in ("TritonModel", "ModelEnsemble")]
    models_by_namespace: dict[str, dict[str, Obj]] = {}
    for body in bodies:
        if body["kind"] == "TritonModel":
            meta = body["metadata"]
            models_by_namespace.setdefault(meta["namespace"], {})[meta["name"]] = body
    out: list[Obj] = []
    claimed: set[str] = set()
    for body in bodies:
        namespace = body["metadata"]["namespace"]
        if body["kind"] == "TritonModel":
            rendering = render_model_object(body)
        else:
            rendering = render_ensemble_object(body, models_by_namespace.get(namespace, {}))
        if rendering.target is None:
            continue
        if namespace not in claimed:
            claimed.add(namespace)
            claim = repository_claim(namespace, settings)
            if claim is not None:
                out.append(claim)
        out.extend(_objects_of(rendering.target, settings))
    return out
