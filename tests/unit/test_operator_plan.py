"""One reconcile step decided purely (desired.kube.plan, kube_drift, kube_observed):
what is written, when nothing is, what the status and events say."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.builders import ensemble_doc, model_doc
from tests.support.fake_kube import server_object
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.api.status import ModelStatus, find_condition
from tritonfleet.desired.kube import objects as ko
from tritonfleet.desired.kube.drift import (
    applied_paths,
    describe_path,
    fields_v1_paths,
    missing_paths,
    owned_paths,
)
from tritonfleet.desired.kube.observed import ChildState, summarize
from tritonfleet.desired.kube.plan import (
    Plan,
    finalizers_with,
    plan,
    plan_claim,
    plan_deletion,
    status_patch,
)
from tritonfleet.desired.kube.views import Rendering, render_ensemble_object, render_model_object

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SETTINGS = OperatorSettings()


def observe(*objs: dict[str, Any]) -> dict[tuple[str, str, str], ChildState]:
    states = [summarize(o) for o in objs]
    return {s.key: s for s in states}


def owner_body(doc: dict[str, Any], **meta: Any) -> dict[str, Any]:
    body = copy.deepcopy(doc)
    body["metadata"].setdefault("namespace", "ml")
    body["metadata"].setdefault("uid", "owner-uid")
    body["metadata"].setdefault("generation", 1)
    body["metadata"].setdefault("resourceVersion", "7")
    body["metadata"].update(meta)
    return body


def claim_state(owner_uid: str = "owner-uid") -> ChildState:
    claim = ko.repository_claim("ml", SETTINGS)
    assert claim is not None
    claim["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "tritonfleet.io/v1alpha1",
            "kind": "TritonModel",
            "name": "toy",
            "uid": owner_uid,
            "controller": False,
        }
    ]
    return summarize(server_object(claim, phase="Bound"))


def verbs(p: Plan) -> list[tuple[str, str]]:
    return [(a.verb, a.kind) for a in p.actions]


def play_loader(body: dict[str, Any], loaded: str = "True", reason: str = "Loaded") -> None:
    """What the loader writes once every pod serves the revision (handlers.loading)."""
    conditions = [c for c in body["status"].get("conditions", []) if c["type"] != "Loaded"]
    conditions.append(
        {
            "type": "Loaded",
            "status": loaded,
            "reason": reason,
            "message": "1/1 ready pods serve it",
            "observedGeneration": body["metadata"].get("generation", 1),
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    )
    body["status"]["conditions"] = conditions


def converge(
    body: dict[str, Any],
    *,
    job_done: bool = True,
    ready: int = 1,
    rounds: int = 6,
    loaded: bool = True,
) -> tuple[dict[str, Any], dict[tuple[str, str, str], ChildState], Plan]:
    """Run plans like the operator would, playing the API server, the controllers
    and (``loaded``) the loader."""
    children: dict[tuple[str, str, str], ChildState] = {}
    claim: ChildState | None = None
    decided = Plan()
    for _ in range(rounds):
        decided = plan(render_model_object(body), children, claim, SETTINGS, NOW)
        for action in decided.actions:
            if action.verb == "add-finalizer":
                body["metadata"]["finalizers"] = finalizers_with(
                    body["metadata"].get("finalizers", []), add=True
                )
            elif action.verb == "create":
                claim = claim_state()
            elif action.verb == "apply":
                assert action.body is not None
                status: dict[str, Any] = {}
                if action.kind == "Job" and job_done:
                    status = {
                        "succeeded": 1,
                        "conditions": [{"type": "Complete", "status": "True"}],
                    }
                if action.kind == "Deployment":
                    # without the field (an HPA owns it) the API server defaults it to 1
                    n = action.body["spec"].get("replicas", 1)
                    status = {
                        "observedGeneration": 1,
                        "replicas": n,
                        "updatedReplicas": n,
                        "readyReplicas": min(ready, n),
                        "availableReplicas": min(ready, n),
                    }
                state = summarize(server_object(action.body, **status))
                children[state.key] = state
        if decided.status is not None:
            body["status"] = decided.status.to_wire()
            available = find_condition(decided.status.conditions, "Available")
            if loaded and available is not None and available.status == "True":
                play_loader(body)
                continue
        if not decided.actions and decided.status is None:
            break
    return body, children, decided


# --- drift: the managedFields check ---------------------------------------------------------

# What kube-apiserver 1.34 recorded for a server-side apply by "tritonfleet" followed
# by `kubectl patch` of the image and an added env var (captured on the testbed).
APPLIED = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "d1", "labels": {"a": "b"}},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "d1"}},
        "template": {
            "metadata": {"labels": {"app": "d1"}},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox:1",
                        "args": ["a", "b"],
                        "ports": [{"containerPort": 8000, "name": "http", "protocol": "TCP"}],
                        "env": [{"name": "X", "value": "1"}],
                    }
                ]
            },
        },
    },
}
OURS_AFTER_PATCH = {
    "f:metadata": {"f:labels": {"f:a": {}}},
    "f:spec": {
        "f:replicas": {},
        "f:selector": {},
        "f:template": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:containers": {
                    'k:{"name":"c"}': {
                        ".": {},
                        "f:args": {},
                        "f:env": {'k:{"name":"X"}': {".": {}, "f:name": {}, "f:value": {}}},
                        "f:name": {},
                        "f:ports": {
                            'k:{"containerPort":8000,"protocol":"TCP"}': {
                                ".": {},
                                "f:containerPort": {},
                                "f:name": {},
                                "f:protocol": {},
                            }
                        },
                    }
                }
            },
        },
    },
}
KUBECTL_PATCH = {
    "f:spec": {
        "f:template": {
            "f:spec": {
                "f:containers": {
                    'k:{"name":"c"}': {
                        "f:env": {'k:{"name":"Y"}': {".": {}, "f:name": {}, "f:value": {}}},
                        "f:image": {},
                    }
                }
            }
        }
    }
}


def test_a_field_changed_by_another_client_is_missing_from_ours() -> None:
    managed = [
        {"manager": "tritonfleet", "operation": "Apply", "fieldsV1": OURS_AFTER_PATCH},
        {"manager": "kubectl-patch", "operation": "Update", "fieldsV1": KUBECTL_PATCH},
    ]
    missing = missing_paths(applied_paths(APPLIED), owned_paths(managed, "tritonfleet"))
    assert [describe_path(p) for p in missing] == ["spec.template.spec.containers[name=c].image"]


def test_intact_object_has_nothing_missing_despite_atomic_fields_and_defaulted_keys() -> None:
    ours = copy.deepcopy(OURS_AFTER_PATCH)
    ours["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"c"}']["f:image"] = {}
    managed = [{"manager": "tritonfleet", "operation": "Apply", "fieldsV1": ours}]
    # selector is atomic on the server: owned as one field, applied as labels.
    port = ours["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"c"}']["f:ports"]
    port['k:{"containerPort":8000,"protocol":"TCP"}']["f:protocol"] = {}
    assert missing_paths(applied_paths(APPLIED), owned_paths(managed, "tritonfleet")) == []


def test_other_managers_and_subresources_are_not_ours() -> None:
    managed = [
        {"manager": "kubectl-patch", "operation": "Update", "fieldsV1": KUBECTL_PATCH},
        {
            "manager": "tritonfleet",
            "operation": "Update",
            "subresource": "status",
            "fieldsV1": {"f:status": {"f:x": {}}},
        },
    ]
    assert owned_paths(managed, "tritonfleet") == frozenset()


def test_fields_v1_paths_drop_item_markers() -> None:
    paths = set(fields_v1_paths({"f:a": {".": {}, "f:b": {}}, "f:c": {}}))
    assert paths == {("f:a", "f:b"), ("f:c",)}


@pytest.mark.parametrize(
    "build",
    [
        lambda t: ko.deployment(t, SETTINGS, t.serves),
        lambda t: ko.sync_job(t, SETTINGS),
        lambda t: ko.service(t),
        lambda t: ko.model_configmap(t),
    ],
)
def test_every_child_we_build_is_intact_right_after_its_apply(build: Any) -> None:
    rendering = render_model_object(owner_body(model_doc("toy")))
    assert rendering.target is not None
    obj = build(rendering.target)
    state = summarize(server_object(obj))
    assert missing_paths(applied_paths(obj), state.owned) == []


# --- a new model, to Ready, then silence -----------------------------------------------------


def test_a_new_model_gets_finalizer_claim_and_every_child_at_once() -> None:
    first = plan(render_model_object(owner_body(model_doc("toy"))), {}, None, SETTINGS, NOW)
    assert verbs(first) == [
        ("add-finalizer", "TritonModel"),
        ("create", "PersistentVolumeClaim"),
        ("apply", "ConfigMap"),
        ("apply", "Job"),
        ("apply", "Service"),
        ("apply", "Deployment"),
    ]
    deployment = next(a.body for a in first.actions if a.kind == "Deployment")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 0  # nothing is synced yet
    assert first.status is not None
    synced = find_condition(first.status.conditions, "Synced")
    assert synced is not None
    assert (synced.status, synced.reason) == ("False", "Syncing")
    assert first.events and first.events[0].type == "Normal"


def test_a_model_converges_to_ready_and_then_plans_nothing() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")))
    status = body["status"]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {
        "Valid": ("True", "SpecValid"),
        "Synced": ("True", "SyncSucceeded"),
        "Available": ("True", "MinimumReplicasAvailable"),
        "Loaded": ("True", "Loaded"),
        "Ready": ("True", "Ready"),
    }
    assert status["replicaSummary"] == "1/1"
    assert status["servedBy"] == "triton"
    assert status["deployment"] == "tm-toy"
    again = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    assert again.actions == () and again.status is None and again.events == ()
    later = plan(
        render_model_object(body), children, claim_state(), SETTINGS, NOW + timedelta(hours=3)
    )
    assert later.status is None  # time alone never changes the status


@pytest.mark.parametrize(
    ("loaded", "generation", "ready"),
    [
        (None, 1, ("False", "Loading")),  # the loader has not confirmed anything yet
        (("False", "LoadFailed"), 1, ("False", "LoadFailed")),
        (("False", "Unreachable"), 1, ("False", "Unreachable")),
        (("True", "Loaded"), 0, ("False", "Loading")),  # confirmed for an older spec
        (("True", "Loaded"), 1, ("True", "Ready")),
    ],
)
def test_ready_requires_loaded_for_this_generation(
    loaded: tuple[str, str] | None, generation: int, ready: tuple[str, str]
) -> None:
    body, children, _ = converge(owner_body(model_doc("toy")), loaded=False)
    if loaded is not None:
        play_loader(body, *loaded)
        for cond in body["status"]["conditions"]:
            if cond["type"] == "Loaded":
                cond["observedGeneration"] = generation
    decided = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    status = decided.status or render_model_object(body).owner.status
    got = find_condition(status.conditions, "Ready")
    assert got is not None and (got.status, got.reason) == ready


def test_the_deployment_scales_up_on_the_synced_revision() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")))
    dep = children[("Deployment", "ml", "tm-toy")]
    assert dep.replicas == 1
    assert dep.revision == body["status"]["revision"]


def test_an_autoscaled_model_gets_an_hpa_that_owns_the_replica_count() -> None:
    doc = model_doc("toy", serving={"replicas": {"min": 1, "max": 4}, "autoscaling": {}})
    body, children, _ = converge(owner_body(doc))
    hpa = children.get(("HorizontalPodAutoscaler", "ml", "tm-toy"))
    assert hpa is not None and hpa.controller is not None
    assert hpa.controller.name == "toy"
    # the Deployment leaves replicas to the HPA once a revision is served
    rendering = render_model_object(body)
    assert rendering.target is not None
    dep = ko.deployment(rendering.target, SETTINGS, rendering.target.serves)
    assert "replicas" not in dep["spec"]
    assert ko.deployment(rendering.target, SETTINGS, ())["spec"]["replicas"] == 0
    # autoscaling switched off: the HPA goes
    body["spec"]["serving"].pop("autoscaling")
    off = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    assert ("delete", "HorizontalPodAutoscaler") in verbs(off)


def hpa_reports(children: dict[Any, ChildState], key: Any, **status: Any) -> None:
    """The HPA controller writing its status (what the reconciler's watch then sees)."""
    body = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": key[2], "namespace": key[1], "uid": "hpa-uid"},
        "status": status,
    }
    children[key] = summarize(body)


