"""Moving a model into or out of a pool without an outage, decided purely
(desired.kube.pool_loading): where it is at home, where it is still loaded (away),
when it may be unloaded there, and that the gateway keeps being told about the pods
it is leaving until its new home serves it."""

from __future__ import annotations

from typing import Any

from tests.support.builders import model_doc
from tritonfleet.api.model import TritonModel
from tritonfleet.desired.kube import objects as ko
from tritonfleet.desired.kube.loading import TritonPod, load_target, pod_key_of
from tritonfleet.desired.kube.placement import PooledPlacement
from tritonfleet.desired.kube.pool import pool_pod_key
from tritonfleet.desired.kube.pool_loading import may_unload_away, split_pods, with_away
from tritonfleet.desired.triton.loading import ModelObservation, PodObservation, plan_loading
from tritonfleet.desired.triton.render import render_model


def target(**serving: Any) -> ko.Target:
    doc = model_doc("solo", modelName="solo", serving=serving)
    doc["metadata"].update(namespace="ml", uid="u", generation=1)
    model = TritonModel.model_validate(doc)
    return ko.model_target(model, render_model(model).revision)


POOLED = target(pool={"name": "shared", "memory": "1Gi"})
OWN = target()


def pool_pod(name: str) -> TritonPod:
    return TritonPod("ml", name, name, pool_pod_key("ml", "shared"), "127.1.0.2", "Running",
                     ready=True, created=name)  # fmt: skip


def own_pod(name: str) -> TritonPod:
    return TritonPod("ml", name, name, pod_key_of(OWN), "127.1.0.3", "Running",
                     ready=True, created=name)  # fmt: skip


PODS = [pool_pod("tsp-a"), pool_pod("tsp-b"), own_pod("tm-solo-x"), pool_pod("tsp-c")]
PLACED = PooledPlacement("shared", True, pods=("tsp-a", "tsp-b"), ready_pods=("tsp-a", "tsp-b"))


def names(pods: Any) -> list[str]:
    return [p.name for p in pods]


def test_moving_in_its_home_is_the_pool_pods_of_its_replicas_and_its_own_pods_are_away() -> None:
    split = split_pods(POOLED, PLACED, PODS)
    assert names(split.home) == ["tsp-a", "tsp-b"]
    assert names(split.away) == ["tm-solo-x", "tsp-c"]


def test_moving_out_the_pool_pods_it_is_still_listed_on_are_away() -> None:
    split = split_pods(OWN, None, PODS, listed=("tsp-a", "tm-solo-x"))
    assert names(split.home) == ["tm-solo-x"]
    assert names(split.away) == ["tsp-a"]  # listed pool pods only; other pools' pods never


def observation(pod: str, state: str | None, revision: str) -> PodObservation:
    models = {"solo": ModelObservation(state, revision=revision)} if state else {}
    return PodObservation(pod, "127.1.0.2", True, models)


def test_it_is_unloaded_from_where_it_was_only_once_its_new_home_serves_it() -> None:
    wanted = load_target(POOLED)
    home_empty = plan_loading(
        wanted, [observation("tsp-a", None, ""), observation("tsp-b", None, "")]
    )
    assert not may_unload_away(home_empty, PLACED)
    home_serves = plan_loading(
        wanted,
        [observation(p, "READY", POOLED.revision) for p in ("tsp-a", "tsp-b")],
    )
    assert may_unload_away(home_serves, PLACED)
    nowhere = PooledPlacement("shared", True)  # scaled to zero, or refused: served nowhere
    assert may_unload_away(home_empty, nowhere)


def test_until_then_the_pods_it_leaves_stay_in_its_status_for_the_gateway() -> None:
    wanted = load_target(POOLED)
    home_empty = plan_loading(
        wanted, [observation("tsp-a", None, ""), observation("tsp-b", None, "")]
    )
    away = [observation("tm-solo-x", "READY", POOLED.revision), observation("tsp-c", None, "")]
    merged = with_away(home_empty, POOLED, away, PLACED)
    states = {s.name: s.state for s in merged.states}
    assert states["tm-solo-x"] == "Ready"  # still routed to while the pool loads it
    assert "tsp-c" not in states  # does not hold it: not listed
