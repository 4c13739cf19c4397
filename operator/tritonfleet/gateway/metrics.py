"""The gateway's Prometheus metrics, served on ``/metrics``.

One registry per gateway (not the process-global one), so tests and
benchmarks can run several gateways in a process. Label children are cached
in dicts: the hot path pays a dict lookup, not prometheus_client's label
validation, per observation.

Per-pod series (breaker state, requests in flight, Triton's queue time) are not
kept in gauges: they are read from the live route table at scrape time
(:class:`PodSample` from :attr:`GatewayMetrics.pods`), so a pod that left the
table - a rollout, a scale-down, a deleted model - leaves ``/metrics`` with it
instead of piling up one dead series per pod ever seen.

The activation signal for scale-from-zero lives here too: every gateway
replica counts ``tritonfleet_gateway_activation_requests_total{model}`` (demand
that found no ready replica) and keeps ``tritonfleet_gateway_last_request_timestamp_seconds``;
the autoscaler sums the counters (or takes the max timestamp) over all
gateway pods, so any number of replicas is safe — counters only grow, and no
replica needs to coordinate with another.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tritonfleet import __version__
from tritonfleet.desired.gateway.prices import Cost
from tritonfleet.gateway.revision_metrics import RevisionMetrics

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Stats:
    """Hot-path counters of one (model, backend): plain numbers, no locks."""

    __slots__ = (
        "buckets",
        "codes",
        "completion",
        "cost",
        "count",
        "estimated",
        "prompt",
        "sum",
        "ttft_buckets",
        "ttft_count",
        "ttft_sum",
    )

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0
        self.ttft_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.ttft_count = 0
        self.ttft_sum = 0.0
        self.prompt = 0
        self.completion = 0
        self.estimated = 0
        self.cost = 0.0


class _ModelStats:
    __slots__ = ("activations", "hosted_equivalent", "last_request", "savings")

    def __init__(self) -> None:
        self.activations = 0
        self.last_request = 0.0
        self.hosted_equivalent = 0.0
        self.savings = 0.0


@dataclass(frozen=True, slots=True)
class PodSample:
    """One breaker of the live route table: a Triton pod of a model, or a model-wide one
    (``pod`` ``*``; ``backend`` ``hosted`` for the provider's)."""

    model: str
    backend: str
    pod: str
    breaker: int  # 0 closed, 1 half-open, 2 open
    queue_seconds: float | None = None
    outstanding: int | None = None


def _cumulative(buckets: list[int]) -> list[tuple[str, float]]:
    out, total = [], 0
    for le, n in zip((*LATENCY_BUCKETS, math.inf), buckets, strict=True):
        total += n
        out.append((("+Inf" if le == math.inf else repr(le)), float(total)))
    return out


class _HotCollector(Collector):
    """Turns the hot-path numbers into metric families at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterable[Metric]:
        p = "tritonfleet_gateway_"
        requests = CounterMetricFamily(
            p + "requests",
            "Requests answered, by model, backend (triton, hosted, none) and HTTP status.",
            labels=["model", "backend", "code"],
        )
        latency = HistogramMetricFamily(
            p + "request_duration_seconds",
            "Time from request to the end of the answer (the whole stream for streams).",
            labels=["model", "backend"],
        )
        ttft = HistogramMetricFamily(
            p + "time_to_first_token_seconds",
            "Streams: time from request to the first chunk sent.",
            labels=["model", "backend"],
        )
        tokens = CounterMetricFamily(
            p + "tokens",
            "Tokens by model, backend and kind (prompt, completion).",
            labels=["model", "backend", "kind"],
        )
        estimated = CounterMetricFamily(
            p + "usage_estimated",
            "Answers whose token counts were estimated (the model reported none).",
            labels=["model", "backend"],
        )
        cost = CounterMetricFamily(
            p + "cost_usd",
            "Estimated cost in USD from the price table (hosted: provider prices; triton: "
            "the configured own cost, 0 by default).",
            labels=["model", "backend"],
        )
        for (model, backend), st in self.m.stats.items():
            for code, n in st.codes.items():
                requests.add_metric([model, backend, str(code)], n)
            latency.add_metric([model, backend], _cumulative(st.buckets), st.sum)
            if st.ttft_count:
                ttft.add_metric([model, backend], _cumulative(st.ttft_buckets), st.ttft_sum)
            if backend != "none":
                tokens.add_metric([model, backend, "prompt"], st.prompt)
                tokens.add_metric([model, backend, "completion"], st.completion)
                estimated.add_metric([model, backend], st.estimated)
                cost.add_metric([model, backend], st.cost)
        equivalent = CounterMetricFamily(
            p + "hosted_equivalent_usd",
            "What the tokens Triton served would have cost on the hosted provider.",
            labels=["model"],
        )
        savings = CounterMetricFamily(
            p + "savings_usd",
            "hosted_equivalent minus Triton's own cost: the saving of serving on Triton.",
            labels=["model"],
        )
        activations = CounterMetricFamily(
            p + "activation_requests",
            "Requests that found no ready Triton replica: the scale-from-zero signal "
            "(sum over gateway replicas).",
            labels=["model"],
        )
        last = GaugeMetricFamily(
            p + "last_request_timestamp_seconds",
            "Unix time of the latest request per model (max over gateway replicas).",
            labels=["model"],
        )
        for model, ms in self.m.model_stats.items():
            equivalent.add_metric([model], ms.hosted_equivalent)
            savings.add_metric([model], ms.savings)
            activations.add_metric([model], ms.activations)
            last.add_metric([model], ms.last_request)
        yield from (requests, latency, ttft, tokens, estimated, cost)
        yield from (equivalent, savings, activations, last)
        yield from self._pods()

    def _pods(self) -> Iterable[Metric]:
        p = "tritonfleet_gateway_"
        breaker = GaugeMetricFamily(
            p + "breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open. pod is the Triton pod, "
            "'*' for the model-wide breaker; backend hosted for the provider's.",
            labels=["model", "backend", "pod"],
        )
        outstanding = GaugeMetricFamily(
            p + "outstanding_requests", "Requests in flight to each Triton pod.", labels=["pod"]
        )
        queue = GaugeMetricFamily(
            p + "triton_queue_time_seconds",
            "Triton's mean queue time per request over the last scrape, per model and pod.",
            labels=["model", "pod"],
        )
        seen_pods: set[str] = set()
        for sample in self.m.pods():
            breaker.add_metric([sample.model, sample.backend, sample.pod], sample.breaker)
            if sample.queue_seconds is not None:
                queue.add_metric([sample.model, sample.pod], sample.queue_seconds)
            if sample.outstanding is not None and sample.pod not in seen_pods:
                seen_pods.add(sample.pod)
                outstanding.add_metric([sample.pod], sample.outstanding)
        yield from (breaker, outstanding, queue)


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=False)
        p = "tritonfleet_gateway_"
        # Per-request numbers are kept as plain attributes (see _Stats) and
        # turned into metric families only when /metrics is scraped: the hot
        # path pays a dict lookup and a few additions, no locks.
        self.stats: dict[tuple[str, str], _Stats] = {}
        self.model_stats: dict[str, _ModelStats] = {}
        r.register(_HotCollector(self))
        # Per-revision attempts and latency, what a canary is judged on (bounded to the
        # revisions routes serve): gateway.revision_metrics.
        self.revisions = RevisionMetrics(LATENCY_BUCKETS)
        r.register(self.revisions)
        self.errors = Counter(
            p + "errors_total",
            "Failed attempts at a backend (connect, timeout, disconnected, http_5xx, "
            "stream_broken, rate_limited...), whether or not the request was then served.",
            ["model", "backend", "kind"],
            registry=r,
        )
        self.failovers = Counter(
            p + "failovers_total",
            "Requests sent to the hosted provider instead of Triton, by reason "
            "(no_ready_replica, breaker_open, triton_failed, queue_time, mode_hosted).",
            ["model", "reason"],
            registry=r,
        )
        self.retries = Counter(
            p + "retries_total", "Re-sends of a request to another Triton pod.", ["model"],
            registry=r,
        )  # fmt: skip
        self.budget_exhausted = Counter(
            p + "retry_budget_exhausted_total",
            "Re-sends to Triton refused by the retry budget.",
            ["model"],
            registry=r,
        )
        self.routes = Gauge(
            p + "routes", "Models in the routing table.", registry=r
        )  # fmt: skip
        self.ready_pods = Gauge(
            p + "ready_pods", "Triton pods routable per model.", ["model"], registry=r
        )  # fmt: skip
        Gauge(
            "tritonfleet_build_info",
            "Always 1; the labels say which tritonfleet runs here.",
            ["version", "component"],
            registry=r,
        ).labels(__version__, "gateway").set(1)
        # The live route table's breakers, read at scrape time (set by GatewayState).
        self.pods: Callable[[], Iterable[PodSample]] = lambda: ()

    def _stats(self, model: str, backend: str) -> _Stats:
        st = self.stats.get((model, backend))
        if st is None:
            st = self.stats[(model, backend)] = _Stats()
        return st

    def _model(self, model: str) -> _ModelStats:
        ms = self.model_stats.get(model)
        if ms is None:
            ms = self.model_stats[model] = _ModelStats()
        return ms

    # -- hot path -------------------------------------------------------------------

    def answered(self, model: str, backend: str, code: int, seconds: float) -> None:
        st = self._stats(model, backend)
        st.codes[code] = st.codes.get(code, 0) + 1
        st.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        st.count += 1
        st.sum += seconds

    def first_token(self, model: str, backend: str, seconds: float) -> None:
        st = self._stats(model, backend)
        st.ttft_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        st.ttft_count += 1
        st.ttft_sum += seconds

    def demand(self, model: str, activation: bool) -> None:
        ms = self._model(model)
        ms.last_request = time.time()
        if activation:
            ms.activations += 1

    def usage(
        self,
        model: str,
        backend: str,
        prompt_tokens: int,
        completion_tokens: int,
        estimated: bool,
        cost: Cost,
    ) -> None:
        st = self._stats(model, backend)
        st.prompt += prompt_tokens
        st.completion += completion_tokens
        if estimated:
            st.estimated += 1
        st.cost += cost.usd
        if cost.hosted_equivalent_usd:
            ms = self._model(model)
            ms.hosted_equivalent += cost.hosted_equivalent_usd
            ms.savings += max(0.0, cost.saving_usd)

    # -- rare events ------------------------------------------------------------------

    def error(self, model: str, backend: str, kind: str) -> None:
        self.errors.labels(model, backend, kind).inc()

    def failover(self, model: str, reason: str) -> None:
        self.failovers.labels(model, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
