"""The Kubernetes testbed itself: real scheduler, controllers, storage, helm, kwok.

These tests pin down what the rest of the suite relies on (hack/testbed/README.md).
"""

from __future__ import annotations

import ipaddress
import json
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from hack.devtools.testbed import (
    CPU_NODES,
    GPU_NODES,
    LOCAL_RUNNER_LABEL,
    STORAGE_CLASS,
    Testbed,
)

pytestmark = pytest.mark.integration

CHART_DIR = Path(__file__).parent / "testbed_chart"
IMAGE = "registry.example/testbed/pause:1.0"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def deployment(name: str, replicas: int, *, gpus: int = 0, tolerate: bool = False) -> str:
    resources: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    pod_spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": IMAGE, "resources": resources}],
    }
    if tolerate:
        pod_spec["tolerations"] = [GPU_TOLERATION]
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
            },
        }
    )


def pod(
    name: str,
    *,
    gpus: int = 0,
    tolerate: bool = False,
    labels: dict[str, str] | None = None,
    image: str = IMAGE,
) -> str:
    resources: dict[str, Any] = {"requests": {"cpu": "100m"}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    container = {"name": "main", "image": image, "resources": resources}
    spec: dict[str, Any] = {"containers": [container]}
    if tolerate:
        spec["tolerations"] = [GPU_TOLERATION]
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": spec,
        }
    )


def pods_of(tb: Testbed, ns: str, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = tb.get("pods", "-l", f"app={app}", namespace=ns)["items"]
    return items


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def test_gpu_pods_land_on_gpu_nodes_and_others_on_cpu_nodes(testbed: Testbed) -> None:
    with testbed.namespace("tb-sched") as ns:
        testbed.apply(deployment("gpu", 4, gpus=1, tolerate=True), namespace=ns)
        testbed.apply(deployment("gpu-no-toleration", 1, gpus=1), namespace=ns)
        testbed.apply(pod("plain"), namespace=ns)

        def gpu_pods_running() -> list[dict[str, Any]] | None:
            pods = pods_of(testbed, ns, "gpu")
            running = [p for p in pods if p["status"].get("phase") == "Running"]
            return pods if len(pods) == 4 and len(running) == 4 else None

        pods = testbed.wait_for(gpu_pods_running, 60, "4 GPU pods Running (kwok)")
        assert {p["spec"]["nodeName"] for p in pods} <= set(GPU_NODES)
        assert all(p["status"].get("podIP") for p in pods), "kwok assigns pod IPs"
        # ... from the nodes' loopback pod CIDRs: dialling a fake pod is refused locally.
        assert all(p["status"]["podIP"].startswith("127.244.") for p in pods), [
            p["status"]["podIP"] for p in pods
        ]

        plain = testbed.wait_for(
            lambda: (
                (p := testbed.get("pod", "plain", namespace=ns)) and p["spec"].get("nodeName") and p
            ),
            60,
            "pod 'plain' scheduled",
        )
        assert plain["spec"]["nodeName"] in CPU_NODES

        def unschedulable() -> dict[str, Any] | None:
            pods = pods_of(testbed, ns, "gpu-no-toleration")
            cond = condition(pods[0], "PodScheduled") if pods else None
            return cond if cond and cond.get("reason") == "Unschedulable" else None

        cond = testbed.wait_for(unschedulable, 60, "untolerating GPU pod reported Unschedulable")
        assert cond["status"] == "False"
        assert (
            "untolerated taint" in cond["message"]
            or "Insufficient nvidia.com/gpu" in cond["message"]
        ), cond["message"]
        pending = pods_of(testbed, ns, "gpu-no-toleration")[0]
        assert pending["status"]["phase"] == "Pending"
        assert not pending["spec"].get("nodeName")


def test_pod_asking_for_more_gpus_than_any_node_stays_pending(testbed: Testbed) -> None:
    with testbed.namespace("tb-greedy") as ns:
        testbed.apply(pod("greedy", gpus=9, tolerate=True), namespace=ns)

        def unschedulable() -> dict[str, Any] | None:
            p = testbed.get("pod", "greedy", namespace=ns)
            cond = condition(p, "PodScheduled") if p else None
            return cond if cond and cond.get("reason") == "Unschedulable" else None

        cond = testbed.wait_for(unschedulable, 60, "PodScheduled=False/Unschedulable on 'greedy'")
        assert "Insufficient nvidia.com/gpu" in cond["message"], cond["message"]
        assert testbed.get("pod", "greedy", namespace=ns)["status"]["phase"] == "Pending"


def test_garbage_collector_deletes_dependents(testbed: Testbed) -> None:
    with testbed.namespace("tb-gc") as ns:
        testbed.kubectl("create", "configmap", "owner", "-n", ns, "--from-literal=a=b")
        owner_uid = testbed.get("configmap", "owner", namespace=ns)["metadata"]["uid"]
        testbed.apply(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": "child",
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "ConfigMap",
                                "name": "owner",
                                "uid": owner_uid,
                            }
                        ],
                    },
                    "data": {"x": "y"},
                }
            ),
            namespace=ns,
        )
        testbed.apply(deployment("web", 2), namespace=ns)
        testbed.wait_for(
            lambda: len(pods_of(testbed, ns, "web")) == 2, 60, "2 pods of Deployment 'web'"
        )

        testbed.kubectl("delete", "configmap", "owner", "-n", ns)
        testbed.kubectl("delete", "deployment", "web", "-n", ns, "--cascade=background")

        testbed.wait_for(
            lambda: testbed.get("configmap", "child", namespace=ns) is None,
            60,
            "child ConfigMap garbage-collected",
        )
        testbed.wait_for(
            lambda: (
                not testbed.get("replicasets", "-l", "app=web", namespace=ns)["items"]
                and not pods_of(testbed, ns, "web")
            ),
            60,
            "ReplicaSet and pods of 'web' garbage-collected",
        )


