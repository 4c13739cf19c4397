"""The loader's scheduling in-process (handlers.loading): one pass at a time per object,
pokes merged into one more pass, pod events waking the right object, what it found
handed to the reconcile (never written by the loader itself), no pod dialled again
while nothing it depends on changed (and dialled again when a pod restarts, turns
NotReady or is replaced), a failing pass retried sooner than the interval, and
deletion waiting for the unload. The Triton pods are a stand-in behind the adapter's
own interface (``PodRepositories``); tests/integration/test_operator_loading.py runs
the real thing against real tritonserver pods."""

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
from tritonfleet.desired.kube.loading import TritonPod, loading_status, pod_key_of
from tritonfleet.desired.kube.objects import Target
from tritonfleet.desired.kube.views import OwnerViews, owner_of
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

    def found(self) -> LoadPlan:
        plan = self.loader.report(KEY, self.target.revision)
        assert plan is not None, "the loader reported nothing"
        return plan

    def pod_is_now(self, **change: Any) -> None:
        """The pod's watch event: its new state in memory, and the loader told."""
        self.pod = replace(self.pod, **change)
        watch(self.world, self.kube, [self.pod])
        self.loader.pod_changed("ml", self.pod)

    async def reconcile_writes(self) -> None:
        """What the reconcile does with the loader's report: status.pods and Loaded
        written (one status write), then the loader told the status is settled."""
        body = self.kube.objects[KEY]
        owner = owner_of(body)
        new = loading_status(owner.status, self.found(), "2026-01-01T12:00:00Z",
                             generation=owner.generation)  # fmt: skip
        if new is not None:
            body["status"] = new.to_wire()
            body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        watch(self.world, self.kube, [self.pod])
        self.loader.status_settled(KEY)
        await until(lambda: not self.loader._background)

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


def test_a_pass_loads_the_revision_and_reports_it_without_writing() -> None:
    async def test(h: Harness) -> None:
        h.loader.track(KEY, h.target)
        await idle(h.loader)
        assert h.pods.loads == ["toy"]
        assert h.found().loaded and h.found().states[0].name == "tm-toy-abc"
        assert h.reconciles == [KEY]  # the reconcile writes it; Ready follows Loaded
        assert h.kube.writes_since(0) == []  # the loader itself never writes

    run(test)


def test_at_rest_no_pod_is_dialled_until_something_it_depends_on_changes() -> None:
    async def test(h: Harness) -> None:
        h.loader.track(KEY, h.target)
        await idle(h.loader)
        assert h.pods.observed == 1
        for _ in range(3):  # resyncs, reconciles, an unchanged pod event: no dial
            h.loader.track(KEY, h.target)
            h.loader.poke(KEY)
            h.loader.pod_changed("ml", h.pod)
            await idle(h.loader)
        assert h.pods.observed == 1 and not h.loader._timers  # not even a timer
        assert h.reconciles == [KEY]  # the same report: nothing for the reconcile either

        # A restarted Triton container keeps its pod and IP but lost its models.
        h.pods.serving = None
        h.pod_is_now(restarts=1)
        await idle(h.loader)
        assert h.pods.observed == 2 and h.pods.loads == ["toy", "toy"]
        # A pod that turns NotReady (strict readiness: a model it no longer serves).
        h.pod_is_now(ready=False)
        await idle(h.loader)
        assert h.pods.observed == 3
        # A pod replaced by a new one (another uid and IP).
        h.pod_is_now(uid="pod-uid-2", ip="10.0.0.8", ready=True)
        await idle(h.loader)
        assert h.pods.observed == 4
        # A new revision wanted.
        h.loader.track(KEY, replace(h.target, revision="r2"))
        await idle(h.loader)
        assert h.pods.observed == 5

    run(test)


def test_pokes_during_a_pass_make_one_more_pass_not_many() -> None:
    async def test(h: Harness) -> None:
        h.pods.gate.clear()
        h.loader.track(KEY, h.target)
        await until(lambda: h.pods.observed == 1)
        h.pod = replace(h.pod, restarts=1)  # something changed meanwhile
        watch(h.world, h.kube, [h.pod])
        for _ in range(5):
            h.loader.poke(KEY)
            h.loader.pod_changed("ml", h.pod)
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
        h.pod_is_now(phase="Failed")
        await idle(h.loader)
        assert h.pods.observed == 2

    run(test)


def test_pods_that_do_not_serve_the_revision_are_looked_at_again_with_backoff() -> None:
    async def test(h: Harness) -> None:
        h.pods.error = "connection refused"  # observed, never serving
        h.loader.track(KEY, h.target)
        await idle(h.loader)
        assert h.pods.observed == 1
        timer = h.loader._timers[KEY]
        assert timer.when() - asyncio.get_running_loop().time() <= 2.0  # not the hour

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
        assert not h.found().loaded and h.found().states[0].wanted == "older"

    run(test)


def test_the_readiness_gate_opens_once_status_pods_says_the_pod_serves() -> None:
    """The gateways read status.pods: only once it lists the pod as Ready may the
    Deployment count it available (and remove an old pod)."""

    async def test(h: Harness) -> None:
        h.loader.track(KEY, h.target)
        await idle(h.loader)
        assert h.found().loaded
        assert "tritonfleet.io/loaded" not in h.gate()  # reported, not written yet
        await h.reconcile_writes()
        assert h.status()["pods"][0]["state"] == "Ready"
        assert h.gate() == {"Ready": "False", "tritonfleet.io/loaded": "True"}  # kubelet's kept
        writes = [c for c in h.kube.calls if c[1] == "Pod"]
        assert writes == [("patch-status", "Pod", "tm-toy-abc")]
        # The pod says it is gated open now: nothing more to write.
        h.pod_is_now(gate="True")
        await idle(h.loader)
        await h.reconcile_writes()
        assert [c for c in h.kube.calls if c[1] == "Pod"] == writes
        # Triton stops answering on it (crashed, restarting): the gate closes again.
        h.pods.error = "connection refused"
        h.pod_is_now(restarts=1)
        await idle(h.loader)
        await h.reconcile_writes()
        assert h.status()["pods"][0]["state"] == "Unavailable"
        assert h.gate()["tritonfleet.io/loaded"] == "False"

    run(test)


def test_the_readiness_gate_waits_for_the_status_that_says_it() -> None:
    """A status written from an older report (the pass found more meanwhile) does not
    list the pod as Ready yet: its gate waits for the write that does."""

    async def test(h: Harness) -> None:
        h.pods.error = "connection refused"
        h.loader.track(KEY, h.target)
        await idle(h.loader)
        older = h.found()
        h.pods.error = ""
        h.pod_is_now(restarts=1)
        await idle(h.loader)
        assert h.found().loaded
        body = h.kube.objects[KEY]
        stale = loading_status(owner_of(body).status, older, "2026-01-01T12:00:00Z")
        assert stale is not None
        body["status"] = stale.to_wire()  # the reconcile wrote what it had read before
        watch(h.world, h.kube, [h.pod])
        h.loader.status_settled(KEY)
        await until(lambda: not h.loader._background)
        assert "tritonfleet.io/loaded" not in h.gate()
        await h.reconcile_writes()  # the reconcile the newer report asked for
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