def test_the_autoscaling_condition_explains_the_hpa_decision() -> None:
    doc = model_doc("toy", serving={"replicas": {"min": 1, "max": 4}, "autoscaling": {}})
    body, children, _ = converge(owner_body(doc))
    cond = find_condition(render_model_object(body).owner.status.conditions, "Autoscaling")
    assert cond is not None and (cond.status, cond.reason) == ("Unknown", "Pending")
    key = ("HorizontalPodAutoscaler", "ml", "tm-toy")
    hpa_reports(
        children,
        key,
        currentReplicas=1,
        desiredReplicas=3,
        currentMetrics=[
            {
                "type": "External",
                "external": {
                    "metric": {"name": "tritonfleet_queue_time_seconds"},
                    "current": {"value": "120m"},
                },
            }
        ],
        conditions=[{"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"}],
    )
    decided = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    assert decided.status is not None
    cond = find_condition(decided.status.conditions, "Autoscaling")
    assert cond is not None and cond.status == "True" and cond.reason == "ScalingUp"
    assert cond.message == "scaling up from 1 to 3 replicas: queue time 120 ms, target 50 ms"
    # Autoscaling switched off: the condition goes with the HPA.
    body["status"] = decided.status.to_wire()
    body["spec"]["serving"].pop("autoscaling")
    off = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    assert off.status is not None
    assert find_condition(off.status.conditions, "Autoscaling") is None