def test_hpa_with_external_metric_is_processed_by_the_controller(testbed: Testbed) -> None:
    with testbed.namespace("tb-hpa") as ns:
        testbed.apply(deployment("triton", 1), namespace=ns)
        testbed.apply(
            textwrap.dedent("""
            apiVersion: autoscaling/v2
            kind: HorizontalPodAutoscaler
            metadata:
              name: triton
            spec:
              scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: triton}
              minReplicas: 1
              maxReplicas: 4
              metrics:
              - type: External
                external:
                  metric:
                    name: tritonfleet_queue_time_us
                    selector:
                      matchLabels: {model: toy_llm}
                  target: {type: AverageValue, averageValue: "50000"}
        """),
            namespace=ns,
        )

        def scaling_inactive() -> dict[str, Any] | None:
            hpa = testbed.get("hpa", "triton", namespace=ns)
            cond = condition(hpa, "ScalingActive") if hpa else None
            return cond if cond and cond["status"] == "False" else None

        cond = testbed.wait_for(scaling_inactive, 60, "HPA condition ScalingActive=False")
        assert cond["reason"] == "FailedGetExternalMetric", cond
        able = condition(testbed.get("hpa", "triton", namespace=ns), "AbleToScale")
        assert able is not None
        assert able["status"] == "True"


def test_helm_install_and_uninstall(testbed: Testbed) -> None:
    with testbed.namespace("tb-helm") as ns:
        release = f"tb-{uuid.uuid4().hex[:5]}"
        testbed.helm(
            "install",
            release,
            str(CHART_DIR),
            "-n",
            ns,
            "--set",
            "greeting=bonjour",
            "--wait",
            "--timeout",
            "90s",
        )
        cm = testbed.get("configmap", f"{release}-config", namespace=ns)
        assert cm["data"]["greeting"] == "bonjour"
        listed = json.loads(testbed.helm("list", "-n", ns, "-o", "json").stdout)
        assert [(r["name"], r["status"]) for r in listed] == [(release, "deployed")]

        testbed.helm("uninstall", release, "-n", ns, "--wait", "--timeout", "60s")
        assert testbed.get("configmap", f"{release}-config", namespace=ns) is None
        assert json.loads(testbed.helm("list", "-n", ns, "-o", "json").stdout) == []


def test_pvc_binds_to_a_static_local_volume(testbed: Testbed) -> None:
    with testbed.namespace("tb-pvc") as ns:
        testbed.apply(
            textwrap.dedent("""
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata:
              name: models
            spec:
              accessModes: [ReadWriteMany]
              resources:
                requests: {storage: 10Gi}
        """),
            namespace=ns,
        )

        def bound() -> dict[str, Any] | None:
            pvc = testbed.get("pvc", "models", namespace=ns)
            return pvc if pvc and pvc["status"].get("phase") == "Bound" else None

        pvc = testbed.wait_for(bound, 60, "PVC 'models' Bound")
        assert pvc["spec"]["storageClassName"] == STORAGE_CLASS
        pv_name = pvc["spec"]["volumeName"]
        path = testbed.pv_path(pv_name)
        assert path.is_dir()
        assert path.parent == testbed.volumes_dir

        testbed.kubectl("delete", "pvc", "models", "-n", ns)
        testbed.wait_for(
            lambda: testbed.get("pv", pv_name)["status"]["phase"] == "Released",
            60,
            f"PV {pv_name} Released",
        )
        assert pv_name in testbed.recycle_volumes()
        testbed.wait_for(
            lambda: testbed.get("pv", pv_name)["status"]["phase"] == "Available",
            60,
            f"PV {pv_name} Available again",
        )


