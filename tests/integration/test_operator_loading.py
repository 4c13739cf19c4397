"""Per-replica loading through the operator, with real Triton pods.

The operator runs as a local process against the testbed; the local pod runner
(hack/devtools/pod_runner.py) plays kubelet for the Triton pods of the
operator's Deployments (real ``tritonserver`` processes on their own loopback
pod IPs) and for the sync and cleanup Jobs (the real ``tritonfleet sync``), so
the whole chain is real: apply -> sync -> Deployment -> pods -> the loader
loads on every pod -> status.pods / Loaded -> inference on each pod IP.
The operator may dial loopback pod IPs only (TRITONFLEET_DIAL_POD_NETWORKS).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from hack.devtools.operator import OperatorProcess, condition, delete_models
from hack.devtools.pod_runner import PodRunner
from hack.devtools.testbed import REPO_ROOT, Testbed

pytestmark = pytest.mark.integration

RUNNABLE = REPO_ROOT / "manifests" / "samples" / "runnable"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((RUNNABLE / name).read_text()) if d]


@pytest.fixture
def ns(
    testbed: Testbed,
    operator_process: OperatorProcess,
    pod_runner: PodRunner,
) -> Iterator[str]:
    prefix = operator_process.prefix  # type: ignore[attr-defined]
    with testbed.namespace(prefix) as name:
        yield name
        delete_models(testbed, name)
    # (The pod runner hands its image prefixes back when it stops, so kwok-only
    # tests after this module get their pods run by kwok again.)
    testbed.recycle_volumes()


def apply(testbed: Testbed, ns: str, *objs: dict[str, Any]) -> None:
    testbed.apply(yaml.safe_dump_all(list(objs)), namespace=ns)


def events(testbed: Testbed, ns: str, name: str) -> list[dict[str, Any]]:
    listed = testbed.get("events", "--field-selector", f"involvedObject.name={name}", namespace=ns)
    return list((listed or {}).get("items") or [])


def wait_loaded(
    testbed: Testbed,
    ns: str,
    kind: str,
    name: str,
    pods: int,
    *,
    not_revision: str | None = None,
    timeout: float = 240,
) -> dict[str, Any]:
    """The object once Loaded=True with ``pods`` pods all Ready at its revision."""

    def check() -> dict[str, Any] | None:
        obj = testbed.get(kind, name, namespace=ns)
        status = (obj or {}).get("status") or {}
        revision = status.get("revision")
        listed = status.get("pods") or []
        if (
            condition(obj, "Loaded").get("status") == "True"
            and revision != not_revision
            and len(listed) == pods
            and all(p["state"] == "Ready" and p.get("revision") == revision for p in listed)
        ):
            return obj
        return None

    found: dict[str, Any] = testbed.wait_for(
        check, timeout=timeout, what=f"{kind} {ns}/{name} Loaded on {pods} pod(s)"
    )
    return found


def post(ip: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    assert ipaddress.ip_address(ip) in LOOPBACK, f"refusing to dial non-loopback {ip}"
    request = urllib.request.Request(
        f"http://{ip}:8000{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def get(ip: str, path: str) -> dict[str, Any]:
    assert ipaddress.ip_address(ip) in LOOPBACK, f"refusing to dial non-loopback {ip}"
    with urllib.request.urlopen(f"http://{ip}:8000{path}", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def served_revision(ip: str, model: str) -> str:
    config = get(ip, f"/v2/models/{model}/config")
    return str(config["parameters"]["tritonfleet.revision"]["string_value"])


def test_toy_llm_is_loaded_on_every_replica_and_reloaded_on_a_new_revision(
    testbed: Testbed,
    ns: str,
    operator_process: OperatorProcess,
) -> None:
    (model,) = docs("toy-llm.yaml")
    model["spec"]["serving"]["replicas"] = {"min": 2, "max": 3}
    model["spec"]["serving"].pop("autoscaling", None)
    apply(testbed, ns, model)
    obj = wait_loaded(testbed, ns, "tritonmodel", "toy-llm", 2)
    first = obj["status"]["revision"]
    assert condition(obj, "Synced")["status"] == "True"
    pods = obj["status"]["pods"]
    assert len({p["name"] for p in pods}) == 2
    for pod in pods:
        assert ipaddress.ip_address(pod["ip"]) in LOOPBACK
        assert served_revision(pod["ip"], "toy_llm") == first
        status, answer = post(
            pod["ip"],
            "/v2/models/toy_llm/generate",
            {"text_input": "one two three", "max_tokens": 4},
        )
        assert status == 200, answer
        assert answer["text_output"] == "three two one three"
    # Ready follows Loaded.
    testbed.wait_for(
        lambda: (
            condition(testbed.get("tritonmodel", "toy-llm", namespace=ns), "Ready").get("status")
            == "True"
        ),
        timeout=60,
        what="Ready=True once Loaded",
    )

    # A new revision: every pod ends up serving it (rolled or reloaded).
    edited = copy.deepcopy(model)
    edited["spec"]["config"]["maxBatchSize"] = 4
    apply(testbed, ns, edited)
    obj = wait_loaded(testbed, ns, "tritonmodel", "toy-llm", 2, not_revision=first)
    second = obj["status"]["revision"]
    assert second != first
    for pod in obj["status"]["pods"]:
        assert served_revision(pod["ip"], "toy_llm") == second
        status, answer = post(
            pod["ip"], "/v2/models/toy_llm/generate", {"text_input": "a b", "max_tokens": 2}
        )
        assert status == 200, answer
        assert answer["text_output"] == "b a"

    # Nothing is written while nothing changes (the loader re-checks every 5 s here).
    time.sleep(3)
    before = operator_process.writes()
    time.sleep(12)
    assert operator_process.writes() == before

    # Deletion: unloaded from the pods before the cleanup Job removes the files.
    testbed.kubectl("delete", "tritonmodel", "toy-llm", "-n", ns, "--timeout=120s", timeout=150)
    reasons = [e["reason"] for e in events(testbed, ns, "toy-llm")]
    assert "CleanedUp" in reasons
    assert "UnloadIncomplete" not in reasons
    log = operator_process.log_path.read_text(errors="replace")
    unloaded = re.search(r"TritonModel \S+/toy-llm: unloaded toy_llm from 2 pod\(s\)", log)
    cleanup = re.search(r"apply Job tm-toy-llm-cleanup", log)
    assert unloaded and cleanup, operator_process.log_tail()
    assert unloaded.start() < cleanup.start()


def test_a_model_that_fails_to_load_shows_tritons_message_and_one_warning(
    testbed: Testbed, ns: str
) -> None:
    (model,) = docs("toy-llm.yaml")
    model["metadata"]["name"] = "broken-llm"
    model["spec"]["modelName"] = "broken_llm"
    model["spec"]["serving"].pop("autoscaling", None)
    model["spec"]["source"]["inline"]["files"]["1/model.py"] = (
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('weights are missing: toy failure 4711')\n"
    )
    apply(testbed, ns, model)

    def failed() -> dict[str, Any] | None:
        obj = testbed.get("tritonmodel", "broken-llm", namespace=ns)
        loaded = condition(obj, "Loaded")
        if loaded.get("status") == "False" and loaded.get("reason") == "LoadFailed":
            return obj
        return None

    obj = testbed.wait_for(failed, timeout=240, what="Loaded=False LoadFailed")
    assert "toy failure 4711" in condition(obj, "Loaded")["message"]
    (pod,) = obj["status"]["pods"]
    assert pod["state"] == "Failed" and "toy failure 4711" in pod["message"]
    assert condition(obj, "Ready")["status"] == "False"
    time.sleep(12)  # several loader passes retry it: still one Warning for the one failure
    warnings = [
        e
        for e in events(testbed, ns, "broken-llm")
        if e["type"] == "Warning" and e["reason"] == "LoadFailed"
    ]
    assert len(warnings) == 1 and warnings[0].get("count", 1) == 1, warnings
    assert "toy failure 4711" in warnings[0]["message"]


def test_the_rag_ensemble_loads_its_members_then_itself_on_its_pod(
    testbed: Testbed, ns: str
) -> None:
    objs = docs("toy-rag.yaml") + docs("toy-llm.yaml")
    for obj in objs:
        obj["spec"].get("serving", {}).pop("autoscaling", None)
    apply(testbed, ns, *objs)
    ensemble = wait_loaded(testbed, ns, "modelensemble", "toy-rag", 1, timeout=360)
    (pod,) = ensemble["status"]["pods"]
    index = {
        e["name"]: e.get("state")
        for e in _index(pod["ip"])
        if e["name"] in ("toy_embed", "vector_search", "toy_llm", "toy_rag")
    }
    assert index == dict.fromkeys(("toy_embed", "vector_search", "toy_llm", "toy_rag"), "READY")
    status, rag = post(pod["ip"], "/v2/models/toy_rag/generate", {"text_input": "what is triton"})
    assert status == 200, rag
    assert rag["text_output"] and rag["score"] > 0


def _index(ip: str) -> list[dict[str, Any]]:
    assert ipaddress.ip_address(ip) in LOOPBACK
    request = urllib.request.Request(
        f"http://{ip}:8000/v2/repository/index",
        data=b"{}",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result: list[dict[str, Any]] = json.loads(response.read())
        return result
