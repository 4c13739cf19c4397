"""The gateway end to end: the official ``openai`` SDK as the client, real
tritonserver processes serving the toy models, the project's hosted-API
stand-in as the failover target, and ``tritonfleet gateway`` as a
real process with a routes file.

Layout (module-scoped, started once):

* Triton A (127.0.0.2) and B (127.0.0.3): toy_llm, toy_llm_stream (decoupled), toy_embed;
* Triton C (127.0.0.4): toy_llm_stream only, killed by the mid-stream test;
* the hosted stand-in, requiring ``HOSTED_KEY``;
* the gateway, requiring ``CLIENT_TOKEN``, logging at debug level to a file
  that the last tests search for keys.

Tests run in file order: the ones that kill servers come last.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import secrets
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from hack.devtools.gateway import GatewayProcess, start_gateway
from hack.devtools.hosted_api import HostedAPI
from hack.devtools.triton import TritonProcess, copy_model_repository, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOSTED_KEY = "sk-hosted-" + secrets.token_hex(16)
WRONG_KEY = "sk-wrong-" + secrets.token_hex(16)
CLIENT_TOKEN = "tf-client-" + secrets.token_hex(16)
ALL_MODELS = ["toy_llm", "toy_llm_stream", "toy_embed"]

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tritons(
    triton_launcher: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, TritonProcess]]:
    repo = copy_model_repository(tmp_path_factory.mktemp("gw-repo") / "models", ALL_MODELS)
    logs = tmp_path_factory.mktemp("gw-triton-logs")
    procs = {name: TritonProcess(triton_launcher, log_dir=logs) for name in "abc"}
    try:
        procs["a"].start(repo, host="127.0.0.2", load_models=ALL_MODELS)
        procs["b"].start(repo, host="127.0.0.3", load_models=ALL_MODELS)
        procs["c"].start(repo, host="127.0.0.4", load_models=["toy_llm_stream"])
        yield procs
    finally:
        for proc in procs.values():
            try:
                proc.stop(timeout=15)
            except Exception:
                proc.kill()


@pytest.fixture(scope="module")
def hosted() -> Iterator[HostedAPI]:
    api = HostedAPI(api_key=HOSTED_KEY).start()
    yield api
    api.stop()


def _routes(t: dict[str, TritonProcess], hosted: HostedAPI, wrong_key_file: Path) -> dict[str, Any]:
    def ep(name: str) -> dict[str, str]:
        return {"url": t[name].http_url, "name": f"pod-{name}", "metricsUrl": t[name].metrics_url}

    dead = {"url": f"http://127.0.0.9:{free_port('127.0.0.9')}", "name": "pod-dead"}
    provider = {"baseUrl": hosted.base_url, "apiKeyEnv": "TF_TEST_HOSTED_KEY"}
    plain = {"chatTemplate": "plain"}
    return {
        "defaults": {"breaker": {"failureThreshold": 3, "openMs": 500}},
        "models": [
            {
                "name": "toy-llm",
                "tritonModel": "toy_llm",
                "endpoints": [ep("a"), ep("b")],
                "mapping": plain,
                "failover": {"provider": {**provider, "model": "gpt-4.1"}},
            },
            {
                "name": "toy-llm-stream",
                "tritonModel": "toy_llm_stream",
                "decoupled": True,
                "endpoints": [ep("a"), ep("b")],
                "mapping": plain,
                "failover": {"provider": {**provider, "model": "deepseek-chat"}},
            },
            {
                "name": "toy-embed",
                "kind": "embedding",
                "tritonModel": "toy_embed",
                "endpoints": [ep("a"), ep("b")],
                "mapping": {"maxBatchSize": 16},
                "failover": {"provider": {**provider, "model": "text-embedding-3-small"}},
            },
            {
                "name": "toy-llm-slow",
                "tritonModel": "toy_llm_stream",
                "decoupled": True,
                "endpoints": [ep("c")],
                "mapping": {**plain, "extraInputs": {"token_delay_ms": 150}},
                "failover": {"provider": {**provider, "model": "deepseek-chat"}},
            },
            {
                "name": "toy-llm-queue",
                "tritonModel": "toy_llm",
                "endpoints": [ep("a")],
                "mapping": {**plain, "inputs": {"token_delay_ms": "token_delay_ms"}},
                "failover": {
                    "provider": {**provider, "model": "deepseek-chat"},
                    "triggers": {"queueTimeAboveMs": 40},
                },
            },
            {
                "name": "cold-model",
                "tritonModel": "toy_llm",
                "endpoints": [dead],
                "failover": {"provider": {**provider, "model": "deepseek-chat"}},
            },
            {"name": "triton-only", "tritonModel": "toy_llm", "endpoints": [dead]},
            {
                "name": "both-down",
                "tritonModel": "toy_llm",
                "endpoints": [dead],
                "failover": {
                    "provider": {
                        **provider,
                        "baseUrl": f"http://127.0.0.1:{free_port()}/v1",
                        "model": "gpt-4.1",
                    }
                },
            },
            {
                "name": "hosted-only",
                "failover": {"provider": {**provider, "model": "gpt-4.1"}, "mode": "hosted"},
            },
            {
                "name": "bad-key",
                "failover": {
                    "provider": {
                        "baseUrl": hosted.base_url,
                        "model": "gpt-4.1",
                        "apiKeyFile": str(wrong_key_file),
                    },
                    "mode": "hosted",
                },
            },
        ],
    }


@pytest.fixture(scope="module")
def gateway(
    tritons: dict[str, TritonProcess], hosted: HostedAPI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("gateway")
    wrong_key_file = work / "wrong-key"
    wrong_key_file.write_text(WRONG_KEY + "\n")
    routes = _routes(tritons, hosted, wrong_key_file)
    routes_path = work / "routes.yaml"
    routes_path.write_text(yaml.safe_dump(routes))
    env = {"TF_TEST_HOSTED_KEY": HOSTED_KEY, "TF_TEST_CLIENT_TOKENS": CLIENT_TOKEN}
    args = ["--routes", str(routes_path), "--auth-tokens-env", "TF_TEST_CLIENT_TOKENS"]
    args += ["--max-request-bytes", "65536", "--probe-interval", "0.2"]
    args += ["--queue-interval", "0.2", "--log-level", "debug"]
    gw = start_gateway(args, work / "gateway.log", env=env, routes=routes)
    yield gw
    gw.stop()


def make_client(gw: GatewayProcess, token: str = CLIENT_TOKEN) -> openai.OpenAI:
    # max_retries=0: what the client sees is what the gateway did, not SDK retries.
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0, timeout=30)


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return make_client(gateway)


@pytest.fixture(autouse=True)
def _fresh_hosted(hosted: HostedAPI) -> None:
    hosted.reset()


def ask(
    client: openai.OpenAI, model: str = "toy-llm", text: str = "the quick brown fox", **kw: Any
) -> tuple[dict[str, str], Any]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )
    return dict(raw.headers), raw.parse()


def raw_post(
    gw: GatewayProcess, path: str, body: bytes, token: str = CLIENT_TOKEN
) -> tuple[int, Any]:
    req = urllib.request.Request(gw.url + path, data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {token}")
    try:
        with _opener.open(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# --- serving through Triton ------------------------------------------------------------


def test_chat_and_completion_through_triton(client: openai.OpenAI) -> None:
    headers, chat = ask(client, max_tokens=4, temperature=0)
    assert headers["x-tritonfleet-backend"] == "triton"
    assert headers["x-tritonfleet-pod"] in ("pod-a", "pod-b")
    assert "x-tritonfleet-usage-estimated" not in headers
    # plain template: "user: the quick brown fox\nassistant:" read backwards by toy_llm
    assert chat.choices[0].message.content == "assistant: fox brown quick"
    assert chat.choices[0].finish_reason == "length"
    assert chat.model == "toy-llm" and chat.object == "chat.completion"
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (6, 4)

    raw = client.completions.with_raw_response.create(model="toy-llm", prompt="a b c", max_tokens=4)
    text = raw.parse()
    assert raw.headers["x-tritonfleet-backend"] == "triton"
    assert text.choices[0].text == "c b a c" and text.usage.total_tokens == 7

    # least outstanding with rotation: sequential requests use both pods
    pods = {ask(client, max_tokens=1)[0]["x-tritonfleet-pod"] for _ in range(6)}
    assert pods == {"pod-a", "pod-b"}


def test_streaming_through_triton(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="toy-llm-stream",
        messages=[{"role": "user", "content": "one two three"}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-tritonfleet-backend"] == "triton"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert deltas == ["assistant:", " three", " two", " one", None]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4

    # a non-decoupled model streams as one chunk; a decoupled one answers whole too
    stream = client.completions.create(model="toy-llm", prompt="x y z", max_tokens=3, stream=True)
    assert "".join(c.choices[0].text for c in stream) == "z y x"
    whole = client.completions.create(model="toy-llm-stream", prompt="x y z", max_tokens=5)
    assert whole.choices[0].text == "z y x z y" and whole.usage.completion_tokens == 5


def test_stop_sequences_applied_by_the_gateway(client: openai.OpenAI) -> None:
    headers, chat = ask(client, "toy-llm-stream", "one two three", max_tokens=4, stop=["two"])
    assert chat.choices[0].message.content == "assistant: three "
    assert chat.choices[0].finish_reason == "stop"
    assert headers["x-tritonfleet-usage-estimated"] == "true"
    stream = client.chat.completions.create(
        model="toy-llm-stream",
        messages=[{"role": "user", "content": "one two three"}],
        max_tokens=4,
        stop="tw",
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "assistant: three "


def test_embeddings_through_triton(client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="toy-embed", input=["kubernetes schedules pods", "kubernetes schedules pods", "x"]
    )
    emb = raw.parse()
    assert raw.headers["x-tritonfleet-backend"] == "triton"
    assert raw.headers["x-tritonfleet-usage-estimated"] == "true"
    vectors = [d.embedding for d in emb.data]
    assert [len(v) for v in vectors] == [64, 64, 64] and vectors[0] == vectors[1]
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-5)
    # base64 as the SDK requests by default when asked for it
    b64 = client.embeddings.create(model="toy-embed", input="x", encoding_format="base64")
    data = b64.data[0].embedding
    if isinstance(data, str):
        data = list(struct.unpack("<64f", base64.b64decode(data)))
    assert data == pytest.approx(vectors[2], rel=1e-6)


# --- the OpenAI surface: models, errors, auth, limits ---------------------------------


def test_models_and_client_errors(gateway: GatewayProcess, client: openai.OpenAI) -> None:
    names = {m.id for m in client.models.list()}
    assert {"toy-llm", "toy-llm-stream", "toy-embed", "hosted-only"} <= names
    assert client.models.retrieve("toy-embed").id == "toy-embed"

    with pytest.raises(openai.NotFoundError) as nf:
        ask(client, "no-such-model")
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        ask(client, n=2)
    assert bad.value.code == "unsupported_parameter" and bad.value.param == "n"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="toy-llm",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"frobnicate": True},
        )
    assert "frobnicate" in bad.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        ask(client, "toy-embed")
    assert bad.value.code == "wrong_model_kind"
    with pytest.raises(openai.AuthenticationError):
        ask(make_client(gateway, token="wrong-token"))

    status, body = raw_post(gateway, "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    huge = json.dumps({"model": "toy-llm", "prompt": "x" * 70_000}).encode()
    status, body = raw_post(gateway, "/v1/completions", huge)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    # Triton's own refusal comes back as a 400, not a failover
    status, body = raw_post(
        gateway, "/v1/completions", json.dumps({"model": "toy-llm", "prompt": ""}).encode()
    )
    assert status == 200  # toy_llm answers "<empty>" to an empty prompt

    with _opener.open(gateway.url + "/healthz", timeout=5) as resp:
        assert resp.status == 200
    with _opener.open(gateway.url + "/readyz", timeout=5) as resp:
        assert resp.status == 200


# --- the hosted side -----------------------------------------------------------------


def test_hosted_mode_sends_the_key_and_the_provider_model(
    client: openai.OpenAI, hosted: HostedAPI
) -> None:
    headers, chat = ask(client, "hosted-only", "hello there", max_tokens=3)
    assert headers["x-tritonfleet-backend"] == "hosted"
    assert chat.choices[0].message.content == "hosted hello there"
    seen = hosted.requests[-1]
    assert seen.headers["Authorization"] == f"Bearer {HOSTED_KEY}"  # the gateway's key...
    assert CLIENT_TOKEN not in json.dumps(seen.headers)  # ...never the client's token
    assert seen.body["model"] == "gpt-4.1"

    # streamed: usage is always requested upstream (for cost) but only
    # forwarded when the client asked for it
    chunks = list(
        client.chat.completions.create(
            model="hosted-only", messages=[{"role": "user", "content": "a"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert hosted.requests[-1].body["stream_options"] == {"include_usage": True}
    chunks = list(
        client.chat.completions.create(
            model="hosted-only",
            messages=[{"role": "user", "content": "a"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_hosted_stream_broken_mid_way_ends_with_error_event(
    client: openai.OpenAI, hosted: HostedAPI
) -> None:
    hosted.set(break_after_tokens=2, token_delay_ms=20)
    stream = client.chat.completions.create(
        model="hosted-only",
        messages=[{"role": "user", "content": "a b c"}],
        max_tokens=6,
        stream=True,
    )
    texts: list[str] = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")
    assert "".join(texts) == "hosted a"  # what arrived before the break
    assert "mid-stream" in err.value.message


def test_hosted_429_retry_after(client: openai.OpenAI, hosted: HostedAPI) -> None:
    hosted.set(rate_limit=1, rate_limit_count=1)
    t0 = time.monotonic()
    headers, chat = ask(client, "hosted-only", max_tokens=2)
    waited = time.monotonic() - t0
    assert headers["x-tritonfleet-backend"] == "hosted"
    assert chat.choices[0].message.content == "hosted the"
    assert 1.0 <= waited < 5, waited  # Retry-After: 1 was waited out, once
    assert len(hosted.requests) == 2

    hosted.set(rate_limit=30, rate_limit_count=1)  # beyond the budget: tell the client
    t0 = time.monotonic()
    with pytest.raises(openai.RateLimitError) as err:
        ask(client, "hosted-only")
    assert time.monotonic() - t0 < 2
    assert err.value.response.headers["retry-after"] == "30"
    assert err.value.response.headers["x-tritonfleet-backend"] == "hosted"


def test_hosted_errors_never_echo_the_key(client: openai.OpenAI, hosted: HostedAPI) -> None:
    hosted.set(fail_status=400, fail_count=1, echo_key_in_errors=True)
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, "hosted-only")
    assert "injected failure 400" in err.value.message
    assert HOSTED_KEY not in err.value.response.text
    # the provider refuses the key: a 502 naming the problem, not the key
    with pytest.raises(openai.InternalServerError) as err5:
        ask(client, "bad-key")
    assert err5.value.status_code == 502
    assert "rejected the gateway's credentials" in err5.value.message
    assert WRONG_KEY not in err5.value.response.text


def test_both_down_is_a_clear_503(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        ask(client, "both-down")
    assert err.value.status_code == 503
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "backend_unavailable"
    assert body["type"] == "service_unavailable_error"
    assert "both-down" in body["message"] and "hosted provider: connect" in body["message"]
    assert err.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError) as err:
        ask(client, "triton-only")
    assert "no hosted failover is configured" in err.value.message


def test_cold_model_fails_over_and_signals_activation(
    gateway: GatewayProcess, client: openai.OpenAI
) -> None:
    before = gateway.metric("tritonfleet_gateway_activation_requests_total", model="cold-model")
    time.sleep(0.5)  # the prober has seen the dead pod
    headers, _ = ask(client, "cold-model", max_tokens=2)
    assert headers["x-tritonfleet-backend"] == "hosted"
    assert headers["x-tritonfleet-failover-reason"] == "no_ready_replica"
    after = gateway.metric("tritonfleet_gateway_activation_requests_total", model="cold-model")
    assert after == before + 1
    assert gateway.metric("tritonfleet_gateway_last_request_timestamp_seconds", model="cold-model")


def test_queue_time_spills_over(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    """toy_llm sleeps per token and runs requests one by one: 10 concurrent
    clients build a queue on pod A well over the route's 40 ms budget."""
    seen: list[tuple[str, str | None]] = []
    failures: list[BaseException] = []
    stop = time.monotonic() + 6

    def load() -> None:
        c = make_client(gateway)
        while time.monotonic() < stop:
            try:
                raw = c.completions.with_raw_response.create(
                    model="toy-llm-queue",
                    prompt="a b c",
                    max_tokens=4,
                    extra_body={"token_delay_ms": 10},
                )
                seen.append(
                    (
                        raw.headers["x-tritonfleet-backend"],
                        raw.headers.get("x-tritonfleet-failover-reason"),
                    )
                )
                if ("hosted", "queue_time") in seen and time.monotonic() < stop - 1:
                    return
            except Exception as exc:  # every failure is reported
                failures.append(exc)
                return

    threads = [threading.Thread(target=load) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failures, failures
    assert ("triton", None) in seen
    assert ("hosted", "queue_time") in seen, seen[-20:]


# --- failures: these kill servers, so they come last ---------------------------------


@dataclass
class Load:
    """Concurrent OpenAI clients: non-streamed chat and streamed completions."""

    gateway: GatewayProcess
    results: list[tuple[float, str, str | None]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, n: int = 8) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        return threads

    def _worker(self, i: int) -> None:
        c = make_client(self.gateway)
        while not self.stop.is_set():
            try:
                if i % 4 == 3:
                    raw = c.completions.with_raw_response.create(
                        model="toy-llm", prompt=f"w{i} x y", max_tokens=3, stream=True
                    )
                    text = "".join(ch.choices[0].text for ch in raw.parse())
                    assert text, "empty stream"
                else:
                    raw = c.chat.completions.with_raw_response.create(
                        model="toy-llm",
                        messages=[{"role": "user", "content": f"w{i} x y"}],
                        max_tokens=3,
                    )
                    assert raw.parse().choices[0].message.content
                self.results.append(
                    (
                        time.monotonic(),
                        raw.headers["x-tritonfleet-backend"],
                        raw.headers.get("x-tritonfleet-pod"),
                    )
                )
            except Exception as exc:  # every failure is reported
                self.failures.append(f"{type(exc).__name__}: {exc}")


def test_triton_killed_under_load_zero_failed_requests(
    gateway: GatewayProcess, tritons: dict[str, TritonProcess]
) -> None:
    load = Load(gateway)
    threads = load.run(8)
    try:
        time.sleep(1.0)
        kill_a = time.monotonic()
        tritons["a"].kill()
        time.sleep(1.0)
        kill_b = time.monotonic()
        tritons["b"].kill()
        time.sleep(1.5)
        restarting = time.monotonic()
        tritons["a"].restart()
        tritons["b"].restart()
        restarted = time.monotonic()
        deadline = restarted + 20
        while time.monotonic() < deadline:
            recent = [r for r in load.results if r[0] > time.monotonic() - 0.5]
            if len(recent) >= 10 and all(b == "triton" for _, b, _ in recent):
                break
            time.sleep(0.1)
    finally:
        load.stop.set()
        for t in threads:
            t.join(30)
    assert load.failures == [], load.failures[:5]
    before = [r for r in load.results if r[0] < kill_a]
    only_b = [r for r in load.results if kill_a + 0.3 < r[0] < kill_b]
    none = [r for r in load.results if kill_b + 0.3 < r[0] < restarting]
    after = [r for r in load.results if r[0] > load.results[-1][0] - 0.5]
    assert {p for _, _, p in before} == {"pod-a", "pod-b"}
    assert only_b and {(b, p) for _, b, p in only_b} == {("triton", "pod-b")}
    assert none and {b for _, b, _ in none} == {"hosted"}
    assert after and {b for _, b, _ in after} == {"triton"}, after
    assert len(load.results) > 100


def _read_events(resp: http.client.HTTPResponse, until: int) -> list[bytes]:
    events: list[bytes] = []
    while len(events) < until:
        line = resp.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            events.append(line[6:].strip())
    return events


def test_failure_after_first_token_ends_with_error_event_and_done(
    gateway: GatewayProcess, client: openai.OpenAI, tritons: dict[str, TritonProcess]
) -> None:
    body = json.dumps(
        {
            "model": "toy-llm-slow",
            "messages": [{"role": "user", "content": "a b c d"}],
            "max_tokens": 30,
            "stream": True,
        }
    )
    conn = http.client.HTTPConnection("127.0.0.1", int(gateway.url.rsplit(":", 1)[1]), timeout=20)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body,
        {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_TOKEN}"},
    )
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("x-tritonfleet-pod") == "pod-c"
    first = _read_events(resp, 2)
    assert len(first) == 2 and all(json.loads(e)["choices"] for e in first)

    tritons["c"].kill()
    t0 = time.monotonic()
    rest = _read_events(resp, 1000)  # returns at end of stream; a hang would time out
    assert time.monotonic() - t0 < 5
    assert rest[-1] == b"[DONE]"
    error = json.loads(rest[-2])["error"]
    assert error["code"] == "stream_interrupted" and "mid-stream" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert all(json.loads(e)["choices"] for e in rest[:-2])  # text chunks up to the break
    conn.close()

    # The SDK raises on the error event: the caller sees an exception, not a hang.
    tritons["c"].restart()
    time.sleep(0.5)  # the prober sees pod C back
    sdk_stream = client.chat.completions.create(
        model="toy-llm-slow",
        messages=[{"role": "user", "content": "a b c d"}],
        max_tokens=30,
        stream=True,
    )
    chunks = iter(sdk_stream)
    assert next(chunks).choices[0].delta.content
    tritons["c"].kill()
    with pytest.raises(openai.APIError) as err:
        for _ in chunks:
            pass
    assert "mid-stream" in err.value.message

    # the next request fails over before its first byte
    headers, chat = ask(client, "toy-llm-slow", max_tokens=2)
    assert headers["x-tritonfleet-backend"] == "hosted" and chat.choices[0].message.content


