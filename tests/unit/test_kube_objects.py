"""The Kubernetes objects a TritonModel/ModelEnsemble gets (desired.kube.objects):
every field the operator promises, for every sample, without a cluster."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.support.builders import all_sample_docs, ensemble_doc, model_doc, sample_docs, with_path
from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import TritonModel
from tritonfleet.api.settings import (
    DEFAULT_TRITON_IMAGE,
    OperatorSettings,
    SettingsError,
    listen_host,
    unknown_env,
)
from tritonfleet.desired.kube import objects as ko
from tritonfleet.desired.triton.render import render_model

UID = "0f0e0d0c-0000-4000-8000-000000000001"
SETTINGS = OperatorSettings()


def parsed(doc: dict[str, Any], namespace: str = "ml", uid: str = UID) -> TritonModel:
    doc = copy.deepcopy(doc)
    doc["metadata"].setdefault("namespace", namespace)
    doc["metadata"]["uid"] = uid
    doc["metadata"]["generation"] = 1
    return TritonModel.model_validate(doc)


def target_of(doc: dict[str, Any]) -> ko.Target:
    model = parsed(doc)
    return ko.model_target(model, render_model(model).revision)


def deployed(
    target: ko.Target, settings: OperatorSettings = SETTINGS, revision: str | None = "r"
) -> dict[str, Any]:
    """The stable Deployment serving ``target``'s models with its own at ``revision``
    (None: nothing synced yet)."""
    serves = () if revision is None else (*target.member_revisions, (target.triton_name, revision))
    return ko.deployment(target, settings, serves)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def model_samples() -> list[dict[str, Any]]:
    return [d for d in all_sample_docs() if d["kind"] == "TritonModel"]


# --- names and labels -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "suffix", "expected"),
    [
        ("TritonModel", "resnet", "", "tm-resnet"),
        ("ModelEnsemble", "rag", "", "me-rag"),
        ("TritonModel", "resnet", "sync-0123456789", "tm-resnet-sync-0123456789"),
    ],
)
def test_child_names_are_prefixed_by_kind(kind: Any, name: str, suffix: str, expected: str) -> None:
    assert ko.child_name(kind, name, suffix) == expected


@given(st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,200}[a-z0-9])?", fullmatch=True))
def test_child_names_are_dns_labels_for_any_object_name(name: str) -> None:
    for suffix in ("", "cleanup", "sync-0123456789"):
        out = ko.child_name("TritonModel", name, suffix)
        assert len(out) <= 63
        assert ko._LABEL_SAFE.match(out), out


def test_long_or_dotted_names_stay_distinct() -> None:
    assert ko.child_name("TritonModel", "a.b") != ko.child_name("TritonModel", "a-b")
    long_a, long_b = "x" * 100 + "a", "x" * 100 + "b"
    assert ko.child_name("TritonModel", long_a) != ko.child_name("TritonModel", long_b)


@given(st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,250}[a-z0-9])?", fullmatch=True))
def test_label_values_are_valid(name: str) -> None:
    value = ko.label_value(name)
    assert len(value) <= 63
    assert ko._LABEL_VALUE_OK.match(value)


# --- every child of every sample ----------------------------------------------------------


@pytest.mark.parametrize("doc", model_samples(), ids=lambda d: d["metadata"]["name"])
def test_every_child_is_owned_hashed_and_labelled(doc: dict[str, Any]) -> None:
    target = target_of(doc)
    children = [
        ko.model_configmap(target),
        ko.sync_job(target, SETTINGS),
        ko.cleanup_job(target, SETTINGS),
        deployed(target, SETTINGS, target.revision),
        ko.service(target),
    ]
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "tritonfleet.io/v1alpha1",
                "kind": "TritonModel",
                "name": doc["metadata"]["name"],
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["annotations"][ko.SPEC_HASH_ANNOTATION] == ko.spec_hash(child)
        labels = meta["labels"]
        for key in (ko.LABEL_NAME, ko.LABEL_INSTANCE, ko.LABEL_COMPONENT, ko.LABEL_MODEL):
            assert labels[key]
        assert labels[ko.LABEL_MANAGED_BY] == "tritonfleet"
        assert labels[ko.LABEL_PART_OF] == "tritonfleet"
        assert len(meta["name"]) <= 63


def test_spec_hash_ignores_itself_and_follows_content() -> None:
    target = target_of(model_doc("toy"))
    dep = deployed(target, SETTINGS, target.revision)
    again = ko.with_spec_hash(dep)
    assert again == dep
    changed = copy.deepcopy(dep)
    changed["spec"]["replicas"] = 7
    assert ko.spec_hash(changed) != ko.spec_hash(dep)


def test_building_twice_gives_identical_objects() -> None:
    target = target_of(sample_docs("tensorrt-llm-plan")[0])
    assert deployed(target, SETTINGS, "r1") == deployed(target, SETTINGS, "r1")
    assert ko.sync_job(target, SETTINGS) == ko.sync_job(target, SETTINGS)


# --- Deployment ------------------------------------------------------------------------


def test_deployment_runs_triton_in_explicit_mode_loading_its_model() -> None:
    target = target_of(sample_docs("pytorch-classifier")[0])
    dep = deployed(target, SETTINGS, target.revision)
    c = container(dep)
    assert c["image"] == DEFAULT_TRITON_IMAGE
    assert c["command"] == ["tritonserver"]
    # The volume is mounted at /models; each pod reads its revision's pin (a one-model
    # repository beside /models/repository), whatever the live link says by then.
    pin = f"/models/.tritonfleet/repository/pins/resnet50-classifier/{target.revision}"
    assert f"--model-repository={pin}" in c["args"]
    assert "--model-control-mode=explicit" in c["args"]
    assert "--load-model=resnet50-classifier" in c["args"]
    assert "--strict-readiness=true" in c["args"]
    assert {(p["name"], p["containerPort"]) for p in c["ports"]} == {
        ("http", 8000),
        ("grpc", 8001),
        ("metrics", 8002),
    }


def test_probes_live_ready_and_a_long_startup_budget() -> None:
    target = target_of(model_doc("toy"))
    c = container(deployed(target, OperatorSettings(startup_seconds=3600), "r"))
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/live"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3600


@pytest.mark.parametrize(
    ("serving", "resource", "count"),
    [
        ({"gpus": 2}, "nvidia.com/gpu", 2),
        ({"gpus": 1, "gpuResource": "nvidia.com/mig-1g.10gb"}, "nvidia.com/mig-1g.10gb", 1),
        # Time-slicing and MPS advertise a renamed resource ("renameByDefault").
        ({"gpus": 1, "gpuResource": "nvidia.com/gpu.shared"}, "nvidia.com/gpu.shared", 1),
    ],
)
def test_gpus_are_requested_and_limited_with_the_gpu_toleration(
    serving: dict[str, Any], resource: str, count: int
) -> None:
    target = target_of(model_doc("toy", serving=serving))
    dep = deployed(target, SETTINGS, "r")
    res = container(dep)["resources"]
    assert res["requests"][resource] == count
    assert res["limits"][resource] == count
    assert ko.GPU_TOLERATION in dep["spec"]["template"]["spec"]["tolerations"]


def test_triton_pods_take_priority_runtime_spread_and_annotations() -> None:
    spread = {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"tritonfleet.io/model": "toy"}},
    }
    serving = {
        "priorityClassName": "serving-critical",
        "runtimeClassName": "nvidia",
        "topologySpreadConstraints": [spread],
        "podAnnotations": {"sidecar.istio.io/inject": "false", "tritonfleet.io/revision": "x"},
    }
    dep = deployed(target_of(model_doc("toy", serving=serving)), SETTINGS, "r1")
    template = dep["spec"]["template"]
    pod = template["spec"]
    assert (pod["priorityClassName"], pod["runtimeClassName"]) == ("serving-critical", "nvidia")
    assert pod["topologySpreadConstraints"] == [spread]
    assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    # The revision annotation is the operator's: it rolls the pods, a user's cannot override it.
    assert template["metadata"]["annotations"]["tritonfleet.io/revision"] == "r1"
    plain = deployed(target_of(model_doc("toy")), SETTINGS, "r1")["spec"]["template"]
    assert not {"priorityClassName", "runtimeClassName", "topologySpreadConstraints"} & set(
        plain["spec"]
    )


def test_cpu_only_models_get_no_gpu_and_no_gpu_toleration() -> None:
    dep = deployed(target_of(model_doc("toy", serving={"gpus": 0})), SETTINGS, "r")
    assert "resources" not in container(dep)
    assert "tolerations" not in dep["spec"]["template"]["spec"]


def test_user_resources_scheduling_env_and_pull_secrets_are_passed_through() -> None:
    doc = sample_docs("tensorrt-llm-plan")[0]
    doc = with_path(doc, "spec.serving.tolerations", [{"key": "team", "operator": "Exists"}])
    doc = with_path(doc, "spec.serving.env", [{"name": "CUDA_MODULE_LOADING", "value": "LAZY"}])
    doc = with_path(doc, "spec.serving.imagePullSecrets", [{"name": "ngc"}])
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    }
    doc = with_path(doc, "spec.serving.affinity", affinity)
    dep = deployed(target_of(doc), SETTINGS, "r")
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    assert c["resources"]["requests"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 1}
    assert c["resources"]["limits"] == {"memory": "96Gi", "nvidia.com/gpu": 1}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert {"key": "team", "operator": "Exists"} in pod["tolerations"]
    assert ko.GPU_TOLERATION in pod["tolerations"]
    assert pod["affinity"] == affinity
    assert pod["imagePullSecrets"] == [{"name": "ngc"}]
    assert {"name": "CUDA_MODULE_LOADING", "value": "LAZY"} in c["env"]


def test_shm_is_a_memory_emptydir_sized_from_the_spec_and_the_repository_is_read_only() -> None:
    dep = deployed(target_of(sample_docs("tensorrt-llm-plan")[0]), SETTINGS, "r")
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert volumes["models"]["persistentVolumeClaim"] == {
        "claimName": "tritonfleet-models",
        "readOnly": True,
    }
    mounts = {m["mountPath"]: m for m in container(dep)["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    assert mounts["/dev/shm"]["name"] == "dshm"
    assert mounts["/tmp"]["name"] == "tmp"


def test_security_context_is_restricted() -> None:
    dep = deployed(target_of(model_doc("toy")), SETTINGS, "r")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(dep)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False


def test_rolls_without_downtime_and_on_a_new_revision_only() -> None:
    target = target_of(model_doc("toy"))
    first = deployed(target, SETTINGS, "rev1")
    second = deployed(target, SETTINGS, "rev2")
    strategy = first["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    annotations = first["spec"]["template"]["metadata"]["annotations"]
    assert annotations[ko.REVISION_ANNOTATION] == "rev1"
    assert annotations[ko.SERVES_ANNOTATION] == "toy=rev1"
    assert first["spec"]["template"] != second["spec"]["template"]
    assert first["spec"]["selector"] == second["spec"]["selector"]
    # Available only once the operator confirmed the model and published it to the
    # gateways; removed, a pod answers for drainSeconds before Triton is told to stop.
    pod = first["spec"]["template"]["spec"]
    assert pod["readinessGates"] == [{"conditionType": ko.LOADED_GATE}]
    assert container(first)["lifecycle"] == {"preStop": {"sleep": {"seconds": 10}}}
    assert pod["terminationGracePeriodSeconds"] >= 10 + 30


def test_the_surge_of_a_rollout_is_the_deployments_rolling_update() -> None:
    target = target_of(model_doc("toy"))
    dep = ko.deployment(target, SETTINGS, target.serves, ko.Surge(max_surge=0, max_unavailable=1))
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    no_drain = deployed(target, OperatorSettings(drain_seconds=0))
    assert "lifecycle" not in container(no_drain)


def test_the_canary_runs_the_target_beside_the_stable_pods_under_a_name_of_its_own() -> None:
    target = target_of(model_doc("toy"))
    canary = ko.canary_deployment(target, SETTINGS, 2)
    stable = ko.deployment(target, SETTINGS, (("toy", "old"),))
    assert canary["metadata"]["name"] == "tmc-toy" != stable["metadata"]["name"]
    assert ko.child_name("TritonModel", "toy-canary") != canary["metadata"]["name"]
    assert canary["spec"]["replicas"] == 2
    selector = canary["spec"]["selector"]["matchLabels"]
    assert selector[ko.LABEL_TRACK] == "canary"
    # The stable selector is older and broader: it selects the canary pods too, which
    # ReplicaSet ownership keeps apart; the headless Service and the loader see both.
    assert stable["spec"]["selector"]["matchLabels"].items() < selector.items()
    template = canary["spec"]["template"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["annotations"][ko.SERVES_ANNOTATION] == f"toy={target.revision}"
    assert f"pins/toy/{target.revision}" in " ".join(container(canary)["args"])
    assert "pins/toy/old" in " ".join(container(stable)["args"])


def test_serves_round_trips_and_refuses_what_it_cannot_read() -> None:
    serves = (("embed", "a1"), ("llm", "b2"), ("rag", "c3"))
    assert ko.parse_serves(ko.format_serves(serves)) == serves
    assert ko.parse_serves("") == ()
    assert ko.parse_serves("embed") == ()


def test_before_any_sync_the_deployment_exists_with_zero_replicas() -> None:
    target = target_of(model_doc("toy", serving={"replicas": {"min": 2, "max": 3}}))
    empty = deployed(target, SETTINGS, None)
    assert empty["spec"]["replicas"] == 0
    assert ko.SERVES_ANNOTATION not in empty["spec"]["template"]["metadata"]["annotations"]
    assert deployed(target, SETTINGS, "r")["spec"]["replicas"] == 2


def test_selector_labels_are_a_subset_of_the_pod_labels_plus_extra_pod_labels() -> None:
    settings = OperatorSettings(triton_pod_labels={"team": "search"})
    dep = deployed(target_of(model_doc("toy")), settings, "r")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels["team"] == "search"
    assert pod_labels[ko.LABEL_MODEL] == "toy"


def test_a_model_and_an_ensemble_of_the_same_name_never_share_pods() -> None:
    model = target_of(model_doc("same"))
    ensemble = ko.ensemble_target(
        ModelEnsemble.model_validate(
            {**ensemble_doc("same"), "metadata": {"name": "same", "namespace": "ml", "uid": "e"}}
        ),
        {"toy": parsed(model_doc("toy"))},
        "r",
    )
    a = deployed(model, SETTINGS, "r")["spec"]["selector"]["matchLabels"]
    b = deployed(ensemble, SETTINGS, "r")["spec"]["selector"]["matchLabels"]
    assert a != b
    assert ko.child_name("TritonModel", "same") != ko.child_name("ModelEnsemble", "same")


# --- ensembles ---------------------------------------------------------------------------


def test_an_ensemble_deployment_loads_every_member_then_the_ensemble() -> None:
    docs = sample_docs("rag-ensemble")
    members = {d["metadata"]["name"]: parsed(d) for d in docs if d["kind"] == "TritonModel"}
    ensemble_raw = next(d for d in docs if d["kind"] == "ModelEnsemble")
    ensemble = ModelEnsemble.model_validate(
        {**ensemble_raw, "metadata": {"name": "rag", "namespace": "ml", "uid": "e1"}}
    )
    revisions = {name: f"m-{name}" for name in members}
    target = ko.ensemble_target(ensemble, members, "rev", revisions)
    args = container(deployed(target, SETTINGS, "rev"))["args"]
    loads = [a.removeprefix("--load-model=") for a in args if a.startswith("--load-model=")]
    assert loads == ["rag-embedder", "rag-retriever", "rag-generator", "rag"]
    # Every model from the pin of the revision this pod serves, members included.
    repositories = [a.split("/pins/")[1] for a in args if a.startswith("--model-repository=")]
    assert repositories == [
        "rag-embedder/m-rag-embedder",
        "rag-retriever/m-rag-retriever",
        "rag-generator/m-rag-generator",
        "rag/rev",
    ]
    documents = list(yaml.safe_load_all(ko.model_configmap(target)["data"]["model.yaml"]))
    assert [d["kind"] for d in documents] == ["ModelEnsemble", *["TritonModel"] * 3]
    assert deployed(target, SETTINGS, "rev")["metadata"]["ownerReferences"][0]["kind"] == (
        "ModelEnsemble"
    )


# --- sync and cleanup Jobs ------------------------------------------------------------------


def test_jobs_take_the_installations_pull_secrets_resources_and_log_format() -> None:
    """A private registry for the tritonfleet image, a namespace quota that wants limits,
    one log format: every Job of the installation carries them."""
    settings = OperatorSettings.from_env(
        {
            "TRITONFLEET_JOB_IMAGE_PULL_SECRETS": "regcred, mirror",
            "TRITONFLEET_JOB_RESOURCES": '{"requests": {"cpu": "50m", "memory": "128Mi"},'
            ' "limits": {"cpu": "1", "memory": "1Gi"}}',
            "TRITONFLEET_LOG_FORMAT": "json",
        }
    )
    target = target_of(model_doc("toy"))
    for job in (ko.sync_job(target, settings), ko.cleanup_job(target, settings)):
        pod = job["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
        c = pod["containers"][0]
        assert c["resources"] == {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        }
        assert c["args"][-2:] == ["--log-format", "json"]
    default = ko.sync_job(target, SETTINGS)["spec"]["template"]["spec"]
    assert "imagePullSecrets" not in default
    assert default["containers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "2Gi"},
    }
    with pytest.raises(SettingsError, match="TRITONFLEET_JOB_RESOURCES"):
        OperatorSettings.from_env({"TRITONFLEET_JOB_RESOURCES": '{"limits": {"memory": "lots"}}'})


def test_sync_job_runs_tritonfleet_sync_on_the_revision_configmap_under_its_revision() -> None:
    target = target_of(model_doc("toy"))
    job = ko.sync_job(target, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == SETTINGS.operator_image
    assert c["command"] == ["tritonfleet"]
    assert c["args"] == [
        "sync",
        "-f",
        "/etc/tritonfleet/model/model.yaml",
        "--model-name",
        "toy",
        "--revision",
        target.revision,  # computed once, here: the sync publishes under it
        "--repository",
        "/models/repository",
        "--log-format",
        "text",
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-yaml"]["configMap"]["name"] == target.configmap_name()
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "tritonfleet-models"}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert "readOnly" not in mounts["/models"]
    assert job["spec"]["backoffLimit"] == SETTINGS.sync_backoff_limit
    assert job["spec"]["ttlSecondsAfterFinished"] == SETTINGS.sync_ttl_seconds
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["metadata"]["labels"][ko.LABEL_REVISION] == target.revision
    assert target.revision in job["metadata"]["name"]


def test_a_sync_during_a_rollout_keeps_the_files_of_the_revisions_still_served() -> None:
    target = target_of(model_doc("toy"))
    args = ko.sync_job(target, SETTINGS, ("stable1", "older2"))["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert " ".join(args).count("--keep-revision") == 2
    assert args[args.index("--keep-revision") + 1] == "stable1"


def test_sync_image_setting_wins_over_the_operator_image() -> None:
    settings = OperatorSettings(sync_image="registry.local/sync:1")
    job = ko.sync_job(target_of(model_doc("toy")), settings)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/sync:1"


def test_s3_credentials_come_from_the_secret_as_aws_variables() -> None:
    target = target_of(sample_docs("onnx-embedding")[0])
    env = {
        e["name"]: e
        for e in ko.sync_job(target, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {
            "name": "model-store-credentials",
            "key": key,
            "optional": False,
        }
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_pvc_source_is_mounted_read_only_under_pvc() -> None:
    target = target_of(sample_docs("tensorrt-llm-plan")[0])
    pod = ko.sync_job(target, SETTINGS)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["source"]["persistentVolumeClaim"] == {"claimName": "engines", "readOnly": True}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/pvc/engines"]["readOnly"] is True


def test_configmap_holds_only_the_synced_part_so_serving_changes_do_not_touch_it() -> None:
    doc = model_doc("toy")
    a = ko.model_configmap(target_of(doc))
    b = ko.model_configmap(target_of(with_path(doc, "spec.serving", {"gpus": 4})))
    assert a == b
    assert a["immutable"] is True
    (document,) = yaml.safe_load_all(a["data"]["model.yaml"])
    assert set(document["spec"]) == {"source", "config"}
    TritonModel.model_validate(document)  # the sync command parses it back


def test_cleanup_job_removes_the_model_by_its_triton_name() -> None:
    target = target_of(model_doc("toy", modelName="toy_v2"))
    job = ko.cleanup_job(target, SETTINGS)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == [
        "sync",
        "--remove",
        "--model-name",
        "toy_v2",
        "--repository",
        "/models/repository",
        "--log-format",
        "text",
    ]
    assert job["metadata"]["name"] == "tm-toy-cleanup"


# --- Service and repository claim ------------------------------------------------------------


def test_service_is_headless_with_http_grpc_metrics() -> None:
    svc = ko.service(target_of(model_doc("toy")))
    assert svc["spec"]["clusterIP"] == "None"
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("http", 8000),
        ("grpc", 8001),
        ("metrics", 8002),
    ]
    assert svc["spec"]["selector"] == ko.selector_labels(
        target_of(model_doc("toy")), ko.COMPONENT_SERVER
    )


def test_repository_claim_is_rwx_with_class_and_size_from_settings() -> None:
    settings = OperatorSettings(repository_storage_class="fast-rwx", repository_size="2Ti")
    claim = ko.repository_claim("ml", settings)
    assert claim is not None
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "2Ti"}},
        "storageClassName": "fast-rwx",
    }
    assert "ownerReferences" not in claim["metadata"]


def test_an_existing_claim_in_settings_means_none_is_created_and_it_is_mounted() -> None:
    settings = OperatorSettings(repository_claim="shared-models")
    assert ko.repository_claim("ml", settings) is None
    dep = deployed(target_of(model_doc("toy")), settings, "r")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "shared-models"


@pytest.mark.parametrize("doc", model_samples(), ids=lambda d: d["metadata"]["name"])
def test_ports_name_every_merge_key_so_ownership_checks_match_the_server(
    doc: dict[str, Any],
) -> None:
    target = target_of(doc)
    for port in container(deployed(target, SETTINGS, "r"))["ports"]:
        assert port["protocol"] == "TCP"
    for port in ko.service(target)["spec"]["ports"]:
        assert port["protocol"] == "TCP"


# --- settings -------------------------------------------------------------------------------


def test_settings_from_env() -> None:
    settings = OperatorSettings.from_env(
        {
            "TRITONFLEET_TRITON_IMAGE": "nvcr.io/nvidia/tritonserver:24.11-py3",
            "TRITONFLEET_NAMESPACES": "team-a, team-b",
            "TRITONFLEET_TRITON_POD_LABELS": "team=ml,cost-center=42",
            "TRITONFLEET_REPOSITORY_SIZE": "500Gi",
            "TRITONFLEET_LOG_FORMAT": "json",
            "TRITONFLEET_RECONCILE_INTERVAL_SECONDS": "30",
            "TRITONFLEET_SYNC_IMAGE": "",
            "HOME": "/root",
        }
    )
    assert settings.triton_image.endswith("24.11-py3")
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.triton_pod_labels == {"team": "ml", "cost-center": "42"}
    assert settings.repository_size == "500Gi"
    assert settings.log_format == "json"
    assert settings.reconcile_interval_seconds == 30
    assert settings.effective_sync_image == settings.operator_image


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"TRITONFLEET_LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"TRITONFLEET_REPOSITORY_SIZE": "lots"}, "REPOSITORY_SIZE"),
        ({"TRITONFLEET_TRITON_POD_LABELS": "novalue"}, "TRITON_POD_LABELS"),
        ({"TRITONFLEET_RECONCILE_INTERVAL_SECONDS": "0"}, "RECONCILE_INTERVAL_SECONDS"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(SettingsError, match=f"TRITONFLEET_{field}"):
        OperatorSettings.from_env(env)


def test_unknown_tritonfleet_variables_are_listed() -> None:
    assert unknown_env({"TRITONFLEET_TRITON_IMAG": "x", "TRITONFLEET_TRITON_IMAGE": "y"}) == [
        "TRITONFLEET_TRITON_IMAG"
    ]


def test_listen_host_is_all_addresses_unless_the_pod_runner_pins_one() -> None:
    assert listen_host({}) == "0.0.0.0"
    env = {"TRITONFLEET_LISTEN_HOST": "127.1.0.7"}
    assert listen_host(env) == "127.1.0.7"
    assert unknown_env(env) == []  # not a setting, but no typo either
