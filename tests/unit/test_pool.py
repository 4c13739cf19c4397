"""A TritonServerPool without a cluster: its API (budget, refusals), its children
(desired.kube.pool: Deployment, Service, HPA) and its reconcile's status (placement
per replica and per model, refusals with the numbers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from tests.support.builders import ensemble_doc, model_doc, pool_doc, refusal
from tests.support.fake_kube import server_object
from tritonfleet.api.base import format_bytes, quantity_bytes
from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import TritonModel
from tritonfleet.api.pool import TritonServerPool, gpu_memory_budget
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube import objects as ko
from tritonfleet.desired.kube.autoscaling import hpa
from tritonfleet.desired.kube.loading import TritonPod
from tritonfleet.desired.kube.observed import summarize
from tritonfleet.desired.kube.placement import placement_of
from tritonfleet.desired.kube.pool import (
    PooledObject,
    plan_pool,
    pool_deployment,
    pool_pod_key,
    pool_target,
)

GI = 2**30
UID = "00000000-0000-4000-8000-00000000000a"
SETTINGS = OperatorSettings()
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def pool_body(
    name: str = "shared", status: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    doc = pool_doc(name, namespace="ml", **spec)
    doc["metadata"].update(uid=UID, generation=1)
    if status is not None:
        doc["status"] = status
    return doc


def parsed(**spec: Any) -> TritonServerPool:
    return TritonServerPool.from_object(pool_body(**spec))


# --- the API ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "budget"),
    [
        ({"gpuMemory": "24Gi"}, 24 * GI),
        ({"gpuMemory": None, "nodeSelector": {"nvidia.com/gpu.memory": "81920"}}, 80 * GI),
        (
            {
                "gpuMemory": None,
                "gpus": 2,
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"},
            },
            80 * GI,
        ),
        ({"gpuMemory": None, "gpuResource": "nvidia.com/mig-1g.10gb"}, 10 * GI),
    ],
)
def test_the_budget_per_replica(spec: dict[str, Any], budget: int) -> None:
    doc = pool_body()
    doc["spec"] = {k: v for k, v in {**doc["spec"], **spec}.items() if v is not None}
    told = gpu_memory_budget(TritonServerPool.from_object(doc).spec)
    assert told is not None and told[0] == budget


def test_a_pool_whose_budget_cannot_be_told_is_refused_saying_how_to_fix_it() -> None:
    doc = pool_body()
    doc["spec"] = {"nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"}}
    with pytest.raises(ValidationError) as error:
        TritonServerPool.from_object(doc)
    assert "set gpuMemory" in refusal(error.value)


def test_a_pooled_model_may_not_set_the_pools_fields_and_is_told_which() -> None:
    doc = model_doc(
        serving={"pool": {"name": "shared", "memory": "2Gi"}, "gpus": 2, "env": [{"name": "A"}]}
    )
    with pytest.raises(ValidationError) as error:
        TritonModel.model_validate(doc)
    text = refusal(error.value)
    assert "spec.serving" in text and "(set here: gpus, env)" in text


def test_a_pooled_ensemble_needs_no_memory_of_its_own() -> None:
    doc = ensemble_doc(serving={"pool": {"name": "shared"}})
    pool = ModelEnsemble.model_validate(doc).spec.serving.pool
    assert pool is not None and quantity_bytes(pool.memory) == 0
    with pytest.raises(ValidationError):
        TritonModel.model_validate(model_doc(serving={"pool": {"name": "shared"}}))


@pytest.mark.parametrize(
    ("text", "amount", "shown"),
    [
        ("16Gi", 16 * GI, "16Gi"),
        ("1.5Gi", 3 * GI // 2, "1.5Gi"),
        ("512Mi", 2**29, "512Mi"),
        ("1e9", 10**9, "953.7Mi"),
        (0, 0, "0"),
    ],
)
def test_quantities(text: str | int, amount: int, shown: str) -> None:
    assert quantity_bytes(text) == amount
    assert format_bytes(amount) == shown


# --- the children -----------------------------------------------------------------------


def test_the_pool_deployment_starts_empty_and_is_scaled_from_the_start() -> None:
    target = pool_target(parsed(replicas={"min": 2, "max": 2}))
    dep = pool_deployment(target, SETTINGS)
    assert dep["metadata"]["name"] == "tsp-shared"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "TritonServerPool"
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert labels[ko.LABEL_KIND] == "tritonserverpool" and labels[ko.LABEL_MODEL] == "shared"
    assert labels[ko.LABEL_COMPONENT] == ko.COMPONENT_SERVER
    assert "annotations" not in pod["metadata"]
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    assert "--model-control-mode=explicit" in args
    assert not [a for a in args if a.startswith("--load-model")]
    assert "--strict-readiness=false" in args
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert dep["metadata"]["annotations"][ko.SPEC_HASH_ANNOTATION] == ko.spec_hash(dep)
    assert pool_pod_key("ml", "shared") == ("ml", "tritonserverpool", "shared")


def test_an_autoscaled_pool_leaves_replicas_to_its_hpa_on_the_pools_queue_time() -> None:
    target = pool_target(
        parsed(replicas={"min": 2, "max": 4}, autoscaling={"queueTimeTargetMs": 20})
    )
    dep = pool_deployment(target, SETTINGS)
    assert "replicas" not in dep["spec"]
    autoscaler = hpa(target)
    assert autoscaler is not None
    assert autoscaler["spec"]["minReplicas"] == 2 and autoscaler["spec"]["maxReplicas"] == 4
    metric = autoscaler["spec"]["metrics"][0]["external"]
    assert metric["metric"]["selector"]["matchLabels"] == {"pool": "shared", "namespace": "ml"}
    assert metric["target"] == {"type": "Value", "value": "20m"}  # 20 ms, in seconds


# --- the reconcile's status -------------------------------------------------------------


def pod(name: str, created: str, ready: bool = True, pool: str = "shared") -> TritonPod:
    return TritonPod(
        namespace="ml",
        name=name,
        uid=name,
        owner=pool_pod_key("ml", pool),
        ip="127.1.0.9",
        phase="Running",
        ready=ready,
        created=created,
    )


def deployment_child(replicas: int = 2) -> dict[Any, Any]:
    dep = pool_deployment(
        pool_target(parsed(replicas={"min": replicas, "max": replicas})), SETTINGS
    )
    dep["metadata"].update(uid="dep", resourceVersion="1", generation=1)
    dep["status"] = {"readyReplicas": replicas}
    state = summarize(dep)
    return {state.key: state}


def obj(name: str, gi: float, replicas: int | None = None, **kw: Any) -> PooledObject:
    return PooledObject("TritonModel", name, name.replace("-", "_"), int(gi * GI), replicas, **kw)


SIX = [
    obj("embed", 1),
    obj("search", 1),
    obj("llm", 2),
    obj("llm-b", 2),
    obj("llm-c", 2),
    obj("llm-d", 2),
    PooledObject("ModelEnsemble", "rag", "rag", 0, members=("embed", "search", "llm")),
]
PODS = [pod("tsp-shared-a", "1"), pod("tsp-shared-b", "2")]


def run(
    objects: list[PooledObject],
    status: dict[str, Any] | None = None,
    pods: list[TritonPod] = PODS,
    **spec: Any,
) -> Any:
    body = pool_body(status=status, replicas={"min": 2, "max": 2}, **spec)
    return plan_pool(body, objects, pods, deployment_child(), None, SETTINGS, NOW)


def test_six_models_and_an_ensemble_over_three_on_two_replicas() -> None:
    decided = run(SIX)
    status = decided.status
    assert status is not None
    assert [(r.index, r.pod, r.ready) for r in status.placement] == [
        (0, "tsp-shared-a", True),
        (1, "tsp-shared-b", True),
    ]
    for replica in status.placement:
        assert replica.models == ["embed", "llm", "llm_b", "llm_c", "llm_d", "rag", "search"]
        assert (replica.memory_used, replica.memory_free) == ("10Gi", "6Gi")
    assert status.model_summary == "7/7"
    assert status.memory_summary == "20Gi/32Gi"
    assert status.replica_summary == "2/2"
    rag = next(m for m in status.models if m.name == "rag")
    assert rag.pods == ["tsp-shared-a", "tsp-shared-b"] and rag.state == "Placed"
    ready = {c.type: c for c in status.conditions}
    assert ready["Ready"].status == "True" and ready["Placed"].status == "True"
    kinds = {a.kind for a in decided.actions}
    assert {"Deployment", "Service", "PersistentVolumeClaim"} <= kinds
    assert len(decided.moved) == 7


def test_a_seventh_that_does_not_fit_is_refused_and_nothing_moves() -> None:
    first = run(SIX).status
    assert first is not None
    decided = run([*SIX, obj("huge", 8)], status=first.to_wire())
    status = decided.status
    assert status is not None
    huge = next(m for m in status.models if m.name == "huge")
    assert huge.state == "DoesNotFit" and huge.pods == []
    assert huge.message == "needs 8Gi on 2 replicas; free: 6Gi, 6Gi"
    placed = {c.type: c for c in status.conditions}["Placed"]
    assert placed.status == "False" and placed.reason == "DoesNotFit"
    assert "huge: needs 8Gi on 2 replicas; free: 6Gi, 6Gi" in placed.message
    assert [m for m in status.models if m.name != "huge"] == first.models
    assert decided.moved == (("TritonModel", "huge"),)
    assert any(e.type == "Warning" and e.reason == "DoesNotFit" for e in decided.events)


def test_nothing_changed_means_no_write() -> None:
    first = run(SIX).status
    assert first is not None
    body = pool_body(status=first.to_wire(), replicas={"min": 2, "max": 2})
    observed = {}
    for action in run(SIX).actions:
        assert action.body is not None
        extra = {"readyReplicas": 2} if action.kind == "Deployment" else {}
        state = summarize(server_object(action.body, **extra))
        observed[state.key] = state
    claim = summarize(
        {
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "tritonfleet-models", "namespace": "ml"},
        }
    )
    decided = plan_pool(body, SIX, PODS, observed, claim, SETTINGS, NOW)
    assert decided.status is None and decided.events == () and decided.moved == ()
    assert decided.actions == ()


def test_a_replaced_pod_takes_over_its_replica_and_models() -> None:
    first = run([obj("one", 4, replicas=1), obj("two", 4, replicas=1)]).status
    assert first is not None
    before = {m.name: (m.replicas, m.pods) for m in first.models}
    pods = [PODS[0], pod("tsp-shared-c", "3")]  # b was replaced by c
    after = run([obj("one", 4, replicas=1), obj("two", 4, replicas=1)], first.to_wire(), pods)
    assert after.status is not None
    for m in after.status.models:
        replicas, old_pods = before[m.name]
        assert m.replicas == replicas
        assert m.pods == [p.replace("tsp-shared-b", "tsp-shared-c") for p in old_pods]


def test_a_model_leaving_keeps_its_memory_until_its_status_shows_it_unloaded() -> None:
    first = run([obj("old", 12), obj("new", 10, replicas=1)]).status
    assert first is not None
    new = next(m for m in first.models if m.name == "new")
    assert new.state == "DoesNotFit"
    leaving = obj("old", 12, wanted=False, loaded_on=("tsp-shared-a",))
    during = run([leaving, obj("new", 10, replicas=1)], first.to_wire()).status
    assert during is not None
    states = {m.name: (m.state, m.replicas) for m in during.models}
    assert states["old"] == ("Leaving", [0])
    assert states["new"] == ("Placed", [1])
    gone = run([obj("old", 12, wanted=False), obj("new", 10, replicas=1)], during.to_wire()).status
    assert gone is not None
    assert [m.name for m in gone.models] == ["new"]


def test_an_invalid_pool_says_why() -> None:
    body = pool_body()
    body["spec"] = {"gpus": 1}
    decided = plan_pool(body, [], [], {}, None, SETTINGS, NOW)
    assert decided.status is not None
    valid = {c.type: c for c in decided.status.conditions}["Valid"]
    assert valid.status == "False" and "set gpuMemory" in valid.message
    assert decided.actions == ()


def test_a_pooled_model_reads_its_placement_back() -> None:
    status = run(SIX).status
    assert status is not None
    body = pool_body(status=status.to_wire())
    found = placement_of("shared", body, "TritonModel", "llm")
    assert found.found and found.entry is not None
    assert found.ready_pods == ("tsp-shared-a", "tsp-shared-b")
    assert found.deployment == "tsp-shared"
    assert not placement_of("gone", None, "TritonModel", "llm").found
    assert placement_of("shared", body, "TritonModel", "other").entry is None


def test_the_pool_has_no_replica_until_a_pooled_models_files_are_in_the_repository() -> None:
    """Triton refuses to start on a repository directory that does not exist yet;
    placement is decided ahead, on the replicas the pool will start with."""
    unsynced = [obj("embed", 1, synced=False), obj("llm", 2, synced=False)]
    decided = run(unsynced, pods=[])
    (dep,) = [a.body for a in decided.actions if a.kind == "Deployment"]
    assert dep is not None and dep["spec"]["replicas"] == 0
    assert decided.status is not None
    assert [r.models for r in decided.status.placement] == [["embed", "llm"], ["embed", "llm"]]
    started = run([obj("embed", 1), obj("llm", 2, synced=False)], pods=[])
    (dep,) = [a.body for a in started.actions if a.kind == "Deployment"]
    assert dep is not None and dep["spec"]["replicas"] == 2