def test_kwok_leaves_local_runner_pods_alone(testbed: Testbed) -> None:
    with testbed.namespace("tb-local") as ns:
        testbed.apply(pod("kwok-managed"), namespace=ns)
        testbed.apply(pod("harness-managed", labels={LOCAL_RUNNER_LABEL: "true"}), namespace=ns)
        testbed.wait_for(
            lambda: (
                testbed.get("pod", "kwok-managed", namespace=ns)["status"].get("phase") == "Running"
            ),
            60,
            "kwok-managed pod Running",
        )
        local = testbed.wait_for(
            lambda: (
                (p := testbed.get("pod", "harness-managed", namespace=ns))["spec"].get("nodeName")
                and p
            ),
            60,
            "local-runner pod bound to a node by the scheduler",
        )
        assert local["spec"]["nodeName"] in CPU_NODES
        time.sleep(3)  # kwok reacts within milliseconds; give it ample time to (not) act
        local = testbed.get("pod", "harness-managed", namespace=ns)
        assert local["status"]["phase"] == "Pending"
        assert not local["status"].get("podIP")
        assert condition(local, "Ready") is None

        # kwok does not finish its deletion either: the runner (here: us) must.
        testbed.kubectl("delete", "pod", "harness-managed", "-n", ns, "--wait=false")
        time.sleep(2)
        terminating = testbed.get("pod", "harness-managed", namespace=ns)
        assert terminating is not None
        assert terminating["metadata"].get("deletionTimestamp")
        testbed.kubectl("delete", "pod", "harness-managed", "-n", ns, "--grace-period=0", "--force")
        assert testbed.get("pod", "harness-managed", namespace=ns) is None


def test_admission_policy_labels_pods_of_listed_images(testbed: Testbed) -> None:
    prefix = f"registry.example/local-{uuid.uuid4().hex[:6]}/"
    before = testbed.local_runner_image_prefixes()

    def dry_run_labels(ns: str, image: str) -> dict[str, str]:
        out = testbed.kubectl(
            "create", "-f", "-", "-n", ns, "--dry-run=server", "-o", "json",
            input=pod("probe", image=image),
        ).stdout  # fmt: skip
        labels: dict[str, str] = json.loads(out)["metadata"].get("labels") or {}
        return labels

    testbed.set_local_runner_image_prefixes([*before, prefix])
    try:
        with testbed.namespace("tb-map") as ns:
            testbed.wait_for(
                lambda: (
                    dry_run_labels(ns, prefix + "tritonserver:1").get(LOCAL_RUNNER_LABEL) == "true"
                ),
                30,
                "the MutatingAdmissionPolicy to label a pod of a listed image",
            )
            assert LOCAL_RUNNER_LABEL not in dry_run_labels(ns, IMAGE)
    finally:
        testbed.set_local_runner_image_prefixes(before)


def test_aggregation_layer_is_configured(testbed: Testbed) -> None:
    cm = testbed.get("configmap", "extension-apiserver-authentication", namespace="kube-system")
    data = cm["data"]
    assert "requestheader-client-ca-file" in data
    assert json.loads(data["requestheader-allowed-names"]) == ["front-proxy-client"]
    assert json.loads(data["requestheader-username-headers"]) == ["X-Remote-User"]
    ca = (testbed.front_proxy_dir / "front-proxy-ca.crt").read_text().strip()
    assert ca in data["requestheader-client-ca-file"]


def test_every_address_the_testbed_hands_out_is_loopback(testbed: Testbed) -> None:
    """Nodes, pod CIDRs and Service cluster IPs: nothing can lead a client off 127.0.0.0/8."""
    nodes = testbed.get("nodes", "-l", "tritonfleet.io/testbed=true")["items"]
    for node in nodes:
        assert node["spec"]["podCIDR"].startswith("127.244."), node["spec"]["podCIDR"]
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal and internal[0].startswith("127.240.0."), internal
    api = testbed.get("service", "kubernetes", namespace="default")
    network = ipaddress.IPv4Network(testbed.service_cidr)
    assert network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
    assert api["spec"]["clusterIP"] == str(network[1])
    with testbed.namespace("tb-svc") as ns:
        testbed.kubectl("create", "service", "clusterip", "web", "--tcp=80:8080", "-n", ns)
        svc = testbed.get("service", "web", namespace=ns)
        assert ipaddress.ip_address(svc["spec"]["clusterIP"]) in network


def test_api_server_crash_restart_keeps_the_cluster_and_its_objects(testbed: Testbed) -> None:
    # The chaos suite's control-plane fault, short: the API server SIGKILLed and
    # started again on its own port, objects kept (etcd untouched), nodes Ready.
    name = f"restart-{uuid.uuid4().hex[:6]}"
    testbed.kubectl("create", "configmap", name, "-n", "default")
    try:
        before = testbed.component_pid("kube-apiserver")
        down_s = testbed.restart_component("kube-apiserver")
        assert testbed.component_pid("kube-apiserver") != before
        assert testbed.get("configmap", name, namespace="default") is not None
        assert testbed.is_healthy()
        assert down_s < 60
    finally:
        testbed.kubectl("delete", "configmap", name, "-n", "default", check=False)
