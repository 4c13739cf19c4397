"""The loader's Kubernetes side, pure (``tritonfleet.desired.kube.loading``):
which pods belong to an object, which ones are dialled and acted on, what
status and Events the loader writes, when a deleted model's files may go; and
the ``dialPodNetworks`` setting that keeps the operator off fake pod IPs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.support.builders import model_doc
from tritonfleet.api.model import ServingSpec
from tritonfleet.api.settings import OperatorSettings, SettingsError
from tritonfleet.api.status import Condition, ModelStatus, PodModelState, find_condition
from tritonfleet.desired.kube import objects as ko
from tritonfleet.desired.kube.loading import (
    TritonPod,
    gate_changes,
    in_order,
    load_target,
    loading_events,
    loading_status,
    owner_of_pod,
    pod_key_of,
    pods_of,
    restrict,
    select_pods,
    summarize_pod,
    unload_gate,
    wanted_by,
)
from tritonfleet.desired.kube.views import render_model_object
from tritonfleet.desired.triton.loading import (
    LoadTarget,
    ModelObservation,
    PodObservation,
    WantedModel,
    plan_loading,
)

NOW = "2026-12-01T12:00:00Z"
T = LoadTarget.model("m", "r2")


def pod_body(
    name: str = "p0",
    *,
    ip: str | None = "127.1.0.5",
    phase: str = "Running",
    ready: bool = True,
    revision: str = "r2",
    serves: str | None = None,  # default: the model at its revision (a pinned template)
    deleting: bool = False,
    kind: str = "tritonmodel",
    model: str = "m",
    gate: str | None = None,
) -> dict[str, Any]:
    annotations = {ko.REVISION_ANNOTATION: revision}
    if serves != "":
        annotations[ko.SERVES_ANNOTATION] = serves or f"{model}={revision}"
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ml",
        "uid": f"uid-{name}",
        "creationTimestamp": f"2026-12-01T10:00:0{name[-1]}Z",
        "labels": {ko.LABEL_KIND: kind, ko.LABEL_MODEL: model},
        "annotations": annotations,
    }
    if deleting:
        meta["deletionTimestamp"] = NOW
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if gate is not None:
        status["conditions"].append({"type": ko.LOADED_GATE, "status": gate})
    if ip:
        status["podIP"] = ip
    spec = {"readinessGates": [{"conditionType": ko.LOADED_GATE}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def triton_pod(name: str = "p0", **kw: Any) -> TritonPod:
    return summarize_pod(pod_body(name, **kw))


LOOPBACK_ONLY = OperatorSettings(dial_pod_networks=("127.0.0.0/8",))


# --- the setting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("networks", "ip", "allowed"),
    [
        ((), "10.244.0.5", True),  # default: every pod IP
        (("127.0.0.0/8",), "127.1.0.5", True),
        (("127.0.0.0/8",), "127.244.3.9", True),
        (("127.0.0.0/8",), "10.244.0.5", False),
        (("127.0.0.0/8",), "192.168.1.1", False),
        (("10.244.0.0/16", "fd00::/8"), "fd00::1", True),
        (("127.0.0.0/8",), "not-an-ip", False),
    ],
)
def test_dial_pod_networks_says_which_pod_ips_may_be_dialled(
    networks: tuple[str, ...], ip: str, allowed: bool
) -> None:
    assert OperatorSettings(dial_pod_networks=networks).may_dial(ip) is allowed


def test_dial_pod_networks_come_from_the_environment_and_bad_cidrs_are_refused() -> None:
    env = {"TRITONFLEET_DIAL_POD_NETWORKS": "127.0.0.0/8, 10.244.1.7/16"}
    assert OperatorSettings.from_env(env).dial_pod_networks == ("127.0.0.0/8", "10.244.0.0/16")
    with pytest.raises(SettingsError, match="DIAL_POD_NETWORKS"):
        OperatorSettings.from_env({"TRITONFLEET_DIAL_POD_NETWORKS": "10.0.0.0/33"})


# --- pods of an object ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "usable"),
    [
        (pod_body(), True),
        (pod_body(ready=False), True),  # NotReady (a failed load) is still asked
        (pod_body(phase="Pending", ip=None), False),
        (pod_body(ip=None), False),
        (pod_body(deleting=True), False),
        (pod_body(phase="Failed"), False),
    ],
)
def test_a_pod_takes_calls_when_running_with_an_ip_and_not_terminating(
    body: dict[str, Any], usable: bool
) -> None:
    assert summarize_pod(body).usable is usable


def test_pods_of_a_target_are_its_own_oldest_first() -> None:
    rendering = render_model_object(
        {**model_doc("m"), "metadata": {"name": "m", "namespace": "ml", "uid": "u"}}
    )
    assert rendering.target is not None
    assert pod_key_of(rendering.target) == ("ml", "tritonmodel", "m")
    pods = [
        triton_pod("p2"),
        triton_pod("p1"),
        triton_pod("p3", model="other"),
        triton_pod("p4", kind="modelensemble"),
    ]
    assert [p.name for p in pods_of(rendering.target, pods)] == ["p1", "p2"]


def test_a_long_name_is_matched_through_its_label_value() -> None:
    name = "a." * 40 + "model"
    pod = triton_pod(model=ko.label_value(name))
    owners = [("TritonModel", "other"), ("TritonModel", name), ("ModelEnsemble", name)]
    assert owner_of_pod(pod, owners) == ("TritonModel", name)
    assert owner_of_pod(triton_pod(model="nobody"), owners) is None


def test_an_ensemble_loads_its_members_at_their_revisions_then_itself() -> None:
    target = ko.Target(
        kind="ModelEnsemble",
        name="rag",
        namespace="ml",
        uid="u",
        triton_name="rag",
        revision="re",
        serving=ServingSpec(),
        load_models=("embed", "llm", "rag"),
        documents=(),
        member_revisions=(("embed", "r-e"), ("llm", "r-l")),
    )
    wanted = load_target(target)
    assert wanted.models == (
        WantedModel("embed", "r-e"),
        WantedModel("llm", "r-l"),
        WantedModel("rag", "re"),
    )
    assert wanted.unload_order == ("rag", "llm", "embed")


# --- which pods are dialled and acted on ----------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "dialled", "acted"),
    [
        (triton_pod(), True, True),
        (triton_pod(revision="r1"), True, True),  # an old revision's pod: loads its own pin
        (triton_pod(serves=""), True, False),  # a template from before rollouts: observe only
        (triton_pod(phase="Pending", ip=None), True, False),
        (triton_pod(ip="10.244.0.7"), False, False),  # outside dialPodNetworks
        (triton_pod(deleting=True), False, False),  # terminating: reported, never dialled
    ],
)
def test_which_pods_are_dialled_and_which_get_loads(
    pod: TritonPod, dialled: bool, acted: bool
) -> None:
    selection = select_pods(
        [pod], may_dial=LOOPBACK_ONLY.may_dial, networks=LOOPBACK_ONLY.dial_pod_networks
    )
    assert (pod in selection.dial) is dialled
    assert (pod.name in selection.act) is acted
    assert (len(selection.blocked) == 1) is (not dialled and not pod.deleting)
    assert (len(selection.leaving) == 1) is pod.deleting


def test_each_pod_is_wanted_at_what_its_template_names() -> None:
    rendering = render_model_object(
        {**model_doc("m"), "metadata": {"name": "m", "namespace": "ml", "uid": "u"}}
    )
    assert rendering.target is not None
    assert wanted_by(triton_pod(revision="r1"), rendering.target) == LoadTarget.model("m", "r1")
    legacy = triton_pod(revision="r0", serves="")
    assert wanted_by(legacy, rendering.target) == LoadTarget.model("m", "r0")
    ensemble = ko.Target(
        kind="ModelEnsemble", name="rag", namespace="ml", uid="u", triton_name="rag",
        revision="re", serving=ServingSpec(), load_models=("embed", "rag"), documents=(),
        member_revisions=(("embed", "r-e"),),
    )  # fmt: skip
    pinned = triton_pod(kind="modelensemble", model="rag", serves="embed=old-e,rag=old")
    assert wanted_by(pinned, ensemble) == LoadTarget.ensemble(
        "rag", "old", [WantedModel("embed", "old-e")]
    )
    before = triton_pod(kind="modelensemble", model="rag", revision="old", serves="")
    assert wanted_by(before, ensemble) == LoadTarget.ensemble(
        "rag", "old", [WantedModel("embed", "")]
    )


def test_a_pods_gate_follows_what_status_pods_says_of_it() -> None:
    opened, closed, ungated = triton_pod("p1"), triton_pod("p2", gate="True"), triton_pod("p3")
    ungated = replace(ungated, gated=False)
    states = [
        PodModelState(name="p1", state="Ready", revision="r2"),
        PodModelState(name="p2", state="Failed", message="boom"),
        PodModelState(name="p3", state="Ready", revision="r2"),
    ]
    changes = gate_changes([opened, closed, ungated], states)
    assert [(p.name, loaded, why) for p, loaded, why in changes] == [
        ("p1", True, "serves revision r2"),
        ("p2", False, "boom"),
    ]
    settled = [replace(opened, gate="True"), replace(closed, gate="False")]
    assert gate_changes(settled, states[:2]) == []
    assert summarize_pod(pod_body(gate="True")).gate == "True"


def test_a_pod_outside_the_networks_is_reported_unreachable_never_dialled() -> None:
    fake, real = triton_pod("p1", ip="10.244.0.7"), triton_pod("p2")
    selection = select_pods(
        [fake, real], may_dial=LOOPBACK_ONLY.may_dial, networks=LOOPBACK_ONLY.dial_pod_networks
    )
    assert selection.dial == (real,)
    observed = [PodObservation("p2", real.ip, True, {"m": ModelObservation("READY", "", "r2")})]
    plan = plan_loading(T, in_order(selection, observed))
    states = {s.name: s for s in plan.states}
    assert states["p1"].state == "Unavailable"
    assert "outside the networks" in states["p1"].message
    assert "127.0.0.0/8" in states["p1"].message
    assert states["p2"].state == "Ready"
    assert plan.condition.status == "False" and plan.condition.reason == "Unreachable"
    assert [p.name for p in plan.states] == ["p1", "p2"]  # status in pod order


def test_pods_outside_act_keep_their_state_but_get_no_actions() -> None:
    observed = [
        PodObservation("old", "127.1.0.1", True, {"m": ModelObservation("READY", "", "r1")}),
        PodObservation("new", "127.1.0.2", True, {}),
    ]
    plan = restrict(plan_loading(T, observed), frozenset({"new"}))
    actions = {p.pod: [a.kind for a in p.actions] for p in plan.pods}
    assert actions == {"old": [], "new": ["load"]}
    assert {s.name: s.state for s in plan.states} == {"old": "Pending", "new": "Pending"}


# --- status and events ----------------------------------------------------------------------


def ready_pods(*names: str, revision: str = "r2") -> list[PodObservation]:
    return [
        PodObservation(n, f"127.1.0.{i}", True, {"m": ModelObservation("READY", "", revision)})
        for i, n in enumerate(names)
    ]


def failed_pod(name: str, message: str) -> PodObservation:
    return PodObservation(
        name, "127.1.0.9", True, {"m": ModelObservation("UNAVAILABLE", message, None, message)}
    )


def cond(type_: str, status: str, reason: str = "R") -> Condition:
    return Condition(type=type_, status=status, reason=reason, last_transition_time=NOW)


def base_status(ready: str = "True") -> ModelStatus:
    return ModelStatus(
        revision="r2",
        conditions=[
            cond("Valid", "True"),
            cond("Synced", "True"),
            cond("Available", "True"),
            cond("Ready", ready, "Ready" if ready == "True" else "Loading"),
        ],
    )


def test_status_gets_pods_and_loaded_and_nothing_when_unchanged() -> None:
    plan = plan_loading(T, ready_pods("a", "b"))
    new = loading_status(base_status("False"), plan, NOW, generation=3)
    assert new is not None
    assert [(p.name, p.state, p.revision) for p in new.pods] == [
        ("a", "Ready", "r2"),
        ("b", "Ready", "r2"),
    ]
    loaded = find_condition(new.conditions, "Loaded")
    assert loaded is not None and loaded.status == "True" and loaded.observed_generation == 3
    later = "2026-12-01T13:00:00Z"
    assert loading_status(new, plan_loading(T, ready_pods("a", "b")), later, generation=3) is None


@pytest.mark.parametrize(
    ("observed", "reason"),
    [
        ([failed_pod("a", "Internal: RuntimeError: boom")], "LoadFailed"),
        ([PodObservation("a", "127.1.0.1", True, error="refused")], "Unreachable"),
        ([PodObservation("a", "127.1.0.1", True, {})], "Loading"),
    ],
)
def test_not_loaded_turns_ready_false_with_the_same_ready_the_reconcile_computes(
    observed: list[PodObservation], reason: str
) -> None:
    plan = plan_loading(T, observed)
    new = loading_status(base_status("True"), plan, NOW, generation=1)
    assert new is not None
    ready = find_condition(new.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", reason)
    assert ready.message.startswith("Loaded: ")


def test_a_failed_sync_explains_ready_before_loaded_does() -> None:
    old = base_status("False")
    old.conditions[1] = cond("Synced", "False", "SyncFailed")
    new = loading_status(old, plan_loading(T, [failed_pod("a", "boom")]), NOW, generation=1)
    assert new is not None
    ready = find_condition(new.conditions, "Ready")
    assert ready is not None and ready.reason == "SyncFailed"


def test_one_warning_per_failure_transition_not_per_retry() -> None:
    old = base_status()
    failing = plan_loading(T, [*ready_pods("a"), failed_pod("b", "Internal: boom")])
    first = loading_status(old, failing, NOW, generation=1)
    assert first is not None
    (warning,) = loading_events(old, first, failing)
    assert warning.type == "Warning" and warning.reason == "LoadFailed"
    assert "b: Internal: boom" in warning.message and "revision r2" in warning.message
    # The retry fails the same way: same status, no write, no event.
    again = plan_loading(T, [*ready_pods("a"), failed_pod("b", "Internal: boom")])
    assert loading_status(first, again, NOW, generation=1) is None
    assert loading_events(first, first, again) == ()
    # A different error from Triton is a new failure.
    other = plan_loading(T, [*ready_pods("a"), failed_pod("b", "Internal: other")])
    second = loading_status(first, other, NOW, generation=1)
    assert second is not None
    assert [e.reason for e in loading_events(first, second, other)] == ["LoadFailed"]


def test_a_normal_event_when_every_pod_is_loaded() -> None:
    old = base_status("False").model_copy(
        update={"pods": [PodModelState(name="a", state="Pending")]}
    )
    plan = plan_loading(T, ready_pods("a"))
    new = loading_status(old, plan, NOW, generation=1)
    assert new is not None
    (event,) = loading_events(old, new, plan)
    assert (event.type, event.reason) == ("Normal", "Loaded")
    assert loading_events(new, new, plan) == ()


def test_what_status_pods_says_is_what_the_gateway_routes_to() -> None:
    from tritonfleet.desired.gateway.cluster import ready_endpoints

    observed = [
        *ready_pods("new"),
        *ready_pods("old", revision="r1"),
        failed_pod("bad", "boom"),
    ]
    new = loading_status(base_status(), plan_loading(T, observed), NOW, generation=1)
    assert new is not None
    assert [e.name for e in ready_endpoints(new)] == ["new"]


# --- deletion ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("done", "waited", "proceed", "warning"),
    [
        (None, 1.0, False, False),  # unloading: the files stay
        (True, 1.0, True, False),
        (False, 1.0, True, True),  # the bounded unload ended, a pod did not confirm
        (None, 61.0, True, True),  # never hang on a stuck unload
    ],
)
def test_files_go_once_unloaded_or_after_the_bounded_wait(
    done: bool | None, waited: float, proceed: bool, warning: bool
) -> None:
    gate = unload_gate(done, ["p1 (cannot tell: refused)"], waited, 60.0)
    assert gate.proceed is proceed
    assert (gate.event is not None) is warning
    if gate.event is not None:
        assert gate.event.type == "Warning" and "p1" in gate.event.message
