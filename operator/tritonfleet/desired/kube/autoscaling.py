"""Queue-time autoscaling as objects and decisions: the HPA, the metric answer, the words.

Why: each Triton Deployment with ``serving.autoscaling`` is scaled by the cluster's own
HorizontalPodAutoscaler on an External metric the operator serves
(``tritonfleet_queue_time_seconds``; the earlier ``tritonfleet_queue_time_ms`` is still
answered, in milliseconds, for HPAs and adapter rules written against it, until the
API leaves v1alpha1). What that HPA looks like, which collector results a
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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tritonfleet.desired.kube.objects import Target, _metadata
from tritonfleet.desired.triton.metrics import NoData, QueueResult, QueueSignal

Obj = dict[str, Any]

QUEUE_TIME_METRIC = "tritonfleet_queue_time_seconds"
# Deprecated: the same signal in milliseconds, answered for one more release.
LEGACY_QUEUE_TIME_METRIC = "tritonfleet_queue_time_ms"
PENDING_METRIC = "tritonfleet_pending_requests"
METRICS = (QUEUE_TIME_METRIC, PENDING_METRIC, LEGACY_QUEUE_TIME_METRIC)
_QUEUE_METRICS = (QUEUE_TIME_METRIC, LEGACY_QUEUE_TIME_METRIC)
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
    metrics API answers with the worst (max) queue time among its members; a pool
    selects itself too, answered with the worst queue time among the models it holds.
    """
    if target.kind == "ModelEnsemble":
        return {"ensemble": target.triton_name, "namespace": target.namespace}
    if target.kind == "TritonServerPool":
        return {"pool": target.name, "namespace": target.namespace}
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
    # Seconds, as the metric: milli-units for whole milliseconds ("250m"), micro-units
    # keep a fractional target exact (50.5 ms -> "50500u").
    target_ms = auto.queue_time_target_ms
    target_value = (
        f"{int(target_ms)}m" if target_ms == int(target_ms) else f"{round(target_ms * 1000)}u"
    )
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
    pools: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> MetricValue | NoData:
    """The value of ``metric`` for a query in ``namespace`` with label ``selector``.

    ``model=m`` selects one Triton model; ``ensemble=e`` the members of ensemble ``e``
    (``ensembles[(ns, e)]``, Triton names) and answers the max over them (the worst
    queue); ``pool=p`` the models pool ``p`` holds loaded (``pools[(ns, p)]``), the
    same way. Any selected model without data → :class:`NoData` (never a smaller number).
    """
    ns = selector.get("namespace", namespace)
    if ns != namespace:
        return NoData(selector.get("model", "?"), f"namespace label {ns!r} != {namespace!r}")
    if "ensemble" in selector:
        name = selector["ensemble"]
        members = tuple(ensembles.get((ns, name), ()))
        if not members:
            return NoData(name, f"no ensemble {name!r} with members known in {ns}")
    elif "pool" in selector:
        name = selector["pool"]
        members = tuple((pools or {}).get((ns, name), ()))
        if not members:
            return NoData(name, f"pool {name!r} holds no loaded model in {ns}")
    elif "model" in selector:
        members = (selector["model"],)
    else:
        return NoData("?", "the selector must name a model, an ensemble or a pool")
    values: list[float] = []
    for model in members:
        result = results.get((ns, model))
        if result is None:
            return NoData(model, f"model {model!r} is not scraped in {ns}")
        if isinstance(result, NoData):
            return result
        if metric == QUEUE_TIME_METRIC:
            values.append(result.queue_ms / 1000)
        else:
            values.append(result.queue_ms if metric == LEGACY_QUEUE_TIME_METRIC else result.pending)
    agg = max(values) if metric in _QUEUE_METRICS else sum(values)
    return MetricValue(agg, members)


def quantity(value: float) -> str:
    """A Kubernetes quantity for a metric value, in micro-units (a queue time in seconds
    keeps microseconds; the HPA compares milli-values, i.e. whole milliseconds)."""
    return f"{round(value * 1_000_000)}u"


# --- the Autoscaling condition -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HpaState:
    """What an HPA's status says about its decision (summarised by ``kube_observed``)."""

    current_replicas: int = 0
    desired_replicas: int = 0
    active: str = ""  # ScalingActive status: "True", "False" or "" (not reported yet)
    active_reason: str = ""
    active_message: str = ""
    limited_reason: str = ""  # ScalingLimited's reason when it is True (TooFewReplicas...)
    limited_message: str = ""  # ScalingLimited's message when it is True
    queue_time: str = ""  # current value of the queue-time metric (a quantity), if reported
    reported: bool = False  # the controller has written a status at all


