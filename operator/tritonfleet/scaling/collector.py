"""The operator's Triton metrics collector: scrape every pod, one queue signal per model.

Why: the queue-time autoscaler needs, per model, the average queue time per request
and the pending requests, with "no data" kept apart from "no traffic" so that a scrape
outage never scales a model down. Triton only exposes cumulative counters per pod;
this module turns them into a windowed signal.

Where it sits: ``tritonfleet.scaling`` (data plane, over ``desired``). Each
``interval`` seconds :class:`QueueMetricsCollector` asks a callable for the current
pods per model, GETs each pod's ``/metrics`` concurrently through
``adapters.metrics_scrape`` (short timeouts, failures counted, never raised), appends a
:class:`~tritonfleet.desired.triton.metrics.Sample` to a bounded per-pod history, and
computes the per-model result with the pure
:func:`~tritonfleet.desired.triton.metrics.window_signal`. Results are kept for
readers (the external metrics API, the HPA decision, scale-to-zero) and exported as
gauges on a Prometheus registry for dashboards:

* ``tritonfleet_queue_time_seconds{namespace,model}`` — mean queue time per request
  over the window (0 when idle; absent when there is no data);
  ``tritonfleet_queue_time_ms`` is the same in milliseconds, deprecated (kept for
  prometheus-adapter rules written against it until the API leaves v1alpha1);
* ``tritonfleet_pending_requests{namespace,model}`` — Σ pending-request gauges
  (absent when there is no data);
* ``tritonfleet_metrics_up{namespace,model}`` — 1 with data, 0 without;
* ``tritonfleet_metrics_scrape_failures_total{namespace,model}``.

With no data the value series are removed rather than set to 0, so a
prometheus-adapter query returns nothing (the HPA then holds its replica count).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from tritonfleet.adapters.metrics_scrape import MetricsScraper
from tritonfleet.desired.triton.metrics import (
    NoData,
    PodHistory,
    QueueResult,
    QueueSignal,
    Sample,
    parse_triton_metrics,
    window_signal,
)

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
DEFAULT_WINDOW_S = 30.0

PodTarget = tuple[str, str]  # (pod name, base metrics URL, e.g. http://10.0.0.7:8002)
ModelKey = tuple[str, str]  # (namespace, Triton model name)
# name → pods: a plain model name means the collector's ``namespace``.
PodsSource = Callable[[], Mapping[str | ModelKey, Sequence[PodTarget]]]


def metrics_endpoint(base_url: str) -> str:
    """``http://host:8002`` → ``http://host:8002/metrics`` (a full /metrics URL is kept)."""
    url = base_url.rstrip("/")
    return url if url.endswith("/metrics") else url + "/metrics"


@dataclass(slots=True)
class _Gauges:
    queue_seconds: Gauge
    queue_ms: Gauge
    pending: Gauge
    up: Gauge
    failures: Counter


_gauges_by_registry: dict[int, tuple[CollectorRegistry, _Gauges]] = {}


def _gauges(registry: CollectorRegistry) -> _Gauges:
    """One set of metric objects per registry (a second collector on the same
    registry shares them instead of failing on duplicate names)."""
    known = _gauges_by_registry.get(id(registry))
    if known is not None and known[0] is registry:
        return known[1]
    labels = ["namespace", "model"]
    g = _Gauges(
        queue_seconds=Gauge(
            "tritonfleet_queue_time_seconds",
            "Mean Triton queue time per request over the collector window, by model "
            "(0 when idle; absent when no pod could be scraped).",
            labels,
            registry=registry,
        ),
        queue_ms=Gauge(
            "tritonfleet_queue_time_ms",
            "Deprecated: tritonfleet_queue_time_seconds in milliseconds (removed when the "
            "API leaves v1alpha1).",
            labels,
            registry=registry,
        ),
        pending=Gauge(
            "tritonfleet_pending_requests",
            "Requests pending in Triton (sum of nv_inference_pending_request_count "
            "over the model's pods; absent when no data).",
            labels,
            registry=registry,
        ),
        up=Gauge(
            "tritonfleet_metrics_up",
            "1 when the collector has queue data for the model in its window, 0 when not "
            "(pods unreachable or not scraped yet: never read as zero load).",
            labels,
            registry=registry,
        ),
        failures=Counter(
            "tritonfleet_metrics_scrape_failures",
            "Failed scrapes of a Triton pod's /metrics, by the model it serves.",
            labels,
            registry=registry,
        ),
    )
    _gauges_by_registry[id(registry)] = (registry, g)
    return g


