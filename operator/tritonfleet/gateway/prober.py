"""Background watchers of the Triton pods in the routing table.

* Health: every ``interval`` seconds, ``GET /v2/models/<m>/ready`` on each
  (model, pod). Not ready (or connection refused) → the pod is skipped for
  that model. No answer in time, :data:`HUNG_AFTER` probes in a row → the pod
  is hung (a stopped or wedged process still accepts connections, so only
  missing answers tell): skipped, its breaker opened, and every call in flight
  to it cut so those requests are retried elsewhere at once instead of waiting
  out their deadlines. One slow probe alone changes nothing (a busy pod is slow,
  not gone). Ready again while its breaker is open → the breaker goes half-open
  at once, so traffic returns to a restarted (or resumed) pod within one probe
  interval instead of waiting out the open period.
* Queue time (only for models with ``queueTimeAboveMs``): scrape each pod's
  Triton ``/metrics`` and turn the ``nv_inference_queue_duration_us`` and
  ``nv_inference_request_success`` counters into a mean queue time per request
  over the last interval (:func:`~tritonfleet.desired.gateway.plan.average_queue_ms`).

Probes run concurrently and are bounded by short timeouts; a slow pod delays
nothing but its own verdict.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tritonfleet.adapters.triton_http import TritonClient
from tritonfleet.desired.gateway.plan import average_queue_ms, queue_counters
from tritonfleet.gateway.breaker import BreakerState
from tritonfleet.gateway.state import GatewayState, PodRuntime, RouteRuntime

log = logging.getLogger("tritonfleet.gateway")

HUNG_AFTER = 2  # health probes in a row without an answer that make a pod "hung"


class Prober:
    def __init__(
        self,
        state: GatewayState,
        triton: TritonClient,
        interval_s: float = 1.0,
        queue_interval_s: float = 1.0,
    ) -> None:
        self.state = state
        self.triton = triton
        self.interval_s = interval_s
        self.queue_interval_s = queue_interval_s
        # (metrics_url) -> {model: (queue_us, successes)} from the previous scrape
        self._previous: dict[str, dict[str, tuple[float, float]]] = {}

    async def run_health(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.check_health()
            except Exception:  # never let the prober die: routing depends on it
                log.exception("health probe round failed")
            await asyncio.sleep(max(0.05, self.interval_s - (time.monotonic() - started)))

    async def check_health(self) -> None:
        jobs = [
            self._probe(rr, pod)
            for rr in list(self.state.routes.values())
            for pod in list(rr.pods.values())
        ]
        if jobs:
            await asyncio.gather(*jobs)

    def probe_timeout_s(self) -> float:
        return max(1.0, 2 * self.interval_s)

    async def _probe(self, rr: RouteRuntime, pod: PodRuntime) -> None:
        timeout_s = self.probe_timeout_s()
        found = await self.triton.model_ready(
            pod.endpoint.url, rr.route.triton_model, timeout_s=timeout_s
        )
        if found == "broken":
            return  # no verdict: keep what we knew
        if found == "timeout":
            pod.probe_timeouts += 1
            if pod.probe_timeouts == HUNG_AFTER:
                self._hung(rr, pod, timeout_s)
            return
        pod.probe_timeouts = 0
        ready = found == "ready"
        if ready != pod.healthy:
            log.info(
                "model %s on pod %s is %s",
                rr.route.name,
                pod.endpoint.name,
                "ready" if ready else "not ready",
            )
        pod.healthy = ready
        if ready and pod.breaker.state is BreakerState.OPEN:
            pod.breaker.probe_ok()

    def _hung(self, rr: RouteRuntime, pod: PodRuntime, timeout_s: float) -> None:
        why = f"pod stopped answering ({HUNG_AFTER} health probes got no answer in {timeout_s:g} s)"
        pod.healthy = False
        pod.breaker.failure(hard=True)
        cut = self.triton.abandon(pod.endpoint.url, why)
        log.warning(
            "model %s on pod %s: %s; %d call(s) in flight cut and retried elsewhere",
            rr.route.name,
            pod.endpoint.name,
            why,
            cut,
        )

    async def run_queue(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.check_queues()
            except Exception:
                log.exception("queue-time scrape failed")
            await asyncio.sleep(max(0.05, self.queue_interval_s - (time.monotonic() - started)))

    async def check_queues(self) -> None:
        # One scrape per pod, shared by every model on it that has a queue budget.
        wanted: dict[str, list[tuple[RouteRuntime, PodRuntime]]] = {}
        for rr in self.state.routes.values():
            fo = rr.route.failover
            if fo is None or fo.queue_time_above_ms is None:
                continue
            for pod in rr.pods.values():
                if pod.endpoint.metrics_url:
                    wanted.setdefault(pod.endpoint.metrics_url, []).append((rr, pod))
        if not wanted:
            return
        urls = list(wanted)
        texts = await asyncio.gather(*(self.triton.metrics_text(u) for u in urls))
        for url, text in zip(urls, texts, strict=True):
            if text is None:
                for _, pod in wanted[url]:
                    pod.queue_ms = None
                continue
            now = queue_counters(text)
            before = self._previous.get(url, {})
            self._previous[url] = now
            for rr, pod in wanted[url]:
                model = rr.route.triton_model
                if model not in now:
                    pod.queue_ms = None
                    continue
                pod.queue_ms = average_queue_ms(before.get(model), now[model])
        for url in set(self._previous) - set(wanted):
            del self._previous[url]
