"""A real HTTP server on loopback for sync tests and benchmarks, told how to misbehave.

Each route serves bytes or a file from disk, and can be told to answer with a status,
to stop after N bytes while promising more in ``Content-Length`` (a truncated transfer),
to omit ``Content-Length``, to send more bytes than ``Content-Length`` says, or to
trickle at a set rate (so a test can kill a sync mid-download). It is ``http.server``'s
threading server in a daemon thread: a real TCP server and a real HTTP/1.1 exchange,
nothing patched.

* :class:`ModelHttpServer` (``add``, ``add_file``, ``url``, ``hits``, ``stop``);
* pytest fixture ``http_server`` (function scope): import it into a test module or list
  ``hack.devtools.http_server`` in ``pytest_plugins``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["ModelHttpServer", "Route"]

CHUNK = 256 * 1024


@dataclass
class Route:
    body: bytes | Path
    status: int = 200
    truncate_at: int | None = None  # close the connection after this many body bytes
    send_length: bool = True  # send Content-Length (of the full body)
    rate: float | None = None  # bytes per second, None = as fast as possible
    extra_bytes: bytes = b""  # sent after the body, beyond what Content-Length announced

    @property
    def size(self) -> int:
        return self.body.stat().st_size if isinstance(self.body, Path) else len(self.body)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path.split("?", 1)[0])
        with self.server.lock:
            self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
        if route is None:
            self._simple(404, b"not found\n")
            return
        if route.status != 200:
            self._simple(route.status, f"status {route.status}\n".encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if route.send_length:
            self.send_header("Content-Length", str(route.size))
        self.send_header("Connection", "close")
        self.end_headers()
        limit = route.size if route.truncate_at is None else min(route.truncate_at, route.size)
        try:
            if isinstance(route.body, Path) and route.rate is None and route.truncate_at is None:
                with route.body.open("rb") as handle:
                    self.connection.sendfile(handle)
            else:
                self._stream(route, limit)
            if route.extra_bytes:
                self.wfile.write(route.extra_bytes)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a killed sync): nothing to do
        self.close_connection = True

    def _stream(self, route: Route, limit: int) -> None:
        sent = 0
        started = time.monotonic()
        handle = route.body.open("rb") if isinstance(route.body, Path) else None
        chunk_size = CHUNK if route.rate is None else max(1024, int(route.rate / 20))
        try:
            while sent < limit:
                n = min(chunk_size, limit - sent)
                if handle is not None:
                    data = handle.read(n)
                else:
                    assert isinstance(route.body, bytes)
                    data = route.body[sent : sent + n]
                self.wfile.write(data)
                self.wfile.flush()
                sent += len(data)
                if route.rate:
                    ahead = sent / route.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        finally:
            if handle is not None:
                handle.close()

    def _simple(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]
    hits: dict[str, int]
    lock: threading.Lock


class ModelHttpServer:
    """``http://127.0.0.1:<port>/<path>`` serving the routes added to it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._server = _Server((host, 0), _Handler)
        self._server.routes = {}
        self._server.hits = {}
        self._server.lock = threading.Lock()
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def add(self, path: str, body: bytes | Path, **options: Any) -> str:
        """Serve ``body`` at ``path``; options as in :class:`Route`. Returns the URL."""
        if not path.startswith("/"):
            path = "/" + path
        self._server.routes[path] = Route(body, **options)
        return self.url(path)

    def add_file(self, path: str, file: Path, **options: Any) -> str:
        return self.add(path, file, **options)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    def hits(self, path: str) -> int:
        with self._server.lock:
            return self._server.hits.get("/" + path.lstrip("/"), 0)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
