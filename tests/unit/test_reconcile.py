"""The reconcile loop in-process (handlers.reconcile): what one reconcile writes, when it
writes nothing, and that a changed spec or a re-created object always reaches it
through the shared parsed views. The API server is ``tests.support.fake_kube``
(behind the same ``KubeApi`` interface); tests/integration/test_operator.py runs the
same code against the real one."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.builders import ensemble_doc, model_doc
from tests.support.fake_kube import FakeKube, watch
from tests.support.in_process import run_in_loop
from tritonfleet.adapters.kube import ApiError
from tritonfleet.adapters.triton_repository import PodRepositories
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube.objects import FINALIZER
from tritonfleet.desired.kube.views import OwnerViews
from tritonfleet.desired.triton.loading import PodObservation
from tritonfleet.handlers.reconcile import Reconciler
from tritonfleet.handlers.state import Key, World
from tritonfleet.handlers.watches import triggers_for_member

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SETTINGS = OperatorSettings(reconcile_interval_seconds=3600)


class NoPods(PodRepositories):
    """The loader's way to the Triton pods, with no pod to dial (none runs here)."""

    async def observe(self, pods: Any, names: Any) -> tuple[PodObservation, ...]:
        return ()

    async def converge(self, pods: Any, plan: Any) -> tuple[PodObservation, ...]:
        return ()

    async def unload_everywhere(
        self, pods: Any, names: Any, *, wait: float
    ) -> tuple[PodObservation, ...]:
        return ()


class Operator:
    """One reconciler over a fake API server, its memory filled like kopf fills it."""

    def __init__(self, views: OwnerViews | None = None) -> None:
        self.kube = FakeKube()
        self.world = World()
        self.views = views or OwnerViews()
        self.reconciler = Reconciler(
            self.kube, self.world, self.views, SETTINGS, NoPods(), clock=lambda: NOW
        )

    def apply(self, doc: dict[str, Any], namespace: str = "ml") -> Key:
        body = copy.deepcopy(doc)
        body["metadata"]["namespace"] = namespace
        stored = self.kube.put(body)
        watch(self.world, self.kube)
        return (stored["kind"], namespace, stored["metadata"]["name"])

    def edit(self, key: Key, change: Callable[[dict[str, Any]], None]) -> None:
        """A user's change of the spec: the API server bumps the generation."""
        stored = self.kube.objects[key]
        change(stored["spec"])
        self.kube.change(key, generation=stored["metadata"]["generation"] + 1)
        watch(self.world, self.kube)

    def owner(self, key: Key) -> dict[str, Any]:
        return self.kube.objects[key]

    async def reconcile(self, key: Key) -> str:
        outcome = await self.reconciler.reconcile(key)
        await asyncio.sleep(0)  # Events are posted in the background
        watch(self.world, self.kube)  # the watches catch up with our writes
        return outcome

    async def converge(self, key: Key, rounds: int = 5) -> None:
        """Reconcile until a reconcile writes nothing (the loader included)."""
        for _ in range(rounds):
            if await self.reconcile(key) == "noop":
                return
        raise AssertionError(f"{key} still writes after {rounds} reconciles: {self.kube.calls}")


def run(test: Callable[[Operator], Awaitable[None]]) -> None:
    run_in_loop(Operator, test, lambda op: op.reconciler.stop())


def named(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects}


def conditions(body: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in body["status"]["conditions"]}


def test_a_new_model_gets_its_children_status_and_one_event() -> None:
    async def test(op: Operator) -> None:
        key = op.apply(model_doc("toy"))
        assert await op.reconcile(key) == "changed"
        # The loader's first pass (Loaded: no pods yet) may land between the reconcile's
        # writes; its status write then waits for the next reconcile, as in a cluster.
        await op.converge(key)
        owner = op.owner(key)
        revision = owner["status"]["rollout"]["targetRevision"]
        assert "revision" not in owner["status"]  # nothing is rolled out yet
        assert owner["metadata"]["finalizers"] == [FINALIZER]
        assert conditions(owner)["Valid"] == ("True", "SpecValid")
        assert conditions(owner)["Synced"] == ("False", "Syncing")
        assert set(named(op.kube.of_kind("Job"))) == {f"tm-toy-sync-{revision}"}
        assert set(named(op.kube.of_kind("ConfigMap"))) == {f"tm-toy-{revision}"}
        assert set(named(op.kube.of_kind("Service"))) == {"tm-toy"}
        assert set(named(op.kube.of_kind("PersistentVolumeClaim"))) == {"tritonfleet-models"}
        (deployment,) = op.kube.of_kind("Deployment")
        assert deployment["spec"]["replicas"] == 0  # nothing synced yet
        job = named(op.kube.of_kind("Job"))[f"tm-toy-sync-{revision}"]
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--revision") + 1] == revision  # the one computed here
        assert [e[:2] for e in op.kube.events] == [("Normal", "Syncing")]

    run(test)


