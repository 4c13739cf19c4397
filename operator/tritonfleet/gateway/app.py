"""The gateway's HTTP server: OpenAI-compatible endpoints plus health and metrics.

``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/v1/models`` (and ``/v1/models/{id}``) for clients; ``/healthz`` (the
process is alive), ``/readyz`` (a routing table is loaded), ``/metrics``
(Prometheus) for the platform.

This module does what is common to every request — client authentication,
the size limit, JSON parsing, looking the model up, turning a
:class:`~tritonfleet.desired.gateway.openai_mapping.RequestError` into an OpenAI 400 —
and hands the rest to :class:`~tritonfleet.gateway.proxy.Dispatcher`. It also
owns the lifecycle: one keep-alive client session per backend kind, the route
source, the health and queue-time probers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from tritonfleet.adapters.hosted import HostedClient
from tritonfleet.adapters.triton_http import TritonClient
from tritonfleet.desired.gateway.openai_mapping import (
    RequestError,
    build_embedding_request,
    build_generate_request,
)
from tritonfleet.desired.gateway.routes import RouteTable
from tritonfleet.gateway.errors import error_response
from tritonfleet.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from tritonfleet.gateway.prober import Prober
from tritonfleet.gateway.proxy import Dispatcher
from tritonfleet.gateway.secrets import ClientTokens, KeyStore
from tritonfleet.gateway.sources import RouteSource
from tritonfleet.gateway.state import GatewayState, RouteRuntime

log = logging.getLogger("tritonfleet.gateway")

STATE_KEY = web.AppKey("state", GatewayState)


@dataclass(frozen=True)
class GatewaySettings:
    max_request_bytes: int = 4 * 1024 * 1024
    probe_interval_s: float = 1.0
    queue_interval_s: float = 1.0
    max_connections: int = 1024
    # A port of its own for /metrics (and /healthz): then the client port does not
    # serve it, and a NetworkPolicy can open one to Prometheus only. 0: the client port.
    metrics_port: int = 0


class Gateway:
    """Everything one gateway process holds; ``app`` is the aiohttp application."""

    def __init__(
        self,
        table: RouteTable | None,
        source: RouteSource | None = None,
        *,
        settings: GatewaySettings | None = None,
        tokens: ClientTokens | None = None,
        keys: KeyStore | None = None,
    ) -> None:
        self.settings = settings or GatewaySettings()
        self.metrics = GatewayMetrics()
        self.state = GatewayState(self.metrics)
        if table is not None:
            self.state.publish(table)
        self.source = source
        self.tokens = tokens or ClientTokens()
        self.keys = keys or KeyStore()
        self._tasks: list[asyncio.Task[None]] = []
        self.dispatcher: Dispatcher | None = None
        self.app = self._build_app()

    def _build_app(self) -> web.Application:
        # +1 so a body of exactly the limit is accepted and we can tell "over".
        middlewares = [self._port_split] if self.settings.metrics_port else []
        app = web.Application(
            client_max_size=self.settings.max_request_bytes + 1, middlewares=middlewares
        )
        app[STATE_KEY] = self.state
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model:.+}", self.get_model)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_endpoint)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    @web.middleware
    async def _port_split(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """With a metrics port: /metrics only there, the API only on the client port."""
        transport = request.transport
        sockname: Any = transport.get_extra_info("sockname") if transport is not None else None
        on_metrics_port = bool(sockname) and sockname[1] == self.settings.metrics_port
        if (request.path == "/metrics") != on_metrics_port and request.path != "/healthz":
            raise web.HTTPNotFound()
        response: web.StreamResponse = await handler(request)
        return response

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        limit = self.settings.max_connections

        def connector() -> aiohttp.TCPConnector:
            return aiohttp.TCPConnector(
                limit=limit, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=60
            )

        # trust_env=False: never send pod traffic through an http(s)_proxy.
        triton_session = aiohttp.ClientSession(
            connector=connector(), trust_env=False, auto_decompress=False
        )
        # The hosted side may legitimately need the environment's proxy.
        hosted_session = aiohttp.ClientSession(connector=connector(), trust_env=True)
        triton = TritonClient(triton_session)
        self.dispatcher = Dispatcher(
            self.state, triton, HostedClient(hosted_session), self.keys, self.metrics
        )
        prober = Prober(
            self.state, triton, self.settings.probe_interval_s, self.settings.queue_interval_s
        )
        self._tasks = [
            asyncio.create_task(prober.run_health(), name="health-prober"),
            asyncio.create_task(prober.run_queue(), name="queue-prober"),
        ]
        if self.source is not None:
            self._tasks.append(
                asyncio.create_task(self.source.run(self.state.publish), name="route-source")
            )
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            closer = getattr(self.source, "close", None)
            if closer is not None:
                await closer()
            triton.pool.close()
            await triton_session.close()
            await hosted_session.close()

    # -- common request handling -----------------------------------------------------

    async def _read(
        self, request: web.Request
    ) -> tuple[dict[str, Any] | None, web.Response | None]:
        if not self.tokens.check(request.headers.get("Authorization")):
            return None, error_response(
                401,
                "Missing or invalid bearer token.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        limit = self.settings.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            return None, self._too_big()
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return None, self._too_big()
        if len(raw) > limit:
            return None, self._too_big()
        try:
            body = json.loads(raw)
        except ValueError:
            return None, error_response(
                400, "The request body is not valid JSON.", code="invalid_json"
            )
        if not isinstance(body, dict):
            return None, error_response(
                400, "The request body must be a JSON object.", code="invalid_json"
            )
        return body, None

    def _too_big(self) -> web.Response:
        limit = self.settings.max_request_bytes
        return error_response(
            413, f"Request body is larger than {limit} bytes.", code="request_too_large"
        )

    def _route(
        self, body: dict[str, Any], kind: str
    ) -> tuple[RouteRuntime | None, web.Response | None]:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            return None, error_response(
                400, "you must provide a model parameter", code="missing_model", param="model"
            )
        rr = self.state.routes.get(name)
        if rr is None:
            return None, error_response(
                404,
                f"The model '{name}' does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        if rr.route.kind != kind:
            what = "an embedding model" if rr.route.kind == "embedding" else "a text model"
            return None, error_response(
                400,
                f"The model '{name}' is {what} and cannot serve this endpoint.",
                code="wrong_model_kind",
                param="model",
            )
        return rr, None

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body, problem = await self._read(request)
        if problem is not None:
            return problem
        assert body is not None
        rr, problem = self._route(body, "generate")
        if problem is not None:
            return problem
        assert rr is not None and rr.route.generate is not None and self.dispatcher is not None
        try:
            treq = build_generate_request(body, rr.route.generate, chat=chat)
        except RequestError as err:
            return error_response(err.status, err.message, code=err.code, param=err.param)
        return await self.dispatcher.generate(request, rr, body, treq)

    # -- endpoints ----------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body, problem = await self._read(request)
        if problem is not None:
            return problem
        assert body is not None
        rr, problem = self._route(body, "embedding")
        if problem is not None:
            return problem
        assert rr is not None and self.dispatcher is not None
        try:
            ereq = build_embedding_request(body)
        except RequestError as err:
            return error_response(err.status, err.message, code=err.code, param=err.param)
        return await self.dispatcher.embeddings(rr, body, ereq)

    def _model_entry(self, rr: RouteRuntime) -> dict[str, Any]:
        return {"id": rr.route.name, "object": "model", "created": 0, "owned_by": "tritonfleet"}

    async def list_models(self, request: web.Request) -> web.Response:
        if not self.tokens.check(request.headers.get("Authorization")):
            return error_response(401, "Missing or invalid bearer token.", code="invalid_api_key")
        data = [self._model_entry(rr) for rr in self.state.routes.values()]
        return web.json_response({"object": "list", "data": data})

    async def get_model(self, request: web.Request) -> web.Response:
        if not self.tokens.check(request.headers.get("Authorization")):
            return error_response(401, "Missing or invalid bearer token.", code="invalid_api_key")
        name = request.match_info["model"]
        rr = self.state.routes.get(name)
        if rr is None:
            return error_response(
                404, f"The model '{name}' does not exist.", code="model_not_found", param="model"
            )
        return web.json_response(self._model_entry(rr))

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.state.loaded:
            return web.Response(status=503, text="no routing table loaded yet\n")
        return web.Response(text=f"ready: {len(self.state.routes)} models\n")

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def _event_loop_factory() -> Any:
    # uvloop roughly halves the per-request CPU of aiohttp; optional.
    if importlib.util.find_spec("uvloop") is None:
        return None
    import uvloop  # type: ignore[import-not-found,unused-ignore]

    return uvloop.new_event_loop


def serve(
    gateway: Gateway, *, host: str, port: int, metrics_port: int | None, access_log: bool
) -> None:
    """Run ``gateway`` until SIGINT/SIGTERM: the client port, and ``/metrics`` on
    ``metrics_port`` when given (one app on two listeners; its middleware splits the
    paths between them)."""
    # Startup objects (modules, routes) live forever: keep them out of every
    # collection, and collect young objects less often - the request path
    # allocates plenty but makes no reference cycles, so refcounting frees it
    # and the collector only adds latency spikes.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    factory = _event_loop_factory()
    loop = factory() if factory is not None else asyncio.new_event_loop()
    extra: list[socket.socket] = []
    if metrics_port:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        metrics_socket = socket.socket(family, socket.SOCK_STREAM)
        metrics_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        metrics_socket.bind((host, metrics_port))
        extra.append(metrics_socket)
    web.run_app(
        gateway.app,
        host=host,
        port=port,
        sock=extra or None,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        print=None,
        loop=loop,
        shutdown_timeout=5.0,
    )
