"""What a canary step is judged on, in-process (scaling.rollout_signals.RolloutSignals):
the gateway replicas are read only while a canary runs, each replica's increase counts
from its page before the step began, replicas are summed, a replica that restarts or
comes up during the step counts from zero, and queue time comes from the revision's
own pods. The API server is ``tests.support.fake_kube``; the gateway replicas' pages a
stand-in behind ``adapters.metrics_scrape``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.support.builders import model_doc
from tests.support.fake_kube import FakeKube, watch
from tests.support.in_process import run_in_loop
from tritonfleet.adapters.metrics_scrape import MetricsScraper, Scraped
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube.analysis import MeasureQuery
from tritonfleet.desired.kube.views import OwnerViews
from tritonfleet.handlers.state import World
from tritonfleet.scaling.rollout_signals import RolloutSignals, step_started

SETTINGS = OperatorSettings(gateway_pod_selector="app=gateway", gateway_metrics_port=9090)
KEY = ("TritonModel", "ml", "toy")
STEP = "2026-03-01T12:00:00Z"
OLD, NEW = "r-old", "r-new"


class Gateways(MetricsScraper):
    """Each gateway replica's page: ok/failed attempts per revision of model toy."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, dict[str, tuple[int, int]]] = {}  # url → rev → (ok, failed)
        self.scraped = 0

    async def scrape(self, url: str) -> Scraped:
        self.scraped += 1
        lines = []
        for revision, (ok, failed) in self.counts.get(url, {}).items():
            for outcome, n in (("ok", ok), ("failed", failed)):
                lines.append(
                    "tritonfleet_gateway_revision_attempts_total"
                    f'{{model="toy",revision="{revision}",outcome="{outcome}"}} {n}'
                )
        return Scraped("\n".join(lines) + "\n")


class Harness:
    def __init__(self) -> None:
        self.kube = FakeKube()
        self.world = World()
        self.gateways = Gateways()
        self.queue_asked: list[tuple[str, ...]] = []
        self.kube.put(model_doc("toy", "ml"))
        for name, ip in (("gw-1", "10.1.0.5"), ("gw-2", "10.1.0.6")):
            self.kube.put(
                {
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": "gw", "labels": {"app": "gateway"}},
                    "status": {"podIP": ip},
                }
            )
        self.urls = ["http://10.1.0.5:9090/metrics", "http://10.1.0.6:9090/metrics"]

        def queue(namespace: str, model: str, pods: tuple[str, ...], window: float) -> float:
            self.queue_asked.append(pods)
            return 4.0 if pods == ("canary-pod",) else 1.0

        self.signals = RolloutSignals(self.world, OwnerViews(), SETTINGS, self.kube, queue,
                                      scraper=self.gateways, clock=lambda: 1.0e9)  # fmt: skip
        self.rollout("Progressing")

    def rollout(self, phase: str | None, started: str = STEP) -> None:
        status = {} if phase is None else {
            "rollout": {"targetRevision": NEW, "strategy": "Canary", "phase": phase,
                        "weights": {OLD: 90, NEW: 10}, "stepStartedAt": started}
        }  # fmt: skip
        self.kube.change(KEY, status=status)
        watch(self.world, self.kube)

    def count(self, url: int, revision: str, ok: int, failed: int = 0) -> None:
        self.gateways.counts.setdefault(self.urls[url], {})[revision] = (ok, failed)

    def measure(self) -> dict[str, tuple[int, int, float | None]]:
        query = MeasureQuery(
            namespace="ml",
            route="toy",
            model="toy",
            pods={NEW: ("canary-pod",), OLD: ("stable-pod",)},
            since=step_started(STEP),
        )
        return {
            rev: (n.requests, n.errors, n.queue_time_ms)
            for rev, n in self.signals.measure(query).items()
        }


def run(test: Callable[[Harness], Awaitable[None]]) -> None:
    run_in_loop(Harness, test, lambda h: h.signals.stop())


def test_nothing_is_read_while_no_canary_runs() -> None:
    async def test(h: Harness) -> None:
        h.rollout(None)
        await h.signals.round()
        assert h.gateways.scraped == 0 and h.measure() == {}

    run(test)


def test_a_step_counts_what_every_replica_saw_since_it_began() -> None:
    async def test(h: Harness) -> None:
        h.count(0, OLD, 500)
        h.count(1, OLD, 300)
        await h.signals.round()  # a canary is starting: the pages before the step are read
        assert h.gateways.scraped == 2 and h.measure() == {}  # no step judged yet
        h.rollout("Analyzing")
        h.count(0, OLD, 590)
        h.count(0, NEW, 8, 2)
        h.count(1, OLD, 380)
        h.count(1, NEW, 10)
        await h.signals.round()
        assert h.measure() == {NEW: (20, 2, 4.0), OLD: (170, 0, 1.0)}
        assert ("canary-pod",) in h.queue_asked

    run(test)


def test_a_replica_that_restarts_counts_from_its_reset() -> None:
    async def test(h: Harness) -> None:
        h.count(0, NEW, 50)
        await h.signals.round()
        h.rollout("Analyzing")
        await h.signals.round()  # the step is seen: its baseline is the page before
        h.count(0, NEW, 6, 1)  # gw-1 restarted: its counters start again
        await h.signals.round()
        assert h.measure()[NEW][:2] == (7, 1)

    run(test)


def test_a_step_that_ends_drops_its_baseline() -> None:
    async def test(h: Harness) -> None:
        h.rollout("Analyzing")
        await h.signals.round()
        assert set(h.signals._baselines) == {("ml", "toy", step_started(STEP))}
        h.rollout("Progressing", started="2026-03-01T12:01:00Z")
        await h.signals.round()
        assert h.signals._baselines == {} and h.measure() == {}

    run(test)
