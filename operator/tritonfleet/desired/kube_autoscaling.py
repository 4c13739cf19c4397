"""Queue-time autoscaling as objects and decisions: the HPA, the metric answer, the words.

Why: each Triton Deployment with ``serving.autoscaling`` is scaled by the cluster's own
HorizontalPodAutoscaler on an External metric the operator serves
(``tritonfleet_queue_time_ms``). What that HPA looks like, which collector results a
metric query selects (an ensemble scales on the worst of its members), and how the
HPA's status reads to a user are decisions, so they live here, pure.

Where it sits: ``desired`` (no I/O). ``scaling.metrics_api`` answers the aggregator with
:func:`select_metric`; the reconciler applies :func:`hpa` next to the Deployment and
sets the ``Autoscaling`` condition from :func:`autoscaling_condition`.

Missing data never scales down: :func:`select_metric` returns :class:`NoData` when any
selected model has no data, and the metrics API turns that into an error, on which
the HPA controller keeps the current replica count (``ScalingActive=False``,
``FailedGetExternalMetric``), whereas idle is a real 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tritonfleet.desired.kube_objects import Target, _metadata
from tritonfleet.desired.queue_metrics import NoData, QueueResult, QueueSignal

Obj = dict[str, Any]

QUEUE_TIME_METRIC = "tritonfleet_queue_time_ms"
PENDING_METRIC = "tritonfleet_pending_requests"
METRICS = (QUEUE_TIME_METRIC, PENDING_METRIC)
COMPONENT_AUTOSCALER = "autoscaler"
HPA_KIND = "HorizontalPodAutoscaler"

# Behaviour defaults (documented in docs/architecture.md): scale up fast — double or +4
# pods every 15 s, whichever is more, no stabilisation — because queueing requests are
# failing latency targets now; scale down slowly, over a stabilisation window (5 min by
# default), because a GPU pod takes minutes to come back.
SCALE_UP_PERCENT = 100
SCALE_UP_PODS = 4
SCALE_UP_PERIOD_S = 15
DEFAULT_SCALE_DOWN_STABILIZATION_S = 300


def metric_labels(target: Target) -> dict[str, str]:
    """The External metric selector that names this Deployment's signal.

    A TritonModel selects its Triton model; an ensemble selects itself, which the
    metrics API answers with the worst (max) queue time among its members.
    """
    if target.kind == "ModelEnsemble":
        return {"ensemble": target.triton_name, "namespace": target.namespace}
    return {"model": target.triton_name, "namespace": target.namespace}


def hpa_name(target: Target) -> str:
    return target.deployment_name


def hpa(target: Target, scale_down_stabilization_s: int | None = None) -> Obj | None:
    """The ``autoscaling/v2`` HPA of the target's Deployment, or None without autoscaling.

    ``minReplicas`` stays >= 1 even for a scale-to-zero model: zero is the operator's
    decision (the HPA is inactive while its target has 0 replicas).
    """
    auto = target.serving.autoscaling
    if auto is None:
        return None
    rng = target.serving.replicas
    down = (
        scale_down_stabilization_s
        if scale_down_stabilization_s is not None
        else DEFAULT_SCALE_DOWN_STABILIZATION_S
    )
    target_ms = auto.queue_time_target_ms
    # Quantities: milli-units keep a fractional target exact (50.5 ms -> "50500m").
    target_value = f"{round(target_ms * 1000)}m"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(target, hpa_name(target), COMPONENT_AUTOSCALER),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": target.deployment_name,
            },
            "minReplicas": max(rng.min, 1),
            "maxReplicas": max(rng.max, 1),
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "name": QUEUE_TIME_METRIC,
                            "selector": {"matchLabels": metric_labels(target)},
                        },
                        # Value, not AverageValue: queue time per request is already a
                        # mean over the pods; dividing it by the pod count would be wrong.
                        "target": {"type": "Value", "value": target_value},
                    },
                }
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {
                            "type": "Percent",
                            "value": SCALE_UP_PERCENT,
                            "periodSeconds": SCALE_UP_PERIOD_S,
                        },
                        {
                            "type": "Pods",
                            "value": SCALE_UP_PODS,
                            "periodSeconds": SCALE_UP_PERIOD_S,
                        },
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": down,
                    "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
                },
            },
        },
    }


def hpa_manages_replicas(target: Target) -> bool:
    """When the HPA exists the Deployment's ``replicas`` is left to it (server-side
    apply without the field), except before the first revision is synced (0)."""
    return target.serving.autoscaling is not None


# --- answering metric queries ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricValue:
    """One answer: the value and the models it came from (for the labels)."""

    value: float
    models: tuple[str, ...]


def parse_selector(raw: str) -> dict[str, str] | None:
    """``model=a,namespace=b`` (equality only, ``==`` too) → mapping; None if the
    selector uses anything else (set-based selectors are not supported)."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        if "!=" in part or " in " in part or " notin " in part or "=" not in part:
            return None
        key, _, value = part.replace("==", "=").partition("=")
        out[key.strip()] = value.strip()
    return out