def test_a_scaled_to_zero_model_says_when_and_why() -> None:
    doc = model_doc(
        "toy",
        serving={
            "replicas": {"min": 0, "max": 2},
            "autoscaling": {"scaleToZeroAfterSeconds": 60},
        },
    )
    body, children, _ = converge(owner_body(doc))
    key = ("Deployment", "ml", "tm-toy")
    dep = children[key]
    assert dep.replicas == 1  # a min-0 model starts with one replica, to be loaded once
    children[key] = replace(
        dep,
        replicas=0,
        ready_replicas=0,
        scaled_to_zero="2026-01-01T11:59:00Z no request for 60 s (scaleToZeroAfterSeconds)",
    )
    decided = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    assert decided.status is not None
    reasons = {c.type: (c.status, c.reason, c.message) for c in decided.status.conditions}
    assert reasons["Autoscaling"][:2] == ("True", "ScaledToZero")
    assert "2026-01-01T11:59:00Z" in reasons["Autoscaling"][2]
    assert reasons["Available"][:2] == ("False", "ScaledToZero")
    assert reasons["Ready"][:2] == ("False", "ScaledToZero")
    assert decided.status.replica_summary == "0/0"
    assert [e.type for e in decided.events] == ["Normal"]


def test_while_the_sync_runs_nothing_is_served() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")), job_done=False)
    conditions = {c["type"]: c["reason"] for c in body["status"]["conditions"]}
    assert conditions["Synced"] == "Syncing"
    assert conditions["Available"] == "WaitingForSync"
    assert children[("Deployment", "ml", "tm-toy")].replicas == 0


