"""Async HTTP client for Triton's data-plane endpoints, as the gateway uses them.

``generate``, ``generate_stream`` (SSE) and ``infer`` carry client requests;
``model_ready`` and ``metrics_text`` feed the gateway's health prober and
queue-time trigger. Sits under ``tritonfleet.gateway``: the gateway decides
which pod to call and what to do on failure, this module only speaks the wire
protocol and sorts failures into the three kinds the breaker cares about
(could not connect, timed out, broke off).

One shared ``aiohttp.ClientSession`` (keep-alive pool) is passed in; this
module never creates sessions per request. Every call in flight is known per
pod, so :meth:`TritonClient.abandon` can fail them all at once when the prober
finds a pod hung (a stopped process still accepts connections; only the
prober's missing answers tell): whole answers raise before anything reached
the client, so the gateway retries them elsewhere. It does not use tritonclient: its
HTTP client is synchronous (gevent) and has no generate/SSE support, and the
gateway's hot path needs neither JSON re-encoding nor thread hops.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncGenerator
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import aiohttp

from tritonfleet.adapters.streams import OpenStream

# identity: Triton gzips infer answers otherwise, costing CPU on both sides.
JSON_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "identity"}

# What a readiness probe found (see TritonClient.model_ready).
Readiness = Literal["ready", "not_ready", "down", "timeout", "broken"]


class UpstreamError(Exception):
    """A request to an upstream (Triton or hosted) did not produce an answer."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UpstreamConnectError(UpstreamError):
    """Nothing listens there (refused, unreachable, DNS): the pod is down."""

    kind = "connect"


class UpstreamTimeoutError(UpstreamError):
    kind = "timeout"


class UpstreamDisconnectedError(UpstreamError):
    """The connection broke mid-request (server crashed, reset, bad framing)."""

    kind = "disconnected"


def classify(error: BaseException, what: str) -> UpstreamError:
    """Map aiohttp/asyncio exceptions to the gateway's failure kinds."""
    if isinstance(error, UpstreamError):
        return error
    if isinstance(error, aiohttp.ClientConnectorError | aiohttp.ClientConnectorDNSError):
        return UpstreamConnectError(f"{what}: cannot connect ({error.os_error or error})")
    if isinstance(error, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeoutError(f"{what}: timed out")
    return UpstreamDisconnectedError(f"{what}: {type(error).__name__}: {error}")


def sse_data(line: bytes) -> bytes | None:
    """The payload of an SSE ``data:`` line, or None for other lines."""
    if line.startswith(b"data:"):
        return line[5:].strip()
    return None


class TritonStream(OpenStream):
    """An open ``generate_stream`` response: ``status`` and the event dicts.

    Use as an async context manager so the connection is released (or closed,
    when the stream was abandoned) whatever happens.
    """

    abandoned: str | None = None  # why the pod was given up, set by TritonClient.abandon

    async def error_body(self) -> str:
        """For status != 200: Triton's error message (it frames it as SSE too)."""
        raw = await self.response.read()
        for line in raw.split(b"\n"):
            data = sse_data(line)
            if data:
                return _error_message(data)
        return _error_message(raw)

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        """Each event as a dict; the wait for the first one (queue + prefill) is
        bounded by the stream's first-event deadline, every later one by the idle
        timeout. A mid-stream ``{"error": ...}`` event or a broken connection raises
        :class:`UpstreamDisconnectedError`."""
        content = self.response.content
        wait = self.first_wait()
        first = True
        while True:
            try:
                line = await asyncio.wait_for(content.readline(), wait)
            except (TimeoutError, aiohttp.ClientError, OSError) as err:
                if self.abandoned is not None:
                    raise UpstreamTimeoutError(f"{self._what}: {self.abandoned}") from err
                if isinstance(err, TimeoutError):
                    what = (
                        f"no first event within {wait:.3g} s"
                        if first
                        else f"no event for {wait:.3g} s"
                    )
                    raise UpstreamTimeoutError(f"{self._what}: {what}") from err
                raise classify(err, self._what) from err
            if not line:
                if self.abandoned is not None:
                    raise UpstreamTimeoutError(f"{self._what}: {self.abandoned}")
                return
            data = sse_data(line)
            if not data:
                continue
            wait = self._idle_s
            first = False
            try:
                event = json.loads(data)
            except ValueError as err:
                raise UpstreamDisconnectedError(f"{self._what}: malformed event") from err
            if isinstance(event, dict) and "error" in event:
                raise UpstreamDisconnectedError(f"{self._what}: {event['error']}")
            yield event


def _error_message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:500]
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return str(body)[:500]


