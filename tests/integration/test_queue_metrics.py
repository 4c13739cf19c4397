"""The operator's queue-metrics collector against two real tritonservers (2.51, CPU).

Why: the autoscaler's input must match what Triton itself counts, stay 0 (not
missing) with no traffic, turn into "no data" (not 0) when the pods are gone, and
survive a pod restart (counters reset) without a negative value. Servers listen on
127.0.0.2 and 127.0.0.3 only; all traffic stays on loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from hack.devtools.triton import TritonProcess, copy_model_repository
from tritonfleet.desired.triton.metrics import NoData, QueueResult, QueueSignal
from tritonfleet.scaling.collector import QueueMetricsCollector

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

MODEL = "toy_llm"
NS = "team-a"
LABELS = {"namespace": NS, "model": MODEL}
INTERVAL = 0.25
WINDOW = 6.0
# 4 tokens x 25 ms = 100 ms per request; one instance, so concurrent requests queue.
SLOW = {"text_input": "a b c d", "max_tokens": 4, "parameters": {"token_delay_ms": 25}}


def triton_totals(servers: list[TritonProcess]) -> tuple[float, float]:
    """(queue_us, successes) summed over the servers, from Triton's own /metrics."""
    q = sum(s.metric("nv_inference_queue_duration_us", model=MODEL) or 0.0 for s in servers)
    n = sum(s.metric("nv_inference_request_success", model=MODEL) or 0.0 for s in servers)
    return q, n


class Watch:
    """Polls the collector's result, remembering every one seen."""

    def __init__(self, collector: QueueMetricsCollector, registry: CollectorRegistry) -> None:
        self.c = collector
        self.registry = registry
        self.seen: list[QueueResult] = []

    def now(self) -> QueueResult | None:
        r = self.c.result(MODEL, NS)
        if r is not None:
            self.seen.append(r)
        return r

    def gauge(self, name: str) -> float | None:
        return self.registry.get_sample_value(name, LABELS)

    async def until(self, what: str, pred: Callable[[QueueResult], bool], within: float) -> Any:
        deadline = time.monotonic() + within
        while True:
            r = self.now()
            if r is not None and pred(r):
                return r
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not after {within}s; last result {r}")
            await asyncio.sleep(0.05)

    async def next_round(self) -> None:
        target = self.c.stats.rounds + 2  # one full round that started after this call
        for _ in range(500):
            if self.c.stats.rounds >= target:
                break
            await asyncio.sleep(0.02)
        assert self.c.stats.rounds >= target, "the collector stopped scraping"
        self.now()


async def slow_burst(session: aiohttp.ClientSession, server: TritonProcess, n: int) -> None:
    url = f"{server.http_url}/v2/models/{MODEL}/generate"

    async def one() -> None:
        async with session.post(url, json=SLOW) as resp:
            assert resp.status == 200, await resp.text()

    await asyncio.gather(*(one() for _ in range(n)))


async def scenario(servers: list[TritonProcess], registry: CollectorRegistry) -> None:
    targets = [(f"triton-{i}", f"http://{s.host}:{s.metrics_port}") for i, s in enumerate(servers)]
    collector = QueueMetricsCollector(
        lambda: {MODEL: targets},
        namespace=NS,
        interval=INTERVAL,
        window=WINDOW,
        timeout=1.0,
        registry=registry,
    )
    w = Watch(collector, registry)
    collector.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            # 1. no traffic: a real 0, with data (up = 1)
            idle = await w.until("idle", lambda r: isinstance(r, QueueSignal), 5)
            assert idle.idle and idle.queue_ms == 0.0 and idle.pods == 2
            assert w.gauge("tritonfleet_queue_time_ms") == 0.0
            assert w.gauge("tritonfleet_metrics_up") == 1.0
            assert w.gauge("tritonfleet_pending_requests") == 0.0

            # 2. concurrent slow requests: queue time builds and matches Triton's counters
            before = triton_totals(servers)
            burst = asyncio.gather(*(slow_burst(session, s, 12) for s in servers))
            max_pending = 0.0
            while not burst.done():
                r = w.now()
                if isinstance(r, QueueSignal):
                    max_pending = max(max_pending, r.pending)
                await asyncio.sleep(0.05)
            await burst
            await w.next_round()
            after = triton_totals(servers)
            d_q, d_n = after[0] - before[0], after[1] - before[1]
            assert d_n == 24
            busy = w.now()
            assert isinstance(busy, QueueSignal), busy
            assert busy.requests == d_n and busy.queue_us == pytest.approx(d_q)
            assert busy.queue_ms == pytest.approx(d_q / d_n / 1000, rel=1e-6)
            assert busy.queue_ms > 10, busy  # requests really waited behind each other
            assert max_pending > 0
            assert w.gauge("tritonfleet_queue_time_seconds") == pytest.approx(busy.queue_ms / 1000)
            assert w.gauge("tritonfleet_queue_time_ms") == pytest.approx(busy.queue_ms)

            # 3. both servers killed: no data (up = 0, values absent), never 0
            for s in servers:
                s.kill()
            gone = await w.until("no data", lambda r: isinstance(r, NoData), 5)
            assert "no pod scraped" in gone.reason
            assert w.gauge("tritonfleet_metrics_up") == 0.0
            assert w.gauge("tritonfleet_queue_time_seconds") is None
            assert w.gauge("tritonfleet_queue_time_ms") is None
            assert w.gauge("tritonfleet_pending_requests") is None
            assert (w.gauge("tritonfleet_metrics_scrape_failures_total") or 0) >= 2

            # 4. one server back (its counters start again at 0): data resumes
            await asyncio.to_thread(servers[0].restart, 60.0)
            await w.until("data again", lambda r: isinstance(r, QueueSignal), 10)
            assert w.gauge("tritonfleet_metrics_up") == 1.0
            # once the pre-kill traffic has left the window, the restarted pod reads idle
            await w.until("idle again", lambda r: isinstance(r, QueueSignal) and r.idle, WINDOW + 5)
            before = triton_totals(servers[:1])
            await slow_burst(session, servers[0], 12)
            await w.next_round()
            after = triton_totals(servers[:1])
            d_q, d_n = after[0] - before[0], after[1] - before[1]
            resumed = w.now()
            assert isinstance(resumed, QueueSignal), resumed
            assert resumed.pods == 1 and resumed.requests == d_n == 12
            assert resumed.queue_ms == pytest.approx(d_q / d_n / 1000, rel=1e-6)
            assert resumed.queue_ms > 10
    finally:
        await collector.stop()

    # never a negative value, whatever happened
    for r in w.seen:
        if isinstance(r, QueueSignal):
            assert min(r.queue_ms, r.queue_us, r.requests, r.pending) >= 0, r
    assert collector.stats.failures > 0


