"""The local pod runner (hack/devtools/pod_runner.py) on the real testbed.

What the rest of the suite relies on: pods of the Triton and project images
really run, on their own loopback IP, become Ready through their real probes,
get their volumes (PVC, ConfigMap, ServiceAccount token), restart like under
a kubelet, stop when deleted; Jobs complete through the real Job controller;
ClusterIP Services (and the ``kubernetes`` Service) answer on their loopback
cluster IPs; the token really carries the pod's ServiceAccount's RBAC.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from hack.devtools.pod_runner import PodRunner
from hack.devtools.testbed import Testbed

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
TOY_LLM = REPO_ROOT / "manifests" / "samples" / "runnable" / "toy-llm.yaml"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
PROJECT_IMAGE = "tritonfleet/tritonfleet:dev"
CHART = REPO_ROOT / "charts" / "tritonfleet"


def sync_job() -> str:
    """A repository PVC filled by a sync Job of the project image."""
    return f"""
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: models}}
spec: {{accessModes: [ReadWriteMany], resources: {{requests: {{storage: 1Gi}}}}}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: sync}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      # As the operator's sync Jobs: uid 1000, and the claim's files owned by fsGroup.
      securityContext: {{runAsNonRoot: true, runAsUser: 1000, fsGroup: 1000}}
      containers:
      - name: sync
        image: {PROJECT_IMAGE}
        command: [tritonfleet]
        args: [sync, -f, /spec/toy-llm.yaml, --repository, /models/repo]
        volumeMounts:
        - {{name: models, mountPath: /models}}
        - {{name: spec, mountPath: /spec, readOnly: true}}
      volumes:
      - {{name: models, persistentVolumeClaim: {{claimName: models}}}}
      - {{name: spec, configMap: {{name: toy-llm}}}}