def autoscaling_condition(
    target: Target, hpa_state: HpaState | None, deployment_replicas: int, scaled_to_zero: str = ""
) -> tuple[str, str, str] | None:
    """(status, reason, message) of the ``Autoscaling`` condition, None without autoscaling.

    Read from the HPA's own status so the words match what the controller decided;
    ``scaled_to_zero`` is the scaler's annotation on the Deployment (:class:`ZeroMark`).
    The live queue time is only quoted while the replica count is changing: a steady
    model's status must not be rewritten every HPA sync just because a number moved.
    """
    auto = target.serving.autoscaling
    if auto is None:
        return None
    target_ms = f"{auto.queue_time_target_ms:g} ms"
    mark = ZeroMark.parse(scaled_to_zero)
    if mark is not None and deployment_replicas == 0:
        return ("True", "ScaledToZero", mark.describe())
    if deployment_replicas == 0:
        return (
            "Unknown",
            "WaitingForReplicas",
            "the HPA takes over once the Deployment runs (0 replicas until a revision is synced)",
        )
    if hpa_state is None or not hpa_state.reported:
        return ("Unknown", "Pending", "the HPA has not reported a decision yet")
    current, desired = hpa_state.current_replicas, hpa_state.desired_replicas
    if hpa_state.active == "False":
        why = hpa_state.active_message or hpa_state.active_reason or "scaling inactive"
        return (
            "False",
            hpa_state.active_reason or "ScalingInactive",
            f"holding {_replicas(current)}, missing metrics never scale down: {why}",
        )
    value = milliseconds(hpa_state.queue_time) if hpa_state.queue_time else None
    seen = f"queue time {value} ms, target {target_ms}" if value else f"target {target_ms}"
    if desired > current:
        return (
            "True",
            "ScalingUp",
            f"scaling up from {current} to {_replicas(desired)}: {seen}",
        )
    if desired < current:
        return (
            "True",
            "ScalingDown",
            f"scaling down from {current} to {_replicas(desired)}: {seen}",
        )
    load = "idle" if value in (None, "0") else f"queue time within the {target_ms} target"
    if hpa_state.limited_reason == "TooManyReplicas":
        return (
            "True",
            "ScalingLimited",
            f"held at the maximum of {_replicas(current)}: queue time above the {target_ms} "
            "target (raise replicas.max to scale further)",
        )
    if hpa_state.limited_reason == "TooFewReplicas":
        return ("True", "Steady", f"steady at the minimum of {_replicas(current)}: {load}")
    if hpa_state.limited_message:  # a rate limit of the HPA's behaviour
        return (
            "True",
            "ScalingLimited",
            f"held at {_replicas(current)} ({hpa_state.limited_message}), target {target_ms}",
        )
    return ("True", "Steady", f"steady at {_replicas(current)}: {load}")


def _replicas(n: int) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"


_SUFFIXES = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_quantity(text: str) -> float:
    """A decimal Kubernetes quantity as a number: ``"52300u"`` → ``0.0523``."""
    scale = _SUFFIXES.get(text[-1:], 1.0)
    return float(text[:-1] if text[-1:] in _SUFFIXES else text) * scale


def milliseconds(raw: object) -> str:
    """A queue time in seconds as the HPA status reports it, in ms: ``"52300u"`` → ``"52.3"``."""
    try:
        return f"{parse_quantity(str(raw)) * 1000:.4g}"
    except ValueError:
        return str(raw)


# --- scale to zero -----------------------------------------------------------------------

# On the Deployment, written by the scaler (field manager tritonfleet-scaler) in the same
# patch as ``spec.replicas``: the record survives operator restarts, and the reconciler
# reads it from its Deployment watch to explain the zero in the model's status.
SCALED_TO_ZERO_ANNOTATION = "tritonfleet.io/scaled-to-zero"
ACTIVATED_AT_ANNOTATION = "tritonfleet.io/activated-at"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ZeroMark:
    """When and why the scaler took a Deployment to zero (the annotation's value)."""

    at: float  # epoch seconds
    why: str

    def encode(self) -> str:
        return f"{iso(self.at)} {self.why}"

    @staticmethod
    def parse(raw: str) -> ZeroMark | None:
        stamp, _, why = raw.strip().partition(" ")
        at = parse_iso(stamp)
        return None if at is None else ZeroMark(at, why)

    def describe(self) -> str:
        return (
            f"scaled to zero at {iso(self.at)}: {self.why}; the next request through the "
            "gateway starts a replica (the hosted provider answers meanwhile, if configured)"
        )


@dataclass(frozen=True, slots=True)
class Activity:
    """What the scaler knows about the demand for one Deployment's model (epoch seconds)."""

    signal: QueueResult | None  # Triton's queue signal for the model, now
    busy_at: float | None = None  # last time that signal showed completed requests
    demand_at: float | None = None  # newest request the gateway replicas saw for its route
    since: float = 0.0  # since when the model's signal has been observed without a break


@dataclass(frozen=True, slots=True)
class ScaleChange:
    """One write by the scaler: a merge patch of the Deployment, and what to tell the user."""

    replicas: int | None  # None: leave spec.replicas alone
    annotations: dict[str, str | None]
    reason: str  # Event reason
    message: str

    def patch(self) -> Obj:
        out: Obj = {"metadata": {"annotations": dict(self.annotations)}}
        if self.replicas is not None:
            out["spec"] = {"replicas": self.replicas}
        return out


