"""The queue-time scaling's view of the operator's memory (scaling.in_operator.Scaling):
which pods the collector scrapes for which Triton models (only those an autoscaler
reads), each model's own window, an ensemble's members, and the specs read through
the same parsed views as the reconcile (once per generation, and the fleet walked
again only when a spec changed). Collector and metrics API against real Triton:
tests/integration/test_queue_metrics.py and test_metrics_api.py."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import pytest

from tests.support.builders import ensemble_doc, model_doc, with_path
from tests.support.fake_kube import FakeKube, watch
from tests.support.in_process import count_parses
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube.loading import TritonPod
from tritonfleet.desired.kube.views import OwnerViews
from tritonfleet.handlers.state import MODEL_KINDS, Key, World
from tritonfleet.scaling.in_operator import Scaling


def pod(name: str, kind: str, owner: str, ip: str, *, ready: bool = True) -> TritonPod:
    return TritonPod("ml", name, f"uid-{name}", ("ml", kind, owner), ip, "Running", ready)


def scaling_over(*docs: dict[str, Any], pods: list[TritonPod], **settings: Any) -> Scaling:
    kube, world = FakeKube(), World()
    for doc in docs:
        doc["metadata"]["namespace"] = "ml"
        kube.put(doc)
    watch(world, kube, pods)
    return Scaling(world, OwnerViews(), OperatorSettings(**settings))


def autoscaled(doc: dict[str, Any], window: int) -> dict[str, Any]:
    return with_path(doc, "spec.serving.autoscaling", {"windowSeconds": window})


def test_each_autoscaled_model_is_scraped_on_its_ready_pods_with_its_own_window() -> None:
    scaling = scaling_over(
        autoscaled(model_doc("toy", modelName="toy_llm"), 60),
        autoscaled(model_doc("far"), 30),
        model_doc("plain"),
        pods=[
            pod("toy-a", "tritonmodel", "toy", "10.0.0.1"),
            pod("toy-b", "tritonmodel", "toy", "10.0.0.2", ready=False),
            pod("far-a", "tritonmodel", "far", "10.9.0.1"),
            pod("plain-a", "tritonmodel", "plain", "10.0.0.9"),
        ],
        dial_pod_networks="10.0.0.0/16",
    )
    assert scaling._targets() == {
        ("ml", "toy_llm"): [("toy-a", "http://10.0.0.1:8002")],
        ("ml", "far"): [],  # known, but no pod it may dial: no data, never zero
        # ("plain" has no autoscaler reading its queue time: never scraped)
    }
    assert scaling._windows == {("ml", "toy_llm"): 60, ("ml", "far"): 30}


def test_an_ensemble_counts_for_its_members_and_itself() -> None:
    scaling = scaling_over(
        model_doc("toy"),
        autoscaled(ensemble_doc("pipe", modelName="pipe_v1"), 45),
        pods=[pod("pipe-a", "modelensemble", "pipe", "10.0.0.3")],
    )
    targets = scaling._targets()
    assert (
        targets[("ml", "pipe_v1")] == targets[("ml", "toy")] == [("pipe-a", "http://10.0.0.3:8002")]
    )
    assert scaling.ensembles() == {("ml", "pipe_v1"): ["toy"]}
    assert scaling._windows == {("ml", "pipe_v1"): 45}


def test_an_invalid_spec_has_nothing_to_scrape() -> None:
    broken = with_path(model_doc("toy"), "spec.config.maxBatchSize", -1)
    scaling = scaling_over(
        broken, ensemble_doc("pipe"), pods=[pod("pipe-a", "modelensemble", "pipe", "10.0.0.3")]
    )
    assert scaling._targets() == {}  # the model, and the ensemble over it
    assert scaling.ensembles() == {}


def test_every_round_and_query_reads_the_specs_parsed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed = count_parses(monkeypatch)
    scaling = scaling_over(model_doc("toy"), autoscaled(ensemble_doc("pipe"), 30), pods=[])
    for _ in range(10):
        scaling._targets()
        scaling.ensembles()
    assert sorted(parsed) == ["pipe", "toy"]


def test_the_fleet_is_walked_again_only_when_a_spec_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scaling = scaling_over(autoscaled(model_doc("toy"), 30), model_doc("plain"), pods=[])
    walks = []
    owner_keys = scaling.world.owner_keys

    def counted(kinds: Collection[str] = MODEL_KINDS) -> Iterator[Key]:
        if tuple(kinds) == MODEL_KINDS:
            walks.append(1)  # the fleet (a namespace's few pools are looked at each time)
        return owner_keys(kinds)

    monkeypatch.setattr(scaling.world, "owner_keys", counted)
    for _ in range(5):
        scaling._targets()
    assert len(walks) == 1
    world = scaling.world
    assert isinstance(world, World)
    body = world.owner("TritonModel", "ml", "plain")
    assert body is not None
    body["metadata"]["generation"] = 2
    body["spec"].setdefault("serving", {})["autoscaling"] = {"windowSeconds": 10}
    world.put_owner(body)  # a new generation of the spec comes in
    assert scaling._targets()[("ml", "plain")] == []
    assert len(walks) == 2
