"""The gateway when things go wrong: hung and slow backends, one client's bad
values, and the limits that keep a flood or a slow client from hurting the rest.

In-process, as in test_gateway_proxy.py: the real gateway on loopback, Triton
pods and the hosted provider as small aiohttp apps that can be told to hang
(accept, answer nothing: a SIGSTOPped process), to be slow, or to drip their
answer a byte at a time. Every test bounds its own time: a gateway that waits
where it should give up fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from hack.devtools.hosted_api import HostedServer
from tests.support.gateway import RunningGateway, run, running_gateway, serve, until
from tests.support.triton_api import TritonAPI
from tritonfleet.gateway.app import GatewaySettings
from tritonfleet.gateway.breaker import BreakerState

BACKEND = "x-tritonfleet-backend"
POD = "x-tritonfleet-pod"
REASON = "x-tritonfleet-failover-reason"


class Fleet:
    def __init__(self, a: TritonAPI, b: TritonAPI, hosted: HostedServer, urls: dict[str, str]):
        self.a, self.b, self.hosted, self.urls = a, b, hosted, urls

    def model(
        self, pods: str = "ab", *, hosted: bool = True, name: str = "llm", **extra: Any
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": name,
            "tritonModel": "toy_llm",
            "endpoints": [{"url": self.urls[p], "name": f"pod-{p}"} for p in pods],
            "mapping": {"chatTemplate": "plain"},
        }
        if hosted:
            entry["failover"] = {"provider": {"baseUrl": self.urls["hosted"], "model": "gpt-4.1"}}
        entry.update(extra)
        return entry


@contextlib.asynccontextmanager
async def fleet() -> AsyncIterator[Fleet]:
    a, b, hosted = TritonAPI(), TritonAPI(), HostedServer()
    async with serve(a.app) as url_a, serve(b.app) as url_b, serve(hosted.app) as url_h:
        yield Fleet(a, b, hosted, {"a": url_a, "b": url_b, "hosted": url_h + "/v1"})
        a.resume()  # let held handlers finish so the servers close cleanly
        b.resume()


@contextlib.asynccontextmanager
async def gateway(
    *models: dict[str, Any], probe_s: float = 60.0, **settings: Any
) -> AsyncIterator[RunningGateway]:
    config = GatewaySettings(probe_interval_s=probe_s, queue_interval_s=60, **settings)
    async with running_gateway({"models": list(models)}, settings=config) as gw:
        yield gw


def timeouts(**ms: float) -> dict[str, Any]:
    return {"timeouts": dict(ms)}


# --- hung and slow backends ----------------------------------------------------------------


def test_a_hung_pod_is_found_by_its_probes_and_its_requests_answered_elsewhere() -> None:
    """A SIGSTOPped Triton accepts connections and answers nothing. The probes
    that get no answer mark it hung: its breaker opens, the requests waiting on
    it are retried on the other pod at once (not after answerMs, 120 s here),
    and it gets traffic again once it answers its probes."""

    async def main() -> None:
        async with fleet() as f, gateway(f.model(), probe_s=0.2) as gw:
            rr = gw.gateway.state.routes["llm"]
            await until(lambda: all(p.healthy for p in rr.pods.values()), "pods probed")
            f.a.hang()
            started = time.monotonic()
            answers = await asyncio.gather(*(gw.chat("llm", max_tokens=2) for _ in range(6)))
            took = time.monotonic() - started
            assert [r.status for r in answers] == [200] * 6
            assert {r.headers[BACKEND] for r in answers} == {"triton"}
            assert {r.headers[POD] for r in answers} == {"pod-b"}
            assert took < 8, f"requests waited {took:.1f} s on the hung pod"
            pod_a = rr.pods[f.urls["a"]]
            assert not pod_a.healthy and pod_a.breaker.state is BreakerState.OPEN
            assert f.a.cancelled >= 1  # some really were sent there, and cut
            f.a.resume()
            await until(lambda: pod_a.healthy, "pod a answering its probes again", 5)
            back = [await gw.chat("llm", max_tokens=2) for _ in range(4)]
            assert "pod-a" in {r.headers[POD] for r in back}

    run(main(), timeout=40)


def test_a_whole_answer_is_bounded_by_answer_ms_then_tried_elsewhere() -> None:
    """A pod that answers its probes but not its requests (a wedged model): the
    attempt ends after answerMs and the next pod answers."""

    async def main() -> None:
        async with fleet() as f, gateway(f.model(**timeouts(answerMs=400))) as gw:
            f.a.behaviour.delay_s = 30
            f.b.behaviour.delay_s = 0
            started = time.monotonic()
            answers = await asyncio.gather(*(gw.chat("llm", max_tokens=2) for _ in range(2)))
            assert [r.status for r in answers] == [200, 200]
            assert {r.headers[POD] for r in answers} == {"pod-b"}
            assert time.monotonic() - started < 3

    run(main(), timeout=30)


def test_a_request_never_outlives_total_ms() -> None:
    """Every pod hung and no provider: a 504 naming the limit, once totalMs is up."""

    async def main() -> None:
        async with (
            fleet() as f,
            gateway(f.model(hosted=False, **timeouts(answerMs=600, totalMs=1000))) as gw,
        ):
            f.a.hang()
            f.b.hang()
            started = time.monotonic()
            resp = await gw.chat("llm")
            took = time.monotonic() - started
            body = await resp.json()
            assert resp.status == 504 and body["error"]["code"] == "upstream_timeout"
            assert "totalMs (1 s)" in body["error"]["message"]
            assert 0.9 < took < 3

    run(main(), timeout=30)


def test_a_hung_hosted_api_gives_a_bounded_clear_error() -> None:
    async def main() -> None:
        async with fleet() as f:
            model = f.model(pods="", **timeouts(answerMs=300, firstByteMs=300))
            model["failover"]["mode"] = "hosted"
            async with gateway(model) as gw:
                f.hosted.set(delay_ms=60_000)
                for stream in (False, True):
                    started = time.monotonic()
                    resp = await gw.chat("llm", stream=stream)
                    took = time.monotonic() - started
                    body = await resp.json()
                    assert resp.status == 503, body
                    message = body["error"]["message"]
                    assert "hosted provider: timeout" in message and "0.3 s" in message, message
                    assert took < 3, f"stream={stream}: {took:.1f} s"

    run(main(), timeout=30)


def test_a_hosted_api_dripping_its_answer_is_cut_at_answer_ms() -> None:
    """Headers at once, then one byte every 50 ms: the whole answer is bounded by
    answerMs, not by each byte arriving in time."""

    async def main() -> None:
        async with fleet() as f:
            model = f.model(pods="", **timeouts(answerMs=500))
            model["failover"]["mode"] = "hosted"
            async with gateway(model) as gw:
                f.hosted.set(drip_ms=50)
                started = time.monotonic()
                resp = await gw.chat("llm")
                body = await resp.json()
                assert resp.status == 503 and "no whole answer within 0.5 s" in str(body)
                assert time.monotonic() - started < 3

    run(main(), timeout=30)


# --- one client's bad values ---------------------------------------------------------------


def test_a_value_triton_cannot_parse_is_the_clients_400_not_the_pods_failure() -> None:
    """Triton answers 500 "Unable to parse 'data'" to a value it cannot read into
    the input's type; with a breaker that opens on the first failure, the next
    client still gets Triton."""

    async def main() -> None:
        async with fleet() as f:
            model = f.model(pods="a", breaker={"failureThreshold": 1})
            async with gateway(model) as gw:
                f.a.behaviour.fail_status = 500
                f.a.behaviour.fail_message = (
                    "Unable to parse 'data': attempt to access JSON non-signed-integer as "
                    "signed-integer"
                )
                bad = await gw.chat("llm")
                assert bad.status == 400
                assert (await bad.json())["error"]["code"] == "triton_rejected"
                f.a.behaviour.fail_status = None
                good = await gw.chat("llm")
                assert good.status == 200 and good.headers[BACKEND] == "triton"
                assert f.hosted.requests == []

    run(main(), timeout=30)


def test_values_no_backend_can_read_are_refused_before_they_leave() -> None:
    """Bounded at the gateway: nothing reaches Triton or the provider."""

    async def main() -> None:
        async with fleet() as f:
            hosted = f.model(name="paid", pods="")
            hosted["failover"]["mode"] = "hosted"
            custom = f.model(name="custom", mapping={"inputs": {"seed": "seed", "user_tag": "tag"}})
            async with gateway(f.model(), hosted, custom) as gw:
                for model, extra, param in [
                    ("llm", {"max_tokens": 2**63}, None),
                    ("llm", {"max_tokens": 2**31}, "max_tokens"),
                    ("paid", {"max_tokens": 2**40}, "max_tokens"),
                    ("paid", {"presence_penalty": 7}, "presence_penalty"),
                    ("paid", {"seed": 1.5}, "seed"),
                    ("custom", {"user_tag": {"nested": [1]}}, "user_tag"),
                    ("custom", {"user_tag": 1e39}, "user_tag"),
                ]:
                    resp = await gw.chat(model, **extra)
                    body = await resp.json()
                    assert resp.status == 400, (model, extra, body)
                    assert body["error"]["param"] == param, body
                assert f.a.requests == f.b.requests == []
                assert f.hosted.requests == []
                ok = await gw.chat("custom", seed=2**62, user_tag=["x", 1.5], max_tokens=3)
                assert ok.status == 200

    run(main(), timeout=30)


# --- limits --------------------------------------------------------------------------------


def test_a_pod_never_gets_more_than_the_in_flight_limit() -> None:
    """Twelve requests at once, a limit of three per pod: each pod holds at most
    three, the others wait for a slot, and every request is answered by Triton."""

    async def main() -> None:
        async with fleet() as f, gateway(f.model(), max_inflight_per_pod=3) as gw:
            f.a.behaviour.delay_s = f.b.behaviour.delay_s = 0.2
            answers = await asyncio.gather(*(gw.chat("llm") for _ in range(12)))
            assert [r.status for r in answers] == [200] * 12
            assert {r.headers[BACKEND] for r in answers} == {"triton"}
            assert f.a.max_in_flight <= 3 and f.b.max_in_flight <= 3
            assert f.a.max_in_flight + f.b.max_in_flight == 6

    run(main(), timeout=30)


def test_a_saturated_model_with_a_queue_budget_spills_over_at_once() -> None:
    async def main() -> None:
        async with fleet() as f:
            model = f.model(pods="a")
            model["failover"]["triggers"] = {"queueTimeAboveMs": 1000}
            async with gateway(model, max_inflight_per_pod=1) as gw:
                f.a.behaviour.delay_s = 0.5
                first = asyncio.ensure_future(gw.chat("llm"))
                await until(lambda: f.a.in_flight == 1, "the pod busy")
                started = time.monotonic()
                spilled = await gw.chat("llm")
                assert spilled.status == 200 and spilled.headers[BACKEND] == "hosted"
                assert spilled.headers[REASON] == "saturated"
                assert time.monotonic() - started < 0.4
                assert (await first).headers[BACKEND] == "triton"

    run(main(), timeout=30)


def test_a_client_that_leaves_cancels_its_upstream_call() -> None:
    """Nothing keeps running, and nothing fails over, for a client who is gone."""

    async def main() -> None:
        async with fleet() as f, gateway(f.model(pods="a")) as gw:
            f.a.behaviour.delay_s = 2
            url = gw.client.make_url("/v1/chat/completions")
            body = {"model": "llm", "messages": [{"role": "user", "content": "hi"}]}
            async with aiohttp.ClientSession() as session:
                with contextlib.suppress(TimeoutError):
                    await session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=0.3))
            await until(lambda: f.a.cancelled == 1, "the Triton call cancelled", 2)
            await asyncio.sleep(0.3)
            assert f.hosted.requests == []
            assert await gw.metric("tritonfleet_gateway_requests_total", code="499") == 1

    run(main(), timeout=30)


async def _raw(gw: RunningGateway, data: bytes, read_within: float) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    assert gw.client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), read_within)
    finally:
        writer.close()


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_the_connection_closes() -> None:
    async def main() -> None:
        async with fleet() as f, gateway(f.model(), body_timeout_s=0.3) as gw:
            head = (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            started = time.monotonic()
            answer = await _raw(gw, head, read_within=5)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            assert b'"code": "request_timeout"' in answer
            # the 408 at 0.3 s, then at most LINGERING_S (2 s) draining what is left
            assert time.monotonic() - started < 3

    run(main(), timeout=30)


def test_a_connection_slow_to_send_its_head_is_closed() -> None:
    async def main() -> None:
        async with fleet() as f, gateway(f.model(), keepalive_timeout_s=0.3) as gw:
            started = time.monotonic()
            answer = await _raw(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost:", 3)
            assert answer == b"" and time.monotonic() - started < 2

    run(main(), timeout=30)
