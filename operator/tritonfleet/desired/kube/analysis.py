"""Canary analysis, the pure half: the gateway's per-revision series, turned into one
revision's numbers over a step's window, and the verdict on a canary against the
stable revision.

Why here: a canary step is judged on what the clients saw, which only the gateway
measures: every Triton attempt at a pod, by the pod's revision
(``tritonfleet_gateway_revision_attempts_total{model,revision,outcome}``: ok, failed -
5xx, timeouts, broken streams - or rejected - a Triton 4xx, which is how a model that
raises answers) and its latency to the answer, or to the first token of a stream
(``tritonfleet_gateway_revision_latency_seconds``). Queue time comes from Triton's own
metrics of each revision's pods (``desired.triton.metrics``).

Where it sits: ``scaling.rollout_signals`` scrapes every gateway replica's ``/metrics``
and keeps each one's page from when a step began; :func:`increase` takes one
replica's increase since then (a restarted gateway counts from zero), :func:`numbers`
sums replicas into a :class:`~tritonfleet.api.status.RevisionNumbers`, and the
rollout state machine (``desired.kube.rollout``) asks :func:`judge`. No I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from tritonfleet.api.rollout import CanaryAnalysis
from tritonfleet.api.status import RevisionNumbers
from tritonfleet.desired.triton.metrics import samples

ATTEMPTS_METRIC = "tritonfleet_gateway_revision_attempts_total"
LATENCY_METRIC = "tritonfleet_gateway_revision_latency_seconds"
OUTCOMES = ("ok", "failed", "rejected")

RouteRevision = tuple[str, str]  # (OpenAI model name the gateway routes, revision)


@dataclass(frozen=True)
class MeasureQuery:
    """What a canary step is judged on: one object's revisions since the step began."""

    namespace: str
    route: str  # the OpenAI model name the gateways route (and label their series with)
    model: str  # the Triton model name (Triton's queue-time series)
    pods: Mapping[str, tuple[str, ...]]  # revision → names of its pods
    since: float  # epoch seconds: when the step's traffic began


#: Gives each revision's numbers over a step, from memory (the reconcile never waits).
Measure = Callable[[MeasureQuery], Mapping[str, RevisionNumbers]]


@dataclass(frozen=True, slots=True)
class RevisionCounters:
    """One gateway replica's cumulative counters for one route's revision."""

    ok: float = 0.0
    failed: float = 0.0
    rejected: float = 0.0
    # Latency of the ok attempts: (upper bound in seconds, cumulative count), ascending.
    buckets: tuple[tuple[float, float], ...] = ()

    @property
    def attempts(self) -> float:
        return self.ok + self.failed + self.rejected

    @property
    def errors(self) -> float:
        return self.failed + self.rejected


def parse_gateway_revisions(text: str) -> dict[RouteRevision, RevisionCounters]:
    """A gateway's ``/metrics`` → {(route, revision): counters}."""
    outcomes: dict[RouteRevision, dict[str, float]] = {}
    buckets: dict[RouteRevision, dict[float, float]] = {}
    for name, labels, value in samples(text, (ATTEMPTS_METRIC, f"{LATENCY_METRIC}_bucket")):
        key = (labels.get("model", ""), labels.get("revision", ""))
        if not key[0] or not key[1]:
            continue
        if name == ATTEMPTS_METRIC and labels.get("outcome") in OUTCOMES:
            outcomes.setdefault(key, {})[labels["outcome"]] = value
        elif name == f"{LATENCY_METRIC}_bucket" and "le" in labels:
            le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            buckets.setdefault(key, {})[le] = value
    out: dict[RouteRevision, RevisionCounters] = {}
    for key in {*outcomes, *buckets}:
        counts = outcomes.get(key, {})
        out[key] = RevisionCounters(
            ok=counts.get("ok", 0.0),
            failed=counts.get("failed", 0.0),
            rejected=counts.get("rejected", 0.0),
            buckets=tuple(sorted(buckets.get(key, {}).items())),
        )
    return out


