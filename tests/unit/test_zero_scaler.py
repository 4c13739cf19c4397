"""Scale to zero and back in-process (scaling.zero.ZeroScaler) on its injectable clock:
only observed idleness for ``scaleToZeroAfterSeconds`` takes a model to zero, no data
never does, activity restarts the idle clock, and a request any gateway replica saw
brings it back. The API server is ``tests.support.fake_kube``, the gateway replicas'
``/metrics`` a stand-in behind ``adapters.metrics_scrape``; the e2e test runs the same
loop against real pods."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable

from tests.support.builders import model_doc
from tests.support.fake_kube import FakeKube, server_object, watch
from tests.support.in_process import run_in_loop
from tritonfleet.adapters.metrics_scrape import MetricsScraper, Scraped
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube.autoscaling import SCALED_TO_ZERO_ANNOTATION
from tritonfleet.desired.kube.objects import deployment
from tritonfleet.desired.kube.views import OwnerViews
from tritonfleet.desired.triton.metrics import NoData, QueueResult, QueueSignal
from tritonfleet.handlers.state import World
from tritonfleet.scaling.zero import ZeroScaler

START = 1_800_000_000.0
SETTINGS = OperatorSettings(gateway_pod_selector="app=gateway", gateway_metrics_port=9090)
MODEL = ("ml", "toy")
DEPLOYMENT = ("Deployment", "ml", "tm-toy")

IDLE = QueueSignal("toy", queue_ms=0.0, pending=0.0, requests=0.0, queue_us=0.0, pods=1)
BUSY = QueueSignal("toy", queue_ms=3.0, pending=0.0, requests=12.0, queue_us=36000.0, pods=1)


class Gateways(MetricsScraper):
    """Every gateway replica's /metrics: the newest request per OpenAI model name."""

    def __init__(self) -> None:
        super().__init__()
        self.newest: dict[str, float] = {}
        self.urls: list[str] = []

    async def scrape(self, url: str) -> Scraped:
        self.urls.append(url)
        lines = [
            f'tritonfleet_gateway_last_request_timestamp_seconds{{model="{m}"}} {t}'
            for m, t in self.newest.items()
        ]
        return Scraped("\n".join(lines) + "\n")


class Harness:
    def __init__(self, annotations: dict[str, str] | None = None) -> None:
        self.now = START
        self.kube = FakeKube()
        self.world = World()
        self.views = OwnerViews()
        self.gateways = Gateways()
        self.results: dict[tuple[str, str], QueueResult] = {}
        doc = model_doc(
            "toy",
            "ml",
            serving={
                "replicas": {"min": 0, "max": 2},
                "autoscaling": {"scaleToZeroAfterSeconds": 60},
            },
        )
        doc["metadata"]["annotations"] = annotations or {}
        owner = self.kube.put(doc)
        target = self.views.of(owner).target
        assert target is not None
        applied = deployment(target, SETTINGS, target.serves)
        applied["spec"]["replicas"] = 1  # the API server's default; the HPA's from here
        self.kube.objects[DEPLOYMENT] = server_object(applied, readyReplicas=1)
        self.kube.put(
            {
                "kind": "Pod",
                "metadata": {"name": "gateway-1", "namespace": "gw", "labels": {"app": "gateway"}},
                "status": {"podIP": "10.1.0.5"},
            }
        )
        watch(self.world, self.kube)
        self.scaler = ZeroScaler(
            self.world,
            self.views,
            lambda: self.results,
            SETTINGS,
            self.kube,
            scraper=self.gateways,
            clock=lambda: self.now,
        )

    async def at(self, seconds: float, result: QueueResult | None = IDLE) -> list[str]:
        """One round ``seconds`` after the start with ``result`` from the collector;
        the reasons of the changes made."""
        self.now = START + seconds
        self.results = {MODEL: result} if result is not None else {}
        made = await self.scaler.round()
        watch(self.world, self.kube)
        return [change.reason for _, change in made]

    def replicas(self) -> int:
        return int(self.kube.objects[DEPLOYMENT]["spec"]["replicas"])

    def annotations(self) -> dict[str, str]:
        return dict(self.kube.objects[DEPLOYMENT]["metadata"].get("annotations") or {})


