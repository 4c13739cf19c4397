"""The routes file (desired/gateway/routes_file.py): defaults, every block, errors that
name the field without echoing values, and the prices section alone."""

from __future__ import annotations

from typing import Any

import pytest

from tritonfleet.desired.gateway.prices import DEFAULT_PRICES, Price
from tritonfleet.desired.gateway.routes import Endpoint, Failover, HostedTarget, RoutesError
from tritonfleet.desired.gateway.routes_file import load_prices, load_routes

PROVIDER = {"baseUrl": "https://api.example.com/v1/", "model": "deepseek-chat"}


def routes_doc(**model: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "llm",
        "tritonModel": "toy_llm",
        "endpoints": [{"url": "http://127.0.0.2:8000/", "name": "pod-a"}],
    }
    base.update(model)
    return {"models": [base]}


def test_minimal_routes_file_gets_documented_defaults() -> None:
    table = load_routes(routes_doc())
    route = table.routes["llm"]
    assert route.triton_model == "toy_llm" and route.kind == "generate"
    assert route.endpoints == (
        Endpoint("pod-a", "http://127.0.0.2:8000", "http://127.0.0.2:8002/metrics"),
    )
    assert route.generate is not None and route.generate.prompt_input == "text_input"
    assert dict(route.generate.inputs) == {
        "max_tokens": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
    }
    assert route.failover is None and route.mode == "triton"
    assert route.timeouts.connect_s == 1.0 and route.breaker.failure_threshold == 3
    assert table.prices.lookup("deepseek-chat") == DEFAULT_PRICES["deepseek-v3.2"]


def test_full_routes_file() -> None:
    doc = routes_doc(
        decoupled=True,
        mapping={
            "inputs": {"top_p": None, "stop": "stop_words"},
            "outputs": {"promptTokens": None},
            "chatTemplate": "llama3",
            "extraInputs": {"beam_width": 1},
            "ignore": ["seed", "user"],
            "streamOutput": "cumulative",
        },
        failover={
            "provider": {**PROVIDER, "apiKeyEnv": "KEY"},
            "triggers": {"unavailable": False, "queueTimeAboveMs": 250},
            "mode": "auto",
        },
        timeouts={"connectMs": 200, "firstByteMs": 5000},
        breaker={"failureThreshold": 5, "openMs": 500},
        retry={"maxTritonAttempts": 3, "maxRetryAfterMs": 1500},
    )
    doc["defaults"] = {"timeouts": {"idleMs": 1000}}
    doc["prices"] = {"models": {"my-model": {"input": 1, "output": 2}}, "triton": {"output": 0.1}}
    table = load_routes(doc)
    r = table.routes["llm"]
    g = r.generate
    assert g is not None and g.decoupled and g.stream_output == "cumulative"
    assert dict(g.inputs) == {
        "max_tokens": "max_tokens",
        "temperature": "temperature",
        "stop": "stop_words",
    }
    assert g.prompt_tokens_output is None and not g.counts_tokens
    assert g.extra_inputs == {"beam_width": 1} and g.ignore == frozenset({"seed", "user"})
    assert r.failover == Failover(
        "auto",
        HostedTarget(
            "https://api.example.com/v1",
            "deepseek-chat",
            r.failover.hosted.api_key,  # type: ignore[union-attr]
        ),
        False,
        250,
    )
    assert r.hosted is not None and r.hosted.api_key is not None
    assert r.hosted.api_key.env == "KEY" and r.hosted.api_key.describe() == "env KEY"
    # per-model timeouts replace the defaults as a block
    assert (r.timeouts.connect_s, r.timeouts.first_byte_s, r.timeouts.idle_s) == (0.2, 5.0, 30.0)
    assert r.breaker.failure_threshold == 5 and r.breaker.open_s == 0.5
    assert r.retry.max_triton_attempts == 3 and r.retry.max_retry_after_s == 1.5
    assert table.prices.lookup("my-model") == Price(1, 2)
    assert table.prices.triton == Price(0, 0.1)


def test_embedding_route() -> None:
    r = load_routes(
        routes_doc(kind="embedding", mapping={"input": "TEXT", "output": "EMB", "maxBatchSize": 4})
    ).routes["llm"]
    assert r.embedding is not None and r.generate is None
    assert (r.embedding.input, r.embedding.output, r.embedding.max_batch_size) == ("TEXT", "EMB", 4)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([], "must be a mapping"),
        ({"models": [{"name": "x"}]}, "needs endpoints, or a failover provider"),
        (
            {"models": [{"name": "x", "endpoints": [{"url": "ftp://x"}]}]},
            "models.0.endpoints.0.url",
        ),
        ({"models": [{"name": "x", "kind": "audio"}]}, "models.0.kind"),
        (routes_doc(mapping={"chatTemplate": "vicuna"}), "unknown chat template"),
        (routes_doc(surprise=1), "models.0.surprise"),
        ({"models": [routes_doc()["models"][0]] * 2}, "duplicate model name"),
        (
            routes_doc(failover={"provider": {**PROVIDER, "apiKeyEnv": "A", "apiKeyFile": "/f"}}),
            "at most one of apiKeyEnv, apiKeyFile",
        ),
    ],
)
def test_routes_file_errors_name_the_field(doc: Any, fragment: str) -> None:
    with pytest.raises(RoutesError) as err:
        load_routes(doc)
    assert fragment in str(err.value)


def test_inline_api_key_is_refused_without_echoing_it() -> None:
    secret = "sk-live-0123456789abcdef"
    with pytest.raises(RoutesError) as err:
        load_routes(routes_doc(failover={"provider": {**PROVIDER, "apiKey": secret}}))
    assert "apiKeyEnv or apiKeyFile" in str(err.value)
    assert secret not in str(err.value)
    assert secret not in repr(err.value.problems)


def test_hosted_only_route_needs_no_endpoints() -> None:
    doc = {"models": [{"name": "h", "failover": {"provider": PROVIDER, "mode": "hosted"}}]}
    assert load_routes(doc).routes["h"].endpoints == ()


def test_prices_file_overrides() -> None:
    table = load_prices(
        {"models": {"GPT-4.1": {"input": 1, "output": 4}}, "aliases": {"x": "gpt-4.1"}}
    )
    assert table.lookup("gpt-4.1") == Price(1, 4) and table.lookup("x") == Price(1, 4)
    with pytest.raises(RoutesError, match=r"prices\.models\.a\.output"):
        load_prices({"models": {"a": {"input": 1}}})