def test_collector_with_real_triton(
    triton_factory: Callable[..., TritonProcess], tmp_path: Path
) -> None:
    repo = copy_model_repository(tmp_path / "models", [MODEL])
    servers = [
        triton_factory(repo, host=h, load_models=[MODEL]) for h in ("127.0.0.2", "127.0.0.3")
    ]
    asyncio.run(scenario(servers, CollectorRegistry()))


async def edge_cases() -> None:
    """The collector's bookkeeping against a scripted /metrics server on 127.0.0.1."""
    body: dict[str, Any] = {"text": "", "status": 200}

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=body["text"], status=body["status"])

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    registry = CollectorRegistry()
    pods: dict[Any, Any] = {"m": [("p", f"http://127.0.0.1:{port}")]}
    calls = {"n": 0}

    def source() -> dict[Any, Any]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("API server hiccup")
        return pods

    def text(q: int, n: int, pending: int) -> str:
        return (
            f'nv_inference_queue_duration_us{{model="m",version="1"}} {q}\n'
            f'nv_inference_request_success{{model="m",version="1"}} {n}\n'
            f'nv_inference_pending_request_count{{model="m",version="1"}} {pending}\n'
        )

    c = QueueMetricsCollector(source, namespace="ns", interval=1, window=60, registry=registry)
    # a second collector on the same registry shares the metric objects (no duplicate error)
    QueueMetricsCollector(dict, registry=registry)
    labels = {"namespace": "ns", "model": "m"}
    try:
        body["text"] = text(1000, 10, 0)
        first = (await c.scrape_once())[("ns", "m")]
        assert isinstance(first, NoData) and "one scrape" in first.reason
        assert registry.get_sample_value("tritonfleet_metrics_up", labels) == 0.0
        body["text"] = text(5000, 12, 3)
        r = (await c.scrape_once())[("ns", "m")]  # targets kept when the source fails
        assert isinstance(r, QueueSignal) and (r.queue_ms, r.pending) == (2.0, 3)
        body["text"] = text(3000, 1, 0)  # restarted: counters reset
        r = (await c.scrape_once())[("ns", "m")]
        assert isinstance(r, QueueSignal) and (r.queue_us, r.requests) == (7000, 3)
        body["status"] = 503  # an error answer is a failed scrape, not data
        r = (await c.scrape_once())[("ns", "m")]
        assert isinstance(r, NoData)
        assert c.stats.failures == 1 and c.stats.failures_by_pod == {"p": 1}
        assert registry.get_sample_value("tritonfleet_metrics_scrape_failures_total", labels) == 1
        pods.clear()  # the model is gone: its series go too
        assert await c.scrape_once() == {}
        assert registry.get_sample_value("tritonfleet_metrics_up", labels) is None
    finally:
        await c.stop()
        await runner.cleanup()


def test_collector_bookkeeping() -> None:
    asyncio.run(edge_cases())


async def own_windows() -> None:
    """Each model is averaged over its own ``autoscaling.windowSeconds``."""
    texts = {"text": ""}

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=texts["text"])

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    now = {"t": 0.0}
    collector = QueueMetricsCollector(
        lambda: {"short": [("p", url)], "long": [("p", url)]},
        namespace="ns",
        interval=5,
        window=30,
        registry=CollectorRegistry(),
        clock=lambda: now["t"],
        windows=lambda: {("ns", "short"): 10.0, ("ns", "long"): 120.0},
    )

    def text(n: int) -> str:
        return "".join(
            f'nv_inference_queue_duration_us{{model="{m}",version="1"}} {n * 1000}\n'
            f'nv_inference_request_success{{model="{m}",version="1"}} {n}\n'
            for m in ("short", "long")
        )

    try:
        # Requests only in the first minute, then none for 30 s.
        for t, n in ((0, 0), (30, 10), (60, 20), (80, 20), (85, 20), (90, 20)):
            now["t"], texts["text"] = t, text(n)
            results = await collector.scrape_once()
        short, long = results[("ns", "short")], results[("ns", "long")]
        assert isinstance(short, QueueSignal) and short.idle, short  # nothing in its 10 s
        assert isinstance(long, QueueSignal) and long.requests == 20, long  # all 90 s of it
    finally:
        await collector.stop()
        await runner.cleanup()


def test_each_model_has_its_own_window() -> None:
    asyncio.run(own_windows())
