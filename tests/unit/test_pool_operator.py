"""Pools in the operator's processes, in-process: the pool's reconcile (children,
placement in its status), its pooled models' reconciles (Placed, no Deployment of
their own) and their loaders (loaded exactly on the pool pods of their replicas,
unloaded when deleted, scaled to zero or refused). The API server is
``tests.support.fake_kube``; the Triton pods a stand-in behind the adapter's own
interface. The e2e tests run the real thing (tests/e2e/test_pools.py)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from tests.support.builders import ensemble_doc, model_doc, pool_doc
from tests.support.fake_kube import FakeKube, watch
from tests.support.in_process import run_in_loop
from tritonfleet.adapters.triton_repository import PodEndpoint, PodRepositories
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube.autoscaling import SCALED_TO_ZERO_ANNOTATION
from tritonfleet.desired.kube.loading import TritonPod
from tritonfleet.desired.kube.pool import pool_pod_key
from tritonfleet.desired.kube.views import OwnerViews
from tritonfleet.desired.triton.loading import LoadPlan, ModelObservation, PodObservation
from tritonfleet.handlers.reconcile import Reconciler
from tritonfleet.handlers.state import OWNER_INDEXES, Key, World

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SETTINGS = OperatorSettings(reconcile_interval_seconds=3600, unload_timeout_seconds=1)
POOL: Key = ("TritonServerPool", "ml", "shared")
POD_NAMES = ("tsp-shared-a", "tsp-shared-b")


class PoolPods(PodRepositories):
    """Triton pods by name, each holding {model: revision}; every call recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[str, dict[str, str]] = {name: {} for name in POD_NAMES}
        self.loads: list[tuple[str, str]] = []  # (pod, model)
        self.unloads: list[tuple[str, str]] = []

    def _seen(
        self, pods: Sequence[PodEndpoint], names: Sequence[str]
    ) -> tuple[PodObservation, ...]:
        out = []
        for pod in pods:
            held = self.held.setdefault(pod.name, {})
            models = {n: ModelObservation("READY", revision=held[n]) for n in names if n in held}
            out.append(PodObservation(pod.name, pod.ip, pod.ready, models))
        return tuple(out)

    async def observe(
        self, pods: Sequence[PodEndpoint], names: Sequence[str]
    ) -> tuple[PodObservation, ...]:
        return self._seen(pods, names)

    async def converge(
        self, pods: Sequence[PodEndpoint], plan: LoadPlan
    ) -> tuple[PodObservation, ...]:
        for pod in plan.pods:
            for action in pod.actions:
                held = self.held.setdefault(pod.pod, {})
                if action.kind == "unload":
                    held.pop(action.model, None)
                    self.unloads.append((pod.pod, action.model))
                else:
                    held[action.model] = action.revision or ""
                    self.loads.append((pod.pod, action.model))
        return self._seen(pods, plan.target.names)

    async def unload_everywhere(
        self, pods: Sequence[PodEndpoint], names: Sequence[str], *, wait: float
    ) -> tuple[PodObservation, ...]:
        for pod in pods:
            for name in names:
                if self.held.setdefault(pod.name, {}).pop(name, None) is not None:
                    self.unloads.append((pod.name, name))
        return self._seen(pods, names)


def pod(name: str) -> TritonPod:
    return TritonPod(
        "ml", name, f"uid-{name}", pool_pod_key("ml", "shared"), "127.1.0.9", "Running",
        ready=True, created=name,
    )  # fmt: skip


def pooled(name: str, memory: str, **pool: Any) -> dict[str, Any]:
    return model_doc(
        name,
        modelName=name.replace("-", "_"),
        serving={"pool": {"name": "shared", "memory": memory, **pool}},
    )


