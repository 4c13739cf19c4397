"""Routing table (desired/gateway/routing.py): the routes file, routes from
TritonModel/ModelEnsemble status, the per-request plan, Triton queue metrics,
prices and cost math."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.builders import ensemble_doc, model_doc, tensor
from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import TritonModel
from tritonfleet.desired.gateway.routing import (
    DEFAULT_PRICES,
    MAPPING_ANNOTATION,
    OPENAI_NAME_ANNOTATION,
    Endpoint,
    Failover,
    HostedTarget,
    PodView,
    Price,
    PriceTable,
    Route,
    RoutesError,
    average_queue_ms,
    cost_usd,
    load_prices,
    load_routes,
    plan,
    queue_counters,
    request_cost,
    routes_from_cluster,
)

PROVIDER = {"baseUrl": "https://api.example.com/v1/", "model": "deepseek-chat"}


def routes_doc(**model: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "llm",
        "tritonModel": "toy_llm",
        "endpoints": [{"url": "http://127.0.0.2:8000/", "name": "pod-a"}],
    }
    base.update(model)
    return {"models": [base]}


# --- the routes file ----------------------------------------------------------


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


# --- routes from the cluster ------------------------------------------------------


def status(revision: str, pods: list[tuple[str, str | None, str, str]]) -> dict[str, Any]:
    return {
        "revision": revision,
        "pods": [{"name": n, "ip": ip, "revision": rev, "state": s} for n, ip, rev, s in pods],
    }


def llm_model(name: str = "chat", ns: str = "team-a", **extra: Any) -> TritonModel:
    doc = model_doc(
        name,
        ns,
        config={
            "backend": "python",
            "maxBatchSize": 8,
            "decoupled": True,
            "inputs": [tensor("text_input", "TYPE_STRING"), tensor("max_tokens", "TYPE_INT32")],
            "outputs": [
                tensor("text_output", "TYPE_STRING"),
                tensor("completion_tokens", "TYPE_INT32"),
            ],
        },
        failover={
            "provider": {
                "baseUrl": "https://api.deepseek.com/v1",
                "model": "deepseek-chat",
                "apiKeySecret": {"name": "deepseek", "key": "api-key"},
            },
            "triggers": {"queueTimeAboveMs": 100},
        },
    )
    doc.update(extra)
    return TritonModel.from_object(doc)


def test_cluster_routes_only_ready_pods_at_current_revision() -> None:
    m = llm_model(
        status=status(
            "r2",
            [
                ("p1", "10.0.0.1", "r2", "Ready"),
                ("p2", "10.0.0.2", "r1", "Ready"),  # old revision
                ("p3", "10.0.0.3", "r2", "Loading"),
                ("p4", None, "r2", "Ready"),  # no IP yet
                ("p5", "fd00::5", "r2", "Ready"),
            ],
        )
    )
    out = routes_from_cluster([m])
    assert out.problems == ()
    r = out.table.routes["chat"]
    assert [e.name for e in r.endpoints] == ["p1", "p5"]
    assert r.endpoints[0].url == "http://10.0.0.1:8000"
    assert r.endpoints[1].metrics_url == "http://[fd00::5]:8002/metrics"
    assert r.generate is not None and r.generate.decoupled
    # conventions: inputs and outputs the model has
    assert dict(r.generate.inputs) == {"max_tokens": "max_tokens"}
    assert r.generate.prompt_tokens_output is None
    assert r.generate.completion_tokens_output == "completion_tokens"
    assert r.hosted is not None and r.hosted.api_key is not None
    assert r.hosted.api_key.describe() == "secret team-a/deepseek[api-key]"
    assert r.failover is not None and r.failover.queue_time_above_ms == 100
    assert r.origin == "TritonModel team-a/chat"


def test_cluster_no_status_means_no_endpoints() -> None:
    assert routes_from_cluster([llm_model()]).table.routes["chat"].endpoints == ()


def test_cluster_annotations_name_and_mapping() -> None:
    m = llm_model()
    meta = {
        "name": "chat",
        "namespace": "team-a",
        "annotations": {
            OPENAI_NAME_ANNOTATION: "team-a/chat-v2",
            MAPPING_ANNOTATION: "kind: generate\nchatTemplate: llama3\ninputs: {stop: stop_words}",
        },
    }
    m = TritonModel.from_object({**m.model_dump(by_alias=True), "metadata": meta})
    r = routes_from_cluster([m]).table.routes["team-a/chat-v2"]
    assert r.triton_model == "chat" and r.generate is not None
    assert r.generate.inputs["stop"] == "stop_words"


def test_cluster_problems_are_reported_not_raised() -> None:
    bad = llm_model(name="bad")
    bad = TritonModel.from_object(
        {
            **bad.model_dump(by_alias=True),
            "metadata": {"name": "bad", "annotations": {MAPPING_ANNOTATION: "kind: [oops"}},
        }
    )
    odd = TritonModel.from_object(
        model_doc(
            "odd",
            config={
                "backend": "python",
                "inputs": [tensor("A"), tensor("B")],
                "outputs": [tensor("C")],
            },
        )
    )
    dup1, dup2 = llm_model(ns="a"), llm_model(ns="b")
    out = routes_from_cluster([bad, odd, dup2, dup1])
    text = "\n".join(out.problems)
    assert "bad" in text and MAPPING_ANNOTATION in text
    assert "odd: cannot tell how to call it" in text
    # duplicates resolve by namespace order, the same on every replica
    assert out.table.routes["chat"].origin == "TritonModel a/chat"
    assert "TritonModel b/chat: model name 'chat' already served by TritonModel a/chat" in text


def test_cluster_embedding_by_convention_and_ensembles() -> None:
    emb = TritonModel.from_object(
        model_doc(
            "embed",
            config={
                "backend": "python",
                "maxBatchSize": 16,
                "inputs": [tensor("text", "TYPE_STRING")],
                "outputs": [tensor("embedding", "TYPE_FP32", [64])],
            },
        )
    )
    ens = ModelEnsemble.from_object(
        ensemble_doc(
            "rag",
            inputs=[tensor("text_input", "TYPE_STRING")],
            outputs=[tensor("text_output", "TYPE_STRING")],
        )
    )
    table = routes_from_cluster([emb], [ens]).table
    e = table.routes["embed"].embedding
    assert e is not None and (e.input, e.output, e.batched) == ("text", "embedding", True)
    rag = table.routes["rag"]
    assert rag.kind == "generate" and rag.origin == "ModelEnsemble default/rag"


# --- the plan ------------------------------------------------------------------------

A = Endpoint("a", "http://a")
B = Endpoint("b", "http://b")
C = Endpoint("c", "http://c")


def route(mode: str | None = "auto", unavailable: bool = True, queue: float | None = None) -> Route:
    failover = (
        None if mode is None else Failover(mode, HostedTarget("https://h", "m"), unavailable, queue)  # type: ignore[arg-type]
    )
    return Route("llm", "generate", "toy", (A, B, C), failover=failover)


def test_plan_least_outstanding_first_and_limited_attempts() -> None:
    p = plan(route(), [PodView(A, 3), PodView(B, 1), PodView(C, 2)])
    assert p.pods == (B, C) and p.hosted and p.reason == "triton" and not p.activation


def test_plan_rotation_spreads_ties() -> None:
    views = [PodView(A), PodView(B), PodView(C)]
    firsts = {plan(route(), views, rotation=i).pods[0] for i in range(3)}
    assert firsts == {A, B, C}


def test_plan_skips_unhealthy_and_open_breakers() -> None:
    p = plan(route(), [PodView(A, healthy=False), PodView(B, admits=False), PodView(C, 9)])
    assert p.pods == (C,)


def test_plan_no_ready_replica_is_an_activation() -> None:
    p = plan(route(), [PodView(A, healthy=False)])
    assert p == plan(route(), []) and p.reason == "no_ready_replica" and p.hosted and p.activation
    assert not plan(route(unavailable=False), []).hosted


def test_plan_breakers_open() -> None:
    p = plan(route(), [PodView(A, admits=False), PodView(B, admits=False)])
    assert p.reason == "breaker_open" and p.pods == () and p.hosted
    assert plan(route(), [PodView(A)], model_admits=False).reason == "breaker_open"


def test_plan_modes() -> None:
    assert plan(route("hosted"), [PodView(A)]).reason == "mode_hosted"
    assert plan(route("hosted"), [PodView(A)]).pods == ()
    p = plan(route("triton"), [])
    assert p.reason == "no_ready_replica" and not p.hosted
    assert not plan(route("triton"), [PodView(A)]).hosted
    assert not plan(route(None), [PodView(A)]).hosted


def test_plan_queue_time_spills_over() -> None:
    views = [PodView(A, queue_ms=300), PodView(B, queue_ms=50), PodView(C, queue_ms=None)]
    assert plan(route(queue=100), views).pods == (B, C)
    p = plan(route(queue=100), [PodView(A, queue_ms=300), PodView(B, queue_ms=101)])
    assert p.reason == "queue_time" and p.hosted and p.pods == ()
    # no hosted provider: queue time never keeps Triton from serving
    assert plan(route(None, queue=100), [PodView(A, queue_ms=900)]).pods == (A,)


# --- Triton metrics --------------------------------------------------------------------

METRICS = """# HELP nv_inference_queue_duration_us Cumulative inference queuing duration
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="toy_llm",version="1"} 5000
nv_inference_queue_duration_us{model="toy_llm",version="2"} 1000
nv_inference_queue_duration_us{model="toy_embed",version="1"} 30
nv_inference_request_success{model="toy_llm",version="1"} 10
nv_inference_request_success{model="toy_llm",version="2"} 2
nv_inference_request_failure{model="toy_llm",reason="BACKEND",version="1"} 3
nv_gpu_utilization{gpu_uuid="x"} 0.5
"""


def test_queue_counters_sum_versions() -> None:
    assert queue_counters(METRICS) == {"toy_llm": (6000.0, 12.0), "toy_embed": (30.0, 0.0)}


def test_average_queue_ms() -> None:
    assert average_queue_ms(None, (100.0, 1.0)) == 0.0
    assert average_queue_ms((6000.0, 12.0), (26000.0, 22.0)) == 2.0
    assert average_queue_ms((6000.0, 12.0), (6000.0, 12.0)) == 0.0  # idle: no queue
    assert average_queue_ms((6000.0, 12.0), (0.0, 1.0)) == 0.0  # counters reset (restart)


# --- prices and cost ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("gpt-4.1", Price(2.0, 8.0)),
        ("GPT-4.1-2025-04-14", Price(2.0, 8.0)),
        ("openai/gpt-4.1", Price(2.0, 8.0)),
        ("claude-sonnet-4-5-20250929", Price(3.0, 15.0)),
        ("gemini-2.5-flash", Price(0.30, 2.50)),
        ("deepseek-chat", Price(0.28, 0.42)),
        ("gpt-4.1-mini", None),  # not a prefix match: a different model
        (None, None),
    ],
)
def test_price_lookup(name: str | None, want: Price | None) -> None:
    assert PriceTable().lookup(name) == want


def test_default_output_prices_are_the_documented_ones() -> None:
    assert {k: v.output for k, v in DEFAULT_PRICES.items()} == {
        "gpt-4.1": 8.0,
        "claude-sonnet-4.5": 15.0,
        "gemini-2.5-flash": 2.5,
        "deepseek-v3.2": 0.42,
    }


def test_cost_math() -> None:
    assert cost_usd(Price(2.0, 8.0), 1_000_000, 500_000) == pytest.approx(6.0)
    assert cost_usd(None, 10, 10) == 0.0
    r = Route(
        "llm", "generate", "toy", (), failover=Failover(hosted=HostedTarget("https://h", "gpt-4.1"))
    )
    hosted = request_cost(PriceTable(), r, "hosted", 1000, 2000)
    assert hosted.usd == pytest.approx(0.018) and hosted.hosted_equivalent_usd == 0
    own = PriceTable(triton=Price(0.0, 1.0))
    triton = request_cost(own, r, "triton", 1000, 2000)
    assert triton.usd == pytest.approx(0.002)
    assert triton.hosted_equivalent_usd == pytest.approx(0.018)
    assert triton.saving_usd == pytest.approx(0.016)
    unknown = Route(
        "x", "generate", "t", (), failover=Failover(hosted=HostedTarget("h", "mystery"))
    )
    assert request_cost(PriceTable(), unknown, "triton", 5, 5).hosted_equivalent_usd == 0
