"""Operating the chart the way a platform team does, on the testbed: an install that
refuses to take over another provider's external metrics API, `helm test`, the alert
rules in a real Prometheus (one fires when a model's Triton pods stop), the dashboard's
queries, and uninstalls that never leave a namespace Terminating.

The operator, the gateway, their Jobs and the test pod run as local processes through
the pod runner; Triton pods are real tritonserver processes (the alert test) or kwok's
fake pods (the uninstall test, which only needs models with the operator's finalizer).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.devtools.chart import CHART, TRITON_PODS, installed
from hack.devtools.operator import apply_crds
from hack.devtools.pod_runner import PodRunner
from hack.devtools.prometheus import PrometheusServer
from hack.devtools.testbed import REPO_ROOT, Testbed
from tests.support.models import inline_model

pytestmark = pytest.mark.e2e

APISERVICE = "v1beta1.external.metrics.k8s.io"
DASHBOARD = CHART / "files" / "dashboards" / "tritonfleet.json"


def condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((body or {}).get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return dict(c)
    return {}


# --- the external metrics API belongs to one provider ----------------------------------


@contextlib.contextmanager
def foreign_apiservice(testbed: Testbed, annotations: dict[str, str]) -> Iterator[None]:
    """v1beta1.external.metrics.k8s.io as KEDA (or another release) registers it."""
    existing = testbed.get("apiservice", APISERVICE)
    if existing is not None:
        pytest.fail(f"{APISERVICE} already exists on the testbed: {existing['spec']}")
    testbed.apply(
        yaml.safe_dump(
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": APISERVICE, "annotations": annotations},
                "spec": {
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                    "insecureSkipTLSVerify": True,
                    "service": {"name": "keda-operator-metrics-apiserver", "namespace": "keda"},
                },
            }
        )
    )
    try:
        yield
    finally:
        testbed.kubectl("delete", "apiservice", APISERVICE, "--wait=true", check=False)


def dry_run_install(testbed: Testbed, namespace: str, *sets: str) -> Any:
    """``helm install --dry-run=server``: rendered against the live cluster, nothing created."""
    extra = [arg for value in sets for arg in ("--set", value)]
    return testbed.helm(
        "install", "tf", str(CHART), "-n", namespace, "--dry-run=server",
        "--set", "crds.enabled=false", *extra, check=False,
    )  # fmt: skip


def test_install_refuses_to_take_over_another_providers_external_metrics_api(
    testbed: Testbed,
) -> None:
    with testbed.namespace("tf-apis") as namespace:
        with foreign_apiservice(testbed, {}):
            refused = dry_run_install(testbed, namespace)
            assert refused.returncode != 0
            assert "already served by the Service keda/keda-operator-metrics-apiserver" in (
                refused.stderr
            )
            assert "externalMetrics.enabled=false" in refused.stderr
            # auto: install, without registering the API (and without its RBAC and port).
            stepped_aside = dry_run_install(testbed, namespace, "externalMetrics.enabled=auto")
            assert stepped_aside.returncode == 0, stepped_aside.stderr
            manifest = stepped_aside.stdout
            assert "kind: APIService" not in manifest
            assert "TRITONFLEET_METRICS_API_PORT" not in manifest
            assert "another provider already serves external.metrics.k8s.io" in manifest
        release = {"meta.helm.sh/release-name": "keda", "meta.helm.sh/release-namespace": "keda"}
        with foreign_apiservice(testbed, release):
            refused = dry_run_install(testbed, namespace)
            assert "already served by Helm release keda in namespace keda" in refused.stderr
        # Nobody else: it registers it.
        alone = dry_run_install(testbed, namespace)
        assert alone.returncode == 0 and "kind: APIService" in alone.stdout


# --- helm test, the alert rules, the dashboard ------------------------------------------


def rule_groups(**durations: str) -> list[dict[str, Any]]:
    """The chart's PrometheusRule, rendered, as a Prometheus rules file's groups."""
    args = ["template", "tf", str(CHART), "--kube-version", "1.34.0"]
    args += ["--show-only", "templates/prometheusrule.yaml"]
    args += ["--set", "metrics.prometheusRule.enabled=true"]
    for key, value in durations.items():
        args += ["--set", f"metrics.prometheusRule.{key}={value}"]
    rendered = Testbed.from_environment().helm(*args).stdout
    groups: list[dict[str, Any]] = yaml.safe_load(rendered)["spec"]["groups"]
    return groups


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", ())]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["definition"].removeprefix("label_values(").rsplit(",", 1)[0])
    return [e.replace("$namespace", ".*").replace("$model", ".*") for e in exprs]


def pod_ip(testbed: Testbed, namespace: str, selector: str) -> str:
    pods = testbed.get("pods", "-l", selector, namespace=namespace)["items"]
    return str(next(p["status"]["podIP"] for p in pods if p["status"].get("podIP")))


def test_helm_test_passes_and_a_model_whose_pods_stop_fires_its_alert(
    testbed: Testbed, pod_runner: PodRunner, prometheus_binary: Path, tmp_path: Path
) -> None:
    apply_crds(testbed)
    system = f"tf-ops-{uuid.uuid4().hex[:5]}"
    with installed(testbed, system) as release, testbed.namespace("alerting") as models:
        pod_runner.wait_ready(system, "app.kubernetes.io/component=operator", 1, timeout=120)
        pod_runner.wait_ready(system, "app.kubernetes.io/component=gateway", 1, timeout=120)
        tested = testbed.helm("test", release, "-n", system, "--timeout", "3m", check=False)
        probe_log = pod_runner.logs(system, f"{release}-tritonfleet-test")
        assert tested.returncode == 0, tested.stderr + probe_log
        assert "Phase:          Succeeded" in tested.stdout

        operator = pod_ip(testbed, system, "app.kubernetes.io/component=operator")
        gateway = pod_ip(testbed, system, "app.kubernetes.io/component=gateway")
        rules = tmp_path / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": rule_groups(notReadyFor="5s")}))
        prometheus = PrometheusServer(prometheus_binary, tmp_path / "prometheus").start(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {"job_name": "operator", "static_configs": [{"targets": [f"{operator}:8080"]}]},
                    {"job_name": "gateway", "static_configs": [{"targets": [f"{gateway}:9090"]}]},
                ],
            }
        )
        try:
            # Every rule loaded and evaluates; every dashboard query parses.
            groups = prometheus.api("rules")["groups"]
            loaded = {r["name"]: r for g in groups for r in g["rules"]}
            assert {"TritonfleetModelNotReady", "TritonfleetQueueTimeOverTarget"} <= set(loaded)
            assert len(loaded) == sum(len(g["rules"]) for g in rule_groups())
            testbed.wait_for(
                lambda: all(
                    r["health"] == "ok"
                    for g in prometheus.api("rules")["groups"]
                    for r in g["rules"]
                ),
                30,
                "every rule evaluated without error",
            )
            for expr in dashboard_queries():
                prometheus.query(expr)  # raises with Prometheus' parse error

            sample = (REPO_ROOT / "manifests" / "samples" / "runnable" / "toy-llm.yaml").read_text()
            testbed.apply(sample, namespace=models)
            testbed.wait_for(
                lambda: condition(testbed.get("tritonmodel", "toy-llm", namespace=models), "Ready")
                .get("status") == "True",
                300,
                "toy-llm Ready",
            )  # fmt: skip

            def ready_series() -> float | None:
                series = prometheus.query(
                    f'tritonfleet_model_condition{{namespace="{models}", name="toy-llm", '
                    'condition="Ready"}'
                )
                return float(series[0]["value"][1]) if series else None

            testbed.wait_for(lambda: ready_series() == 1, 60, "Prometheus seeing toy-llm Ready")

            # The fleet view a user reaches for first: status, live queue time, gateway counts.
            def fleet() -> dict[str, Any] | None:
                argv = [str(REPO_ROOT / ".venv" / "bin" / "tritonfleet"), "get", "-n", models]
                shown = testbed._run([*argv, "-o", "json"], input=None, check=True, timeout=60)
                (row,) = json.loads(shown.stdout)
                return row if row["queue_ms"] is not None else None

            row = testbed.wait_for(fleet, 60, "tritonfleet get showing the live queue time")
            assert (row["ready"], row["loaded"], row["name"]) == ("True", "1/1", "toy-llm")
            assert row["served_by"]
            # The gateway counts come through the API server's pod proxy, which refuses
            # loopback pod IPs (all of the testbed's): "-" here, read in a real cluster.
            assert row["hosted_usd"] is None
            assert not firing(prometheus, models)

            for pod in testbed.get("pods", "-l", TRITON_PODS, namespace=models)["items"]:
                pod_runner.stop_pod(models, pod["metadata"]["name"])
            alert = testbed.wait_for(
                lambda: firing(prometheus, models), 120, "TritonfleetModelNotReady firing"
            )
            assert alert["labels"]["kind"] == "TritonModel"
            assert alert["annotations"]["runbook_url"].endswith("#tritonfleetmodelnotready")
            assert f"{models}/toy-llm is not Ready" in alert["annotations"]["summary"]
        finally:
            prometheus.stop()
            testbed.kubectl("delete", "tritonmodel", "toy-llm", "-n", models, "--wait=true",
                            "--timeout=120s", check=False, timeout=150)  # fmt: skip


def firing(prometheus: PrometheusServer, namespace: str) -> dict[str, Any] | None:
    for alert in prometheus.api("alerts")["alerts"]:
        labels = alert["labels"]
        if (
            labels.get("alertname") == "TritonfleetModelNotReady"
            and labels.get("namespace") == namespace
            and labels.get("name") == "toy-llm"
            and alert["state"] == "firing"
        ):
            return dict(alert)
    return None


# --- uninstall never strands a namespace ---------------------------------------------------


def fake_served_model(name: str) -> str:
    """A model whose Triton pods kwok fakes (an image the pod runner leaves alone): only
    its finalizer and its cleanup Job matter here."""
    return yaml.safe_dump(inline_model(name, gpus=0, image="example.invalid/tritonserver:fake"))


def finalized(testbed: Testbed, namespace: str, name: str) -> bool:
    body = testbed.get("tritonmodel", name, namespace=namespace)
    return "tritonfleet.io/cleanup" in ((body or {}).get("metadata") or {}).get("finalizers", ())


def deleting(testbed: Testbed, namespace: str, name: str) -> bool:
    body = testbed.get("tritonmodel", name, namespace=namespace)
    return bool(((body or {}).get("metadata") or {}).get("deletionTimestamp"))


def namespace_gone(testbed: Testbed, namespace: str) -> bool:
    return testbed.get("namespace", namespace) is None


def install(testbed: Testbed, system: str, models: str, mode: str) -> None:
    testbed.helm(
        "install", "tf", str(CHART), "-n", system, "--create-namespace",
        "--set", "crds.enabled=false", "--set", "externalMetrics.enabled=false",
        "--set", "gateway.enabled=false",
        "--set", "image.repository=tritonfleet/tritonfleet", "--set", "image.tag=e2e",
        "--set", f"operator.watchNamespaces={{{models}}}",
        "--set", "operator.reconcileIntervalSeconds=5",
        "--set", "operator.unloadTimeoutSeconds=5",
        "--set", "operator.podNetworks={127.0.0.0/8}",
        "--set", f"uninstall.whenModelsExist={mode}", "--set", "uninstall.timeoutSeconds=120",
        timeout=180,
    )  # fmt: skip


def test_uninstall_with_models_leaves_no_namespace_terminating(
    testbed: Testbed, pod_runner: PodRunner
) -> None:
    apply_crds(testbed)
    suffix = uuid.uuid4().hex[:5]
    system, models = f"tf-uninst-{suffix}", f"models-{suffix}"
    testbed.kubectl("create", "namespace", models)
    try:
        # refuse: the uninstall stops, names the model; nothing is removed.
        install(testbed, system, models, "refuse")
        pod_runner.wait_ready(system, "app.kubernetes.io/component=operator", 1, timeout=120)
        testbed.apply(fake_served_model("kept"), namespace=models)
        testbed.wait_for(lambda: finalized(testbed, models, "kept"), 60, "the finalizer on")
        refused = testbed.helm("uninstall", "tf", "-n", system, "--wait", check=False,
                               timeout=240)  # fmt: skip
        assert refused.returncode != 0 and "pre-uninstall failed" in refused.stderr
        hook = testbed.get("pods", "-l", "app.kubernetes.io/component=pre-uninstall",
                           namespace=system)["items"]  # fmt: skip
        log = "".join(pod_runner.logs(system, p["metadata"]["name"]) for p in hook)
        assert f"TritonModel {models}/kept" in log and "Delete them first" in log
        assert testbed.get("tritonmodel", "kept", namespace=models) is not None
        # The operator still runs: delete the model, then the uninstall goes through.
        testbed.kubectl("delete", "tritonmodel", "kept", "-n", models, "--timeout=120s",
                        timeout=150)  # fmt: skip
        again = testbed.helm("uninstall", "tf", "-n", system, "--wait", check=False, timeout=240)
        assert again.returncode == 0, again.stderr

        # delete: the hook deletes the models and waits until the operator cleaned them up.
        install(testbed, system, models, "delete")
        pod_runner.wait_ready(system, "app.kubernetes.io/component=operator", 1, timeout=120)
        testbed.apply(fake_served_model("deleted"), namespace=models)
        testbed.wait_for(lambda: finalized(testbed, models, "deleted"), 60, "the finalizer on")
        done = testbed.helm("uninstall", "tf", "-n", system, "--wait", check=False, timeout=300)
        assert done.returncode == 0, done.stderr
        assert testbed.get("tritonmodel", "deleted", namespace=models) is None
        testbed.kubectl("delete", "namespace", models, "--wait=false")
        testbed.wait_for(lambda: namespace_gone(testbed, models), 120, f"namespace {models} gone")

        # The operator removed first (no hook ran): the namespace would stay Terminating;
        # release-finalizers lets it go.
        testbed.kubectl("create", "namespace", models)
        install(testbed, system, models, "refuse")
        pod_runner.wait_ready(system, "app.kubernetes.io/component=operator", 1, timeout=120)
        testbed.apply(fake_served_model("stranded"), namespace=models)
        testbed.wait_for(lambda: finalized(testbed, models, "stranded"), 60, "the finalizer on")
        testbed.helm("uninstall", "tf", "-n", system, "--no-hooks", "--wait", timeout=180)
        testbed.kubectl("delete", "namespace", models, "--wait=false")
        stuck = testbed.wait_for(
            lambda: (
                (testbed.get("namespace", models) or {}).get("status", {}).get("phase")
                == "Terminating"
                and finalized(testbed, models, "stranded")
                and deleting(testbed, models, "stranded")
            ),
            60,
            "the namespace Terminating on the model's finalizer",
        )
        assert stuck
        released = testbed._run(
            [str(REPO_ROOT / ".venv" / "bin" / "tritonfleet"), "release-finalizers", "-n", models],
            input=None, check=True, timeout=60,
        )  # fmt: skip
        assert f"released TritonModel {models}/stranded" in released.stdout
        testbed.wait_for(lambda: namespace_gone(testbed, models), 120, f"namespace {models} gone")
    finally:
        testbed.helm("uninstall", "tf", "-n", system, "--no-hooks", check=False)
        testbed.kubectl("delete", "namespace", system, models, "--wait=false", check=False)