class Operator:
    def __init__(self) -> None:
        self.kube = FakeKube()
        self.world = World()
        self.pods = PoolPods()
        self.pod_list = [pod(n) for n in POD_NAMES]
        self.reconciler = Reconciler(
            self.kube, self.world, OwnerViews(), SETTINGS, self.pods, clock=lambda: NOW
        )
        self.requested: list[Key] = []
        real = self.reconciler.request

        def remember(key: Key, delay: float = 0.0) -> None:
            self.requested.append(key)
            if delay <= 0:
                return  # the test reconciles by hand
            real(key, delay)

        self.reconciler.request = remember  # type: ignore[method-assign]
        self.reconciler.loader.request_reconcile = remember
        self.reconciler.pools.request = remember

    def sync(self) -> None:
        watch(self.world, self.kube, self.pod_list)

    def apply(self, doc: dict[str, Any]) -> Key:
        body = copy.deepcopy(doc)
        body["metadata"]["namespace"] = "ml"
        stored = self.kube.put(body)
        self.sync()
        return (stored["kind"], "ml", stored["metadata"]["name"])

    def owners(self) -> list[Key]:
        return sorted(self.world.owner_keys(OWNER_INDEXES))

    def finish_jobs(self) -> None:
        complete = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        for (kind, ns, name), obj in list(self.kube.objects.items()):
            if kind == "Job" and not obj.get("status"):
                self.kube.change((kind, ns, name), status=complete)
        self.sync()

    async def settle(self, rounds: int = 12) -> None:
        """Reconcile everything and let the loaders run until nothing changes."""
        for _ in range(rounds):
            before = len(self.kube.calls)
            for key in self.owners():
                await self.reconciler.reconcile(key)
                await asyncio.sleep(0)
                self.sync()
            await until(lambda: not self.reconciler.loader._tasks)
            self.sync()
            if len(self.kube.calls) == before:
                return
        raise AssertionError(f"still writing after {rounds} rounds: {self.kube.calls[-10:]}")

    def body(self, key: Key) -> dict[str, Any]:
        return self.kube.objects[key]


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


def run(test: Callable[[Operator], Awaitable[None]]) -> None:
    run_in_loop(Operator, test, lambda op: op.reconciler.stop())


def conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body["status"]["conditions"]}


def rag(**serving: Any) -> dict[str, Any]:
    doc = ensemble_doc(
        "rag",
        steps=[
            {"model": "embed", "inputMap": {"INPUT0": "IN"}, "outputMap": {"OUTPUT0": "MID"}},
            {"model": "llm", "inputMap": {"INPUT0": "MID"}, "outputMap": {"OUTPUT0": "OUT"}},
        ],
    )
    doc["spec"]["serving"] = {"pool": {"name": "shared"}, **serving}
    return doc


async def fleet(op: Operator) -> None:
    op.apply(pool_doc("shared", replicas={"min": 2, "max": 2}, gpuMemory="16Gi"))
    for name, memory in (("embed", "1Gi"), ("llm", "4Gi"), ("other", "2Gi")):
        op.apply(pooled(name, memory))
    op.apply(rag())
    await op.settle()
    op.finish_jobs()
    await op.settle()
    op.finish_jobs()  # the ensemble's sync starts once its members are synced
    await op.settle()


def test_a_pool_serves_its_models_and_an_ensemble_loaded_once_per_pod() -> None:
    async def test(op: Operator) -> None:
        await fleet(op)
        pool = op.body(POOL)
        (deployment,) = op.kube.of_kind("Deployment")
        assert deployment["metadata"]["name"] == "tsp-shared"  # no Deployment per model
        assert [r["pod"] for r in pool["status"]["placement"]] == list(POD_NAMES)
        assert pool["status"]["memorySummary"] == "14Gi/32Gi"
        assert pool["status"]["modelSummary"] == "4/4"
        for name in POD_NAMES:
            assert set(op.pods.held[name]) == {"embed", "llm", "other", "rag"}
        for name in ("embed", "llm", "other"):
            body = op.body(("TritonModel", "ml", name))
            assert conditions(body)["Ready"]["status"] == "True", conditions(body)
            assert conditions(body)["Placed"]["reason"] == "Placed"
            assert [p["name"] for p in body["status"]["pods"]] == list(POD_NAMES)
            assert body["status"]["deployment"] == "tsp-shared"
        ensemble = op.body(("ModelEnsemble", "ml", "rag"))
        assert conditions(ensemble)["Ready"]["status"] == "True", conditions(ensemble)
        # Each member loaded once per pod, whoever asked for it.
        for name in POD_NAMES:
            for model in ("embed", "llm"):
                assert op.pods.loads.count((name, model)) == 1

    run(test)


