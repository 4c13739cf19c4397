"""The operator's probe endpoints: ``/healthz`` (the process is alive) and ``/readyz``
(it is ready to act: 503 with the reason until then).

Why its own server rather than kopf's liveness endpoint: kopf serves one path, so
liveness and readiness could not differ, and "ready" for this operator means its
memory is complete and every object has been looked at once since it started - what
a restart at scale has to be measured against. The chart points the liveness probe
at ``/healthz`` and the readiness probe at ``/readyz``.

Why a thread and a heartbeat: answered from the event loop, a probe waited behind a
burst of reconciles, and under CPU starvation (fifty sync pods on two cores) the kubelet
killed a working operator for it every run. Here a small HTTP server answers from its own
thread what the loop last said: a heartbeat task on the loop stamps the time and the
readiness reason every second, and ``/healthz`` fails only when the loop has not beaten
for ``stall_s`` (stuck, not busy).

Where it sits: ``adapters`` (I/O); ``handlers.operator`` starts it with the process
and gives it the readiness question (``Reconciler.not_ready`` and the watches').
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BEAT_S = 1.0
STALL_S = 60.0  # a loop silent this long is stuck: restart it (a busy one beats anyway)


@dataclass
class Heartbeat:
    """What the event loop last said, read by the probe thread (plain attribute reads)."""

    at: float = field(default_factory=time.monotonic)
    not_ready: str | None = "starting"

    def silent_for(self) -> float:
        return time.monotonic() - self.at


class ProbeServer:
    """The probe server's thread and the loop's heartbeat task; :meth:`stop` ends both."""

    def __init__(
        self, server: ThreadingHTTPServer, thread: threading.Thread, beat: asyncio.Task[None]
    ) -> None:
        self.server, self.thread, self.beat = server, thread, beat

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    async def stop(self) -> None:
        self.beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.beat
        await asyncio.to_thread(self.server.shutdown)
        self.server.server_close()


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(heartbeat: Heartbeat, stall_s: float) -> type[BaseHTTPRequestHandler]:
    class Probes(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            silent = heartbeat.silent_for()
            stuck = f"event loop silent for {silent:.0f} s" if silent > stall_s else None
            if self.path == "/healthz":
                self._answer(503, f"not alive: {stuck}") if stuck else self._answer(200, "ok")
            elif self.path == "/readyz":
                reason = stuck or heartbeat.not_ready
                self._answer(503, f"not ready: {reason}") if reason else self._answer(200, "ready")
            else:
                self._answer(404, "not found")

        def _answer(self, status: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a probe every few seconds is not worth a log line

    return Probes


async def serve_probes(
    host: str,
    port: int,
    not_ready: Callable[[], str | None],
    *,
    beat_s: float = BEAT_S,
    stall_s: float = STALL_S,
) -> ProbeServer:
    """Serve the probes on ``host:port`` (0: any free port); ``not_ready()`` says why not
    ready, or None, and is asked on the loop every ``beat_s``."""
    heartbeat = Heartbeat()

    async def beat() -> None:
        while True:
            heartbeat.not_ready = not_ready()
            heartbeat.at = time.monotonic()
            await asyncio.sleep(beat_s)

    server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
    server = server_class((host, port), _handler(heartbeat, stall_s))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="probes", daemon=True)
    thread.start()
    task = asyncio.create_task(beat(), name="probe-heartbeat")
    return ProbeServer(server, thread, task)
