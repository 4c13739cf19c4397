"""The generated CRDs on the real API server: they install with server-side
apply, accept every sample, and refuse bad objects with the field named.

The violating objects are the CEL parity table of tests/support/cel_cases.py,
so every rule is proven twice: pydantic refuses it offline (unit), and the real
API server refuses it at ``kubectl apply`` time (here).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.devtools.operator import apply_crds
from hack.devtools.testbed import Testbed
from tests.support.cel_cases import PARITY, RULES, VIOLATIONS, Rule, place

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
EMBEDDING = str(REPO / "manifests/samples/onnx-embedding.yaml")


@pytest.fixture(scope="module")
def crds(testbed: Testbed) -> Testbed:
    apply_crds(testbed)  # polls Established: `kubectl wait` fails at once on a fresh CRD
    return testbed


@pytest.fixture(scope="module")
def namespace(crds: Testbed) -> Iterator[str]:
    with crds.namespace("crds") as name:
        yield name


def _dry_run(testbed: Testbed, doc: dict[str, Any], namespace: str) -> tuple[int, str]:
    doc = {**doc, "metadata": {**doc.get("metadata", {}), "name": f"x-{uuid.uuid4().hex[:8]}"}}
    proc = testbed.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(doc),
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("rule", "violation"), VIOLATIONS, ids=[f"{r.kind}:{r.path}:{v}" for r, v in VIOLATIONS]
)
def test_api_server_refuses_each_cel_violation_naming_the_field(
    crds: Testbed, namespace: str, rule: Rule, violation: str
) -> None:
    doc = place(rule, PARITY[rule.message].violations[violation])
    code, output = _dry_run(crds, doc, namespace)
    assert code != 0, f"the API server accepted {violation}: {output}"
    assert rule.message in output, output
    # The message names where the problem is, as the user wrote it.
    field = rule.path.split(".")[-1].removesuffix("[*]").removesuffix("{*}")
    assert field in output, output


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.kind}:{r.path}:{r.message}")
def test_api_server_accepts_what_each_rule_allows(
    crds: Testbed, namespace: str, rule: Rule
) -> None:
    code, output = _dry_run(crds, place(rule, PARITY[rule.message].valid_in(rule.kind)), namespace)
    assert code == 0, output


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_every_sample_is_accepted(crds: Testbed, namespace: str, sample: Path) -> None:
    proc = crds.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(sample), check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_schema_violations_name_the_field(crds: Testbed, namespace: str) -> None:
    doc = yaml.safe_load((REPO / "manifests/samples/onnx-embedding.yaml").read_text())
    doc["spec"]["config"]["inputs"][0]["dataType"] = "TYPE_FLOAT32"
    doc["spec"]["serving"]["gpuResource"] = "amd.com/gpu"
    code, output = _dry_run(crds, doc, namespace)
    assert code != 0
    assert "spec.config.inputs[0].dataType" in output, output
    assert "TYPE_FLOAT32" in output
    assert "spec.serving.gpuResource" in output, output


def test_unknown_fields_are_refused_by_kubectl(crds: Testbed, namespace: str) -> None:
    """kubectl's strict field validation catches snake_case typos, as render does."""
    doc = yaml.safe_load((REPO / "manifests/samples/onnx-embedding.yaml").read_text())
    doc["spec"]["config"]["max_batch_size"] = 4
    code, output = _dry_run(crds, doc, namespace)
    assert code != 0
    assert 'unknown field "spec.config.max_batch_size"' in output, output


def test_printer_columns_show_status(crds: Testbed, namespace: str) -> None:
    crds.kubectl(
        "apply", "-n", namespace, "-f", str(REPO / "manifests/samples/onnx-embedding.yaml")
    )
    status = {
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Serving",
                    "message": "2 of 2 replicas serve revision ad1c6ed3fa",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "replicaSummary": "2/2",
            "revision": "ad1c6ed3fa",
            "servedBy": "triton",
            "rollout": {"targetRevision": "0bc51de2aa", "phase": "Analyzing", "step": 1},
        }
    }
    crds.kubectl(
        "patch",
        "tritonmodel",
        "minilm-embedding",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    table = crds.kubectl("get", "tm", "-n", namespace, "-o", "wide").stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header[:8] == [
        "NAME", "READY", "REPLICAS", "REVISION", "SERVED-BY", "ROLLOUT", "TARGET", "REASON"
    ]  # fmt: skip
    assert row[:8] == [
        "minilm-embedding", "True", "2/2", "ad1c6ed3fa", "triton", "Analyzing", "0bc51de2aa",
        "Serving",
    ]  # fmt: skip
    # The status subresource is separate: a spec apply never clobbers it.
    crds.kubectl(
        "apply", "-n", namespace, "-f", str(REPO / "manifests/samples/onnx-embedding.yaml")
    )
    got = crds.get("tritonmodel", "minilm-embedding", namespace=namespace)
    assert got["status"]["revision"] == "ad1c6ed3fa"
