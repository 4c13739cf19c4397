"""Hung, not dead, backends under load: what the gateway's clients see.

A SIGSTOPped tritonserver still accepts connections (the kernel's listen backlog)
and answers nothing, health probes included: the case that once made every
client wait for ``totalMs``. Here two real tritonserver processes serve
``toy_llm`` behind ``tritonfleet gateway --routes``, with the hosted-API
stand-in as the failover target, and openai SDK clients send steady load while
the test stops one pod, then both, then lets them go.

What a user must see: no failed request on the model with failover, none on the
Triton-only model while one pod still answers, every answer within the route's
``totalMs``, answers fast again once the gateway has found the hung pod, and
traffic back on Triton once the pods resume. A hung or slow-dripping hosted API
gives a clear error within the route's deadlines, never a hang.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from hack.devtools.gateway import GatewayProcess, start_gateway
from hack.devtools.hosted_api import HostedAPI
from hack.devtools.openai_load import Load, summary
from hack.devtools.testbed import wait_for
from hack.devtools.triton import TritonProcess, copy_model_repository

pytestmark = pytest.mark.integration

HOSTED_KEY = "sk-hosted-" + secrets.token_hex(16)
CLIENT_TOKEN = "tf-client-" + secrets.token_hex(16)
ANSWER_MS, TOTAL_MS = 2000, 8000
HOSTED_ANSWER_MS, HOSTED_TOTAL_MS = 1500, 3000
PROBE_INTERVAL_S = 0.2
# The prober calls a pod hung after 2 probes without an answer, each bounded by
# max(1 s, 2 x interval): found within ~3 s of the stop. Allow for a loaded machine.
FOUND_HUNG_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def tritons(
    triton_launcher: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, TritonProcess]]:
    repo = copy_model_repository(tmp_path_factory.mktemp("hung-repo") / "models", ["toy_llm"])
    logs = tmp_path_factory.mktemp("hung-triton-logs")
    procs = {name: TritonProcess(triton_launcher, log_dir=logs) for name in "ab"}
    try:
        procs["a"].start(repo, host="127.0.0.2", load_models=["toy_llm"])
        procs["b"].start(repo, host="127.0.0.3", load_models=["toy_llm"])
        yield procs
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):  # already gone
                proc.resume()
            try:
                proc.stop(timeout=15)
            except Exception:
                proc.kill()


@pytest.fixture(scope="module")
def hosted() -> Iterator[HostedAPI]:
    api = HostedAPI(api_key=HOSTED_KEY).start()
    yield api
    api.stop()


def _routes(t: dict[str, TritonProcess], hosted: HostedAPI) -> dict[str, Any]:
    pods = [
        {"url": p.http_url, "name": f"pod-{n}", "metricsUrl": p.metrics_url} for n, p in t.items()
    ]
    provider = {"baseUrl": hosted.base_url, "apiKeyEnv": "TF_TEST_HOSTED_KEY"}
    plain = {"chatTemplate": "plain"}
    return {
        "defaults": {
            "timeouts": {"answerMs": ANSWER_MS, "firstByteMs": ANSWER_MS, "totalMs": TOTAL_MS},
            "breaker": {"failureThreshold": 3, "openMs": 500},
        },
        "models": [
            {
                "name": "with-failover",
                "tritonModel": "toy_llm",
                "endpoints": pods,
                "mapping": plain,
                "failover": {"provider": {**provider, "model": "gpt-4.1"}},
            },
            {"name": "triton-only", "tritonModel": "toy_llm", "endpoints": pods, "mapping": plain},
            # One route per hosted fault: each has its own breaker.
            *(
                {
                    "name": name,
                    "timeouts": {"answerMs": HOSTED_ANSWER_MS, "totalMs": HOSTED_TOTAL_MS},
                    "failover": {"provider": {**provider, "model": "gpt-4.1"}, "mode": "hosted"},
                }
                for name in ("hosted-hung", "hosted-slow-drip")
            ),
        ],
    }


@pytest.fixture(scope="module")
def gateway(
    tritons: dict[str, TritonProcess], hosted: HostedAPI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("hung-gateway")
    routes = _routes(tritons, hosted)
    (work / "routes.yaml").write_text(yaml.safe_dump(routes))
    env = {"TF_TEST_HOSTED_KEY": HOSTED_KEY, "TF_TEST_CLIENT_TOKENS": CLIENT_TOKEN}
    args = ["--routes", str(work / "routes.yaml"), "--auth-tokens-env", "TF_TEST_CLIENT_TOKENS"]
    args += ["--probe-interval", str(PROBE_INTERVAL_S), "--queue-interval", "0.2"]
    gw = start_gateway(args, work / "gateway.log", env=env, routes=routes)
    yield gw
    gw.stop()


def test_hung_triton_pods_under_load_fail_over_within_the_deadlines(
    gateway: GatewayProcess, tritons: dict[str, TritonProcess]
) -> None:
    load = Load(gateway.url + "/v1", CLIENT_TOKEN)
    load.start("with-failover", 6, streams_every=3)
    load.start("triton-only", 4)
    try:
        wait_for(lambda: len(load.answers) >= 40, timeout=30, what="the load to warm up")
        stop_a = time.monotonic()
        tritons["a"].pause()
        # The fault's own length: one pod hung for 8 s, then both for 8 s.
        time.sleep(8)
        stop_b = time.monotonic()
        tritons["b"].pause()
        time.sleep(8)
        resumed = time.monotonic()
        tritons["a"].resume()
        tritons["b"].resume()

        def back_on_triton() -> bool:
            recent = load.between(time.monotonic() - 1.0, float("inf"))
            return len(recent) >= 10 and all(a.backend == "triton" for a in recent)

        wait_for(back_on_triton, timeout=30, interval=0.1, what="traffic back on Triton")
        recovered = time.monotonic()
    finally:
        load.finish()

    fast_after = stop_a + FOUND_HUNG_WITHIN_S
    print(
        f"\n[chaos] hung Triton: before {summary(load.between(0, stop_a))}"
        f"\n[chaos]   pod a hung, first {FOUND_HUNG_WITHIN_S:g} s: "
        f"{summary(load.between(stop_a, fast_after))}"
        f"\n[chaos]   pod a hung, after: with-failover "
        f"{summary(load.between(fast_after, stop_b, 'with-failover'))}, triton-only "
        f"{summary(load.between(fast_after, stop_b, 'triton-only'))}"
        f"\n[chaos]   both hung: with-failover "
        f"{summary(load.between(stop_b, resumed, 'with-failover'))}, triton-only "
        f"{summary(load.between(stop_b, resumed, 'triton-only'))}"
        f"\n[chaos]   back on Triton {recovered - resumed:.1f} s after the pods resumed"
    )
    # The model with failover never fails, whatever hangs.
    assert load.failures("with-failover") == [], load.failures("with-failover")[:3]
    # The Triton-only model never fails while one pod still answers.
    one_hung = load.between(stop_a, stop_b + 0.5, "triton-only")
    assert one_hung and [a for a in one_hung if a.backend == "error"] == []
    # Nobody waits past the route's totalMs (plus scheduling slack on a loaded machine).
    slowest = max(a.seconds for a in load.answers)
    assert slowest <= TOTAL_MS / 1000 + 1.5, slowest
    # Once the prober has found pod a hung, the gateway sends it nothing: answers are fast.
    found = load.between(fast_after, stop_b)
    assert found and all(a.backend == "triton" and a.pod == "pod-b" for a in found), found[:3]
    assert max(a.seconds for a in found) < ANSWER_MS / 1000, summary(found)
    # Both hung: the model with failover is answered by the hosted provider, and the
    # Triton-only model gets a clear error, not a hang.
    both = load.between(stop_b + FOUND_HUNG_WITHIN_S, resumed)
    assert {a.backend for a in both if a.model == "with-failover"} == {"hosted"}
    refused = [a for a in both if a.model == "triton-only"]
    assert refused and all(a.backend == "error" and "503" in a.error for a in refused), refused[:3]


@pytest.mark.parametrize(
    ("model", "fault"),
    [("hosted-hung", {"delay_ms": 60_000}), ("hosted-slow-drip", {"drip_ms": 400})],
)
def test_hung_or_dripping_hosted_api_gives_a_bounded_clear_error(
    gateway: GatewayProcess, hosted: HostedAPI, model: str, fault: dict[str, float]
) -> None:
    hosted.set(**fault)
    client = openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=CLIENT_TOKEN, max_retries=0, timeout=60
    )
    try:
        for stream in (False, True):
            began = time.monotonic()
            with pytest.raises(openai.APIStatusError) as caught:
                answer = client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": "the quick brown fox jumps"}],
                    max_tokens=50,
                    stream=stream,
                )
                if stream:
                    for _ in answer:
                        pass
            took = time.monotonic() - began
            print(
                f"\n[chaos] hosted {fault}, stream={stream}: "
                f"{caught.value.status_code} in {took:.1f} s"
            )
            assert caught.value.status_code in (502, 503, 504)
            assert caught.value.body is not None  # an OpenAI-shaped error body
            assert took <= HOSTED_TOTAL_MS / 1000 + 1.5
    finally:
        hosted.reset()