# --- the lean keep-alive client of the hot path ----------------------------------------------


class _ResponseParser:
    """Incremental parser of one HTTP/1.1 response (Content-Length or chunked).

    Triton answers ``generate``/``infer`` with small bodies, chunked or with a
    length; this handles exactly that and nothing else (no 1xx, no trailers
    that matter, no compression: requests send ``Accept-Encoding: identity``).
    """

    __slots__ = (
        "body",
        "buf",
        "chunked",
        "done",
        "end",
        "keep_alive",
        "length",
        "pos",
        "status",
    )

    def __init__(self) -> None:
        self.buf = bytearray()
        self.status = 0
        self.length = -1
        self.chunked = False
        self.keep_alive = True
        self.pos = -1  # start of the body in buf, once the head is parsed
        self.body = bytearray()
        self.done = False
        self.end = -1  # end of this response in buf

    def feed(self, data: bytes) -> bool:
        """Add bytes; True once the whole response is in."""
        self.buf += data
        if self.pos < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            self._head(bytes(self.buf[:end]))
            self.pos = end + 4
        if self.chunked:
            return self._chunks()
        if self.length >= 0:
            if len(self.buf) - self.pos < self.length:
                return False
            self.end = self.pos + self.length
            self.body = self.buf[self.pos : self.end]
            self.done = True
            return True
        return False  # read to EOF (no length, not chunked): finished by eof()

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError("not an HTTP/1.x response")
        self.status = int(parts[1])
        if parts[0] == b"HTTP/1.0":
            self.keep_alive = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                self.length = int(value)
            elif name == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif name == b"connection":
                self.keep_alive = value.strip().lower() != b"close"
        if self.length < 0 and not self.chunked:
            self.keep_alive = False

    def _chunks(self) -> bool:
        buf, pos = self.buf, self.pos
        body = bytearray()
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return False
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            start = eol + 2
            if size == 0:
                # last chunk: optional trailer lines, then an empty line
                if len(buf) < start + 2:
                    return False
                if buf[start : start + 2] == b"\r\n":
                    self.end = start + 2
                else:
                    trailers = buf.find(b"\r\n\r\n", start)
                    if trailers < 0:
                        return False
                    self.end = trailers + 4
                self.body = body
                self.done = True
                return True
            if len(buf) < start + size + 2:
                return False
            body += buf[start : start + size]
            pos = start + size + 2

    def eof(self) -> bool:
        """The server closed the connection: complete if the body ran to EOF."""
        if self.pos >= 0 and self.length < 0 and not self.chunked:
            self.body = self.buf[self.pos :]
            self.end = len(self.buf)
            self.done = True
        return self.done