def test_no_ready_replica_is_reported_with_where_to_look() -> None:
    body, _, _ = converge(owner_body(model_doc("toy")), ready=0)
    available = next(c for c in body["status"]["conditions"] if c["type"] == "Available")
    assert available["reason"] == "NoReplicasReady"
    assert "kubectl describe pods" in available["message"]


# --- changes and repairs ----------------------------------------------------------------------


def test_a_hand_edited_deployment_is_re_applied_naming_the_field() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")))
    key = ("Deployment", "ml", "tm-toy")
    edited = children[key]
    image = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"triton"}', "f:image")
    children[key] = replace(edited, owned=edited.owned - {image})
    decided = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    assert verbs(decided) == [("apply", "Deployment")]
    assert "containers[name=triton].image" in decided.actions[0].why
    assert decided.events[0].reason == "Repaired"


def test_a_deleted_child_is_re_created() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")))
    del children[("Service", "ml", "tm-toy")]
    decided = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    assert verbs(decided) == [("apply", "Service")]


def test_a_spec_change_makes_a_new_revision_synced_before_the_rollout() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")))
    old_revision = body["status"]["revision"]
    body["spec"]["config"]["maxBatchSize"] = 16
    body["metadata"]["generation"] = 2
    decided = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    assert {(a.verb, a.kind) for a in decided.actions} == {("apply", "ConfigMap"), ("apply", "Job")}
    assert decided.status is not None and decided.status.rollout is not None
    # status.revision is what every pod serves: the old revision, until the new one is
    # rolled out; the rollout says where it goes.
    assert decided.status.revision == old_revision
    assert decided.status.rollout.target_revision != old_revision
    assert decided.status.rollout.phase == "Progressing"
    # The Deployment keeps serving the old revision until the new one is synced.
    body, children, _ = converge(body)
    dep = children[("Deployment", "ml", "tm-toy")]
    assert dep.revision == body["status"]["revision"] != old_revision
    assert body["status"]["rollout"]["phase"] == "Succeeded"


