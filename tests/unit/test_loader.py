"""The loader's scheduling in-process (handlers.loading): one pass at a time per object,
pokes merged into one more pass, pod events waking the right object, status written
only when it changes, a failing pass retried sooner than the interval, and deletion
waiting for the unload. The Triton pods are a stand-in behind the adapter's own
interface (``PodRepositories``); tests/integration/test_operator_loading.py runs the
real thing against real tritonserver pods."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.builders import model_doc
from tests.support.fake_kube import FakeKube, watch
from tests.support.in_process import run_in_loop
from tritonfleet.adapters.triton_repository import PodEndpoint, PodRepositories
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube.loading import TritonPod, pod_key_of
from tritonfleet.desired.kube.objects import Target
from tritonfleet.desired.kube.views import OwnerViews
from tritonfleet.desired.triton.loading import LoadPlan, ModelObservation, PodObservation
from tritonfleet.handlers.loading import Loader
from tritonfleet.handlers.state import Key, World

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
KEY: Key = ("TritonModel", "ml", "toy")


class Pods(PodRepositories):
    """Triton pods that serve ``serving`` (a revision, or None: nothing loaded yet);
    ``gate`` holds every observation until set, ``broken`` makes it raise."""

    def __init__(self) -> None:
        super().__init__()
        self.serving: str | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.broken: Exception | None = None
        self.observed = 0
        self.error = ""  # what every pod answers instead (e.g. connection refused)
        self.loads: list[str] = []
        self.unloads: list[tuple[str, ...]] = []

    def _seen(
        self, pods: Sequence[PodEndpoint], names: Sequence[str]
    ) -> tuple[PodObservation, ...]:
        state = ModelObservation("READY", revision=self.serving) if self.serving else None
        models = {n: state for n in names if state is not None and not self.error}
        return tuple(PodObservation(p.name, p.ip, p.ready, models, self.error) for p in pods)

    async def observe(
        self, pods: Sequence[PodEndpoint], names: Sequence[str]
    ) -> tuple[PodObservation, ...]:
        self.observed += 1
        await self.gate.wait()
        if self.broken is not None:
            raise self.broken
        return self._seen(pods, names)

    async def converge(
        self, pods: Sequence[PodEndpoint], plan: LoadPlan
    ) -> tuple[PodObservation, ...]:
        self.loads.extend(a.model for p in plan.pods for a in p.actions)
        self.serving = plan.target.primary.revision
        return self._seen(pods, plan.target.names)

    async def unload_everywhere(
        self, pods: Sequence[PodEndpoint], names: Sequence[str], *, wait: float
    ) -> tuple[PodObservation, ...]:
        self.unloads.append(tuple(names))
        self.serving = None
        return self._seen(pods, names)


class Harness:
    def __init__(self, interval: float = 3600) -> None:
        self.kube = FakeKube()
        self.world = World()
        self.pods = Pods()
        self.reconciles: list[Key] = []
        self.events: list[tuple[str, str]] = []
        settings = OperatorSettings(reconcile_interval_seconds=interval)
        self.loader = Loader(
            self.kube,
            self.world,
            settings,
            self.pods,
            request_reconcile=self.reconciles.append,
            post_event=lambda body, type_, reason, message: self.events.append((type_, reason)),
            clock=lambda: NOW,
        )
        doc = model_doc("toy", "ml")
        self.kube.put(doc)
        view = OwnerViews().of(self.kube.objects[KEY])
        assert view.target is not None
        self.target: Target = view.target
        self.pod = TritonPod(
            "ml", "tm-toy-abc", "pod-uid", pod_key_of(self.target), "10.0.0.7", "Running",
            ready=True, revision=self.target.revision,
            serves=f"toy={self.target.revision}", gated=True,
        )  # fmt: skip
        self.kube.put(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": self.pod.name,
             "namespace": "ml"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
        )  # fmt: skip
        watch(self.world, self.kube, [self.pod])

    def gate(self) -> dict[str, str]:
        """The pod's conditions by type, as the API server keeps them."""
        pod = self.kube.objects[("Pod", "ml", self.pod.name)]
        return {c["type"]: c["status"] for c in pod["status"]["conditions"]}

    def status(self) -> dict[str, Any]:
        return dict(self.kube.objects[KEY].get("status") or {})


def run(test: Callable[[Harness], Awaitable[None]]) -> None:
    run_in_loop(Harness, test, lambda h: h.loader.stop())


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


async def idle(loader: Loader) -> None:
    """Until no pass of any object runs."""
    await until(lambda: not loader._tasks)


def test_a_pass_loads_the_revision_and_writes_loaded_once() -> None:
    async def test(h: Harness) -> None:
        h.loader.track(KEY, h.target)
        await idle(h.loader)
        assert h.pods.loads == ["toy"]
        loaded = {c["type"]: c for c in h.status()["conditions"]}["Loaded"]
        assert loaded["status"] == "True" and loaded["observedGeneration"] == 1
        assert h.status()["pods"][0]["name"] == "tm-toy-abc"
        assert h.reconciles == [KEY]  # Ready follows Loaded
        assert h.events == [("Normal", "Loaded")]
        watch(h.world, h.kube, [replace(h.pod, gate="True")])  # the gate's watch event
        mark = len(h.kube.calls)
        h.loader.poke(KEY)
        await idle(h.loader)
        assert h.pods.observed == 2 and h.kube.writes_since(mark) == []  # nothing new

    run(test)


