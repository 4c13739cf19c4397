"""The operator against the real API server (hack/testbed), running as a local process.

Samples and inline objects are applied with kubectl; the operator creates the
children; the real scheduler places the pods on fake GPU nodes; kwok marks
pods Running/Ready and completes Job pods (what a kubelet would report), so sync
Jobs succeed by themselves; the real garbage collector deletes children.

Nothing answers on a kwok pod's IP, so the loader reports those pods as not
reachable (Loaded=False, reason Unreachable) and Ready stays False: here
"settled" means Available and Loaded reported. Real Triton pods, Loaded and
Ready=True are in test_operator_loading.py (with the local pod runner).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from hack.devtools.operator import OperatorProcess, condition
from hack.devtools.testbed import GPU_NODES, REPO_ROOT, Testbed
from tests.support.models import apply, inline_model, wait_condition, wait_settled

pytestmark = pytest.mark.integration

SAMPLES = REPO_ROOT / "manifests" / "samples"


def children(testbed: Testbed, ns: str, kind: str, model: str) -> list[dict[str, Any]]:
    listed = testbed.get(kind, "-l", f"tritonfleet.io/model={model}", namespace=ns)
    return list((listed or {}).get("items") or [])


def events(testbed: Testbed, ns: str, name: str) -> list[dict[str, Any]]:
    listed = testbed.get("events", "--field-selector", f"involvedObject.name={name}", namespace=ns)
    return list((listed or {}).get("items") or [])


# --- a sample, end to end -------------------------------------------------------------------


def test_sample_model_gets_every_child_scheduled_on_a_gpu_node(testbed: Testbed, ns: str) -> None:
    testbed.kubectl("apply", "-n", ns, "-f", str(SAMPLES / "pytorch-classifier.yaml"))
    model = wait_settled(testbed, ns, "tritonmodel", "resnet50-classifier")
    uid = model["metadata"]["uid"]
    status = model["status"]
    assert status["replicaSummary"] == "1/1"
    assert status["servedBy"] == "triton"
    assert status["observedGeneration"] == model["metadata"]["generation"]
    assert "tritonfleet.io/cleanup" in model["metadata"]["finalizers"]
    # The fake pod is listed, not hidden, and Ready waits for Loaded.
    (pod_state,) = status["pods"]
    assert pod_state["state"] == "Unavailable" and pod_state["message"]
    assert condition(model, "Ready")["status"] == "False"
    assert condition(model, "Ready")["reason"] == "Unreachable"

    (dep,) = children(testbed, ns, "deployments", "resnet50-classifier")
    (svc,) = children(testbed, ns, "services", "resnet50-classifier")
    jobs = children(testbed, ns, "jobs", "resnet50-classifier")
    cms = children(testbed, ns, "configmaps", "resnet50-classifier")
    assert [j["metadata"]["labels"]["tritonfleet.io/revision"] for j in jobs] == [
        status["revision"]
    ]
    assert len(cms) == 1
    for child in (dep, svc, *jobs, *cms):
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == (
            "TritonModel",
            uid,
            True,
            True,
        )
        assert child["metadata"]["annotations"]["tritonfleet.io/spec-hash"]

    pod_spec = dep["spec"]["template"]["spec"]
    (c,) = pod_spec["containers"]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec[
        "tolerations"
    ]
    assert "--load-model=resnet50-classifier" in c["args"]
    assert "--model-control-mode=explicit" in c["args"]
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert svc["spec"]["clusterIP"] == "None"
    assert {p["name"] for p in svc["spec"]["ports"]} == {"http", "grpc", "metrics"}

    claim = testbed.get("pvc", "tritonfleet-models", namespace=ns)
    assert claim is not None
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]

    pods = testbed.get("pods", "-l", "app.kubernetes.io/component=inference-server", namespace=ns)[
        "items"
    ]
    assert len(pods) == 1
    assert pods[0]["spec"]["nodeName"] in GPU_NODES  # the real scheduler placed it

    # The printer columns say the same.
    table = testbed.kubectl("get", "tritonmodels", "-n", ns).stdout.splitlines()
    assert table[0].split() == [
        "NAME", "READY", "REPLICAS", "REVISION", "SERVED-BY", "ROLLOUT", "AGE"
    ]  # fmt: skip
    assert table[1].split()[:5] == [
        "resnet50-classifier",
        "False",
        "1/1",
        status["revision"],
        "triton",
    ]
    reasons = {e["reason"] for e in events(testbed, ns, "resnet50-classifier")}
    assert reasons  # what happened is told in Events
    assert "LoadFailed" not in reasons  # an unreachable pod is not a load failure


def test_ensemble_sample_hosts_members_and_ensemble_together(testbed: Testbed, ns: str) -> None:
    testbed.kubectl("apply", "-n", ns, "-f", str(SAMPLES / "rag-ensemble.yaml"))
    wait_settled(testbed, ns, "modelensemble", "rag", timeout=240)
    (dep,) = children(testbed, ns, "deployments", "rag")
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "ModelEnsemble"
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    loads = [a.split("=", 1)[1] for a in args if a.startswith("--load-model=")]
    assert loads == ["rag-embedder", "rag-retriever", "rag-generator", "rag"]

    # Deleting a member is reported on the ensemble, naming it.
    testbed.kubectl(
        "delete", "tritonmodel", "rag-retriever", "-n", ns, "--timeout=90s", timeout=120
    )
    ensemble = wait_condition(testbed, ns, "modelensemble", "rag", "Valid", "False")
    assert "rag-retriever" in condition(ensemble, "Valid")["message"]
    warnings = [e for e in events(testbed, ns, "rag") if e["type"] == "Warning"]
    assert any("rag-retriever" in e["message"] for e in warnings)


def test_ensemble_with_missing_members_is_invalid_with_every_problem_and_no_children(
    testbed: Testbed, ns: str
) -> None:
    ensemble = {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "ModelEnsemble",
        "metadata": {"name": "broken"},
        "spec": {
            "inputs": [{"name": "IN", "dataType": "TYPE_FP32", "dims": [4]}],
            "outputs": [{"name": "OUT", "dataType": "TYPE_FP32", "dims": [4]}],
            "steps": [
                {"model": "nope-a", "inputMap": {"X": "IN"}, "outputMap": {"Y": "MID"}},
                {"model": "nope-b", "inputMap": {"X": "MID"}, "outputMap": {"Y": "OUT"}},
            ],
        },
    }
    apply(testbed, ns, ensemble)
    obj = wait_condition(testbed, ns, "modelensemble", "broken", "Valid", "False")
    message = condition(obj, "Valid")["message"]
    assert "nope-a" in message and "nope-b" in message
    assert condition(obj, "Ready")["status"] == "False"
    time.sleep(2)
    for kind in ("deployments", "jobs", "services", "configmaps"):
        assert children(testbed, ns, kind, "broken") == []
    assert any(
        e["type"] == "Warning" and e["reason"] == "InvalidSpec"
        for e in events(testbed, ns, "broken")
    )


def test_invalid_objects_are_refused_by_cel_naming_the_field(testbed: Testbed, ns: str) -> None:
    bad = inline_model("bad-cel")
    bad["spec"]["source"]["s3"] = {"uri": "s3://bucket/model"}  # two sources
    out = testbed.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(bad), check=False)
    assert out.returncode != 0
    assert "spec.source" in out.stderr and "set exactly one of s3, http, pvc, inline" in out.stderr
    bad = inline_model("bad-replicas", replicas={"min": 3, "max": 1})
    out = testbed.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(bad), check=False)
    assert out.returncode != 0
    assert "spec.serving.replicas.min" in out.stderr


# --- changes, drift, deletion -------------------------------------------------------------


def test_spec_edit_makes_a_new_revision_a_new_sync_and_rolls_the_deployment(
    testbed: Testbed, ns: str
) -> None:
    apply(testbed, ns, inline_model("edit-me"))
    first = wait_settled(testbed, ns, "tritonmodel", "edit-me")
    old_rev = first["status"]["revision"]
    edited = inline_model("edit-me")
    edited["spec"]["config"]["maxBatchSize"] = 16
    apply(testbed, ns, edited)

    def rolled() -> dict[str, Any] | None:
        obj = testbed.get("tritonmodel", "edit-me", namespace=ns)
        ready = condition(obj, "Synced")
        if obj and obj["status"].get("revision") != old_rev and ready.get("status") == "True":
            dep = testbed.get("deployment", "tm-edit-me", namespace=ns) or {}
            status = dep.get("status") or {}
            if status.get("updatedReplicas") == status.get("readyReplicas") == 1:
                return obj
        return None

    second = testbed.wait_for(rolled, timeout=180, what="the new revision synced and rolled")
    new_rev = second["status"]["revision"]
    assert condition(second, "Synced")["message"].startswith(f"revision {new_rev}")
    (dep,) = children(testbed, ns, "deployments", "edit-me")
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["tritonfleet.io/revision"] == new_rev
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # Leftovers of the old revision are cleaned once the new one is served.
    testbed.wait_for(
        lambda: (
            {
                j["metadata"]["labels"]["tritonfleet.io/revision"]
                for j in children(testbed, ns, "jobs", "edit-me")
            }
            == {new_rev}
        ),
        timeout=60,
        what="only the new revision's sync Job left",
    )


def test_hand_deleted_and_hand_edited_children_are_repaired(
    testbed: Testbed,
    ns: str,
    operator_process: OperatorProcess,
) -> None:
    apply(testbed, ns, inline_model("drift"))
    wait_settled(testbed, ns, "tritonmodel", "drift")
    testbed.kubectl("delete", "service", "tm-drift", "-n", ns)
    testbed.kubectl(
        "patch",
        "deployment",
        "tm-drift",
        "-n",
        ns,
        "--type=json",
        "-p",
        json.dumps(
            [
                {
                    "op": "replace",
                    "path": "/spec/template/spec/containers/0/image",
                    "value": "evil/triton:latest",
                },
                {"op": "replace", "path": "/spec/replicas", "value": 5},
            ]
        ),
    )

    def repaired() -> bool:
        svc = testbed.get("service", "tm-drift", namespace=ns)
        dep = testbed.get("deployment", "tm-drift", namespace=ns)
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        return bool(svc) and image.startswith("nvcr.io/") and dep["spec"]["replicas"] == 1

    testbed.wait_for(repaired, timeout=30, what="Service re-created and Deployment reverted")
    seen = events(testbed, ns, "drift")
    assert any(e["reason"] == "Repaired" for e in seen), [(e["reason"], e["message"]) for e in seen]


def test_nothing_is_written_when_nothing_changes(
    testbed: Testbed,
    ns: str,
    operator_process: OperatorProcess,
) -> None:
    apply(testbed, ns, inline_model("quiet"))
    wait_settled(testbed, ns, "tritonmodel", "quiet")
    time.sleep(3)  # let the last watch events settle
    before = operator_process.writes()
    time.sleep(12)  # more than two resync intervals of this module's operator (5 s)
    assert operator_process.writes() == before


def test_deletion_cleans_the_repository_and_leaves_nothing_behind(
    testbed: Testbed, ns: str
) -> None:
    apply(testbed, ns, inline_model("gone"))
    wait_settled(testbed, ns, "tritonmodel", "gone")
    testbed.kubectl("delete", "tritonmodel", "gone", "-n", ns, "--timeout=90s", timeout=120)
    assert any(e["reason"] == "CleanedUp" for e in events(testbed, ns, "gone"))

    def empty() -> bool:
        left = [
            children(testbed, ns, kind, "gone")
            for kind in ("deployments", "services", "configmaps", "jobs", "replicasets")
        ]
        claim = testbed.get("pvc", "tritonfleet-models", namespace=ns)
        return not any(left) and claim is None

    testbed.wait_for(empty, timeout=90, what="children garbage-collected and the claim deleted")


def test_long_names_and_dots_make_valid_children(testbed: Testbed, ns: str) -> None:
    name = "a.very-long.model-name." + "x" * 60
    apply(testbed, ns, inline_model(name, gpus=0))
    obj = wait_condition(testbed, ns, "tritonmodel", name, "Synced")
    assert obj["status"]["deployment"] is None or len(obj["status"]["deployment"]) <= 63
    deps = testbed.get("deployments", namespace=ns)["items"]
    assert any(d["metadata"]["ownerReferences"][0]["name"] == name for d in deps)


def test_samples_directory_is_what_the_tests_apply() -> None:
    assert (SAMPLES / "pytorch-classifier.yaml").exists()
    assert Path(SAMPLES / "rag-ensemble.yaml").exists()
