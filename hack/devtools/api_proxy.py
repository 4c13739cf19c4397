"""A small HTTP proxy in front of the testbed's API server that can answer 429.

The real API server answers ``429 Too Many Requests`` with ``Retry-After`` when its
priority and fairness queues are full, which no test can make happen on demand. This
proxy forwards every request to the real server (as the testbed's admin, with the
client certificate of the testbed's kubeconfig; watches are streamed through) and,
for requests a test names, answers 429 first, recording when each request arrived,
so a test can see that the client waited as long as it was asked to.

Clients talk plain HTTP to it (``server: http://127.0.0.1:<port>`` in a kubeconfig).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from hack.devtools.operator import free_port

# Hop-by-hop and framing headers the proxy sets itself.
_SKIP = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


@dataclass
class Seen:
    at: float
    method: str
    path: str
    status: int
    user_agent: str = ""


@dataclass
class Throttle:
    """Answer 429 (``Retry-After: retry_after``) to the first ``times`` matching requests."""

    matches: Callable[[str, str, str], bool]  # (method, path, user agent) -> bool
    times: int = 1
    retry_after: float = 2.0
    answered: int = 0


@dataclass
class ThrottlingProxy:
    kubeconfig: Path
    throttles: list[Throttle] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        config = yaml.safe_load(self.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.upstream = str(cluster["server"]).rstrip("/")
        self._ssl = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self._ssl.load_cert_chain(user["client-certificate"], user["client-key"])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig whose cluster is this proxy (no user: the proxy authenticates)."""
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
                    "users": [{"name": "nobody", "user": {}}],
                    "contexts": [
                        {"name": "proxy", "context": {"cluster": "proxy", "user": "nobody"}}
                    ],
                    "current-context": "proxy",
                }
            )
        )
        return path

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path
        agent = request.headers.get("User-Agent", "")
        for throttle in self.throttles:
            if throttle.answered < throttle.times and throttle.matches(method, path, agent):
                throttle.answered += 1
                self.seen.append(Seen(time.monotonic(), method, path, 429, agent))
                return web.json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": "TooManyRequests",
                        "message": "throttled by the test proxy",
                        "code": 429,
                        "details": {"retryAfterSeconds": int(throttle.retry_after)},
                    },
                    status=429,
                    headers={"Retry-After": f"{throttle.retry_after:g}"},
                )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP | {"host"}}
        body = await request.read()
        assert self._session is not None
        async with self._session.request(
            method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            ssl=self._ssl,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as upstream:
            self.seen.append(Seen(time.monotonic(), method, path, upstream.status, agent))
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in _SKIP},
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                pass  # the client went away (a watch it closed): nothing more to relay
            return response

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._started.set()
        await self._stop.wait()
        await runner.cleanup()
        await self._session.close()

    def start(self) -> ThrottlingProxy:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._main())
            self._loop.close()

        self._session: aiohttp.ClientSession | None = None
        self._thread = threading.Thread(target=run, name="throttling-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the throttling proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