def run(test: Callable[[Harness], Awaitable[None]]) -> None:
    run_in_loop(Harness, test, lambda h: h.scaler.stop())


def test_idle_for_the_whole_time_scales_to_zero_once() -> None:
    async def test(h: Harness) -> None:
        assert await h.at(0) == []
        assert await h.at(59) == []
        assert await h.at(61) == ["ScaledToZero"]
        assert h.replicas() == 0
        assert "no request for 60 s" in h.annotations()[SCALED_TO_ZERO_ANNOTATION]
        assert [e[:2] for e in h.kube.events] == [("Normal", "ScaledToZero")]
        assert await h.at(120) == []  # already there: nothing more to write

    run(test)


def test_no_data_never_scales_to_zero() -> None:
    async def test(h: Harness) -> None:
        for seconds in (0, 61, 600, 3600):
            assert await h.at(seconds, NoData("toy", "pods unreachable")) == []
        assert h.replicas() == 1

    run(test)


def test_idleness_counts_only_from_when_data_arrived() -> None:
    async def test(h: Harness) -> None:
        assert await h.at(0, None) == []  # the pods could not be scraped yet
        assert await h.at(50) == []  # first data: the idle clock starts here
        assert await h.at(100) == []
        assert await h.at(111) == ["ScaledToZero"]

    run(test)


def test_traffic_restarts_the_idle_clock() -> None:
    async def test(h: Harness) -> None:
        assert await h.at(0) == []
        assert await h.at(40, BUSY) == []
        assert await h.at(61) == []
        assert await h.at(99) == []
        assert await h.at(101) == ["ScaledToZero"]

    run(test)


def test_a_request_through_any_gateway_brings_it_back() -> None:
    async def test(h: Harness) -> None:
        await h.at(0)
        assert await h.at(61) == ["ScaledToZero"]
        assert h.gateways.urls == []  # no model at zero yet: the gateways were not asked
        assert await h.at(70) == []
        h.gateways.newest["toy"] = START + 75
        assert await h.at(80) == ["Activated"]
        assert h.replicas() == 1
        assert SCALED_TO_ZERO_ANNOTATION not in h.annotations()
        assert h.gateways.urls[-1] == "http://10.1.0.5:9090/metrics"
        assert ("Normal", "Activated") in [e[:2] for e in h.kube.events]

    run(test)


def test_the_openai_name_is_read_fresh_from_the_annotation() -> None:
    """The gateway labels demand with the model's OpenAI name; renaming it (an
    annotation: no new generation) must not make the scaler miss the demand."""

    async def test(h: Harness) -> None:
        await h.at(0)
        assert await h.at(61) == ["ScaledToZero"]
        owner = h.kube.objects[("TritonModel", "ml", "toy")]
        renamed = copy.deepcopy(owner["metadata"].get("annotations") or {})
        renamed["tritonfleet.io/openai-model"] = "chat"
        h.kube.change(("TritonModel", "ml", "toy"), annotations=renamed)
        watch(h.world, h.kube)
        h.gateways.newest["chat"] = START + 75
        assert await h.at(80) == ["Activated"]

    run(test)


def test_scaled_up_by_hand_clears_the_mark() -> None:
    async def test(h: Harness) -> None:
        await h.at(0)
        assert await h.at(61) == ["ScaledToZero"]
        h.kube.objects[DEPLOYMENT]["spec"]["replicas"] = 2  # kubectl scale
        h.kube.change(DEPLOYMENT)
        watch(h.world, h.kube)
        assert await h.at(70) == ["Activated"]
        assert h.replicas() == 2 and SCALED_TO_ZERO_ANNOTATION not in h.annotations()

    run(test)