def scales_to_zero(target: Target) -> bool:
    auto = target.serving.autoscaling
    return (
        auto is not None
        and auto.scale_to_zero_after_seconds is not None
        and target.serving.replicas.min == 0
    )


def zero_decision(
    target: Target,
    replicas: int,
    scaled_to_zero: str,
    activated_at: str,
    activity: Activity,
    now: float,
) -> ScaleChange | None:
    """Scale a ``min: 0`` model's Deployment to zero after its idle time, or back to one.

    * To zero: only on positive evidence of idleness: Triton's signal is data and
      idle (:class:`~tritonfleet.desired.triton.metrics.QueueSignal`, no request in
      the window) and nothing was seen — by Triton, by any gateway replica, by a
      previous activation — for ``scaleToZeroAfterSeconds`` of unbroken observation
      (``since``). No data (pods unreachable) never scales down.
    * Back to one: the newest request any gateway replica saw for the model is
      newer than the zero mark. Each gateway replica only reports its own
      timestamp (``tritonfleet_gateway_last_request_timestamp_seconds``) and the
      scaler takes the max, so any number of replicas is safe and none writes to
      the API server.
    * Someone scaled it up by hand (``kubectl scale``) or turned scale-to-zero off:
      the mark is cleared (and, when off, one replica restored).
    """
    mark = ZeroMark.parse(scaled_to_zero) if scaled_to_zero else None
    enabled = scales_to_zero(target)
    back = max(target.serving.replicas.min, 1)
    if mark is not None:
        cleared: dict[str, str | None] = {
            SCALED_TO_ZERO_ANNOTATION: None,
            ACTIVATED_AT_ANNOTATION: iso(now),
        }
        if replicas > 0:
            return ScaleChange(
                None, cleared, "Activated", f"scaled up to {replicas} by someone else"
            )
        if not enabled:
            return ScaleChange(
                back, cleared, "Activated", f"scale to zero is off: back to {back} replica(s)"
            )
        if activity.demand_at is not None and activity.demand_at > mark.at:
            return ScaleChange(
                back,
                cleared,
                "Activated",
                f"a request arrived through the gateway at {iso(activity.demand_at)}: "
                f"starting {back} replica(s), scaled to zero since {iso(mark.at)}",
            )
        return None
    if not enabled or replicas == 0:
        return None
    auto = target.serving.autoscaling
    assert auto is not None and auto.scale_to_zero_after_seconds is not None
    why = _idle(auto.scale_to_zero_after_seconds, activity, activated_at, now)
    if why is None:
        return None
    return ScaleChange(
        0,
        {SCALED_TO_ZERO_ANNOTATION: ZeroMark(now, why).encode(), ACTIVATED_AT_ANNOTATION: None},
        "ScaledToZero",
        f"scaled to zero: {why}",
    )


def _idle(after: int, activity: Activity, activated_at: str, now: float) -> str | None:
    """Why it may go to zero now (``after`` seconds of observed idleness), or None."""
    signal = activity.signal
    if not isinstance(signal, QueueSignal) or not signal.idle:
        return None
    seen = [activity.since, activity.busy_at, activity.demand_at, parse_iso(activated_at)]
    last = max(t for t in seen if t is not None)
    if now - last < after:
        return None
    return f"no request for {after} s (scaleToZeroAfterSeconds), last activity {iso(last)}"


def pooled_zero_decision(
    after: int | None, scaled_to_zero: str, activated_at: str, activity: Activity, now: float
) -> ScaleChange | None:
    """Scale to zero inside a pool: unload an idle pooled model (its memory freed, no pod
    restarted), load it again on the first request through the gateway.

    The same evidence as :func:`zero_decision`, ``after`` being the model's
    ``spec.serving.pool.scaleToZeroAfterSeconds`` (None: off). The record is on the
    model itself (it has no Deployment): the pool's placement leaves a marked model
    out, and its loader unloads it; clearing the mark places and loads it again.
    """
    mark = ZeroMark.parse(scaled_to_zero) if scaled_to_zero else None
    if mark is not None:
        cleared: dict[str, str | None] = {
            SCALED_TO_ZERO_ANNOTATION: None,
            ACTIVATED_AT_ANNOTATION: iso(now),
        }
        if after is None:
            return ScaleChange(None, cleared, "Activated", "scale to zero is off: loading it again")
        if activity.demand_at is not None and activity.demand_at > mark.at:
            return ScaleChange(
                None,
                cleared,
                "Activated",
                f"a request arrived through the gateway at {iso(activity.demand_at)}: loading "
                f"it again in its pool, unloaded since {iso(mark.at)}",
            )
        return None
    if after is None:
        return None
    why = _idle(after, activity, activated_at, now)
    if why is None:
        return None
    return ScaleChange(
        None,
        {SCALED_TO_ZERO_ANNOTATION: ZeroMark(now, why).encode(), ACTIVATED_AT_ANNOTATION: None},
        "ScaledToZero",
        f"unloaded from its pool: {why}",
    )
