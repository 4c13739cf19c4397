"""A proxy in front of the testbed's API server that can misbehave on demand, for
the chaos suite: for a window it answers 429 (with Retry-After) and 500 instead of
forwarding, and cuts the watches open through it. It can also answer watches from a
resourceVersion as the API server does once that version is compacted away ("410
Gone", in the stream as the watch cache sends it, or before it as etcd does), which
a young testbed never does by itself: its watch cache still replays its whole store.

The operator under test gets a kubeconfig naming the proxy (plain HTTP on
loopback); the proxy forwards every request to the real API server with the
testbed's admin client certificate, streaming answers through (watches included).
It runs its own event loop in a thread, so a synchronous test drives it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host", "content-length",
              "authorization"}  # fmt: skip


class FaultyApiServer:
    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.upstream = cluster["server"].rstrip("/")
        self._ssl = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self._ssl.load_cert_chain(user["client-certificate"], user["client-key"])
        self.url = ""
        self.counts: Counter[str] = Counter()  # "forwarded", "429", "500", "watches cut"
        self._failing_until = 0.0
        self._expire: list[str] = []  # "event" or "status": how to refuse the next watches
        self._watches: set[web.StreamResponse] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- control (from the test's thread) ------------------------------------------------
    def start(self) -> FaultyApiServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def fail_for(self, seconds: float) -> None:
        """From now on for ``seconds``: 429 and 500 in turn, and the open watches cut."""
        self._failing_until = time.monotonic() + seconds
        asyncio.run_coroutine_threadsafe(self._cut_watches(), self._loop).result(10)

    def expire_next_watch(self, form: str = "event") -> None:
        """The next watch from a resourceVersion is refused with 410: ``"event"`` as an
        ERROR event in a 200 stream (the watch cache), ``"status"`` as an HTTP 410."""
        self._expire.append(form)

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig naming the proxy (no credentials: the proxy has them)."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "faulty", "cluster": {"server": self.url}}],
            "users": [{"name": "faulty", "user": {}}],
            "contexts": [{"name": "faulty", "context": {"cluster": "faulty", "user": "faulty"}}],
            "current-context": "faulty",
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    # -- the proxy ---------------------------------------------------------------------
    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        await self._cut_watches()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _cut_watches(self) -> None:
        for resp in list(self._watches):
            if resp.task is not None:
                resp.task.cancel()
            self.counts["watches cut"] += 1
        self._watches.clear()

    def _fault(self) -> web.Response | None:
        if time.monotonic() >= self._failing_until:
            return None
        if sum(self.counts[c] for c in ("429", "500")) % 2 == 0:
            self.counts["429"] += 1
            return _status(429, "TooManyRequests", "the proxy throttles", {"Retry-After": "1"})
        self.counts["500"] += 1
        return _status(500, "InternalError", "the proxy fails", {})

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        fault = self._fault()
        if fault is not None:
            return fault
        if self._expire and request.query.get("watch") in ("true", "1"):
            version = request.query.get("resourceVersion")
            if version not in (None, "", "0"):
                return await self._expired(request, self._expire.pop(0), version)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        self.counts["forwarded"] += 1
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body or None
        ) as upstream:
            resp = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    resp.headers[k] = v
            await resp.prepare(request)
            watching = request.query.get("watch") in ("true", "1")
            if watching:
                self._watches.add(resp)
            try:
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
            finally:
                self._watches.discard(resp)
            await resp.write_eof()
            return resp

    async def _expired(self, request: web.Request, form: str, version: str) -> web.StreamResponse:
        self.counts["410"] += 1
        message = f"too old resource version: {version}"
        if form == "status":
            return _status(410, "Expired", message, {})
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        status = json.loads(_status(410, "Expired", message, {}).text or "{}")
        await resp.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
        await resp.write_eof()
        return resp


def _status(code: int, reason: str, message: str, headers: dict[str, str]) -> web.Response:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "message": message, "reason": reason, "code": code}  # fmt: skip
    return web.Response(status=code, text=json.dumps(body), content_type="application/json",
                        headers=headers)  # fmt: skip
