"""Serving the gateway's application: aiohttp's server, with the gateway's own
connection limits and error bodies.

``gateway.app.serve`` runs :func:`serve` (``web.run_app`` with three
differences); the unit tests' server uses :class:`GatewayRunner` too, so they
see what clients see:

* A client that disconnects cancels its request (``handler_cancellation``):
  the attempt in flight is cancelled with it, so no Triton pod or paid
  provider keeps working, and no failover happens, for a client who is gone.
* A connection idle (or still sending its request head) for
  ``keepalive_timeout_s`` is closed; aiohttp's default keeps it an hour. After
  an answer given before the body was read (401, 408, 413), what is left of the
  body is read and dropped for at most :data:`LINGERING_S` (aiohttp's default:
  10 s), then the connection is closed.
* Requests aiohttp refuses before any handler runs (a malformed request line
  or header) get an OpenAI-shaped JSON error, like every other refusal, and one
  log line without a traceback: bad input is not a gateway fault.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from tritonfleet.gateway.errors import BACKEND_HEADER, error_body

log = logging.getLogger("tritonfleet.gateway")

LINGERING_S = 2.0


class _OpenAIErrorsHandler(RequestHandler):
    """aiohttp's connection handler, answering protocol errors in OpenAI's shape."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        log.info("refused a malformed request from %s: HTTP %d %s", request.remote, status, exc)
        text = "The request could not be read as HTTP/1.1"
        detail = getattr(exc, "message", None)
        if detail:
            text += f": {detail}"
        resp = web.Response(
            status=status,
            body=error_body(status, text, "bad_http_request"),
            content_type="application/json",
            headers={BACKEND_HEADER: "none"},
        )
        resp.force_close()
        return resp


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _OpenAIErrorsHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer protocol errors as JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # same state; only the protocol factory differs
        return server


def runner_kwargs(keepalive_timeout_s: float) -> dict[str, Any]:
    """What every gateway server is run with (see the module docstring)."""
    return {
        "handler_cancellation": True,
        "keepalive_timeout": keepalive_timeout_s,
        "lingering_time": LINGERING_S,
    }


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    socks: Sequence[socket.socket],
    access_log: logging.Logger | None,
    keepalive_timeout_s: float,
    shutdown_timeout_s: float,
) -> None:
    runner = GatewayRunner(
        app,
        handle_signals=True,
        access_log=access_log,
        shutdown_timeout=shutdown_timeout_s,
        **runner_kwargs(keepalive_timeout_s),
    )
    await runner.setup()
    try:
        sites: list[web.BaseSite] = [web.TCPSite(runner, host, port)]
        sites += [web.SockSite(runner, sock) for sock in socks]
        for site in sites:
            await site.start()
        await asyncio.Event().wait()  # until SIGTERM/SIGINT (GracefulExit)
    finally:
        await runner.cleanup()


def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    loop: asyncio.AbstractEventLoop,
    socks: Sequence[socket.socket] = (),
    access_log: logging.Logger | None = None,
    keepalive_timeout_s: float = 75.0,
    shutdown_timeout_s: float = 5.0,
) -> None:
    """Run ``app`` on ``host:port`` (and ``socks``) until SIGTERM or SIGINT."""
    asyncio.set_event_loop(loop)
    main = loop.create_task(
        _serve(app, host, port, socks, access_log, keepalive_timeout_s, shutdown_timeout_s)
    )
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