"""


def triton(ns: str) -> str:
    """A Triton Deployment reading the repository PVC, and a Service in front of it."""
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: triton, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: triton}}}}
  template:
    metadata: {{labels: {{app: triton}}}}
    spec:
      containers:
      - name: triton
        image: {TRITON_IMAGE}
        command: [tritonserver]
        args: [--model-repository=/models/repo, --model-control-mode=explicit,
               --load-model=toy_llm]
        ports: [{{name: http, containerPort: 8000}}]
        readinessProbe:
          httpGet: {{path: /v2/health/ready, port: http}}
          periodSeconds: 1
        volumeMounts: [{{name: models, mountPath: /models, readOnly: true}}]
      volumes:
      - {{name: models, persistentVolumeClaim: {{claimName: models}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: triton}}
spec:
  selector: {{app: triton}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""


def http(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    assert url.startswith("http://127."), url  # network safety: loopback only
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def job_complete(testbed: Testbed, ns: str, name: str) -> dict[str, Any] | None:
    job = testbed.get("job", name, namespace=ns)
    conditions = ((job or {}).get("status") or {}).get("conditions") or []
    done = any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)
    return dict(job) if job and done else None


def test_a_pod_created_before_its_configmap_starts_once_the_configmap_exists(
    testbed: Testbed, pod_runner: PodRunner
) -> None:
    """As under a kubelet, which retries a pod's volumes: an operator may create a Job
    before the ConfigMap its pod mounts."""
    with testbed.namespace("late") as ns:
        testbed.apply(sync_job(), namespace=ns)

        def waiting() -> str:
            pods = testbed.get("pods", "-l", "job-name=sync", namespace=ns)["items"]
            statuses = [s for p in pods for s in p["status"].get("containerStatuses") or []]
            return "".join(s["state"].get("waiting", {}).get("reason", "") for s in statuses)

        testbed.wait_for(lambda: waiting() == "CreateContainerConfigError", 60,
                         "the pod waiting for its ConfigMap")  # fmt: skip
        testbed.kubectl("create", "configmap", "toy-llm", f"--from-file={TOY_LLM}", "-n", ns)
        job = testbed.wait_for(lambda: job_complete(testbed, ns, "sync"), 120, "the sync Job done")
        assert job["status"]["succeeded"] == 1


def test_triton_from_a_synced_pvc_serves_behind_its_service_and_restarts(
    testbed: Testbed, pod_runner: PodRunner
) -> None:
    with testbed.namespace("runner") as ns:
        testbed.kubectl("create", "configmap", "toy-llm", f"--from-file={TOY_LLM}", "-n", ns)
        testbed.apply(sync_job(), namespace=ns)

        # The sync Job (project image) completes through the real Job controller.
        job = testbed.wait_for(lambda: job_complete(testbed, ns, "sync"), 120, "the sync Job done")
        assert job["status"]["succeeded"] == 1
        testbed.apply(triton(ns), namespace=ns)

        # Triton becomes Ready through its real readiness probe, on its own loopback IP.
        (pod,) = pod_runner.wait_ready(ns, "app=triton", 1, timeout=120)
        ip = pod["status"]["podIP"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(testbed.runner_pod_cidr), ip
        assert pod["status"]["hostIP"].startswith("127.240.0."), pod["status"]["hostIP"]
        status, answer = http(
            "POST",
            f"http://{ip}:8000/v2/models/toy_llm/generate",
            {"text_input": "one two three", "max_tokens": 3},
        )
        assert status == 200
        assert answer["text_output"].split() == ["three", "two", "one"]

        # The Service answers on its loopback cluster IP (the runner plays kube-proxy).
        svc = testbed.get("service", "triton", namespace=ns)
        cluster_ip = svc["spec"]["clusterIP"]
        assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(testbed.service_cidr)
        status, _ = testbed.wait_for(
            lambda: http("GET", f"http://{cluster_ip}:80/v2/health/ready"),
            20,
            "the Service's cluster IP to answer",
        )
        assert status == 200

        # SIGKILL: restartPolicy Always -> restarted, restartCount 1, Ready again.
        name = pod["metadata"]["name"]
        (before,) = [p for p in pod_runner.processes() if p["pod"] == name]
        pod_runner.kill(ns, name)

        def restarted() -> dict[str, Any] | None:
            p = testbed.get("pod", name, namespace=ns)
            cs = (p or {}).get("status", {}).get("containerStatuses") or [{}]
            count = cs[0].get("restartCount")
            return p if count == before["restartCount"] + 1 and cs[0].get("ready") else None

        testbed.wait_for(restarted, 90, "the killed Triton to be restarted and Ready")
        assert not pid_alive(before["pid"])

        # Deleting the pod stops the process and finishes the deletion.
        (now,) = [p for p in pod_runner.processes() if p["pod"] == name]
        testbed.kubectl("delete", "pod", name, "-n", ns, "--wait=false")
        testbed.wait_for(
            lambda: not pid_alive(now["pid"]) and testbed.get("pod", name, namespace=ns) is None,
            60,
            "the deleted pod's process to stop and the pod to go",
        )
        assert "toy_llm" in pod_runner.logs(ns, name)


def gated_triton(ns: str, drain: int) -> str:
    """A Triton pod (no model) with a readiness gate and a preStop sleep, as the
    operator's Triton pods have."""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: gated, namespace: {ns}}}
spec:
  readinessGates: [{{conditionType: example.com/loaded}}]
  terminationGracePeriodSeconds: 30
  containers:
  - name: triton
    image: {TRITON_IMAGE}
    command: [tritonserver]
    args: [--model-repository=/models, --model-control-mode=explicit]
    ports: [{{name: http, containerPort: 8000}}]
    readinessProbe:
      httpGet: {{path: /v2/health/ready, port: http}}
      periodSeconds: 1
    lifecycle: {{preStop: {{sleep: {{seconds: {drain}}}}}}}
    volumeMounts: [{{name: models, mountPath: /models}}]
  volumes: [{{name: models, emptyDir: {{}}}}]
