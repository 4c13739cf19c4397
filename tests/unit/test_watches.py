"""What a watch event wakes (handlers.watches.Watches, the sink of the operator's own
streams): only a change a reconcile or the loader reads wakes them, and every such
change does - a new spec, a child's readiness, a pod's IP or readiness, a deletion,
our own write coming back wakes nobody; pools are woken by their objects and pods.
The streams themselves against the real API
server: tests/integration/test_kube_watch.py."""

from __future__ import annotations

import copy
from typing import Any

from tests.support.builders import model_doc, pool_doc
from tritonfleet.desired.kube.loading import TritonPod
from tritonfleet.desired.kube.objects import LABEL_KIND, LABEL_MODEL, LOADED_GATE
from tritonfleet.desired.kube.pool import pool_pod_key
from tritonfleet.desired.kube.views import OwnerViews
from tritonfleet.handlers.state import World
from tritonfleet.handlers.watches import STREAMS, Watches


class Loader:
    def __init__(self) -> None:
        self.woken: list[tuple[str, str]] = []

    def pod_changed(self, namespace: str, pod: TritonPod) -> None:
        self.woken.append((namespace, pod.name))


class Reconciler:
    """Records what the sink asks of the reconcile and the loader."""

    def __init__(self) -> None:
        self.requested: list[tuple[str, str, str]] = []
        self.unparked: list[str | None] = []
        self.loader = Loader()

    def request(self, key: tuple[str, str, str]) -> None:
        self.requested.append(key)

    def request_claim_check(self, namespace: str) -> None:
        pass

    def unpark(self, namespace: str | None) -> None:
        self.unparked.append(namespace)

    def woken(self) -> list[Any]:
        out: list[Any] = [*self.requested, *self.loader.woken]
        self.requested.clear()
        self.loader.woken.clear()
        return out


def sink() -> tuple[Watches, Reconciler, World]:
    world, reconciler = World(), Reconciler()
    watches = Watches(None, world, OwnerViews(), reconciler)  # type: ignore[arg-type]
    watches._open = lambda scope: None  # type: ignore[method-assign]  # no streams here
    watches.start()
    watches._streams[None], watches._listed[None] = [], set()
    return watches, reconciler, world


def owner(generation: int = 1, rv: str = "10") -> dict[str, Any]:
    doc = model_doc("toy", "ml")
    doc["metadata"].update(uid="u-toy", generation=generation, resourceVersion=rv)
    return doc


def deployment(ready: int, rv: str) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {
            "name": "toy",
            "namespace": "ml",
            "uid": "u-dep",
            "generation": 1,
            "resourceVersion": rv,
            "ownerReferences": [
                {"kind": "TritonModel", "name": "toy", "uid": "u-toy", "controller": True}
            ],
        },
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "readyReplicas": ready, "availableReplicas": ready},
    }


