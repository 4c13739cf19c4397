"""The gateway's HTTP front (gateway/app.py): client authentication, the size limit,
request validation with OpenAI-shaped errors, the model list, health and readiness.

In-process: the real application on a loopback port; a Triton stand-in only
where a request gets that far (tests/support/gateway.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.gateway import run, running_gateway, serve
from tests.support.triton_api import TritonAPI
from tritonfleet.desired.gateway.routes import RouteTable
from tritonfleet.desired.gateway.routes_file import load_routes
from tritonfleet.gateway.app import Gateway, GatewaySettings
from tritonfleet.gateway.secrets import ClientTokens

TOKEN = "tf-unit-client-token-0123456789"


def routes(triton_url: str = "http://127.0.0.1:9") -> dict[str, Any]:
    pod = [{"url": triton_url, "name": "pod-a"}]
    return {
        "models": [
            {"name": "llm", "tritonModel": "toy_llm", "endpoints": pod},
            {"name": "emb", "kind": "embedding", "tritonModel": "toy_embed", "endpoints": pod},
        ]
    }


def assert_openai_error(resp: Any, body: Any, status: int, code: str, param: str | None) -> None:
    """The shape the OpenAI SDKs turn into their typed exceptions."""
    assert resp.status == status
    assert resp.headers["x-tritonfleet-backend"] == "none"
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param) and error["message"]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b"[1, 2]", 400, "invalid_json", None),
        (b'{"messages": []}', 400, "missing_model", "model"),
        (b'{"model": "gpt-9", "messages": []}', 404, "model_not_found", "model"),
        (b'{"model": "emb", "messages": []}', 400, "wrong_model_kind", "model"),
        (
            b'{"model": "llm", "messages": [{"role": "user", "content": "hi"}], "logprobs": true}',
            400,
            "unsupported_parameter",
            "logprobs",
        ),
        (b'{"model": "llm", "messages": "hi"}', 400, "invalid_request_error", "messages"),
        (
            b'{"model": "llm", "messages": [], "padding": "' + b"x" * 5000 + b'"}',
            413,
            "request_too_large",
            None,
        ),
    ],
)
def test_invalid_requests_get_openai_errors(
    body: bytes, status: int, code: str, param: str | None
) -> None:
    async def main() -> None:
        async with running_gateway(routes()) as gw:
            resp = await gw.client.post(
                "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
            )
            assert_openai_error(resp, await resp.json(), status, code, param)

    run(main())


def test_embeddings_validate_their_input() -> None:
    async def main() -> None:
        async with running_gateway(routes()) as gw:
            resp = await gw.post("/v1/embeddings", {"model": "emb", "input": [1, 2]})
            assert_openai_error(resp, await resp.json(), 400, "unsupported_parameter", "input")
            resp = await gw.post("/v1/embeddings", {"model": "llm", "input": "x"})
            assert_openai_error(resp, await resp.json(), 400, "wrong_model_kind", "model")

    run(main())


def test_client_tokens_guard_the_api_but_not_health_or_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TF_UNIT_TOKENS", TOKEN)

    async def main() -> None:
        triton = TritonAPI()
        async with serve(triton.app) as url:
            tokens = ClientTokens(env="TF_UNIT_TOKENS")
            async with running_gateway(routes(url), tokens=tokens) as gw:
                chat = {"model": "llm", "messages": [{"role": "user", "content": "hi"}]}
                for header in ({}, {"Authorization": "Bearer wrong"}):
                    resp = await gw.post("/v1/chat/completions", chat, header)
                    assert_openai_error(resp, await resp.json(), 401, "invalid_api_key", None)
                    assert resp.headers["WWW-Authenticate"] == "Bearer"
                assert (await gw.client.get("/v1/models")).status == 401
                assert triton.requests == []  # nothing reached a backend
                ok = await gw.post(
                    "/v1/chat/completions", chat, {"Authorization": f"Bearer {TOKEN}"}
                )
                assert ok.status == 200 and ok.headers["x-tritonfleet-backend"] == "triton"
                for path in ("/healthz", "/readyz", "/metrics"):
                    assert (await gw.client.get(path)).status == 200

    run(main())


def test_models_are_listed_and_looked_up() -> None:
    async def main() -> None:
        async with running_gateway(routes()) as gw:
            listed = await (await gw.client.get("/v1/models")).json()
            assert listed["object"] == "list"
            assert sorted(m["id"] for m in listed["data"]) == ["emb", "llm"]
            one = await gw.client.get("/v1/models/llm")
            assert (await one.json())["id"] == "llm"
            missing = await gw.client.get("/v1/models/gpt-9")
            assert_openai_error(missing, await missing.json(), 404, "model_not_found", "model")

    run(main())


def test_ready_only_once_a_routing_table_is_loaded() -> None:
    async def main() -> None:
        async with running_gateway(None, settings=GatewaySettings()) as gw:
            assert (await gw.client.get("/healthz")).status == 200
            resp = await gw.client.get("/readyz")
            assert resp.status == 503 and "no routing table" in await resp.text()
            gw.gateway.state.publish(RouteTable({}))
            resp = await gw.client.get("/readyz")
            assert resp.status == 200 and "0 models" in await resp.text()

    run(main())


def test_a_metrics_port_takes_metrics_off_the_client_port() -> None:
    """With --metrics-port, Prometheus scrapes one port and clients reach the other only:
    a NetworkPolicy can then open each to its own callers."""

    async def main() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            metrics_port = probe.getsockname()[1]
        gateway = Gateway(
            load_routes(routes()), settings=GatewaySettings(metrics_port=metrics_port)
        )
        runner = web.AppRunner(gateway.app)
        await runner.setup()
        client_site = web.TCPSite(runner, "127.0.0.1", 0)
        await client_site.start()
        await web.TCPSite(runner, "127.0.0.1", metrics_port).start()
        client_port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session:

                async def status(port: int, path: str) -> int:
                    async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                        return resp.status

                assert await status(metrics_port, "/metrics") == 200
                assert await status(client_port, "/metrics") == 404
                assert await status(client_port, "/v1/models") == 200
                assert await status(metrics_port, "/v1/models") == 404
                for port in (client_port, metrics_port):
                    assert await status(port, "/healthz") == 200
        finally:
            await runner.cleanup()

    run(main())


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"model": "llm", "messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate"),
        (b'{"model": "llm", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
        (b'{"model": "llm", "messages": ' + b"[" * 65 + b"]" * 65 + b"}", "nested"),
        (b'{"model": "llm", "messages": [], "temperature": NaN}', "NaN"),
        (b'{"model": "llm", "messages": [], "temperature": 1e999}', "64-bit float"),
        (b'{"model": "llm", "messages": [], "max_tokens": 99999999999999999999}', "64 bits"),
        (b'{"model": "llm", "messages": [], "seed": -' + b"9" * 5000 + b"}", "64 bits"),
        (b'{"model": "llm", "messages": "\xff\xfe"}', "UTF-8"),
    ],
)
def test_hostile_bodies_get_a_400_and_no_traceback(
    body: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        settings = GatewaySettings(max_request_bytes=65536)
        async with running_gateway(routes(), settings=settings) as gw:
            resp = await gw.client.post(
                "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
            )
            answer = await resp.json()
            assert_openai_error(resp, answer, 400, "invalid_json", None)
            assert why in answer["error"]["message"]

    run(main())
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]


def test_every_refusal_is_an_openai_error_aiohttps_own_included(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with running_gateway(routes()) as gw:
            resp = await gw.client.post("/v1/nothing-here", json={})
            assert_openai_error(resp, await resp.json(), 404, "unknown_url", None)
            resp = await gw.client.get("/v1/chat/completions")
            assert_openai_error(resp, await resp.json(), 405, "method_not_allowed", None)
            assert resp.headers["Allow"] == "POST"
            # A request aiohttp cannot parse never reaches a handler.
            assert gw.client.port is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.port)
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            raw = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            head, _, payload = raw.partition(b"\r\n\r\n")
            assert (
                head.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400")) and b"application/json" in head
            )
            error = json.loads(payload)["error"]
            assert error["code"] == "bad_http_request" and error["type"] == "invalid_request_error"

    run(main())
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]


def test_the_bearer_scheme_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_UNIT_TOKENS", TOKEN)
    tokens = ClientTokens(env="TF_UNIT_TOKENS")
    for header in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} "):
        assert tokens.check(header), header
    for header in (f"Basic {TOKEN}", "bearer", f"Bearer{TOKEN}", f"bearer {TOKEN}x"):
        assert not tokens.check(header), header