def test_nothing_changed_means_nothing_written() -> None:
    async def test(op: Operator) -> None:
        key = op.apply(model_doc("toy"))
        await op.converge(key)
        mark = len(op.kube.calls)
        assert await op.reconcile(key) == "noop"
        assert op.kube.writes_since(mark) == []

    run(test)


def test_a_spec_change_reaches_the_reconcile_through_the_cache() -> None:
    async def test(op: Operator) -> None:
        key = op.apply(model_doc("toy"))
        await op.converge(key)
        first = op.owner(key)["status"]["rollout"]["targetRevision"]

        def new_code(spec: dict[str, Any]) -> None:
            spec["source"]["inline"]["files"]["1/model.py"] = "# version two\n"

        op.edit(key, new_code)
        assert await op.reconcile(key) == "changed"
        await op.converge(key)
        second = op.owner(key)["status"]["rollout"]["targetRevision"]
        assert second != first
        assert f"tm-toy-sync-{second}" in named(op.kube.of_kind("Job"))

    run(test)


def test_a_re_created_object_is_not_mistaken_for_the_old_one() -> None:
    """Same name, same generation (1), same spec: only the uid differs. Children built
    from the old object's cached view would be owned by the old uid, and the garbage
    collector would delete them."""

    async def test(op: Operator) -> None:
        key = op.apply(model_doc("toy"))
        await op.converge(key)
        old_uid = op.owner(key)["metadata"]["uid"]
        op.kube.objects.clear()  # deleted, finalizer released, children collected
        op.world.forget_owner(*key)
        watch(op.world, op.kube)
        assert await op.reconcile(key) == "gone"
        op.apply(model_doc("toy"))
        new_uid = op.owner(key)["metadata"]["uid"]
        assert new_uid != old_uid
        assert await op.reconcile(key) == "changed"
        for kind in ("Deployment", "Service", "Job", "ConfigMap"):
            (child,) = op.kube.of_kind(kind)
            assert child["metadata"]["ownerReferences"][0]["uid"] == new_uid, kind

    run(test)


def test_a_revisions_configmap_is_written_before_the_sync_job_that_mounts_it() -> None:
    """A Job created before its ConfigMap waits on a real kubelet; if the operator died
    in between, a Job that ran anyway (kwok, a retrying kubelet) would count as synced
    and the ConfigMap would never be written. So: ConfigMap first, then the rest; a
    ConfigMap that cannot be written holds back the Job."""

    async def test(op: Operator) -> None:
        key = op.apply(model_doc("toy"))
        op.kube.fail[("apply", "ConfigMap")] = ApiError(
            500, "InternalError", "etcd is slow", "apply", "/api/v1"
        )
        mark = len(op.kube.calls)
        with pytest.raises(ApiError):
            await op.reconcile(key)
        assert op.kube.of_kind("Job") == [] and op.kube.of_kind("Deployment") == []
        watch(op.world, op.kube)
        await op.reconcile(key)
        writes = [(verb, kind) for verb, kind, _ in op.kube.writes_since(mark)]
        first_job = writes.index(("apply", "Job"))
        assert ("apply", "ConfigMap") in writes[:first_job]
        assert len(op.kube.of_kind("Job")) == 1 and len(op.kube.of_kind("ConfigMap")) == 1

    run(test)


def test_a_failed_child_write_is_a_warning_and_an_error_to_retry() -> None:
    async def test(op: Operator) -> None:
        key = op.apply(model_doc("toy"))
        op.kube.fail[("apply", "Deployment")] = ApiError(
            500, "InternalError", "etcd is slow", "apply", "/apis/apps/v1"
        )
        with pytest.raises(ApiError) as raised:
            await op.reconcile(key)
        assert raised.value.reason == "ApplyFailed"
        await asyncio.sleep(0)
        ((_, reason, message),) = [e for e in op.kube.events if e[0] == "Warning"]
        assert reason == "ApplyFailed" and "Deployment tm-toy" in message
        assert "etcd is slow" in message
        assert op.kube.of_kind("Deployment") == []
        watch(op.world, op.kube)
        await op.converge(key)  # the retry creates it
        assert len(op.kube.of_kind("Deployment")) == 1

    run(test)