def test_pokes_during_a_pass_make_one_more_pass_not_many() -> None:
    async def test(h: Harness) -> None:
        h.pods.gate.clear()
        h.loader.track(KEY, h.target)
        await until(lambda: h.pods.observed == 1)
        for _ in range(5):
            h.loader.poke(KEY)
            h.loader.track(KEY, h.target)
        h.pods.gate.set()
        await until(lambda: h.pods.observed == 2)
        await idle(h.loader)
        assert h.pods.observed == 2

    run(test)


def test_a_pod_event_wakes_only_the_object_the_pod_serves() -> None:
    async def test(h: Harness) -> None:
        h.loader.track(KEY, h.target)
        await idle(h.loader)
        h.loader.pod_changed("ml", TritonPod("ml", "other", "u2", ("ml", "tritonmodel", "x")))
        await asyncio.sleep(0)
        assert h.pods.observed == 1
        h.loader.pod_changed("ml", h.pod)
        await idle(h.loader)
        assert h.pods.observed == 2

    run(test)


def test_a_pod_from_before_rollouts_is_observed_and_reported_never_loaded() -> None:
    """Its template names no pinned revisions: a load could reach other files."""

    async def test(h: Harness) -> None:
        old = TritonPod("ml", "tm-toy-old", "u0", h.pod.owner, "10.0.0.8", "Running",
                        ready=True, revision="older")  # fmt: skip
        watch(h.world, h.kube, [old])
        h.loader.track(KEY, h.target)
        await idle(h.loader)
        assert h.pods.observed == 1 and h.pods.loads == []
        loaded = {c["type"]: c for c in h.status()["conditions"]}["Loaded"]
        assert loaded["status"] == "False" and "wanted older" not in loaded["message"]
        assert h.status()["pods"][0]["wanted"] == "older"

    run(test)


def test_the_readiness_gate_opens_once_status_pods_says_the_pod_serves() -> None:
    """The gateways read status.pods: only once it lists the pod as Ready may the
    Deployment count it available (and remove an old pod)."""

    async def test(h: Harness) -> None:
        h.pods.gate.clear()
        h.loader.track(KEY, h.target)
        await until(lambda: h.pods.observed == 1)
        assert "tritonfleet.io/loaded" not in h.gate()
        h.pods.gate.set()
        await idle(h.loader)
        assert h.status()["pods"][0]["state"] == "Ready"
        assert h.gate() == {"Ready": "False", "tritonfleet.io/loaded": "True"}  # kubelet's kept
        writes = [c for c in h.kube.calls if c[1] == "Pod"]
        assert writes == [("patch-status", "Pod", "tm-toy-abc")]
        # The pod says it is gated open now: nothing more to write.
        watch(h.world, h.kube, [replace(h.pod, gate="True")])
        h.loader.poke(KEY)
        await idle(h.loader)
        assert [c for c in h.kube.calls if c[1] == "Pod"] == writes
        # Triton stops answering on it (crashed, restarting): the gate closes again.
        h.pods.error = "connection refused"
        h.loader.poke(KEY)
        await idle(h.loader)
        assert h.status()["pods"][0]["state"] == "Unavailable"
        assert h.gate()["tritonfleet.io/loaded"] == "False"

    run(test)


def test_the_readiness_gate_stays_shut_while_status_pods_could_not_be_written() -> None:
    """A status write that conflicts (the reconcile wrote the rollout meanwhile) leaves
    status.pods without the pod: its gate must wait for the pass that writes it."""

    async def test(h: Harness) -> None:
        h.pods.gate.clear()
        h.loader.track(KEY, h.target)
        await until(lambda: h.pods.observed == 1)
        h.kube.objects[KEY]["metadata"]["resourceVersion"] = str(10**9)  # the reconcile wrote
        h.pods.gate.set()
        await until(lambda: h.pods.observed >= 2)  # the conflict makes it plan again
        assert not h.status().get("pods")
        assert "tritonfleet.io/loaded" not in h.gate()
        h.world.remember_owner(h.kube.objects[KEY])  # the watch brings the newer object
        h.loader.poke(KEY)
        await until(lambda: bool(h.status().get("pods")))
        await idle(h.loader)
        assert h.status()["pods"][0]["state"] == "Ready"
        assert h.gate()["tritonfleet.io/loaded"] == "True"

    run(test)


def test_a_failing_pass_is_retried_sooner_than_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def test(h: Harness) -> None:
        h.pods.broken = OSError("connection refused")
        with caplog.at_level(logging.WARNING, "tritonfleet.loading"):
            h.loader.track(KEY, h.target)
            await idle(h.loader)
        assert "connection refused; again in 2s" in caplog.text  # not the hour's interval
        h.pods.broken = None

    run(test)


def test_deletion_waits_for_every_pod_to_unload() -> None:
    async def test(h: Harness) -> None:
        h.loader.track(KEY, h.target)
        await idle(h.loader)
        body = h.kube.objects[KEY]
        assert h.loader.unloaded(KEY, h.target, body) is False  # started, not confirmed
        await until(lambda: h.reconciles.count(KEY) == 2)  # the unload asks for a reconcile
        assert h.pods.unloads == [("toy",)]
        assert h.loader.unloaded(KEY, h.target, body) is True
        assert h.pods.unloads == [("toy",)]  # one unload, not one per reconcile

    run(test)