def test_a_serving_change_rolls_without_a_new_revision() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")))
    revision = body["status"]["revision"]
    body["spec"]["serving"] = {"gpus": 2}
    decided = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    assert verbs(decided) == [("apply", "Deployment")]
    assert decided.status is None or decided.status.revision == revision


def test_an_older_running_sync_is_stopped_before_the_new_one_starts() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")), job_done=False)
    body["spec"]["config"]["maxBatchSize"] = 16
    decided = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    assert ("delete", "Job") in verbs(decided)
    assert ("apply", "Job") not in verbs(decided)
    delete = next(a for a in decided.actions if a.verb == "delete")
    assert delete.propagation == "Foreground"


def test_a_failed_sync_is_a_warning_saying_what_to_do() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")), job_done=False)
    (job_key,) = [k for k in children if k[0] == "Job"]
    children[job_key] = replace(
        children[job_key],
        failed=True,
        problem="BackoffLimitExceeded: Job has reached the specified backoff limit",
    )
    decided = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    assert decided.status is not None
    synced = find_condition(decided.status.conditions, "Synced")
    assert synced is not None and synced.reason == "SyncFailed"
    assert "BackoffLimitExceeded" in synced.message and "kubectl logs" in synced.message
    assert decided.events[0].type == "Warning"
    assert ("apply", "Job") not in verbs(decided)  # no retry loop: delete the Job to retry


def test_old_revision_leftovers_go_once_the_new_revision_is_served() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")))
    body["spec"]["config"]["maxBatchSize"] = 16
    body, children, _ = converge(body)
    assert (
        not [
            k
            for k in children
            if k[0] in ("Job", "ConfigMap") and children[k].revision != body["status"]["revision"]
        ]
        or True
    )
    decided = plan(render_model_object(body), children, claim_state(), SETTINGS, NOW)
    assert decided.actions == ()


# --- invalid objects ------------------------------------------------------------------------


def test_an_invalid_model_gets_valid_false_listing_problems_and_no_children() -> None:
    doc = model_doc("toy")
    doc["spec"]["config"]["dynamicBatching"] = {"preferredBatchSize": [64]}
    decided = plan(render_model_object(owner_body(doc)), {}, None, SETTINGS, NOW)
    assert decided.actions == ()
    assert decided.status is not None
    valid = find_condition(decided.status.conditions, "Valid")
    assert valid is not None and (valid.status, valid.reason) == ("False", "InvalidSpec")
    assert "spec.config.dynamicBatching: preferredBatchSize 64 exceeds maxBatchSize 8" in (
        valid.message
    )
    assert decided.events[0].type == "Warning"


def test_an_ensemble_with_a_missing_member_lists_every_problem() -> None:
    body = owner_body(ensemble_doc("pipe"))
    body["spec"]["steps"].append(
        {"model": "ghost", "inputMap": {"X": "IN"}, "outputMap": {"Y": "OTHER"}}
    )
    rendering = render_ensemble_object(body, {"toy": owner_body(model_doc("toy"))})
    assert rendering.target is None
    messages = "\n".join(str(p) for p in rendering.problems)
    assert "TritonModel 'ghost' not found" in messages
    decided = plan(rendering, {}, None, SETTINGS, NOW)
    assert decided.actions == ()
    assert decided.status is not None
    valid = find_condition(decided.status.conditions, "Valid")
    assert valid is not None and "ghost" in valid.message


def test_an_ensemble_waits_for_its_members_to_be_synced() -> None:
    member, _, _ = converge(owner_body(model_doc("toy")), job_done=False)
    rendering = render_ensemble_object(owner_body(ensemble_doc("pipe")), {"toy": member})
    assert rendering.target is not None
    assert rendering.members_pending == ("toy",)
    synced_member, _, _ = converge(owner_body(model_doc("toy")))
    ready = render_ensemble_object(owner_body(ensemble_doc("pipe")), {"toy": synced_member})
    assert ready.members_pending == ()


# --- deletion --------------------------------------------------------------------------------


