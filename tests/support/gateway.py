"""The gateway in-process, for its unit tests: the real aiohttp application
(``tritonfleet.gateway.app.Gateway``) on a loopback port, its backends small
aiohttp apps on other ports of the same event loop - the Triton stand-in
(:mod:`tests.support.triton_api`) and the hosted-API stand-in
(``hack.devtools.hosted_api.HostedServer``) - so every byte still crosses a
real socket in the real protocols, and a test runs in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hack.devtools.triton import parse_metrics
from tritonfleet.desired.gateway.routes import RouteTable
from tritonfleet.desired.gateway.routes_file import load_routes
from tritonfleet.gateway.app import Gateway, GatewaySettings
from tritonfleet.gateway.secrets import ClientTokens
from tritonfleet.gateway.server import GatewayRunner, runner_kwargs

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one test's coroutine on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a free loopback port; yields its base URL."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def until(condition: Callable[[], bool], what: str, within_s: float = 5.0) -> None:
    """Wait for ``condition`` to hold, failing with ``what`` after ``within_s``."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.01)


class GatewayTestServer(TestServer):
    """The test server running the app as ``tritonfleet gateway`` does (its runner,
    with its connection settings), not with aiohttp's test defaults."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway.app, host="127.0.0.1")
        self._settings = gateway.settings

    async def _make_runner(self, **kwargs: Any) -> GatewayRunner:
        kwargs.pop("handler_cancellation", None)  # the product's own choice below
        kwargs.update(runner_kwargs(self._settings.keepalive_timeout_s))
        return GatewayRunner(self.app, **kwargs)


class RunningGateway:
    def __init__(self, gateway: Gateway, client: TestClient[Any, Any]) -> None:
        self.gateway = gateway
        self.client = client

    async def chat(self, model: str, text: str = "one two three", **extra: Any) -> Any:
        """POST /v1/chat/completions; the response, its body read (JSON or SSE)."""
        body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
        return await self.post("/v1/chat/completions", body)

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        resp = await self.client.post(path, json=body, headers=headers)
        await resp.read()
        return resp

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the ``/metrics`` samples of ``name`` with these labels."""
        resp = await self.client.get("/metrics")
        want = set(labels.items())
        samples = parse_metrics(await resp.text())
        return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@contextlib.asynccontextmanager
async def running_gateway(
    routes: dict[str, Any] | RouteTable | None,
    *,
    tokens: ClientTokens | None = None,
    settings: GatewaySettings | None = None,
) -> AsyncIterator[RunningGateway]:
    """The gateway serving a routes-file document (or a table; None: no table yet).

    The probers run as in production; their first round starts with the server.
    """
    table = load_routes(routes) if isinstance(routes, dict) else routes
    gateway = Gateway(
        table,
        settings=settings or GatewaySettings(max_request_bytes=4096),
        tokens=tokens,
    )
    async with TestClient(GatewayTestServer(gateway)) as client:
        yield RunningGateway(gateway, client)


def sse_events(resp: aiohttp.ClientResponse, raw: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body: JSON objects, and ``"[DONE]"``."""
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    out: list[Any] = []
    for line in raw.decode().splitlines():
        if line.startswith("data: "):
            payload = line[6:]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out