def increase(before: RevisionCounters | None, after: RevisionCounters) -> RevisionCounters:
    """One replica's counters at the end of a window minus those at its start (None:
    the replica came up during the window, its counters started at zero). Any counter
    that went down means the gateway restarted, and then everything since the reset
    (``after``) is the increase."""
    if before is None:
        return after
    went_down = (
        after.ok < before.ok or after.failed < before.failed or after.rejected < before.rejected
    )
    old = dict(before.buckets)
    if went_down or any(count < old.get(le, 0.0) for le, count in after.buckets):
        return after
    return RevisionCounters(
        ok=after.ok - before.ok,
        failed=after.failed - before.failed,
        rejected=after.rejected - before.rejected,
        buckets=tuple((le, count - old.get(le, 0.0)) for le, count in after.buckets),
    )


def _summed(parts: Iterable[RevisionCounters]) -> RevisionCounters:
    ok = failed = rejected = 0.0
    buckets: dict[float, float] = {}
    for part in parts:
        ok += part.ok
        failed += part.failed
        rejected += part.rejected
        for le, count in part.buckets:
            buckets[le] = buckets.get(le, 0.0) + count
    return RevisionCounters(ok, failed, rejected, tuple(sorted(buckets.items())))


def quantile_ms(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile of a cumulative histogram in ms, interpolated linearly inside
    its bucket (as Prometheus' histogram_quantile); None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower * 1000.0  # beyond the last finite bound: say that bound
            inside = count - below
            fraction = (rank - below) / inside if inside > 0 else 1.0
            return (lower + (le - lower) * fraction) * 1000.0
        lower, below = le, count
    return lower * 1000.0


def numbers(
    parts: Iterable[RevisionCounters], queue_time_ms: float | None = None
) -> RevisionNumbers | None:
    """The revision's numbers over the window, summed over gateway replicas."""
    listed = list(parts)
    if not listed:
        return None
    total = _summed(listed)
    attempts = round(total.attempts)
    errors = round(total.errors)
    return RevisionNumbers(
        requests=attempts,
        errors=errors,
        error_rate=round(errors / attempts, 4) if attempts else None,
        p99_latency_ms=_rounded(quantile_ms(total.buckets, 0.99)),
        queue_time_ms=_rounded(queue_time_ms),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# --- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """``Pending``: too few canary requests to say; ``Failed``: a limit is crossed (why
    says which, with the numbers); ``Passed``: none is, so far."""

    status: Literal["Pending", "Passed", "Failed"]
    why: str


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f} %"


def judge(
    analysis: CanaryAnalysis, canary: RevisionNumbers | None, stable: RevisionNumbers | None
) -> Verdict:
    """The canary against the stable revision, over the same window.

    * error rate: fails when the canary's exceeds the stable's by more than
      ``maxErrorRate`` (errors the clients cause show on both and cancel out);
    * p99 latency and queue time: fail when over their limit *and* worse than the
      stable's (an overloaded cluster slows both; that is not the canary's fault).

    Fewer than ``minRequests`` canary attempts: no verdict yet (Pending).
    """
    seen = canary.requests if canary is not None else 0
    if canary is None or seen < max(analysis.min_requests, 1):
        return Verdict("Pending", f"{seen} of {analysis.min_requests} canary requests so far")
    base_rate = stable.error_rate if stable is not None and stable.error_rate is not None else 0.0
    rate = canary.error_rate or 0.0
    if rate - base_rate > analysis.max_error_rate:
        return Verdict(
            "Failed",
            f"error rate {_percent(rate)} ({canary.errors}/{canary.requests}) against "
            f"{_percent(base_rate)} on the stable revision: more than "
            f"{analysis.max_error_rate * 100:g} points above",
        )
    checks = (
        ("p99 latency", analysis.max_p99_latency_ms, canary.p99_latency_ms, "p99_latency_ms"),
        ("queue time", analysis.max_queue_time_ms, canary.queue_time_ms, "queue_time_ms"),
    )
    for what, limit, value, field in checks:
        if limit is None or value is None or value <= limit:
            continue
        theirs = getattr(stable, field) if stable is not None else None
        if theirs is not None and value <= theirs:
            continue
        against = f" (stable: {theirs:g} ms)" if theirs is not None else ""
        return Verdict("Failed", f"{what} {value:g} ms over the limit of {limit:g} ms{against}")
    return Verdict("Passed", f"within limits over {canary.requests} canary requests")
