"""The operator's probe endpoints: ``/healthz`` (the process serves) and ``/readyz``
(it is ready to act: 503 with the reason until then).

Why its own server rather than kopf's liveness endpoint: kopf serves one path, so
liveness and readiness could not differ, and "ready" for this operator means its
memory is complete and every object has been looked at once since it started - what
a restart at scale has to be measured against. The chart points the liveness probe
at ``/healthz`` and the readiness probe at ``/readyz``.

Where it sits: ``adapters`` (I/O); ``handlers.operator`` starts it with the process
and gives it ``Reconciler.not_ready`` as the readiness question.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


async def serve_probes(host: str, port: int, not_ready: Callable[[], str | None]) -> web.AppRunner:
    """Serve the probes on ``host:port``; ``not_ready()`` says why not ready, or None.
    The caller keeps the runner and calls ``cleanup()`` to stop."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reason = not_ready()
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