def test_a_model_that_does_not_fit_is_refused_with_the_numbers_and_nothing_moves() -> None:
    async def test(op: Operator) -> None:
        await fleet(op)
        loads = list(op.pods.loads)
        op.apply(pooled("huge", "12Gi"))
        await op.settle()
        op.finish_jobs()
        await op.settle()
        body = op.body(("TritonModel", "ml", "huge"))
        placed = conditions(body)["Placed"]
        assert placed["status"] == "False" and placed["reason"] == "DoesNotFit"
        assert "needs 12Gi on 2 replicas; free: 9Gi, 9Gi" in placed["message"]
        assert conditions(body)["Ready"]["reason"] == "DoesNotFit"
        assert conditions(body)["Loaded"]["reason"] == "NotPlaced"
        assert op.pods.loads == loads  # nothing loaded, nothing reloaded
        assert ("Warning", "DoesNotFit") in [e[:2] for e in op.kube.events]
        pool = op.body(POOL)
        assert conditions(pool)["Placed"]["status"] == "False"

    run(test)


def test_deleting_a_pooled_model_unloads_it_from_every_pod_then_cleans_up() -> None:
    async def test(op: Operator) -> None:
        await fleet(op)
        key = ("TritonModel", "ml", "other")
        op.kube.change(key, deletionTimestamp="2026-01-01T11:59:59Z")
        op.sync()
        for _ in range(20):
            await op.settle()
            if "tm-other-cleanup" in {j["metadata"]["name"] for j in op.kube.of_kind("Job")}:
                break
        assert {(p, "other") for p in POD_NAMES} <= set(op.pods.unloads)
        assert all("other" not in held for held in op.pods.held.values())
        assert all("embed" in held for held in op.pods.held.values())  # the others stay

    run(test)


def test_a_pooled_model_at_zero_is_unloaded_and_its_memory_freed() -> None:
    async def test(op: Operator) -> None:
        await fleet(op)
        key = ("TritonModel", "ml", "other")
        annotations = {SCALED_TO_ZERO_ANNOTATION: "2026-01-01T12:00:00Z idle"}
        op.kube.change(key, annotations=annotations)
        op.sync()
        await op.settle()
        await op.settle()
        assert all("other" not in held for held in op.pods.held.values())
        body = op.body(key)
        assert conditions(body)["Placed"]["reason"] == "ScaledToZero"
        assert conditions(body)["Loaded"]["reason"] == "ScaledToZero"
        assert body["status"]["pods"] == []
        pool = op.body(POOL)
        assert pool["status"]["memorySummary"] == "10Gi/32Gi"
        # Back: the record goes, it is placed and loaded again.
        op.kube.change(key, annotations={})
        op.sync()
        await op.settle()
        await op.settle()
        assert all("other" in held for held in op.pods.held.values())
        assert conditions(op.body(key))["Ready"]["status"] == "True"

    run(test)


def test_a_restarted_pool_pod_reloads_what_it_held() -> None:
    async def test(op: Operator) -> None:
        await fleet(op)
        op.pods.held["tsp-shared-b"] = {}  # the process restarted: Triton starts empty
        for key in op.owners():
            op.reconciler.loader.poke(key)  # its pod events
        await op.settle()
        assert set(op.pods.held["tsp-shared-b"]) == {"embed", "llm", "other", "rag"}

    run(test)


def test_a_new_revision_of_a_pooled_model_is_reloaded_in_place_on_its_pool_pods() -> None:
    """The rollout of a pooled model: synced, then loaded at the new revision on the pool's
    pods (no Deployment of its own, no pod restarted); the others are not touched."""

    async def test(op: Operator) -> None:
        await fleet(op)
        key = ("TritonModel", "ml", "other")
        old = op.body(key)["status"]["revision"]
        loads = len(op.pods.loads)
        changed = pooled("other", "2Gi")
        changed["spec"]["config"]["maxBatchSize"] = 4
        op.apply(changed)
        await op.settle()
        new = op.body(key)["status"]["revision"]
        assert new != old
        assert not any(op.pods.held[p].get("other") == new for p in POD_NAMES)  # not synced
        op.finish_jobs()
        await op.settle()
        body = op.body(key)
        assert conditions(body)["Ready"]["status"] == "True"
        assert {(p["name"], p["revision"]) for p in body["status"]["pods"]} == {
            (name, new) for name in POD_NAMES
        }
        assert op.pods.loads[loads:] == [(name, "other") for name in POD_NAMES]
        assert not [k for k in op.kube.objects if k[0] == "Deployment" and k[2] != "tsp-shared"]
        dep = op.body(("Deployment", "ml", "tsp-shared"))
        pod_spec = dep["spec"]["template"]["spec"]
        assert "readinessGates" not in pod_spec  # a pool pod is routed to per model
        assert "--model-repository=/models/repository" in pod_spec["containers"][0]["args"]

    run(test)
