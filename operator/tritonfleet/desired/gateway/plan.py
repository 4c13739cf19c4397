"""The per-request choice: which Triton pods to try, in which order, and whether
the hosted provider backs them up.

:func:`plan` is pure: the gateway (``tritonfleet.gateway.state``) hands it the
route and a :class:`PodView` of each of its pods - requests in flight, health,
breaker, queue time - and the proxy runs the :class:`Plan` it returns. It
decides in two steps: which pods may take the request at all
(:func:`_candidates`, where every failover reason comes from), then the order
to try them in (:func:`_order`). Queue time, one of the views' inputs, is
computed here from two scrapes of Triton's ``/metrics``
(:func:`queue_counters`, :func:`average_queue_ms`).

While a canary runs the route has a split (revision → percent). The gateway first
picks the request's revision with :func:`next_revision` - a smooth weighted
round-robin: deterministic, so over any run of requests each revision gets its share
to within one request, and a test measures exactly what it set - and :func:`plan`
puts that revision's pods first and the other served revisions' after them: when the
chosen revision has no pod that can take the request, another revision answers
before the hosted provider is asked (continuity before failover).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

from tritonfleet.desired.gateway.routes import Endpoint, Route, Split
from tritonfleet.desired.triton.metrics import parse_triton_metrics

Reason = Literal[
    "triton",  # Triton pods to try
    "mode_hosted",  # manual hosted mode
    "no_ready_replica",  # nothing ready: cold start, scaled to zero, sync in progress
    "breaker_open",  # pods exist but every breaker is open (crash, 5xx, timeouts)
    "queue_time",  # every pod is over the queue-time budget
    "saturated",  # every pod that could answer is at its in-flight limit
]


class PodView(NamedTuple):
    """What the gateway knows about one endpoint of a route right now
    (a NamedTuple: built per pod per request, so it must be cheap)."""

    endpoint: Endpoint
    outstanding: int = 0
    healthy: bool = True  # health probe and in-cluster readiness
    admits: bool = True  # its breaker lets a request through
    queue_ms: float | None = None  # Triton's recent average queue time for the model
    saturated: bool = False  # at the gateway's in-flight limit per pod


class Plan(NamedTuple):
    pods: tuple[Endpoint, ...]  # in the order to try them
    hosted: bool  # whether the hosted provider may be used after them
    reason: Reason

    @property
    def activation(self) -> bool:
        """Demand with nothing ready: the signal to scale up from zero."""
        return self.reason == "no_ready_replica"


def next_revision(split: Split, credits: Mapping[str, int]) -> tuple[str | None, dict[str, int]]:
    """The revision the next request goes to, and the credits to keep for the one after.

    Smooth weighted round-robin: each revision earns its weight per request, the one
    with the most credit is picked and pays the total back. Over any ``total``
    consecutive requests each revision gets exactly its weight; in between its count
    is within one request of its share, and picks of a small share are spread out,
    never bunched. A revision at weight 0 is never picked (it only answers as a
    fallback). None: no revision has a weight."""
    total = sum(weight for _, weight in split if weight > 0)
    if total <= 0:
        return None, dict(credits)
    earned = {rev: credits.get(rev, 0) + weight for rev, weight in split if weight > 0}
    picked = max(earned, key=lambda rev: earned[rev])  # first of equals, in split order
    earned[picked] -= total
    return picked, earned


def plan(
    route: Route,
    pods: Sequence[PodView],
    *,
    model_admits: bool = True,
    rotation: int = 0,
    revision: str | None = None,
) -> Plan:
    """Which pods to try, least outstanding requests first, and whether the
    hosted provider backs them up. ``rotation`` breaks ties between equally
    loaded pods so they share traffic. ``revision``: while the route has a split,
    the revision picked for this request (:func:`next_revision`); pods of revisions
    outside the split are never tried."""
    can_host = route.can_host
    if route.mode == "hosted":
        return Plan((), can_host, "mode_hosted")
    if route.split:
        served = {rev for rev, _ in route.split}
        pods = [p for p in pods if p.endpoint.revision in served]
    candidates, reason = _candidates(route, pods, model_admits, can_host)
    if not candidates:
        fo = route.failover
        if reason == "saturated":
            # Busy, not broken: the request waits for a slot unless the model opted
            # into load-based spill-over (a queue-time budget).
            host = can_host and fo is not None and fo.queue_time_above_ms is not None
        else:
            unavailable = fo is not None and fo.on_unavailable
            host = can_host and (unavailable or reason != "no_ready_replica")
        return Plan((), host, reason)
    tries = max(1, route.retry.max_triton_attempts)
    if route.split and revision is not None:
        chosen = [p for p in candidates if p.endpoint.revision == revision]
        others = [p for p in candidates if p.endpoint.revision != revision]
        ordered = _order(chosen, rotation) + _order(others, rotation)
        return Plan(ordered[:tries], can_host, "triton")
    return Plan(_order(candidates, rotation)[:tries], can_host, "triton")


def _candidates(
    route: Route, pods: Sequence[PodView], model_admits: bool, can_host: bool
) -> tuple[list[PodView], Reason]:
    """The pods that may take the request, or none and the reason why."""
    healthy = [p for p in pods if p.healthy]
    if not healthy:
        return [], "no_ready_replica"
    admitted = [p for p in healthy if p.admits] if model_admits else []
    if not admitted:
        return [], "breaker_open"
    limit = route.failover.queue_time_above_ms if route.failover else None
    if limit is not None and can_host:
        # Without a provider, queue time never keeps Triton from serving.
        admitted = [p for p in admitted if p.queue_ms is None or p.queue_ms <= limit]
        if not admitted:
            return [], "queue_time"
    free = [p for p in admitted if not p.saturated]
    if not free:
        return [], "saturated"
    return free, "triton"


def _order(candidates: Sequence[PodView], rotation: int) -> tuple[Endpoint, ...]:
    """Least outstanding requests first; ``rotation`` decides among equals."""
    n = len(candidates)
    order = sorted(range(n), key=lambda i: (candidates[i].outstanding, (i - rotation) % n))
    return tuple(candidates[i].endpoint for i in order)


# --- queue time from Triton's metrics ----------------------------------------------------


def queue_counters(metrics_text: str) -> dict[str, tuple[float, float]]:
    """Triton ``/metrics`` → {model: (queue_us_total, successes_total)} summed over versions
    (parsing shared with the operator's collector: :mod:`tritonfleet.desired.triton.metrics`)."""
    return {
        model: (c.queue_us, c.success) for model, c in parse_triton_metrics(metrics_text).items()
    }


def average_queue_ms(before: tuple[float, float] | None, after: tuple[float, float]) -> float:
    """Mean queue time per request between two scrapes (0 when nothing ran:
    an idle model has no queue, which lets spilled traffic come back)."""
    if before is None:
        return 0.0
    d_queue, d_ok = after[0] - before[0], after[1] - before[1]
    if d_ok <= 0 or d_queue < 0:
        return 0.0
    return d_queue / d_ok / 1000.0
