"""The gateway's lean keep-alive HTTP client (adapters/triton_http.KeepAlivePool)
against a real TCP server on loopback that answers the way Triton does — and
the ways a dying or impolite server does: connection reuse, ``Connection:
close``, idle connections closed by the server, refused connections, timeouts,
and a server that dies mid-answer."""

from __future__ import annotations

import asyncio

import pytest

from hack.devtools.triton import free_port
from tritonfleet.adapters.triton_http import (
    KeepAlivePool,
    UpstreamConnectError,
    UpstreamDisconnectedError,
    UpstreamTimeoutError,
)

pytestmark = pytest.mark.integration

OK_CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'd\r\n{"ok": true}\n\r\n0\r\n\r\n'
)


class Server:
    """Counts connections and requests; ``mode`` picks how it answers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.connections = 0
        self.requests = 0
        self.port = free_port()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                self.requests += 1
                if self.mode == "keepalive":
                    writer.write(OK_CHUNKED)
                elif self.mode == "close":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
                    )
                    await writer.drain()
                    break
                elif self.mode == "idle-close":
                    # answer, then drop the connection right away (short keep-alive)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                    writer.write(body)
                    await writer.drain()
                    break
                elif self.mode == "slow":
                    await asyncio.sleep(5)
                elif self.mode == "die":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                    await writer.drain()
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _serve(mode: str) -> tuple[Server, asyncio.AbstractServer]:
    srv = Server(mode)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", srv.port)
    return srv, server


def test_keepalive_reuses_one_connection() -> None:
    async def run() -> None:
        srv, server = await _serve("keepalive")
        pool = KeepAlivePool()
        try:
            for _ in range(5):
                status, body = await pool.post("127.0.0.1", srv.port, "/x", b"{}", 1, 5, "t")
                assert (status, body) == (200, b'{"ok": true}\n')
            assert (srv.connections, srv.requests) == (1, 5)
            # concurrent requests open more connections, then reuse them
            await asyncio.gather(
                *(pool.post("127.0.0.1", srv.port, "/x", b"{}", 1, 5, "t") for _ in range(4))
            )
            assert srv.connections == 4 and srv.requests == 9
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(run())


@pytest.mark.parametrize("mode", ["close", "idle-close"])
def test_server_closed_connections_are_not_reused(mode: str) -> None:
    async def run() -> None:
        srv, server = await _serve(mode)
        pool = KeepAlivePool()
        try:
            for i in range(3):
                status, _ = await pool.post("127.0.0.1", srv.port, "/x", b'{"i":1}', 1, 5, "t")
                assert status == 200
                await asyncio.sleep(0.05 * i)
            assert srv.requests == 3 and srv.connections == 3
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(run())


def test_refused_timeout_and_death_mid_answer() -> None:
    async def run() -> None:
        pool = KeepAlivePool()
        with pytest.raises(UpstreamConnectError, match="cannot connect"):
            await pool.post("127.0.0.1", free_port(), "/x", b"{}", 1, 5, "t")
        srv, server = await _serve("slow")
        try:
            with pytest.raises(UpstreamTimeoutError):
                await pool.post("127.0.0.1", srv.port, "/x", b"{}", 1, 0.3, "t")
        finally:
            server.close()
        srv, server = await _serve("die")
        try:
            with pytest.raises(UpstreamDisconnectedError, match="mid-response"):
                await pool.post("127.0.0.1", srv.port, "/x", b"{}", 1, 5, "t")
        finally:
            pool.close()
            server.close()

    asyncio.run(run())
