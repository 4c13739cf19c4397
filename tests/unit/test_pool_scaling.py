"""Autoscaling and scale to zero inside a pool, without a cluster: the pool's metric
(the worst queue time of the models it holds; no data never scales), the collector's
targets (a pool pod reports for what is loaded on it), and a pooled model unloaded
after its idle time and loaded again on the gateway's signal, with the record on the
model itself (scaling.zero over tests.support.fake_kube)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.builders import model_doc, pool_doc
from tests.support.fake_kube import FakeKube, watch
from tests.support.in_process import run_in_loop
from tritonfleet.adapters.metrics_scrape import MetricsScraper, Scraped
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube.autoscaling import (
    ACTIVATED_AT_ANNOTATION,
    QUEUE_TIME_METRIC,
    SCALED_TO_ZERO_ANNOTATION,
    Activity,
    MetricValue,
    ZeroMark,
    pooled_zero_decision,
    select_metric,
)
from tritonfleet.desired.kube.loading import TritonPod
from tritonfleet.desired.kube.pool import pool_pod_key
from tritonfleet.desired.kube.views import OwnerViews
from tritonfleet.desired.triton.metrics import NoData, QueueResult, QueueSignal
from tritonfleet.handlers.state import World
from tritonfleet.scaling.in_operator import Scaling
from tritonfleet.scaling.zero import ZeroScaler

START = 1_800_000_000.0
IDLE = QueueSignal("toy", queue_ms=0.0, pending=0.0, requests=0.0, queue_us=0.0, pods=2)
BUSY = QueueSignal("toy", queue_ms=3.0, pending=0.0, requests=12.0, queue_us=36000.0, pods=2)


def signal(ms: float) -> QueueSignal:
    return QueueSignal("m", queue_ms=ms, pending=1.0, requests=10.0, queue_us=ms * 10_000, pods=2)


# --- the pool's metric ------------------------------------------------------------------


def test_the_pool_selector_answers_the_worst_queue_of_its_models() -> None:
    results: dict[tuple[str, str], QueueResult] = {
        ("ml", "a"): signal(4.0),
        ("ml", "b"): signal(60.0),
        ("ml", "elsewhere"): signal(900.0),
    }
    pools = {("ml", "shared"): ["a", "b"]}
    answer = select_metric(QUEUE_TIME_METRIC, "ml", {"pool": "shared"}, results, {}, pools)
    assert answer == MetricValue(0.06, ("a", "b"))  # seconds


def test_a_pool_model_without_data_holds_the_pool() -> None:
    results: dict[tuple[str, str], QueueResult] = {
        ("ml", "a"): signal(4.0),
        ("ml", "b"): NoData("b", "only one scrape in the window so far"),
    }
    pools = {("ml", "shared"): ["a", "b"]}
    answer = select_metric(QUEUE_TIME_METRIC, "ml", {"pool": "shared"}, results, {}, pools)
    assert isinstance(answer, NoData)
    empty = select_metric(QUEUE_TIME_METRIC, "ml", {"pool": "none"}, results, {}, pools)
    assert isinstance(empty, NoData) and "holds no loaded model" in empty.reason


# --- the collector's targets and the metrics API's pools --------------------------------


def pool_pod(name: str) -> TritonPod:
    return TritonPod(
        "ml", name, name, pool_pod_key("ml", "shared"), "127.1.0.4", "Running", ready=True
    )


def test_the_collector_scrapes_pool_pods_for_the_models_placed_on_them() -> None:
    kube = FakeKube()
    status = {
        "models": [
            {"kind": "TritonModel", "name": "a", "tritonName": "a", "memory": "1Gi",
             "state": "Placed", "replicas": [0, 1], "pods": ["p0", "p1"]},
            {"kind": "TritonModel", "name": "idle", "tritonName": "idle", "memory": "1Gi",
             "state": "ScaledToZero"},
            {"kind": "TritonModel", "name": "big", "tritonName": "big", "memory": "9Gi",
             "state": "DoesNotFit"},
        ]
    }  # fmt: skip
    doc = pool_doc("shared", "ml", autoscaling={"windowSeconds": 20})
    doc["status"] = status
    kube.put(doc)
    kube.put(model_doc("a", "ml", serving={"pool": {"name": "shared", "memory": "1Gi"}}))
    world = World()
    watch(world, kube, [pool_pod("p0"), pool_pod("p1")])
    scaling = Scaling(world, OwnerViews(), OperatorSettings())
    targets = scaling._targets()
    assert [name for name, _ in targets[("ml", "a")]] == ["p0", "p1"]
    assert ("ml", "idle") not in targets and ("ml", "big") not in targets
    assert scaling.pools() == {("ml", "shared"): ["a"]}
    assert scaling._windows[("ml", "a")] == 20


# --- scale to zero inside a pool ----------------------------------------------------------


def test_an_idle_pooled_model_is_marked_and_activated_by_a_request() -> None:
    since = Activity(IDLE, since=START)
    assert pooled_zero_decision(60, "", "", since, START + 59) is None
    change = pooled_zero_decision(60, "", "", since, START + 60)
    assert change is not None and change.replicas is None and change.reason == "ScaledToZero"
    mark = change.annotations[SCALED_TO_ZERO_ANNOTATION]
    assert mark is not None and "no request for 60 s" in mark
    assert "replicas" not in str(change.patch())
    waiting = Activity(None, demand_at=START + 50, since=START)
    assert pooled_zero_decision(60, mark, "", waiting, START + 70) is None  # older request
    asked = Activity(None, demand_at=START + 80, since=START)
    back = pooled_zero_decision(60, mark, "", asked, START + 81)
    assert back is not None and back.reason == "Activated"
    assert back.annotations == {
        SCALED_TO_ZERO_ANNOTATION: None,
        ACTIVATED_AT_ANNOTATION: "2027-01-15T08:01:21Z",
    }
    assert pooled_zero_decision(60, "", "", Activity(BUSY, busy_at=START + 50), START + 61) is None


def test_turning_it_off_loads_it_again() -> None:
    mark = ZeroMark(START, "idle").encode()
    change = pooled_zero_decision(None, mark, "", Activity(None), START + 1)
    assert change is not None and change.reason == "Activated"


class Gateways(MetricsScraper):
    def __init__(self) -> None:
        super().__init__()
        self.newest: dict[str, float] = {}

    async def scrape(self, url: str) -> Scraped:
        lines = [
            f'tritonfleet_gateway_last_request_timestamp_seconds{{model="{m}"}} {t}'
            for m, t in self.newest.items()
        ]
        return Scraped("\n".join(lines) + "\n")


class Harness:
    def __init__(self) -> None:
        self.now = START
        self.kube = FakeKube()
        self.world = World()
        self.gateways = Gateways()
        self.results: dict[tuple[str, str], QueueResult] = {}
        pool = {"name": "shared", "memory": "1Gi", "scaleToZeroAfterSeconds": 60}
        self.kube.put(model_doc("toy", "ml", serving={"pool": pool}))
        self.kube.put(
            {
                "kind": "Pod",
                "metadata": {"name": "gateway-1", "namespace": "gw", "labels": {"app": "gateway"}},
                "status": {"podIP": "10.1.0.5"},
            }
        )
        watch(self.world, self.kube)
        settings = OperatorSettings(gateway_pod_selector="app=gateway", gateway_metrics_port=9090)
        self.scaler = ZeroScaler(
            self.world, OwnerViews(), lambda: self.results, settings, self.kube,
            scraper=self.gateways, clock=lambda: self.now,
        )  # fmt: skip

    async def at(self, seconds: float, result: QueueResult | None = IDLE) -> list[str]:
        self.now = START + seconds
        self.results = {("ml", "toy"): result} if result is not None else {}
        made = await self.scaler.round()
        watch(self.world, self.kube)
        return [change.reason for _, change in made]

    def annotations(self) -> dict[str, Any]:
        meta = self.kube.objects[("TritonModel", "ml", "toy")]["metadata"]
        return dict(meta.get("annotations") or {})


def run(test: Callable[[Harness], Awaitable[None]]) -> None:
    run_in_loop(Harness, test, lambda h: h.scaler.stop())


def test_the_scaler_marks_the_pooled_model_itself_and_brings_it_back() -> None:
    async def test(h: Harness) -> None:
        assert await h.at(0) == []
        assert await h.at(30, None) == []  # no data: the idle clock starts again
        assert await h.at(60) == []
        assert await h.at(120) == ["ScaledToZero"]
        assert SCALED_TO_ZERO_ANNOTATION in h.annotations()
        assert not h.kube.of_kind("Deployment")  # nothing of its own to scale
        assert await h.at(130, None) == []  # unloaded: no data, it stays at zero
        h.gateways.newest = {"toy": START + 135}
        assert await h.at(140, None) == ["Activated"]
        assert SCALED_TO_ZERO_ANNOTATION not in h.annotations()
        assert h.annotations()[ACTIVATED_AT_ANNOTATION]
        reasons = [e[1] for e in h.kube.events]
        assert reasons == ["ScaledToZero", "Activated"]

    run(test)