"""


def conditions(pod: dict[str, Any] | None) -> dict[str, str]:
    return {
        c["type"]: c["status"] for c in ((pod or {}).get("status") or {}).get("conditions") or []
    }


def test_a_readiness_gate_holds_ready_and_pre_stop_keeps_the_pod_answering(
    testbed: Testbed, pod_runner: PodRunner
) -> None:
    """What a rollout relies on: a pod is Ready only once the gate's condition is True
    (set by another client; the runner's own status writes keep it), and a deleted pod
    keeps running through its preStop sleep before it is stopped."""
    drain = 4
    with testbed.namespace("gates") as ns:
        testbed.apply(gated_triton(ns, drain), namespace=ns)

        def containers_ready() -> dict[str, Any] | None:
            pod = testbed.get("pod", "gated", namespace=ns)
            return pod if conditions(pod).get("ContainersReady") == "True" else None

        pod = testbed.wait_for(containers_ready, 120, "Triton's container Ready")
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False" and ready["reason"] == "ReadinessGatesNotReady"
        testbed.kubectl(
            "patch", "pod", "gated", "-n", ns, "--subresource=status", "--type=strategic", "-p",
            json.dumps({"status": {"conditions": [{"type": "example.com/loaded",
                                                   "status": "True"}]}}),
        )  # fmt: skip
        testbed.wait_for(
            lambda: conditions(testbed.get("pod", "gated", namespace=ns)).get("Ready") == "True",
            20,
            "Ready once the gate's condition is True",
        )
        time.sleep(1.5)  # several status writes of the runner later, the gate is still set
        assert conditions(testbed.get("pod", "gated", namespace=ns))["example.com/loaded"] == "True"

        (proc,) = [p for p in pod_runner.processes() if p["pod"] == "gated"]
        ip = testbed.get("pod", "gated", namespace=ns)["status"]["podIP"]
        deleted = time.monotonic()
        testbed.kubectl("delete", "pod", "gated", "-n", ns, "--wait=false")
        answered_after = 0.0
        while pid_alive(proc["pid"]) and time.monotonic() - deleted < 30:
            try:
                if http("GET", f"http://{ip}:8000/v2/health/live", timeout=1)[0] == 200:
                    answered_after = time.monotonic() - deleted
            except OSError:
                pass
            time.sleep(0.2)
        assert answered_after >= drain - 1, answered_after  # it answered through the drain
        testbed.wait_for(
            lambda: testbed.get("pod", "gated", namespace=ns) is None, 60, "the pod gone"
        )


def test_the_pod_acts_with_its_service_account_token(
    testbed: Testbed, pod_runner: PodRunner
) -> None:
    """The default ServiceAccount may not list jobs: the operator process is refused as it."""
    with testbed.namespace("rbac") as ns:
        testbed.apply(
            f"""
apiVersion: v1
kind: Pod
metadata: {{name: op}}
spec:
  restartPolicy: Never
  containers:
  - {{name: operator, image: {PROJECT_IMAGE}, args: [operator]}}
""",
            namespace=ns,
        )
        who = f"system:serviceaccount:{ns}:default"
        testbed.wait_for(
            lambda: "forbidden" in (log := pod_runner.logs(ns, "op")) and who in log,
            60,
            f"the operator's requests to be refused for {who}",
        )


def test_kubernetes_service_reaches_the_api_server(testbed: Testbed, pod_runner: PodRunner) -> None:
    svc = testbed.get("service", "kubernetes", namespace="default")
    ip = svc["spec"]["clusterIP"]
    assert ip == str(ipaddress.ip_network(testbed.service_cidr)[1])
    ctx = ssl.create_default_context(cafile=str(testbed.cluster_dir / "pki" / "ca.crt"))
    ctx.check_hostname = False  # the serving cert names 127.0.0.1, not the cluster IP

    def version() -> dict[str, Any]:
        with urllib.request.urlopen(f"https://{ip}:443/version", context=ctx, timeout=5) as r:
            return dict(json.loads(r.read()))

    answer = testbed.wait_for(version, 20, "the kubernetes Service to answer")
    assert answer["gitVersion"] == testbed.versions["KUBE_VERSION"]


def test_the_chart_s_operator_comes_up_ready_through_the_runner(
    testbed: Testbed, pod_runner: PodRunner
) -> None:
    crds_exist = testbed.get("crd", "tritonmodels.tritonfleet.io") is not None
    release = f"tf{uuid.uuid4().hex[:5]}"  # cluster-scoped RBAC objects are named after it
    with testbed.namespace("chart") as ns:
        testbed.helm(
            "install", release, str(CHART), "-n", ns, "--wait", "--timeout", "120s",
            "--set", f"crds.enabled={'false' if crds_exist else 'true'}",
            "--set", "image.tag=dev",
            timeout=180,
        )  # fmt: skip
        try:
            pods = pod_runner.wait_ready(ns, "app.kubernetes.io/component=operator", 1, 60)
            ip = pods[0]["status"]["podIP"]
            assert ipaddress.ip_address(ip) in ipaddress.ip_network(testbed.runner_pod_cidr), ip
            # Its metrics listener binds the pod IP ($TRITONFLEET_LISTEN_HOST).
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=5) as r:
                        assert b"tritonfleet_" in r.read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        finally:
            testbed.helm("uninstall", release, "-n", ns, "--wait", check=False, timeout=180)


def test_a_new_runner_takes_over_the_pods_of_a_stopped_one(testbed: Testbed) -> None:
    """Like a kubelet after a reboot: same pod IP, the restart counted, Ready again."""
    manifest = f"""
apiVersion: v1
kind: Pod
metadata: {{name: empty-triton}}
spec:
  containers:
  - name: triton
    image: {TRITON_IMAGE}
    command: [tritonserver]
    args: [--model-repository=/models, --model-control-mode=explicit]
    readinessProbe: {{httpGet: {{path: /v2/health/ready, port: 8000}}, periodSeconds: 1}}
    volumeMounts: [{{name: models, mountPath: /models}}]
  volumes: [{{name: models, emptyDir: {{}}}}]
"""
    with testbed.namespace("adopt") as ns:
        with PodRunner(testbed.kubeconfig, testbed.state_dir) as first:
            testbed.apply(manifest, namespace=ns)
            (pod,) = first.wait_ready(ns, "", 1, timeout=90)
            (proc,) = [p for p in first.processes() if p["namespace"] == ns]  # ours only
        assert not pid_alive(proc["pid"]), "a stopped runner leaves no process behind"
        stale = testbed.get("pod", "empty-triton", namespace=ns)
        assert not stale["status"]["containerStatuses"][0]["ready"]
        with PodRunner(testbed.kubeconfig, testbed.state_dir) as second:
            (again,) = second.wait_ready(ns, "", 1, timeout=90)
            assert again["status"]["podIP"] == pod["status"]["podIP"]
            assert again["status"]["containerStatuses"][0]["restartCount"] == 1


def test_an_apiservice_is_dialled_on_its_service_s_cluster_ip(
    testbed: Testbed, pod_runner: PodRunner
) -> None:
    """Aggregator routing is off: kube-apiserver dials the ClusterIP, which the runner serves.

    Plain-HTTP Triton stands in for an aggregated API server, so the discovery
    request fails, but only after reaching the pod through the cluster IP (a
    missing endpoint or listener would be reported differently).
    """
    group = f"probe{uuid.uuid4().hex[:6]}.example.com"
    with testbed.namespace("agg") as ns:
        testbed.apply(
            f"""
apiVersion: v1
kind: Pod
metadata: {{name: t, labels: {{app: t}}}}
spec:
  containers:
  - name: triton
    image: {TRITON_IMAGE}
    command: [tritonserver]
    args: [--model-repository=/models, --model-control-mode=explicit]
    ports: [{{name: http, containerPort: 8000}}]
    readinessProbe: {{httpGet: {{path: /v2/health/ready, port: http}}, periodSeconds: 1}}
    volumeMounts: [{{name: models, mountPath: /models}}]
  volumes: [{{name: models, emptyDir: {{medium: Memory}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: t}}
spec:
  selector: {{app: t}}
  ports: [{{port: 443, targetPort: http}}]
""",
            namespace=ns,
        )
        pod_runner.wait_ready(ns, "app=t", 1, timeout=90)
        cluster_ip = testbed.get("service", "t", namespace=ns)["spec"]["clusterIP"]
        testbed.apply(f"""
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1.{group}}}
spec:
  group: {group}
  version: v1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {{namespace: {ns}, name: t, port: 443}}
""")
        try:

            def message() -> str | None:
                svc = testbed.get("apiservice", f"v1.{group}") or {}
                for c in svc.get("status", {}).get("conditions") or []:
                    if c["type"] == "Available" and f"https://{cluster_ip}:443/" in c["message"]:
                        return str(c["message"])
                return None

            testbed.wait_for(message, 60, f"the aggregator to dial {cluster_ip}:443")
        finally:
            testbed.kubectl("delete", "apiservice", f"v1.{group}", check=False)
