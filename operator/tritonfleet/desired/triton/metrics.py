"""Triton queue-time signals: from scraped ``/metrics`` text to one number per model.

Why: queue-time autoscaling needs, per model, the average time a request
waited in Triton's queue over a recent window, and it must never confuse "no traffic"
(a true 0, which may scale down) with "no data" (pods unreachable or not scraped yet,
which must never scale down). The math is subtle enough — counters summed over pods
and versions, counter resets when a pod restarts, per request rather than per batch
item — to live in one pure place.

Where it sits: ``tritonfleet.scaling.collector`` scrapes every Triton pod, keeps a
short history of :class:`Sample` per pod and calls :func:`window_signal` per model;
the result feeds the operator's gauges, the external metrics API the HPAs read, and
scale to zero. :func:`parse_gateway_demand` reads the gateway replicas' newest request
per model for scale to zero. The gateway (``desired.gateway.plan.queue_counters``)
reuses :func:`parse_triton_metrics`. Nothing here does I/O.

Formula, per model over the window: Σ over pods and versions of Δ
``nv_inference_queue_duration_us`` / Δ ``nv_inference_request_success`` / 1000 (ms per
request: ``request_success`` counts requests, not batch items — ``nv_inference_count``
would count items). A counter that went down means the pod restarted: the new value
is the increase since the reset. Pending = Σ of the latest
``nv_inference_pending_request_count`` of each pod.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

QUEUE_METRIC = "nv_inference_queue_duration_us"
SUCCESS_METRIC = "nv_inference_request_success"
PENDING_METRIC = "nv_inference_pending_request_count"
_WANTED = (QUEUE_METRIC, SUCCESS_METRIC, PENDING_METRIC)

_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class ModelCounters:
    """One pod's Triton counters for one model, summed over its versions."""

    queue_us: float = 0.0  # nv_inference_queue_duration_us (counter)
    success: float = 0.0  # nv_inference_request_success (counter; requests, not items)
    pending: float = 0.0  # nv_inference_pending_request_count (gauge)


ZERO = ModelCounters()


def parse_triton_metrics(text: str) -> dict[str, ModelCounters]:
    """Triton ``/metrics`` (Prometheus text exposition) → {model: counters summed over
    versions}. Only models with at least one of the three series appear; comments,
    other metrics and malformed lines are ignored."""
    sums: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line.startswith("nv_inference_"):
            continue
        m = _LINE.match(line)
        if not m or m.group(1) not in _WANTED:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        model = labels.get("model")
        if model is None:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if value != value:  # NaN: no information
            continue
        acc = sums.setdefault(model, [0.0, 0.0, 0.0])
        acc[_WANTED.index(m.group(1))] += value
    return {model: ModelCounters(q, s, p) for model, (q, s, p) in sums.items()}


GATEWAY_DEMAND_METRIC = "tritonfleet_gateway_last_request_timestamp_seconds"


def samples(text: str, names: Iterable[str]) -> Iterable[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample of the metrics ``names`` in Prometheus text;
    malformed lines and NaN values are skipped."""
    wanted = frozenset(names)
    prefixes = tuple(wanted)
    for line in text.splitlines():
        if not line.startswith(prefixes):
            continue
        m = _LINE.match(line)
        if not m or m.group(1) not in wanted:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if value == value:
            yield m.group(1), dict(_LABEL.findall(m.group(2) or "")), value


def parse_gateway_demand(text: str) -> dict[str, float]:
    """A gateway's ``/metrics`` → {route (OpenAI model name): newest request, epoch s}.

    The activation signal for scale from zero (``desired.kube.autoscaling.zero_decision``)
    is the max of these over every gateway replica."""
    out: dict[str, float] = {}
    for _, labels, stamp in samples(text, (GATEWAY_DEMAND_METRIC,)):
        model = labels.get("model")
        if model is not None and stamp > 0:
            out[model] = max(stamp, out.get(model, 0.0))
    return out


@dataclass(frozen=True, slots=True)
class Sample:
    """One successful scrape of one pod: when (monotonic seconds) and what it said."""

    at: float
    models: Mapping[str, ModelCounters]


@dataclass(frozen=True, slots=True)
class PodHistory:
    """What the collector remembers of one pod: its successful scrapes, oldest first,
    and whether the latest scrape attempt succeeded (a pod that stopped answering
    contributes nothing, even if older samples are still in the window)."""

    samples: Sequence[Sample]
    up: bool = True


def counter_increase(before: float, after: float) -> float:
    """Increase of a counter between two readings; a decrease means it was reset
    (pod restart), so the whole new value is the increase since the reset."""
    return after - before if after >= before else after


def pair_increase(before: ModelCounters, after: ModelCounters) -> tuple[float, float]:
    """(Δqueue_us, Δsuccess) between two readings of one pod. Both counters reset
    together when a pod restarts, so a decrease of either one is a reset of both —
    otherwise a restart could pair a post-reset queue value with a pre-reset count."""
    if after.queue_us < before.queue_us or after.success < before.success:
        return after.queue_us, after.success
    return after.queue_us - before.queue_us, after.success - before.success


@dataclass(frozen=True, slots=True)
class QueueSignal:
    """Data: the model's queue signal over the window.

    ``idle`` (no request completed in the window) has ``queue_ms == 0``: a real zero,
    unlike :class:`NoData`."""

    model: str
    queue_ms: float  # mean queue time per request in the window; 0 when idle
    pending: float  # Σ latest pending-request gauges
    requests: float  # Δ nv_inference_request_success over the window
    queue_us: float  # Δ nv_inference_queue_duration_us over the window
    pods: int  # pods that contributed

    @property
    def idle(self) -> bool:
        return self.requests <= 0


@dataclass(frozen=True, slots=True)
class NoData:
    """No usable data for the model in the window (pods unreachable, not scraped
    twice yet, or not reporting the model). Never to be read as zero."""

    model: str
    reason: str


QueueResult = QueueSignal | NoData


def window_signal(
    model: str, pods: Iterable[PodHistory], *, now: float, window: float
) -> QueueResult:
    """The model's queue signal over ``[now - window, now]`` from the pods' histories.

    A pod contributes when its latest scrape succeeded and it reported the model in a
    sample inside the window. Its increase is summed over consecutive samples in the
    window (a sample without the model counts as zeros: Triton creates the series at
    0 when it loads a model). A delta needs two samples; with data but no delta yet
    (first scrape) the result is :class:`NoData`, never a guessed 0.
    """
    start = now - window
    queue = success = pending = 0.0
    contributing = with_delta = 0
    seen_any = False
    for pod in pods:
        if not pod.up:
            continue
        recent = sorted((s for s in pod.samples if start <= s.at <= now), key=lambda s: s.at)
        if not recent:
            continue
        seen_any = True
        if not any(model in s.models for s in recent):
            continue
        contributing += 1
        pending += recent[-1].models.get(model, ZERO).pending
        if len(recent) < 2:
            continue
        with_delta += 1
        for before, after in pairwise(recent):
            dq, ds = pair_increase(before.models.get(model, ZERO), after.models.get(model, ZERO))
            queue += dq
            success += ds
    if contributing == 0:
        reason = (
            f"no pod reported model {model!r} in the last {window:g}s"
            if seen_any
            else f"no pod scraped in the last {window:g}s"
        )
        return NoData(model, reason)
    if with_delta == 0:
        return NoData(model, "only one scrape in the window so far")
    queue_ms = queue / success / 1000.0 if success > 0 else 0.0
    return QueueSignal(model, queue_ms, pending, success, queue, contributing)
