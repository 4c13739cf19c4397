"""The gateway's in-cluster mode: routes from TritonModel objects and their
``status.pods`` on the real API server of the testbed, to a real tritonserver,
with failover to the hosted stand-in using the key of the referenced Secret,
which the gateway reads from the API server (no ``--secrets-dir``) and re-reads
when it rotates; the key never reaches the gateway's log.

The operator is not running here: the test writes ``status`` itself (through
the status subresource, as the loader does), so it controls exactly which pods
are Ready at which revision. Triton listens on a loopback address with random
ports, which the gateway is told with ``--triton-http-port`` and
``--triton-metrics-port`` (in a cluster they are 8000 and 8002).
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from hack.devtools.gateway import start_gateway
from hack.devtools.hosted_api import HostedAPI
from hack.devtools.operator import apply_crds
from hack.devtools.testbed import Testbed
from hack.devtools.triton import TritonProcess, copy_model_repository, parse_metrics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOSTED_KEY = "sk-cluster-" + secrets.token_hex(16)
ROTATED_KEY = "sk-rotated-" + secrets.token_hex(16)
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def namespace(testbed: Testbed) -> Iterator[str]:
    apply_crds(testbed)  # polls Established: `kubectl wait` fails at once on a fresh CRD
    with testbed.namespace("gateway") as name:
        yield name


@pytest.fixture(scope="module")
def triton(
    triton_launcher: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonProcess]:
    repo = copy_model_repository(tmp_path_factory.mktemp("gwc-repo") / "models", ["toy_llm"])
    proc = TritonProcess(triton_launcher, log_dir=tmp_path_factory.mktemp("gwc-logs"))
    proc.start(repo, host="127.0.0.5", load_models=["toy_llm"])
    yield proc
    proc.stop(timeout=15)


@pytest.fixture(scope="module")
def hosted() -> Iterator[HostedAPI]:
    api = HostedAPI(api_key=HOSTED_KEY).start()
    yield api
    api.stop()


def model_object(namespace: str, hosted: HostedAPI) -> dict[str, Any]:
    def tensor(name: str, dtype: str, **kw: Any) -> dict[str, Any]:
        return {"name": name, "dataType": dtype, "dims": [1], **kw}

    return {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonModel",
        "metadata": {
            "name": "toy-llm",
            "namespace": namespace,
            "annotations": {"tritonfleet.io/openai-mapping": "chatTemplate: plain"},
        },
        "spec": {
            "modelName": "toy_llm",
            "source": {"inline": {"files": {"1/model.py": "# served from the test repository\n"}}},
            "config": {
                "backend": "python",
                "maxBatchSize": 8,
                "inputs": [
                    tensor("text_input", "TYPE_STRING"),
                    tensor("max_tokens", "TYPE_INT32", optional=True),
                ],
                "outputs": [
                    tensor("text_output", "TYPE_STRING"),
                    tensor("prompt_tokens", "TYPE_INT32"),
                    tensor("completion_tokens", "TYPE_INT32"),
                    tensor("finish_reason", "TYPE_STRING"),
                ],
            },
            "serving": {"gpus": 0},
            "failover": {
                "provider": {
                    "baseUrl": hosted.base_url,
                    "model": "deepseek-chat",
                    "apiKeySecret": {"name": "hosted-key", "key": "api-key"},
                }
            },
        },
    }


def set_pods(testbed: Testbed, namespace: str, revision: str, pods: list[dict[str, Any]]) -> None:
    patch = json.dumps({"status": {"revision": revision, "pods": pods}})
    testbed.kubectl(
        "patch",
        "tritonmodel",
        "toy-llm",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    )


gateway_log: list[Path] = []


@pytest.fixture(scope="module")
def gateway(
    testbed: Testbed,
    namespace: str,
    triton: TritonProcess,
    hosted: HostedAPI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    work = tmp_path_factory.mktemp("gwc")
    # The Secret exists only in the cluster: the gateway reads it from the API server.
    testbed.kubectl(
        "create", "secret", "generic", "hosted-key", "-n", namespace,
        f"--from-literal=api-key={HOSTED_KEY}",
    )  # fmt: skip
    testbed.apply(yaml.safe_dump(model_object(namespace, hosted)))
    set_pods(
        testbed,
        namespace,
        "r1",
        [{"name": "triton-0", "ip": triton.host, "revision": "r1", "state": "Ready"}],
    )
    log_path = work / "gateway.log"
    gateway_log.append(log_path)
    args = ["--kubeconfig", str(testbed.kubeconfig), "--namespace", namespace]
    args += ["--poll-interval", "0.3", "--secret-refresh", "0.5", "--probe-interval", "0.2"]
    args += ["--triton-http-port", str(triton.http_port)]
    args += ["--triton-metrics-port", str(triton.metrics_port), "--log-level", "debug"]
    gw = start_gateway(args, log_path)
    try:
        yield gw.url
    finally:
        gw.stop()
        text = log_path.read_text()
        assert HOSTED_KEY not in text and ROTATED_KEY not in text


def ask(url: str) -> tuple[dict[str, str], str]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=20)
    raw = client.chat.completions.with_raw_response.create(
        model="toy_llm", messages=[{"role": "user", "content": "a b c"}], max_tokens=3
    )
    return dict(raw.headers), raw.parse().choices[0].message.content or ""


def eventually(check: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_routes_to_the_ready_pod_from_status(gateway: str) -> None:
    headers, text = ask(gateway)
    assert headers["x-tritonfleet-backend"] == "triton"
    assert headers["x-tritonfleet-pod"] == "triton-0"
    assert text == "assistant: c b"  # plain template from the annotation


def test_no_ready_pod_fails_over_with_the_secret_key_and_a_pod_of_any_revision_serves(
    gateway: str, testbed: Testbed, namespace: str, triton: TritonProcess, hosted: HostedAPI
) -> None:
    # The only pod is still loading the new revision: nothing may be sent to it.
    set_pods(
        testbed,
        namespace,
        "r1",
        [{"name": "triton-0", "ip": triton.host, "revision": "r2", "state": "Loading"}],
    )

    def hosted_now() -> None:
        headers, _ = ask(gateway)
        assert headers["x-tritonfleet-backend"] == "hosted"
        assert headers["x-tritonfleet-failover-reason"] == "no_ready_replica"

    eventually(hosted_now)
    assert hosted.requests[-1].headers["Authorization"] == f"Bearer {HOSTED_KEY}"
    with _opener.open(gateway + "/metrics", timeout=5) as resp:
        metrics = parse_metrics(resp.read().decode())
    activations = sum(
        v
        for (n, ls), v in metrics.items()
        if n == "tritonfleet_gateway_activation_requests_total" and ("model", "toy_llm") in ls
    )
    assert activations >= 1

    # Loaded at r2 while status.revision still says r1 (a rollout under way): a pod serving
    # any revision of the model takes requests, so a routine update never spills to the
    # paid provider.
    set_pods(
        testbed,
        namespace,
        "r1",
        [{"name": "triton-0", "ip": triton.host, "revision": "r2", "state": "Ready"}],
    )

    def triton_now() -> None:
        assert ask(gateway)[0]["x-tritonfleet-backend"] == "triton"

    eventually(triton_now)


def test_rotated_secret_is_used_without_a_restart_and_never_logged(
    gateway: str, testbed: Testbed, namespace: str, hosted: HostedAPI
) -> None:
    # No pod listed: every answer comes from the hosted API.
    set_pods(testbed, namespace, "r3", [])

    def hosted_now() -> None:
        try:
            headers, _ = ask(gateway)
        except openai.APIStatusError as err:  # the old key, until the gateway re-reads it
            raise AssertionError(str(err)) from None
        assert headers["x-tritonfleet-backend"] == "hosted"

    eventually(hosted_now)
    assert hosted.requests[-1].headers["Authorization"] == f"Bearer {HOSTED_KEY}"

    # Rotate: the provider takes only the new key, the Secret gets it.
    hosted.server.api_key = ROTATED_KEY
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hosted-key"}}
    secret["stringData"] = {"api-key": ROTATED_KEY}
    testbed.apply(json.dumps(secret), namespace=namespace)

    eventually(hosted_now)
    assert hosted.requests[-1].headers["Authorization"] == f"Bearer {ROTATED_KEY}"
    text = gateway_log[-1].read_text()
    assert HOSTED_KEY not in text and ROTATED_KEY not in text


def test_deleted_model_is_no_longer_routed(gateway: str, testbed: Testbed, namespace: str) -> None:
    testbed.kubectl("delete", "tritonmodel", "toy-llm", "-n", namespace, "--wait=false")
    # (an operator elsewhere on the shared testbed may hold a finalizer for a while)
    testbed.wait_for(
        lambda: testbed.get("tritonmodel", "toy-llm", namespace=namespace) is None or None,
        timeout=60,
        what="the TritonModel to be gone",
    )

    def gone() -> None:
        try:
            ask(gateway)
        except openai.NotFoundError:
            return
        raise AssertionError("still routed")

    eventually(gone, timeout=15)
