"""Per-revision series on the gateway's ``/metrics``: what a canary is judged on.

Every Triton attempt is counted by the revision of the pod it went to, with its
outcome - ``ok``, ``failed`` (5xx, timeout, refused, a stream broken after its first
byte) or ``rejected`` (a Triton 4xx: the client's fault, or a model that raises) - and
an ok attempt's latency to the answer, or to the first token of a stream:

* ``tritonfleet_gateway_revision_attempts_total{model,revision,outcome}``
* ``tritonfleet_gateway_revision_latency_seconds{model,revision}`` (histogram)

The operator reads them from every gateway replica during a canary step
(``scaling.rollout_signals``, parsed by ``desired.kube.analysis``) and compares the
canary's with the stable revision's. Bounded: only the revisions a route serves
(its endpoints' and its split's) keep series; :meth:`RevisionMetrics.keep` drops the
others when the routing table changes, so a model that rolls out daily does not
grow the page. Hot path: a dict lookup and a few additions, like the rest of the
gateway's metrics (``gateway.metrics``).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

OUTCOMES = ("ok", "failed", "rejected")


class _Revision:
    __slots__ = ("buckets", "outcomes", "sum")

    def __init__(self, buckets: int) -> None:
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.buckets = [0] * (buckets + 1)
        self.sum = 0.0


class RevisionMetrics(Collector):
    """The per-revision counters, turned into metric families at scrape time.
    ``bounds``: the latency histogram's upper bounds in seconds (the gateway's)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.stats: dict[tuple[str, str], _Revision] = {}

    def attempt(self, model: str, revision: str, outcome: str, seconds: float | None) -> None:
        st = self.stats.get((model, revision))
        if st is None:
            st = self.stats[(model, revision)] = _Revision(len(self.bounds))
        st.outcomes[outcome] += 1
        if seconds is not None:
            st.buckets[bisect_left(self.bounds, seconds)] += 1
            st.sum += seconds

    def keep(self, served: dict[str, set[str]]) -> None:
        """Drop the series of revisions no route serves any more (``served``: route →
        revisions of its endpoints and split)."""
        for key in [k for k in self.stats if k[1] not in served.get(k[0], set())]:
            del self.stats[key]

    def collect(self) -> Iterable[Metric]:
        attempts = CounterMetricFamily(
            "tritonfleet_gateway_revision_attempts",
            "Triton attempts by the revision of the pod tried, and outcome: ok, failed (5xx, "
            "timeout, refused, stream broken) or rejected (a Triton 4xx).",
            labels=["model", "revision", "outcome"],
        )
        latency = HistogramMetricFamily(
            "tritonfleet_gateway_revision_latency_seconds",
            "Latency of ok Triton attempts by revision: to the whole answer, or to the first "
            "token of a stream.",
            labels=["model", "revision"],
        )
        for (model, revision), st in self.stats.items():
            for outcome, n in st.outcomes.items():
                attempts.add_metric([model, revision, outcome], n)
            cumulative, total = [], 0
            for le, n in zip((*self.bounds, math.inf), st.buckets, strict=True):
                total += n
                cumulative.append(("+Inf" if le == math.inf else repr(le), float(total)))
            latency.add_metric([model, revision], cumulative, st.sum)
        yield attempts
        yield latency