@dataclass(slots=True)
class _Pod:
    samples: deque[Sample]
    up: bool = False
    failures: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class ScrapeStats:
    rounds: int = 0
    scrapes: int = 0
    failures: int = 0
    failures_by_pod: dict[str, int] = field(default_factory=dict)


class QueueMetricsCollector:
    """Scrape Triton pods on an interval; per-model queue signals and gauges.

    ``pods()`` is called every round, so pods coming and going are followed; a pod is
    identified by (name, URL), so a replacement pod starts a fresh history while a
    restarted container (same pod) keeps it and its counter reset is detected.
    """

    def __init__(
        self,
        pods: PodsSource,
        *,
        namespace: str = "default",
        interval: float = DEFAULT_INTERVAL_S,
        window: float = DEFAULT_WINDOW_S,
        timeout: float | None = None,
        registry: CollectorRegistry | None = None,
        scraper: MetricsScraper | None = None,
        clock: Callable[[], float] = time.monotonic,
        windows: Callable[[], Mapping[ModelKey, float]] | None = None,
    ) -> None:
        if interval <= 0 or window <= 0:
            raise ValueError("interval and window must be > 0")
        self.pods_source = pods
        self.namespace = namespace
        self.interval = interval
        self.window = window
        self.timeout = timeout if timeout is not None else min(2.0, interval)
        self.clock = clock
        self.windows = windows  # a model's own window (spec.serving.autoscaling.windowSeconds)
        self.stats = ScrapeStats()
        self._history_len = math.ceil(window / interval) + 2
        self._pods: dict[PodTarget, _Pod] = {}
        self._results: dict[ModelKey, QueueResult] = {}
        self._last_targets: dict[ModelKey, list[PodTarget]] = {}
        self._gauges = _gauges(registry if registry is not None else REGISTRY)
        # A scraper handed in (its own timeout) is the caller's to close; one made here
        # is closed by stop().
        self._own_scraper = scraper is None
        self.scraper = scraper if scraper is not None else MetricsScraper(self.timeout)
        self._task: asyncio.Task[None] | None = None

    # -- reading ------------------------------------------------------------------------

    @property
    def results(self) -> Mapping[ModelKey, QueueResult]:
        """The latest result per (namespace, model)."""
        return dict(self._results)

    def result(self, model: str, namespace: str | None = None) -> QueueResult | None:
        return self._results.get((namespace or self.namespace, model))

    def queue_ms_of(
        self, namespace: str, model: str, pods: Collection[str], window: float | None = None
    ) -> float | None:
        """Mean queue time per request of ``model`` on the named pods only (one revision
        of a rollout), over ``window`` seconds at most (the history kept); None without
        data."""
        targets = [t for t in self._last_targets.get((namespace, model), []) if t[0] in pods]
        histories = [
            PodHistory(tuple(self._pods[t].samples), self._pods[t].up)
            for t in targets
            if t in self._pods
        ]
        if not histories:
            return None
        span = min(window or self.window, self.interval * (self._history_len - 1))
        result = window_signal(model, histories, now=self.clock(), window=span)
        return result.queue_ms if isinstance(result, QueueSignal) else None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` in the background (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="queue-metrics")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._own_scraper:
            await self.scraper.close()

    async def run(self) -> None:
        """Scrape every ``interval`` seconds until cancelled (rounds never overlap;
        a slow round delays the next one instead of piling up)."""
        while True:
            started = self.clock()
            try:
                await self.scrape_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one round must not stop the collector
                log.exception("queue metrics round failed")
            await asyncio.sleep(max(0.0, self.interval - (self.clock() - started)))

    # -- one round ----------------------------------------------------------------------

    def _targets(self) -> dict[ModelKey, list[PodTarget]]:
        try:
            raw = self.pods_source()
        except Exception:
            log.exception("pods source failed; keeping the previous targets")
            return self._last_targets
        out: dict[ModelKey, list[PodTarget]] = {}
        for key, pods in raw.items():
            mk = (self.namespace, key) if isinstance(key, str) else key
            out.setdefault(mk, []).extend((name, metrics_endpoint(url)) for name, url in pods)
        self._last_targets = out
        return out

    def _history_for(self, window: float) -> int:
        return max(self._history_len, math.ceil(window / self.interval) + 2)

    def _windows(self) -> Mapping[ModelKey, float]:
        if self.windows is None:
            return {}
        try:
            return self.windows()
        except Exception:
            log.exception("windows source failed; using the default window")
            return {}

    async def scrape_once(self) -> dict[ModelKey, QueueResult]:
        """One round: scrape every pod once, update histories, results and gauges."""
        targets = self._targets()
        windows = self._windows()
        wanted = {pod for pods in targets.values() for pod in pods}
        for gone in set(self._pods) - wanted:
            del self._pods[gone]
        needed: dict[PodTarget, int] = {}
        for key, pods in targets.items():
            length = self._history_for(windows.get(key, self.window))
            for pod in pods:
                needed[pod] = max(length, needed.get(pod, 0))
        for pod in wanted:
            state = self._pods.setdefault(pod, _Pod(deque(maxlen=needed[pod])))
            if state.samples.maxlen is not None and state.samples.maxlen < needed[pod]:
                state.samples = deque(state.samples, maxlen=needed[pod])  # a longer window
        order = list(wanted)
        scrapes = await asyncio.gather(*(self.scraper.scrape(url) for _, url in order))
        now = self.clock()
        self.stats.rounds += 1
        failed: set[PodTarget] = set()
        for target, scraped in zip(order, scrapes, strict=True):
            state = self._pods[target]
            self.stats.scrapes += 1
            if scraped.text is None:
                state.up = False
                state.failures += 1
                state.last_error = scraped.error
                self.stats.failures += 1
                self.stats.failures_by_pod[target[0]] = state.failures
                failed.add(target)
                log.debug("scrape of %s (%s) failed: %s", target[0], target[1], scraped.error)
                continue
            state.up = True
            state.last_error = None
            state.samples.append(Sample(now, parse_triton_metrics(scraped.text)))
        results: dict[ModelKey, QueueResult] = {}
        for key, pods in targets.items():
            histories = [PodHistory(tuple(self._pods[p].samples), self._pods[p].up) for p in pods]
            if not pods:
                result: QueueResult = NoData(key[1], "no pods serve the model")
            else:
                window = windows.get(key, self.window)
                result = window_signal(key[1], histories, now=now, window=window)
            results[key] = result
            n_failed = sum(1 for p in pods if p in failed)
            if n_failed:
                self._gauges.failures.labels(*key).inc(n_failed)
            self._export(key, result)
        for key in set(self._results) - set(results):
            self._unexport(key)
        self._results = results
        return dict(results)

    # -- export -------------------------------------------------------------------------

    def _export(self, key: ModelKey, result: QueueResult) -> None:
        g = self._gauges
        if isinstance(result, QueueSignal):
            g.queue_seconds.labels(*key).set(result.queue_ms / 1000)
            g.queue_ms.labels(*key).set(result.queue_ms)
            g.pending.labels(*key).set(result.pending)
            g.up.labels(*key).set(1)
            return
        for gauge in (g.queue_seconds, g.queue_ms, g.pending):
            with contextlib.suppress(KeyError):
                gauge.remove(*key)
        g.up.labels(*key).set(0)

    def _unexport(self, key: ModelKey) -> None:
        g = self._gauges
        for metric in (g.queue_seconds, g.queue_ms, g.pending, g.up, g.failures):
            with contextlib.suppress(KeyError):
                metric.remove(*key)