class _Connection(asyncio.Protocol):
    __slots__ = ("_parser", "_waiter", "closed", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser: _ResponseParser | None = None
        self._waiter: asyncio.Future[_ResponseParser] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser, waiter = self._parser, self._waiter
        if parser is None or waiter is None or waiter.done():
            # Bytes nobody asked for: the connection is out of step; drop it.
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            return
        try:
            if parser.feed(data):
                waiter.set_result(parser)
        except ValueError as err:
            waiter.set_exception(UpstreamDisconnectedError(f"bad response: {err}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser, waiter = self._parser, self._waiter
        if waiter is not None and not waiter.done():
            if parser is not None and parser.eof():
                waiter.set_result(parser)
            else:
                waiter.set_exception(UpstreamDisconnectedError("connection closed mid-response"))

    def send(self, data: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[_ResponseParser]:
        assert self.transport is not None
        self._parser = _ResponseParser()
        self._waiter = loop.create_future()
        self.transport.write(data)
        return self._waiter

    def reusable(self) -> bool:
        """Fit for the next request: open, keep-alive, and nothing read past
        this response (leftover bytes would mean a confused server)."""
        p = self._parser
        return (
            p is not None
            and p.done
            and p.keep_alive
            and p.end == len(p.buf)
            and not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
        )


def _expire(fut: asyncio.Future[_ResponseParser], total_s: float) -> None:
    if not fut.done():
        fut.set_exception(UpstreamTimeoutError(f"no whole answer within {total_s:.3g} s"))


class KeepAlivePool:
    """Plain HTTP/1.1 POSTs to Triton pods over pooled keep-alive connections.

    Why not aiohttp's client here: on the gateway's hot path it costs ~190 µs
    of CPU per request on this machine (request/response objects, multidicts,
    timers, tracing hooks); this costs a fraction of that, and the gateway's
    overhead budget is one millisecond. Used for ``generate`` and ``infer``
    (whole answers); streams keep using aiohttp.
    """

    def __init__(self, max_idle_per_host: int = 64) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._busy: dict[tuple[str, int], set[_Connection]] = {}
        self._max_idle = max_idle_per_host
        self._heads: dict[tuple[str, int, str], bytes] = {}

    def abandon(self, host: str, port: int, why: str) -> int:
        """Fail every request in flight to ``host:port`` with a timeout naming
        ``why``, close their connections and the idle ones; returns how many."""
        key = (host, port)
        for conn in self._idle.pop(key, []):
            if conn.transport is not None:
                conn.transport.close()
        busy = self._busy.pop(key, set())
        for conn in busy:
            waiter = conn._waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(UpstreamTimeoutError(why))
            if conn.transport is not None:
                conn.transport.close()
        return len(busy)

    async def _connect(self, host: str, port: int, connect_s: float, what: str) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, host, port), connect_s
            )
        except TimeoutError:
            raise UpstreamTimeoutError(f"{what}: connect timed out") from None
        except OSError as err:
            raise UpstreamConnectError(f"{what}: cannot connect ({err})") from None
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    async def post(
        self,
        host: str,
        port: int,
        path: str,
        body: bytes,
        connect_s: float,
        total_s: float,
        what: str,
    ) -> tuple[int, bytes]:
        key = (host, port)
        head = self._heads.get((host, port, path))
        if head is None:
            hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            head = self._heads[(host, port, path)] = (
                f"POST {path} HTTP/1.1\r\nHost: {hostport}\r\n"
                "Content-Type: application/json\r\nAccept-Encoding: identity\r\n"
                "Content-Length: "
            ).encode()
        data = head + str(len(body)).encode() + b"\r\n\r\n" + body
        loop = asyncio.get_running_loop()
        idle = self._idle.get(key)
        for attempt in (0, 1):
            reused = False
            conn: _Connection | None = None
            while idle:
                candidate = idle.pop()
                if (
                    not candidate.closed
                    and candidate.transport is not None
                    and not (candidate.transport.is_closing())
                ):
                    conn, reused = candidate, True
                    break
            if conn is None:
                conn = await self._connect(host, port, connect_s, what)
            fut = conn.send(data, loop)
            timer = loop.call_later(total_s, _expire, fut, total_s)
            busy = self._busy.setdefault(key, set())
            busy.add(conn)
            try:
                parser = await fut
            except UpstreamDisconnectedError as err:
                if conn.transport is not None:
                    conn.transport.close()
                # A kept-alive connection the server had just closed: nothing
                # was processed; try once more on a fresh one.
                if reused and attempt == 0 and not (conn._parser and conn._parser.buf):
                    continue
                raise UpstreamDisconnectedError(f"{what}: {err.message}") from None
            except UpstreamTimeoutError as err:
                if conn.transport is not None:
                    conn.transport.close()
                raise UpstreamTimeoutError(f"{what}: {err.message}") from None
            except asyncio.CancelledError:
                if conn.transport is not None:
                    conn.transport.close()
                raise
            finally:
                timer.cancel()
                busy.discard(conn)
                if not busy and self._busy.get(key) is busy:
                    del self._busy[key]
            if conn.reusable():
                pool = self._idle.setdefault(key, [])
                if len(pool) < self._max_idle:
                    pool.append(conn)
                else:
                    assert conn.transport is not None
                    conn.transport.close()
            elif conn.transport is not None:
                conn.transport.close()
            return parser.status, bytes(parser.body)
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()


def split_base_url(base_url: str) -> tuple[str, int, str]:
    """``http://host:port/prefix`` → (host, port, prefix)."""
    parsed = urlsplit(base_url)
    if parsed.scheme != "http" or parsed.hostname is None:
        raise ValueError(f"not a plain http URL: {base_url}")
    return parsed.hostname, parsed.port or 80, parsed.path.rstrip("/")


class TritonClient:
    """Triton's HTTP API: whole answers over :class:`KeepAlivePool`, streams,
    probes and metrics over one shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, pool: KeepAlivePool | None = None) -> None:
        self.session = session
        self.pool = pool or KeepAlivePool()
        self._targets: dict[str, tuple[str, int, str]] = {}
        self._streams: dict[str, set[TritonStream]] = {}  # open streams by base URL

    def abandon(self, base_url: str, why: str) -> int:
        """Fail every call in flight to the pod at ``base_url`` (the prober found
        it hung): whole answers raise a timeout naming ``why``, open streams are
        closed. Returns how many calls were cut."""
        host, port, _ = self._target(base_url)
        cut = self.pool.abandon(host, port, why)
        for stream in self._streams.pop(base_url, set()):
            stream.abandoned = why
            stream.response.close()
            cut += 1
        return cut

    def _target(self, base_url: str) -> tuple[str, int, str]:
        target = self._targets.get(base_url)
        if target is None:
            target = self._targets[base_url] = split_base_url(base_url)
        return target

    async def _post_lean(
        self, base_url: str, path: str, body: bytes, client_timeout: aiohttp.ClientTimeout
    ) -> tuple[int, bytes]:
        host, port, prefix = self._target(base_url)
        return await self.pool.post(
            host,
            port,
            prefix + path,
            body,
            client_timeout.sock_connect or client_timeout.total or 30.0,
            client_timeout.total or 300.0,
            f"triton {base_url}",
        )

    async def generate(
        self, base_url: str, model: str, body: bytes, client_timeout: aiohttp.ClientTimeout
    ) -> tuple[int, bytes]:
        return await self._post_lean(base_url, f"/v2/models/{model}/generate", body, client_timeout)

    async def infer(
        self, base_url: str, model: str, body: bytes, client_timeout: aiohttp.ClientTimeout
    ) -> tuple[int, bytes]:
        return await self._post_lean(base_url, f"/v2/models/{model}/infer", body, client_timeout)

    async def generate_stream(
        self,
        base_url: str,
        model: str,
        body: bytes,
        client_timeout: aiohttp.ClientTimeout,
        idle_s: float,
        first_s: float | None = None,
    ) -> TritonStream:
        """Open the SSE stream (headers received); iterate with ``events()``.
        ``first_s`` bounds the wait for the headers and the first event together."""
        what = f"triton {base_url}"
        first_by = time.perf_counter() + first_s if first_s is not None else None
        try:
            # asyncio.timeout, not wait_for: no extra task (see adapters/hosted.py).
            async with asyncio.timeout(first_s):
                resp = await self.session.post(
                    f"{base_url}/v2/models/{model}/generate_stream",
                    data=body,
                    headers=JSON_HEADERS,
                    timeout=client_timeout,
                )
        except TimeoutError as err:
            raise UpstreamTimeoutError(f"{what}: no answer within {first_s or 0:.3g} s") from err
        except (aiohttp.ClientError, OSError) as err:
            raise classify(err, what) from err
        stream = TritonStream(resp, idle_s, what, first_by)
        streams = self._streams.setdefault(base_url, set())
        streams.add(stream)
        stream.on_close = streams.discard
        return stream

    async def model_ready(self, base_url: str, model: str, timeout_s: float = 2.0) -> Readiness:
        """``ready``; ``not_ready`` (Triton said so); ``down`` (nothing listens);
        ``timeout`` (no answer within ``timeout_s``: hung, or badly overloaded);
        ``broken`` (the connection broke off: no verdict)."""
        try:
            async with self.session.get(
                f"{base_url}/v2/models/{model}/ready",
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                return "ready" if resp.status == 200 else "not_ready"
        except (aiohttp.ClientConnectorError, ConnectionRefusedError):
            return "down"
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return "timeout"
        except (aiohttp.ClientError, OSError):
            return "broken"

    async def metrics_text(self, metrics_url: str, timeout_s: float = 2.0) -> str | None:
        try:
            async with self.session.get(
                metrics_url, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                if resp.status != 200:
                    return None
                return await resp.text()
        except (TimeoutError, aiohttp.ClientError, OSError, UnicodeDecodeError):
            return None


def error_message(raw: bytes) -> str:
    """Triton's ``{"error": "..."}`` body → the message."""
    return _error_message(raw)