def test_metrics_count_failovers_tokens_and_cost(gateway: GatewayProcess) -> None:
    m = gateway.metric
    assert (
        m("tritonfleet_gateway_failovers_total", model="toy-llm", reason="no_ready_replica")
        + m("tritonfleet_gateway_failovers_total", model="toy-llm", reason="breaker_open")
        + m("tritonfleet_gateway_failovers_total", model="toy-llm", reason="triton_failed")
        > 0
    )
    assert m("tritonfleet_gateway_failovers_total", model="toy-llm-queue", reason="queue_time") > 0
    for backend in ("triton", "hosted"):
        for kind in ("prompt", "completion"):
            assert (
                m("tritonfleet_gateway_tokens_total", model="toy-llm", backend=backend, kind=kind)
                > 0
            )
        assert (
            m("tritonfleet_gateway_requests_total", model="toy-llm", backend=backend, code="200")
            > 0
        )
    assert (
        m("tritonfleet_gateway_requests_total", model="both-down", backend="none", code="503") > 0
    )
    # gpt-4.1 priced by default: hosted cost, and the saving when Triton served
    assert m("tritonfleet_gateway_cost_usd_total", model="toy-llm", backend="hosted") > 0
    assert m("tritonfleet_gateway_hosted_equivalent_usd_total", model="toy-llm") > 0
    assert m("tritonfleet_gateway_savings_usd_total", model="toy-llm") > 0
    assert m("tritonfleet_gateway_errors_total", model="toy-llm", backend="triton") > 0
    assert m("tritonfleet_gateway_errors_total", model="toy-llm-slow", kind="stream_broken") == 2
    assert m("tritonfleet_gateway_request_duration_seconds_count", model="toy-llm") > 0
    samples = gateway.metrics()
    assert any(
        n == "tritonfleet_gateway_breaker_state" and ("pod", "pod-c") in ls for (n, ls) in samples
    )


def test_no_key_or_token_in_the_logs(gateway: GatewayProcess) -> None:
    log = gateway.log_text()
    assert "failing over to hosted" in log  # the log really holds the debug trail
    assert "refused the gateway's API key" in log
    for secret in (HOSTED_KEY, WRONG_KEY, CLIENT_TOKEN):
        assert secret not in log
        assert secret[: len(secret) // 2] not in log
