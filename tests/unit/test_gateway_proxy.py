"""The request path (gateway/proxy/): what the dispatcher decides, seen by a client.

In-process: the real gateway application, two Triton pods and a hosted provider
as small aiohttp apps speaking their real protocols (tests/support/gateway.py).
Retries happen only before the first byte; failover on no ready replica, open
breakers and queue time over budget; a stream broken after its first token ends
with an SSE error event; every answer is accounted in /metrics.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from hack.devtools.hosted_api import HostedServer
from tests.support.gateway import RunningGateway, run, running_gateway, serve, sse_events, until
from tests.support.triton_api import TritonAPI
from tritonfleet.gateway.app import GatewaySettings

BACKEND = "x-tritonfleet-backend"
POD = "x-tritonfleet-pod"
REASON = "x-tritonfleet-failover-reason"


@dataclass
class Fleet:
    a: TritonAPI
    b: TritonAPI
    hosted: HostedServer
    urls: dict[str, str]

    def model(self, name: str = "llm", pods: str = "ab", **extra: Any) -> dict[str, Any]:
        """One routes-file entry on pods ``pods`` with the hosted provider behind them."""
        entry: dict[str, Any] = {
            "name": name,
            "tritonModel": "toy_llm",
            "endpoints": [
                {"url": self.urls[p], "name": f"pod-{p}", "metricsUrl": self.urls[p] + "/metrics"}
                for p in pods
            ],
            "mapping": {"chatTemplate": "plain"},
            "failover": {"provider": {"baseUrl": self.urls["hosted"], "model": "gpt-4.1"}},
        }
        entry.update(extra)
        return entry


@contextlib.asynccontextmanager
async def fleet() -> AsyncIterator[Fleet]:
    a, b, hosted = TritonAPI(), TritonAPI(), HostedServer()
    async with serve(a.app) as url_a, serve(b.app) as url_b, serve(hosted.app) as url_h:
        yield Fleet(a, b, hosted, {"a": url_a, "b": url_b, "hosted": url_h + "/v1"})


@contextlib.asynccontextmanager
async def gateway_for(f: Fleet, *models: dict[str, Any], **routes: Any) -> AsyncIterator[Any]:
    settings = GatewaySettings(probe_interval_s=60, queue_interval_s=routes.pop("queue_s", 60))
    async with running_gateway({"models": list(models), **routes}, settings=settings) as gw:
        yield gw


async def _healthy(gw: RunningGateway, model: str) -> None:
    """Wait for the prober's first round, so it cannot change a pod's health mid-test."""
    pods = gw.gateway.state.routes[model].pods.values()
    await until(lambda: all(p.healthy for p in pods), "every pod probed healthy")


# --- Triton answers and retries ----------------------------------------------------------


def test_a_whole_answer_from_triton_is_translated_and_accounted() -> None:
    async def main() -> None:
        async with fleet() as f, gateway_for(f, f.model(pods="a")) as gw:
            resp = await gw.chat("llm", "one two three", max_tokens=2)
            body = await resp.json()
            assert resp.status == 200 and resp.headers[BACKEND] == "triton"
            assert resp.headers[POD] == "pod-a"
            # the toy answer: the prompt's words ("user: one two three\nassistant:")
            assert body["choices"][0]["message"]["content"] == "user: one"
            assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
            # Triton got the mapped request: the prompt through the plain template
            assert f.a.requests[-1][1]["text_input"].startswith("user: one two three")
            tokens = await gw.metric("tritonfleet_gateway_tokens_total", backend="triton")
            assert tokens == 7
            # what the same tokens would have cost at the provider (gpt-4.1: 2 / 8 USD per M)
            saved = await gw.metric("tritonfleet_gateway_hosted_equivalent_usd_total", model="llm")
            assert saved == (5 * 2.0 + 2 * 8.0) / 1e6
            ok = await gw.metric("tritonfleet_gateway_requests_total", backend="triton", code="200")
            assert ok == 1

    run(main())


def test_a_failed_pod_is_retried_on_the_next_before_any_byte() -> None:
    async def main() -> None:
        async with fleet() as f, gateway_for(f, f.model()) as gw:
            await _healthy(gw, "llm")
            f.a.behaviour.fail_status = 503
            f.b.behaviour.fail_status = None
            served = set()
            for _ in range(4):  # ties rotate: pod-a comes first in some of them
                resp = await gw.chat("llm")
                assert resp.status == 200 and resp.headers[BACKEND] == "triton"
                served.add(resp.headers[POD])
            assert served == {"pod-b"} and f.a.calls("/generate") > 0
            assert await gw.metric("tritonfleet_gateway_retries_total", model="llm") > 0
            errors = await gw.metric("tritonfleet_gateway_errors_total", kind="http_503")
            assert errors == f.a.calls("/generate")
            assert f.hosted.requests == []

    run(main())


def test_a_stream_that_fails_before_its_first_token_is_retried_whole() -> None:
    async def main() -> None:
        async with fleet() as f, gateway_for(f, f.model(decoupled=True)) as gw:
            await _healthy(gw, "llm")
            f.a.behaviour.cut_after_events = 0  # headers sent, then the pod dies
            for _ in range(2):  # ties rotate: pod-a comes first in one of them
                resp = await gw.chat("llm", stream=True, max_tokens=3)
                events = sse_events(resp, await resp.read())
                assert resp.headers[POD] == "pod-b"
                text = "".join(
                    e["choices"][0]["delta"].get("content") or ""
                    for e in events
                    if isinstance(e, dict) and e.get("choices")
                )
                assert text == "user: one two" and events[-1] == "[DONE]"
                assert not any(isinstance(e, dict) and "error" in e for e in events)
            assert f.a.calls("/generate_stream") == 1

    run(main())


def test_a_stream_broken_after_its_first_token_ends_with_an_error_event() -> None:
    async def main() -> None:
        async with fleet() as f, gateway_for(f, f.model(pods="a", decoupled=True)) as gw:
            f.a.behaviour.cut_after_events = 2
            resp = await gw.chat("llm", stream=True, max_tokens=4)
            assert resp.status == 200 and resp.headers[BACKEND] == "triton"
            events = sse_events(resp, await resp.read())
            assert events[-1] == "[DONE]"
            error = events[-2]["error"]
            assert error["code"] == "stream_interrupted" and "mid-stream" in error["message"]
            # the text before the break reached the client, then the error and [DONE]
            assert events[0]["choices"][0]["delta"]["content"] == "user:"
            assert all("choices" in e for e in events[:-2])
            # no retry after the first byte: one call, nothing from the provider
            assert f.a.calls("/generate_stream") == 1 and f.hosted.requests == []
            broken = await gw.metric("tritonfleet_gateway_errors_total", kind="stream_broken")
            assert broken == 1

    run(main())


def test_a_triton_client_error_is_a_400_and_not_failed_over() -> None:
    async def main() -> None:
        async with fleet() as f, gateway_for(f, f.model(pods="a")) as gw:
            f.a.behaviour.fail_status = 400
            f.a.behaviour.fail_message = "input 'max_tokens' has the wrong type"
            resp = await gw.chat("llm")
            error = (await resp.json())["error"]
            assert resp.status == 400 and error["code"] == "triton_rejected"
            assert "wrong type" in error["message"] and resp.headers[BACKEND] == "triton"
            assert f.hosted.requests == []

    run(main())


# --- failover -------------------------------------------------------------------------------


def test_no_ready_replica_fails_over_and_signals_activation() -> None:
    async def main() -> None:
        async with fleet() as f, gateway_for(f, f.model(pods="")) as gw:
            resp = await gw.chat("llm", "one two three", max_tokens=3)
            body = await resp.json()
            assert resp.status == 200 and resp.headers[BACKEND] == "hosted"
            assert resp.headers[REASON] == "no_ready_replica"
            assert body["choices"][0]["message"]["content"] == "hosted one two"
            sent = f.hosted.requests[-1]
            assert sent.path == "/v1/chat/completions" and sent.body["model"] == "gpt-4.1"
            assert await gw.metric("tritonfleet_gateway_activation_requests_total") == 1
            assert (
                await gw.metric("tritonfleet_gateway_failovers_total", reason="no_ready_replica")
                == 1
            )
            cost = await gw.metric("tritonfleet_gateway_cost_usd_total", backend="hosted")
            assert cost == (3 * 2.0 + 3 * 8.0) / 1e6  # the provider's usage, gpt-4.1 prices

    run(main())


def test_an_open_breaker_sends_traffic_to_the_provider_without_trying_triton() -> None:
    async def main() -> None:
        async with (
            fleet() as f,
            gateway_for(
                f, f.model(pods="a", breaker={"failureThreshold": 1, "openMs": 60_000})
            ) as gw,
        ):
            await _healthy(gw, "llm")
            f.a.behaviour.fail_status = 500
            first = await gw.chat("llm")
            assert first.status == 200 and first.headers[REASON] == "triton_failed"
            calls = f.a.calls("/generate")
            second = await gw.chat("llm")
            assert second.status == 200 and second.headers[REASON] == "breaker_open"
            assert f.a.calls("/generate") == calls  # the open pod was not tried
            assert await gw.metric("tritonfleet_gateway_breaker_state", pod="pod-a") == 2

    run(main())


def test_queue_time_over_budget_spills_over_to_the_provider() -> None:
    async def main() -> None:
        async with fleet() as f:
            provider = {"baseUrl": f.urls["hosted"], "model": "gpt-4.1"}
            model = f.model(
                pods="a", failover={"provider": provider, "triggers": {"queueTimeAboveMs": 100}}
            )
            async with gateway_for(f, model, queue_s=0.02) as gw:
                pod = gw.gateway.state.routes["llm"].pods[f.urls["a"]]
                f.a.behaviour.queue_ms_per_request = 250
                await until(lambda: (pod.queue_ms or 0) > 100, "queue time seen over budget")
                resp = await gw.chat("llm")
                assert resp.headers[BACKEND] == "hosted" and resp.headers[REASON] == "queue_time"
                f.a.behaviour.queue_ms_per_request = 5
                await until(lambda: (pod.queue_ms or 0) < 100, "queue time back under budget")
                resp = await gw.chat("llm")
                assert resp.headers[BACKEND] == "triton"
                spilled = await gw.metric(
                    "tritonfleet_gateway_failovers_total", reason="queue_time"
                )
                assert spilled == 1

    run(main())


def test_hosted_rate_limit_is_waited_out_or_passed_on() -> None:
    async def main() -> None:
        async with fleet() as f, gateway_for(f, f.model(pods="")) as gw:
            f.hosted.set(rate_limit=0.05, rate_limit_count=1)
            resp = await gw.chat("llm")
            assert resp.status == 200 and len(f.hosted.requests) == 2
            f.hosted.set(rate_limit=30, rate_limit_count=1)  # longer than maxRetryAfterMs
            resp = await gw.chat("llm")
            assert resp.status == 429 and resp.headers["Retry-After"] == "30"
            assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"

    run(main())


def test_both_sides_down_is_a_503_naming_each_reason() -> None:
    async def main() -> None:
        async with fleet() as f, gateway_for(f, f.model(pods="a")) as gw:
            await _healthy(gw, "llm")
            f.a.behaviour.fail_status = 503
            f.hosted.set(fail_status=502)
            resp = await gw.chat("llm")
            error = (await resp.json())["error"]
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
            assert resp.headers[BACKEND] == "none" and error["code"] == "backend_unavailable"
            assert "Triton pod pod-a: http_503" in error["message"]
            assert "hosted provider: HTTP 502" in error["message"]

    run(main())


def test_a_hosted_stream_broken_mid_way_ends_with_an_error_event() -> None:
    async def main() -> None:
        async with fleet() as f, gateway_for(f, f.model(pods="")) as gw:
            f.hosted.set(break_after_tokens=2)
            resp = await gw.chat("llm", stream=True, max_tokens=5)
            events = sse_events(resp, await resp.read())
            assert resp.headers[BACKEND] == "hosted"
            assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "stream_interrupted"
            assert len(f.hosted.requests) == 1  # no retry after the first byte

    run(main())


# --- embeddings -----------------------------------------------------------------------------


def test_embeddings_in_batches_on_triton_and_on_the_provider() -> None:
    async def main() -> None:
        embed = {
            "name": "emb",
            "kind": "embedding",
            "tritonModel": "toy_embed",
            "mapping": {"maxBatchSize": 2},
        }
        async with fleet() as f:
            models = [
                {**embed, "endpoints": [{"url": f.urls["a"], "name": "pod-a"}]},
                {
                    **embed,
                    "name": "emb-hosted",
                    "failover": {
                        "provider": {"baseUrl": f.urls["hosted"], "model": "text-embed"},
                        "mode": "hosted",
                    },
                },
            ]
            async with gateway_for(f, *models) as gw:
                texts = ["a", "bb", "ccc"]
                resp = await gw.post("/v1/embeddings", {"model": "emb", "input": texts})
                body = await resp.json()
                assert resp.headers[BACKEND] == "triton" and f.a.calls("/infer") == 2
                assert [d["embedding"][0] for d in body["data"]] == [1.0, 2.0, 3.0]
                resp = await gw.post("/v1/embeddings", {"model": "emb-hosted", "input": texts})
                body = await resp.json()
                assert resp.headers[BACKEND] == "hosted" and len(body["data"]) == 3
                assert f.hosted.requests[-1].body["model"] == "text-embed"
                assert REASON not in resp.headers  # hosted mode is no failover

    run(main())