def select_metric(
    metric: str,
    namespace: str,
    selector: Mapping[str, str],
    results: Mapping[tuple[str, str], QueueResult],
    ensembles: Mapping[tuple[str, str], Sequence[str]],
) -> MetricValue | NoData:
    """The value of ``metric`` for a query in ``namespace`` with label ``selector``.

    ``model=m`` selects one Triton model; ``ensemble=e`` the members of ensemble ``e``
    (``ensembles[(ns, e)]``, Triton names) and answers the max over them (the worst
    queue). Any selected model without data → :class:`NoData` (never a smaller number).
    """
    ns = selector.get("namespace", namespace)
    if ns != namespace:
        return NoData(selector.get("model", "?"), f"namespace label {ns!r} != {namespace!r}")
    if "ensemble" in selector:
        name = selector["ensemble"]
        members = tuple(ensembles.get((ns, name), ()))
        if not members:
            return NoData(name, f"no ensemble {name!r} with members known in {ns}")
    elif "model" in selector:
        members = (selector["model"],)
    else:
        return NoData("?", "the selector must name a model or an ensemble")
    values: list[float] = []
    for model in members:
        result = results.get((ns, model))
        if result is None:
            return NoData(model, f"model {model!r} is not scraped in {ns}")
        if isinstance(result, NoData):
            return result
        values.append(result.queue_ms if metric == QUEUE_TIME_METRIC else result.pending)
    agg = max(values) if metric == QUEUE_TIME_METRIC else sum(values)
    return MetricValue(agg, members)


def quantity(value: float) -> str:
    """A Kubernetes quantity for a metric value, in milli-units (exact for the HPA)."""
    return f"{round(value * 1000)}m"


# --- the Autoscaling condition -----------------------------------------------------------


def _cond(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in status.get("conditions") or ():
        if c.get("type") == kind:
            return dict(c)
    return None


def autoscaling_condition(
    target: Target, hpa_status: Mapping[str, Any] | None, scaled_to_zero: str | None = None
) -> tuple[str, str, str] | None:
    """(status, reason, message) of the ``Autoscaling`` condition, None without autoscaling.

    Read from the HPA's own status (conditions, currentMetrics, desiredReplicas) so the
    words match what the controller decided; ``scaled_to_zero`` is the operator's reason
    when it holds the Deployment at zero.
    """
    auto = target.serving.autoscaling
    if auto is None:
        return None
    target_ms = auto.queue_time_target_ms
    if scaled_to_zero:
        return ("True", "ScaledToZero", scaled_to_zero)
    if not hpa_status:
        return ("Unknown", "Pending", "the HPA has not reported a decision yet")
    current = hpa_status.get("currentReplicas", 0)
    desired = hpa_status.get("desiredReplicas", current)
    active = _cond(hpa_status, "ScalingActive")
    if active is not None and active.get("status") == "False":
        why = active.get("message") or active.get("reason") or "scaling inactive"
        return (
            "False",
            str(active.get("reason") or "ScalingInactive"),
            f"holding {current} replicas: {why} (missing metrics never scale down)",
        )
    value = None
    for m in hpa_status.get("currentMetrics") or ():
        ext = m.get("external") or {}
        if (ext.get("metric") or {}).get("name") == QUEUE_TIME_METRIC:
            value = (ext.get("current") or {}).get("value")
    seen = f"queue time {format_quantity(value)} ms vs target {target_ms:g} ms"
    if value is None:
        seen = f"target {target_ms:g} ms queue time"
    if desired > current:
        verb = f"scaling up from {current} to {desired} replicas"
    elif desired < current:
        verb = f"scaling down from {current} to {desired} replicas"
    else:
        verb = f"steady at {current} replicas"
    limited = _cond(hpa_status, "ScalingLimited")
    extra = ""
    if limited is not None and limited.get("status") == "True":
        extra = f" ({limited.get('message') or limited.get('reason')})"
    return ("True", "Active", f"{verb}: {seen}{extra}")


def format_quantity(raw: object) -> str:
    """``"52300m"`` → ``"52.3"`` (a quantity as the HPA status reports it)."""
    text = str(raw)
    try:
        if text.endswith("m"):
            return f"{float(text[:-1]) / 1000:g}"
        return f"{float(text):g}"
    except ValueError:
        return text


# --- scale to zero -----------------------------------------------------------------------


def should_scale_to_zero(
    target: Target, result: QueueResult | None, idle_since: float | None, now: float
) -> bool:
    """True when a ``min: 0`` model has seen no request for ``scaleToZeroAfterSeconds``.

    Only a real idle (:class:`QueueSignal` with no requests) counts; no data never does.
    """
    auto = target.serving.autoscaling
    if auto is None or auto.scale_to_zero_after_seconds is None or target.serving.replicas.min:
        return False
    if not isinstance(result, QueueSignal) or not result.idle or idle_since is None:
        return False
    return now - idle_since >= auto.scale_to_zero_after_seconds


# --- what the collector scrapes ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TritonPod:
    """A Triton pod of a Deployment the operator manages, as the pod watch sees it."""

    namespace: str
    name: str
    owner_kind: str  # "TritonModel" | "ModelEnsemble"
    owner: str
    ip: str
    ready: bool


def scrape_targets(
    pods: Sequence[TritonPod],
    models: Mapping[tuple[str, str, str], Sequence[str]],
    may_dial: Callable[[str], bool],
    metrics_port: int,
) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(namespace, Triton model) → [(pod, metrics URL)] for the collector.

    ``models[(kind, ns, owner)]`` are the Triton models the owner's Deployment loads (an
    ensemble's members and itself). Only Ready pods with an IP in ``networks`` count.
    """
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for pod in pods:
        if not pod.ready or not pod.ip or not may_dial(pod.ip):
            continue
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        for model in models.get((pod.owner_kind, pod.namespace, pod.owner), ()):
            out.setdefault((pod.namespace, model), []).append(
                (pod.name, f"http://{host}:{metrics_port}")
            )
    for key in [(k[1], m) for k, ms in models.items() for m in ms]:
        out.setdefault(key, [])  # known but no ready pod: no data, not absent
    return out
