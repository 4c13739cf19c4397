"""Stand-ins for Triton on the testbed's kwok pods, for a fleet too big to run for real.

Why: a thousand real tritonservers do not fit on this machine, and kwok's pods are
fake (an IP nobody answers on). The operator's loader dials each Triton pod of a
model; to measure it at scale (``bench/bench_operator.py``), every kwok Triton pod
gets an HTTP server on its own pod IP and Triton's port, answering the calls the
loader makes the way tritonserver does (``adapters.triton_repository``): the
repository index, the loaded model's config with its ``tritonfleet.revision`` stamp,
load, unload, and the health endpoints. A pod serves, from the start, the model and
revision its pod template says (``--load-model`` does that for a real Triton).

kwok gives pod IPs in 127.244.0.0/16 (hack/testbed/up.sh), all on loopback: binding
one address per pod needs no privilege. Requests are counted, so the benchmark can
tell the operator's load on Triton apart from its own. Not a test double for
behaviour (the integration tests run real tritonservers); only the wire answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

from aiohttp import web

TRITON_PORT = 8000
REVISION_PARAMETER = "tritonfleet.revision"


@dataclass
class FakePod:
    model: str
    revision: str
    loaded: bool = True
    site: web.TCPSite | None = field(default=None, repr=False)


class TritonFleet:
    """One HTTP app, one listening socket per pod IP."""

    def __init__(self, port: int = TRITON_PORT) -> None:
        self.port = port
        self.pods: dict[str, FakePod] = {}
        self.requests = 0
        self.failed_binds = 0
        self._runner: web.AppRunner | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v2/repository/index", self._index)
        app.router.add_get("/v2/models/{model}/config", self._config)
        app.router.add_post("/v2/repository/models/{model}/load", self._load)
        app.router.add_post("/v2/repository/models/{model}/unload", self._unload)
        app.router.add_get("/v2/health/{what}", self._health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()

    async def serve(self, ip: str, model: str, revision: str) -> None:
        """Pod ``ip`` runs a Triton serving ``model`` at ``revision`` (idempotent)."""
        async with self._lock:
            pod = self.pods.get(ip)
            if pod is not None:
                if (pod.model, pod.revision) != (model, revision):
                    pod.model, pod.revision, pod.loaded = model, revision, True
                return
            assert self._runner is not None, "start() first"
            site = web.TCPSite(self._runner, ip, self.port, reuse_address=True)
            try:
                await site.start()
            except OSError:
                self.failed_binds += 1  # someone else holds it: the pod stays unreachable
                return
            self.pods[ip] = FakePod(model, revision, site=site)

    async def drop(self, ip: str) -> None:
        async with self._lock:
            pod = self.pods.pop(ip, None)
            if pod is not None and pod.site is not None:
                await pod.site.stop()

    async def close(self) -> None:
        for ip in list(self.pods):
            with contextlib.suppress(Exception):
                await self.drop(ip)
        if self._runner is not None:
            await self._runner.cleanup()

    # --- Triton's HTTP API, as much as the loader uses ---------------------------------

    def _pod(self, request: web.Request) -> FakePod | None:
        self.requests += 1
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return self.pods.get(sockname[0]) if sockname else None

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.Response(
            status=status, text=json.dumps({"error": message}), content_type="application/json"
        )

    async def _index(self, request: web.Request) -> web.Response:
        pod = self._pod(request)
        entries = []
        if pod is not None:
            entry = {"name": pod.model, "version": "1", "state": "READY"}
            entries.append(entry if pod.loaded else {"name": pod.model})
        return web.json_response(entries)

    async def _config(self, request: web.Request) -> web.Response:
        pod = self._pod(request)
        model = request.match_info["model"]
        if pod is None or pod.model != model or not pod.loaded:
            return self._error(404, f"Request for unknown model: '{model}' is not found")
        parameters = {REVISION_PARAMETER: {"string_value": pod.revision}}
        return web.json_response({"name": model, "parameters": parameters})

    async def _load(self, request: web.Request) -> web.Response:
        pod = self._pod(request)
        model = request.match_info["model"]
        if pod is None or pod.model != model:
            return self._error(
                400, f"failed to load '{model}', failed to poll from model repository"
            )
        pod.loaded = True
        return web.json_response({})

    async def _unload(self, request: web.Request) -> web.Response:
        pod = self._pod(request)
        if pod is not None and pod.model == request.match_info["model"]:
            pod.loaded = False
        return web.json_response({})

    async def _health(self, request: web.Request) -> web.Response:
        self._pod(request)
        return web.Response(status=200)