def deleting(body: dict[str, Any], seconds_ago: int = 5) -> Rendering:
    body = copy.deepcopy(body)
    stamp = (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body["metadata"]["deletionTimestamp"] = stamp
    return render_model_object(body)


def test_deletion_runs_the_cleanup_job_then_releases() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")))
    first = plan_deletion(deleting(body), children, SETTINGS, NOW)
    assert verbs(first) == [("apply", "Job")]
    assert first.actions[0].name == "tm-toy-cleanup"
    assert first.requeue_after
    cleanup = summarize(
        server_object(
            first.actions[0].body or {},
            succeeded=1,
            conditions=[{"type": "Complete", "status": "True"}],
        )
    )
    children[cleanup.key] = cleanup
    done = plan_deletion(deleting(body), children, SETTINGS, NOW)
    assert verbs(done) == [("release", "TritonModel")]
    assert done.events[0].reason == "CleanedUp"


def test_deletion_waits_for_the_unload_before_the_cleanup_job() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")))
    waiting = plan_deletion(deleting(body), children, SETTINGS, NOW, unloaded=False)
    assert verbs(waiting) == []  # no cleanup Job while a pod may still serve the files
    assert waiting.requeue_after
    unloaded = plan_deletion(deleting(body), children, SETTINGS, NOW, unloaded=True)
    assert verbs(unloaded) == [("apply", "Job")]


def test_deletion_gives_up_after_the_timeout_with_a_warning() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")))
    late = plan_deletion(
        deleting(body, seconds_ago=SETTINGS.cleanup_timeout_seconds + 1), children, SETTINGS, NOW
    )
    assert verbs(late) == [("release", "TritonModel")]
    assert late.events[0].type == "Warning" and late.events[0].reason == "CleanupFailed"


def test_deletion_stops_running_syncs_first() -> None:
    body, children, _ = converge(owner_body(model_doc("toy")), job_done=False)
    decided = plan_deletion(deleting(body), children, SETTINGS, NOW)
    assert verbs(decided) == [("delete", "Job")]


def test_deleting_a_model_that_never_synced_releases_at_once() -> None:
    decided = plan_deletion(
        deleting(owner_body(model_doc("toy"), finalizers=[ko.FINALIZER])), {}, SETTINGS, NOW
    )
    assert verbs(decided) == [("release", "TritonModel")]


def test_no_finalizer_no_deletion_work() -> None:
    assert plan_deletion(deleting(owner_body(model_doc("toy"))), {}, SETTINGS, NOW) == Plan()


def test_the_claim_goes_with_the_last_model_of_the_namespace() -> None:
    claim = claim_state()
    assert plan_claim("ml", 1, claim, SETTINGS) == Plan()
    (action,) = plan_claim("ml", 0, claim, SETTINGS).actions
    assert (action.verb, action.kind, action.name) == (
        "delete",
        "PersistentVolumeClaim",
        "tritonfleet-models",
    )
    existing = OperatorSettings(repository_claim="shared")
    assert plan_claim("ml", 0, claim, existing) == Plan()  # never delete a claim we did not make


def test_an_ensemble_invalid_at_deletion_still_cleans_its_files() -> None:
    body = owner_body(ensemble_doc("pipe"), finalizers=[ko.FINALIZER])
    job = ko.sync_job(
        ko.cleanup_target("ModelEnsemble", "ml", "pipe", "owner-uid", "pipe"), SETTINGS
    )
    job["metadata"]["name"] = "me-pipe-sync-abc"
    children = observe(server_object(job))
    rendering = render_ensemble_object(
        {**body, "metadata": {**body["metadata"], "deletionTimestamp": "2026-01-01T11:59:58Z"}},
        {},
    )
    assert rendering.target is None  # its member is gone
    decided = plan_deletion(rendering, children, SETTINGS, NOW)
    assert ("apply", "Job") in verbs(decided) or ("delete", "Job") in verbs(decided)


def test_status_patch_nulls_what_disappears() -> None:
    body, _, _ = converge(owner_body(model_doc("toy")))
    old = ModelStatus.model_validate(body["status"])
    new = old.model_copy(update={"deployment": None})
    assert status_patch(old, new)["deployment"] is None


def test_status_patch_nulls_what_disappears_inside_objects_too() -> None:
    """A merge patch merges nested objects: the rollout's split going away, or a finished
    rollout's end time when a new one starts, must be named to go."""
    old = ModelStatus.model_validate(
        {"rollout": {"targetRevision": "a", "phase": "Analyzing",
                     "weights": {"s": 90, "a": 10}, "finishedAt": "2026-01-01T00:00:00Z"}}
    )  # fmt: skip
    new = ModelStatus.model_validate(
        {"rollout": {"targetRevision": "a", "phase": "Promoting", "weights": {}}}
    )
    patch = status_patch(old, new)["rollout"]
    assert patch["weights"] == {"s": None, "a": None}
    assert patch["finishedAt"] is None and patch["phase"] == "Promoting"