@pytest.mark.parametrize(
    ("error", "warned"),
    [
        (ApiError(500, "InternalError", "etcd is slow", "create", "/api/v1/events"), True),
        (
            ApiError(403, "Forbidden", "unable to create new content in namespace ml "
                     "because it is being terminated", "create", "/api/v1/events"),
            False,
        ),
    ],
    ids=["failure", "namespace-going"],
)  # fmt: skip
def test_an_event_refused_because_its_namespace_is_going_is_no_warning(
    error: ApiError, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # A namespace deleted with models in it once logged a warning per model and event.
    async def test(op: Operator) -> None:
        key = op.apply(model_doc("toy"))
        op.kube.fail[("event", "TritonModel")] = error
        with caplog.at_level(logging.DEBUG, logger="tritonfleet"):
            await op.converge(key)  # its first Event (Syncing) is posted on the way
        records = [r for r in caplog.records if "could not post event" in r.getMessage()]
        assert [r.levelno for r in records] == [logging.WARNING if warned else logging.DEBUG]

    run(test)


def test_a_status_written_by_someone_else_meanwhile_is_not_overwritten() -> None:
    async def test(op: Operator) -> None:
        key = op.apply(model_doc("toy"))
        await op.converge(key)
        op.edit(key, lambda spec: spec.update(modelName="toy_v2"))
        op.kube.change(key)  # a write the watch has not brought yet
        mark = len(op.kube.calls)
        await op.reconciler.reconcile(key)  # no exception: it tries again on the newer copy
        assert ("patch-status", "TritonModel", "toy") in op.kube.calls[mark:]
        assert op.owner(key)["status"]["observedGeneration"] == 1  # refused: 409
        watch(op.world, op.kube)
        await op.converge(key)
        assert op.owner(key)["status"]["observedGeneration"] == 2

    run(test)


def test_an_ensemble_is_re_checked_when_one_of_its_members_changes() -> None:
    world, views, kube = World(), OwnerViews(), FakeKube()
    for doc in (model_doc("toy"), model_doc("other"), ensemble_doc("pipe"), ensemble_doc("solo")):
        doc["metadata"]["namespace"] = "ml"
        kube.put(doc)
    kube.objects[("ModelEnsemble", "ml", "solo")]["spec"]["steps"][0]["model"] = "other"
    watch(world, kube)
    assert triggers_for_member(world, views, "ml", "toy") == [("ModelEnsemble", "ml", "pipe")]
    assert triggers_for_member(world, views, "ml", "other") == [("ModelEnsemble", "ml", "solo")]
    assert triggers_for_member(world, views, "elsewhere", "toy") == []


def test_deletion_unloads_then_cleans_up_then_releases() -> None:
    async def test(op: Operator) -> None:
        key = op.apply(model_doc("toy"))
        await op.converge(key)
        op.kube.change(key, deletionTimestamp="2026-01-01T11:59:59Z")
        watch(op.world, op.kube)
        await op.reconcile(key)  # starts the unload from every pod (in the background)
        assert "tm-toy-cleanup" not in named(op.kube.of_kind("Job"))
        await wait_for(lambda: "tm-toy-cleanup" in named(op.kube.of_kind("Job")), op, key)
        complete = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        op.kube.change(("Job", "ml", "tm-toy-cleanup"), status=complete)
        watch(op.world, op.kube)
        await op.reconcile(key)
        assert key not in op.kube.objects  # the finalizer was released
        assert ("Normal", "CleanedUp") in [e[:2] for e in op.kube.events]

    run(test)


async def wait_for(done: Callable[[], bool], op: Operator, key: Key, rounds: int = 50) -> None:
    """Reconcile (as the loader's request would) until ``done``; the loader's unload
    runs in the background between rounds."""
    for _ in range(rounds):
        if done():
            return
        await asyncio.sleep(0)
        await op.reconcile(key)
    raise AssertionError("the condition never held")


def test_ready_once_every_object_was_looked_at_even_while_work_keeps_coming() -> None:
    """/readyz after a restart over a fleet that is still converging: every object known
    once the memory is complete reconciled once is enough; the queue need not be empty."""

    async def test(op: Operator) -> None:
        first, second = op.apply(model_doc("a")), op.apply(model_doc("b"))
        assert op.reconciler.not_ready() == "2 object(s) not looked at yet"
        await op.reconciler._reconcile_safely(first)
        op.reconciler.request(first)  # more work for it: a child changed meanwhile
        assert op.reconciler.not_ready() == "1 object(s) not looked at yet"
        await op.reconciler._reconcile_safely(second)
        assert op.reconciler.not_ready() is None
        op.apply(model_doc("c"))  # a later new object is work, not unreadiness
        assert op.reconciler.not_ready() is None

    run(test)