def triton_pod(ip: str, ready: bool, rv: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {
            "name": "toy-abc",
            "namespace": "ml",
            "uid": "u-pod",
            "resourceVersion": rv,
            "labels": {LABEL_KIND: "tritonmodel", LABEL_MODEL: "toy"},
        },
        "status": {
            "podIP": ip,
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_a_new_spec_wakes_the_reconcile_and_a_relisted_or_echoed_owner_does_not() -> None:
    watches, reconciler, world = sink()
    watches.upsert("TritonModel", owner())
    assert reconciler.woken() == [("TritonModel", "ml", "toy")]
    watches.upsert("TritonModel", owner())  # listed again after a 410: the same object
    assert reconciler.woken() == []
    written = owner(rv="11")
    written["status"] = {"revision": "r1"}
    world.remember_owner(written)
    watches.upsert("TritonModel", copy.deepcopy(written))  # our own status write, echoed
    assert reconciler.woken() == []
    watches.upsert("TritonModel", owner(generation=2, rv="12"))  # the user's new spec
    assert reconciler.woken() == [("TritonModel", "ml", "toy")]
    watches.delete("TritonModel", owner(generation=2, rv="13"))
    assert reconciler.woken() == [("TritonModel", "ml", "toy")]
    assert world.owner("TritonModel", "ml", "toy") is None


def test_a_child_wakes_its_owner_when_what_the_reconcile_reads_changed() -> None:
    watches, reconciler, _ = sink()
    watches.upsert("Deployment", deployment(ready=0, rv="20"))
    assert reconciler.woken() == [("TritonModel", "ml", "toy")]
    watches.upsert("Deployment", deployment(ready=0, rv="21"))  # a status touch: same reading
    assert reconciler.woken() == []
    watches.upsert("Deployment", deployment(ready=1, rv="22"))  # its pod became Ready
    assert reconciler.woken() == [("TritonModel", "ml", "toy")]
    watches.delete("Deployment", deployment(ready=1, rv="23"))  # someone deleted it
    assert reconciler.woken() == [("TritonModel", "ml", "toy")]


def test_a_pod_wakes_the_loader_when_its_address_or_readiness_changed() -> None:
    watches, reconciler, world = sink()
    watches.upsert("Pod", triton_pod("10.0.0.1", ready=False, rv="30"))
    assert reconciler.woken() == [("ml", "toy-abc")]
    watches.upsert("Pod", triton_pod("10.0.0.1", ready=False, rv="31"))  # nothing it reads
    assert reconciler.woken() == []
    watches.upsert("Pod", triton_pod("10.0.0.1", ready=True, rv="32"))
    assert reconciler.woken() == [("ml", "toy-abc")]
    watches.upsert("Pod", triton_pod("10.0.0.2", ready=True, rv="33"))
    assert reconciler.woken() == [("ml", "toy-abc")]
    assert [p.ip for p in world.triton_pods()] == ["10.0.0.2"]
    watches.delete("Pod", triton_pod("10.0.0.2", ready=True, rv="34"))
    assert reconciler.woken() == [("ml", "toy-abc")]
    assert world.triton_pods() == []


def test_a_relist_drops_what_went_unseen_and_the_memory_is_complete_after_every_list() -> None:
    watches, reconciler, world = sink()
    watches.upsert("TritonModel", owner())
    watches.upsert("Deployment", deployment(ready=1, rv="20"))
    reconciler.woken()
    for kind, _ in STREAMS[:-1]:
        watches.listed(kind, None, {("ml", "toy")})
    assert watches.not_ready() is not None
    assert reconciler.unparked == []
    watches.listed("Pod", None, set())
    assert watches.not_ready() is None
    assert reconciler.unparked == [None]
    # The Deployment was deleted while no watch was open: the next list misses it.
    watches.listed("Deployment", None, set())
    assert reconciler.woken() == [("TritonModel", "ml", "toy")]
    assert world.children("u-toy") == {}
    assert reconciler.unparked == [None]  # complete once; a relist does not hold anything


def test_pools_are_streamed_and_woken_by_their_objects_and_their_pods() -> None:
    """A pooled object's change may move its pool's placement, a pool coming or going
    moves the objects of its namespace, and a pool pod binds to the pool's replicas."""
    watches, reconciler, world = sink()
    pool = pool_doc("shared", "ml")
    pool["metadata"].update(uid="u-pool", generation=1, resourceVersion="40")
    watches.upsert("TritonServerPool", pool)
    assert world.owner("TritonServerPool", "ml", "shared") is not None
    assert reconciler.woken() == [("TritonServerPool", "ml", "shared")]
    watches.upsert("TritonModel", owner())  # a new model: its namespace's pool re-places
    assert sorted(reconciler.woken()) == [
        ("TritonModel", "ml", "toy"),
        ("TritonServerPool", "ml", "shared"),
    ]
    watches.delete("TritonServerPool", pool)  # the pool went: its objects re-check
    assert sorted(reconciler.woken()) == [
        ("TritonModel", "ml", "toy"),
        ("TritonServerPool", "ml", "shared"),
    ]
    watches.upsert("TritonServerPool", pool)
    reconciler.woken()
    pod = triton_pod("10.0.0.5", ready=True, rv="41")
    pod["metadata"].update(name="tsp-shared-a", labels=dict(zip(
        (LABEL_KIND, LABEL_MODEL), pool_pod_key("ml", "shared")[1:], strict=True
    )))  # fmt: skip
    watches.upsert("Pod", pod)
    assert reconciler.woken() == [("TritonServerPool", "ml", "shared"), ("ml", "tsp-shared-a")]


def test_a_pods_readiness_gate_is_remembered_and_wakes_the_loader() -> None:
    watches, reconciler, world = sink()
    pod = triton_pod("10.0.0.1", ready=False, rv="50")
    pod["spec"] = {"readinessGates": [{"conditionType": LOADED_GATE}]}
    watches.upsert("Pod", pod)
    assert reconciler.woken() == [("ml", "toy-abc")]
    (seen,) = world.triton_pods()
    assert seen.gated and seen.gate == ""
    opened = copy.deepcopy(pod)
    opened["metadata"]["resourceVersion"] = "51"
    opened["status"]["conditions"].append({"type": LOADED_GATE, "status": "True"})
    watches.upsert("Pod", opened)
    assert reconciler.woken() == [("ml", "toy-abc")]
    (seen,) = world.triton_pods()
    assert seen.gate == "True"
