"""One CLI: the same flag names and exit codes across subcommands, data as -o json|yaml,
`crds` writing only into a checkout, `render --objects`, and the fleet view's rows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tritonfleet.adapters.cli_args import namespaces_of
from tritonfleet.cli import build_parser, main
from tritonfleet.desired.kube.fleet import GatewayCounts, fleet_rows, fleet_table, gateway_counts

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_COMMANDS = ("operator", "gateway", "get", "pre-uninstall", "release-finalizers")
LONG_RUNNING = ("operator", "gateway", "sync")


def options(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {o for action in sub.choices[command]._actions for o in action.option_strings}


@pytest.mark.parametrize("command", CLUSTER_COMMANDS)
def test_cluster_commands_share_their_flags(command: str) -> None:
    assert {"-n", "--namespace", "--kubeconfig", "--context"} <= options(command)


@pytest.mark.parametrize("command", LONG_RUNNING)
def test_long_running_commands_share_their_log_flags(command: str) -> None:
    assert {"--log-format", "--log-level"} <= options(command)


@pytest.mark.parametrize("command", ("render", "get", "crds", "release-finalizers"))
def test_data_commands_take_output(command: str) -> None:
    assert {"-o", "--output"} <= options(command)


def test_namespaces_repeat_or_list() -> None:
    assert namespaces_of(["a", "b,c", " d , "]) == ("a", "b", "c", "d")
    assert namespaces_of(None) == ()


@pytest.mark.parametrize(
    "argv",
    [["render", "-f", "/no/such/file.yaml"], ["gateway", "--routes", "/no/such/routes.yaml"]],
)
def test_a_missing_input_file_is_a_usage_error_everywhere(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert "/no/such/" in capsys.readouterr().err


def test_crds_writes_only_into_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["crds"]) == 2
    assert "not inside a tritonfleet checkout" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["crds", "-o", "json"]) == 0
    kinds = [crd["spec"]["names"]["kind"] for crd in json.loads(capsys.readouterr().out)]
    assert kinds == ["TritonModel", "ModelEnsemble", "TritonServerPool"]


def test_render_objects_in_a_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    sample = str(ROOT / "manifests" / "samples" / "runnable" / "toy-llm.yaml")
    assert main(["render", "-f", sample, "--objects", "-n", "ml"]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    assert {o["kind"] for o in objects} == {
        "PersistentVolumeClaim",
        "ConfigMap",
        "Job",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
    }
    assert {o["metadata"]["namespace"] for o in objects} == {"ml"}
    assert main(["render", "-f", sample, "-o", "json"]) == 0
    (rendered,) = json.loads(capsys.readouterr().out)
    assert rendered["tritonName"] == "toy_llm" and "max_batch_size" in rendered["configPbtxt"]


def body(name: str, ready: str, **status: Any) -> dict[str, Any]:
    return {
        "kind": "TritonModel",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"modelName": f"{name}_v1"},
        "status": {"conditions": [{"type": "Ready", **ready_condition(ready)}], **status},
    }


def ready_condition(ready: str) -> dict[str, str]:
    if ready == "True":
        return {"status": "True", "reason": "Serving"}
    return {"status": "False", "reason": "NotLoaded", "message": "pod triton-0: out of memory"}


def test_the_fleet_view_reads_status_queue_time_and_gateway_counts() -> None:
    metrics = (
        'tritonfleet_gateway_cost_usd_total{model="llm_v1",backend="hosted"} 0.25\n'
        'tritonfleet_gateway_cost_usd_total{model="llm_v1",backend="triton"} 9\n'
        'tritonfleet_gateway_failovers_total{model="llm_v1",reason="breaker_open"} 3\n'
    )
    counts = gateway_counts([metrics, metrics])  # two gateway replicas
    assert counts["llm_v1"] == GatewayCounts(hosted_usd=0.5, failovers=6, requests=0)
    pods = [{"state": "Ready", "revision": "r1"}, {"state": "Loading", "revision": "r1"}]
    rows = fleet_rows(
        [
            body("llm", "True", revision="r1", pods=pods, replicas=2, readyReplicas=1),
            body("emb", "False"),
        ],
        {("ml", "llm_v1"): 0.0421},
        counts,
    )
    assert [r.name for r in rows] == ["emb", "llm"]
    emb, llm = rows
    assert (llm.ready, llm.loaded, llm.replicas, llm.hosted_usd) == ("True", "1/2", "1/2", 0.5)
    assert llm.queue_ms == pytest.approx(42.1)
    assert (emb.ready, emb.reason, emb.queue_ms) == ("False", "NotLoaded", None)
    table = fleet_table(rows, wide=True).splitlines()
    assert table[0].split()[:4] == ["NAMESPACE", "KIND", "NAME", "READY"]
    assert "False(NotLoaded)" in table[1] and "out of memory" in table[1]
    assert "42.1" in table[2] and "0.5000" in table[2]
    unknown = fleet_rows([body("llm", "True")], {}, None)[0]
    assert fleet_table([unknown]).splitlines()[1].split()[6:8] == ["-", "-"]
