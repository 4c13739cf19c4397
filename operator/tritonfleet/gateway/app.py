"""The gateway's HTTP server: OpenAI-compatible endpoints plus health and metrics.

``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/v1/models`` (and ``/v1/models/{id}``) for clients; ``/healthz`` (the
process is alive), ``/readyz`` (a routing table is loaded), ``/metrics``
(Prometheus) for the platform.

This module does what is common to every request — client authentication,
the size limit, reading the body within a deadline, JSON parsing (numbers that
fit 64 bits, no NaN, bounded nesting, text that is valid UTF-8), looking the
model up, turning a
:class:`~tritonfleet.desired.gateway.openai_mapping.RequestError` into an OpenAI 400 —
and hands the rest to :class:`~tritonfleet.gateway.proxy.Dispatcher`. Every
refusal, aiohttp's own (unknown path, wrong method) included, is an
OpenAI-shaped JSON error; an unexpected failure is a JSON 500 and one log entry.
It also owns the lifecycle: one keep-alive client session per backend kind, the
route source, the health and queue-time probers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import json
import logging
import math
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
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
from tritonfleet.gateway import server
from tritonfleet.gateway.errors import error_response
from tritonfleet.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from tritonfleet.gateway.prober import Prober
from tritonfleet.gateway.proxy import Dispatcher
from tritonfleet.gateway.secrets import ClientTokens, KeyStore
from tritonfleet.gateway.sources import RouteSource
from tritonfleet.gateway.state import GatewayState, RouteRuntime

log = logging.getLogger("tritonfleet.gateway")

STATE_KEY = web.AppKey("state", GatewayState)


MAX_JSON_DEPTH = 64  # nesting a request body may have; OpenAI's requests need a handful
_INT64 = 1 << 63
# A JSON escape of a UTF-16 surrogate: paired ones are fine (an emoji), a lone one
# cannot be encoded as UTF-8 again and must be refused before it reaches a backend.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class GatewaySettings:
    max_request_bytes: int = 4 * 1024 * 1024
    probe_interval_s: float = 1.0
    queue_interval_s: float = 1.0
    max_connections: int = 1024
    body_timeout_s: float = 30.0  # to receive a request's whole body
    keepalive_timeout_s: float = 75.0  # an idle client connection (or one slow to send its head)
    max_inflight_per_pod: int = 128  # requests in flight to one Triton pod (0: no cap)
    max_waiting: int = 1024  # requests waiting for a pod with room, beyond: answered at once
    # A port of its own for /metrics (and /healthz): then the client port does not
    # serve it, and a NetworkPolicy can open one to Prometheus only. 0: the client port.
    metrics_port: int = 0


class BadBody(ValueError):  # noqa: N818 - named for what happened
    """The body is not JSON the gateway will take; the message says why."""


def _bounded_int(text: str) -> int:
    # Length first: int() of a 5,000-digit literal is slow, and refused past 4,300.
    if len(text) > 20 or not -_INT64 <= (value := int(text)) < _INT64:
        raise BadBody("the request body holds an integer that does not fit in 64 bits")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise BadBody("the request body holds a number too large for a 64-bit float")
    return value


def _no_constant(name: str) -> None:
    raise BadBody(f"the request body holds {name}, which is not JSON")


def _too_deep(obj: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def parse_body(raw: bytes) -> Any:
    """The request body as JSON, or :class:`BadBody` saying what is wrong with it."""
    try:
        body = json.loads(
            raw, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant
        )
    except RecursionError:
        raise BadBody(f"the request body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except UnicodeDecodeError:
        raise BadBody("the request body is not valid UTF-8") from None
    except BadBody:
        raise
    except ValueError:
        raise BadBody("The request body is not valid JSON.") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _too_deep(body, MAX_JSON_DEPTH):
        raise BadBody(f"the request body is nested deeper than {MAX_JSON_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(raw) is not None:
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise BadBody(
                "the request body holds an unpaired UTF-16 surrogate (\\ud800-\\udfff escape), "
                "which is not text"
            ) from None
    return body


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's own refusals, as OpenAI names them.
_HTTP_CODES = {404: "unknown_url", 405: "method_not_allowed", 413: "request_too_large"}


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
        self.state = GatewayState(
            self.metrics, self.settings.max_inflight_per_pod, self.settings.max_waiting
        )
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
        # The errors first: what the port split refuses is an OpenAI-shaped 404 too.
        middlewares: list[Any] = [self._openai_errors]
        if self.settings.metrics_port:
            middlewares.append(self._port_split)
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
    async def _openai_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """aiohttp's refusals (404, 405...) and any unexpected failure as OpenAI errors."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
            if exc.status == 404:
                message = f"Invalid URL ({request.method} {request.path})"
            elif exc.status == 405:
                message = f"Method {request.method} is not allowed on {request.path}"
            else:
                message = exc.reason
            return error_response(
                exc.status, message, code=_HTTP_CODES.get(exc.status), headers=headers
            )
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("unexpected failure on %s %s", request.method, request.path)
            return error_response(
                500,
                "The gateway failed to handle this request; it is logged.",
                code="internal_error",
            )

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
            raw = await asyncio.wait_for(request.read(), self.settings.body_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            return None, self._too_big()
        except TimeoutError:
            resp = error_response(
                408,
                f"The request body did not arrive within {self.settings.body_timeout_s:g} s.",
                code="request_timeout",
            )
            resp.force_close()
            return None, resp
        if len(raw) > limit:
            return None, self._too_big()
        try:
            body = parse_body(raw)
        except BadBody as err:
            return None, error_response(400, str(err), code="invalid_json")
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
    server.serve(
        gateway.app,
        host=host,
        port=port,
        loop=loop,
        socks=extra,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        keepalive_timeout_s=gateway.settings.keepalive_timeout_s,
        shutdown_timeout_s=5.0,
    )
