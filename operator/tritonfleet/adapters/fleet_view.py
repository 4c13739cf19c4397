"""What ``tritonfleet get`` reads from the cluster: the TritonModels and ModelEnsembles,
the queue time the operator serves for each autoscaled one (through the API server's
aggregation layer, like ``kubectl get --raw``), and every gateway replica's ``/metrics``
(through the API server's pod proxy). Only the objects are required; the live numbers
are best effort (they need RBAC a user may not have, and a model without autoscaling
has no queue-time metric): a number that cannot be read is left out, never guessed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tritonfleet.adapters.kube import ApiError, KubeClient
from tritonfleet.desired.kube.autoscaling import QUEUE_TIME_METRIC, parse_quantity

log = logging.getLogger(__name__)

GATEWAY_PODS = "app.kubernetes.io/component=gateway,app.kubernetes.io/part-of=tritonfleet"
EXTERNAL_METRICS = "/apis/external.metrics.k8s.io/v1beta1"
CONCURRENCY = 16


@dataclass(frozen=True)
class FleetObservation:
    bodies: list[dict[str, Any]]
    queue_seconds: dict[tuple[str, str], float]
    gateway_metrics: list[str] | None  # one text per gateway replica; None: none readable


async def _list_owners(client: KubeClient, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    for kind in ("TritonModel", "ModelEnsemble"):
        for namespace in namespaces or (None,):
            for body in await client.list(kind, namespace):
                body.setdefault("kind", kind)
                bodies.append(body)
    return bodies


async def _queue_time(
    client: KubeClient, body: Mapping[str, Any], limit: asyncio.Semaphore
) -> tuple[tuple[str, str], float] | None:
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    if not (spec.get("serving") or {}).get("autoscaling"):
        return None
    namespace = str(meta.get("namespace"))
    model = str(spec.get("modelName") or meta.get("name"))
    label = "ensemble" if body.get("kind") == "ModelEnsemble" else "model"
    path = f"{EXTERNAL_METRICS}/namespaces/{namespace}/{QUEUE_TIME_METRIC}"
    async with limit:
        try:
            text = await client.get_raw(path, {"labelSelector": f"{label}={model}"})
        except ApiError:
            return None  # no data yet, not served, or not allowed: left out
    try:
        value = json.loads(text)["items"][0]["value"]
        return (namespace, model), parse_quantity(str(value))
    except (ValueError, KeyError, IndexError, TypeError):
        return None


async def _gateway_metrics(client: KubeClient) -> list[str] | None:
    try:
        pods = await client.list("Pod", None, GATEWAY_PODS)
    except ApiError as error:
        log.debug("gateway pods not listed: %s", error)
        return None
    texts = []
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        ports = {
            p.get("name"): p.get("containerPort")
            for c in spec.get("containers") or ()
            for p in c.get("ports") or ()
        }
        port = ports.get("metrics") or ports.get("http")
        if not port or (pod.get("status") or {}).get("phase") != "Running":
            continue
        where = f"/api/v1/namespaces/{meta.get('namespace')}/pods/{meta.get('name')}"
        path = f"{where}:{port}/proxy/metrics"
        try:
            texts.append(await client.get_raw(path))
        except ApiError as error:
            log.debug("gateway %s metrics not read: %s", meta.get("name"), error)
    return texts or None


async def observe_fleet(client: KubeClient, namespaces: Sequence[str] = ()) -> FleetObservation:
    bodies = await _list_owners(client, namespaces)
    limit = asyncio.Semaphore(CONCURRENCY)
    queues, gateway = await asyncio.gather(
        asyncio.gather(*(_queue_time(client, b, limit) for b in bodies)),
        _gateway_metrics(client),
    )
    return FleetObservation(bodies, dict(q for q in queues if q is not None), gateway)
