"""The operator's probes (adapters.health) answer from their own thread: a loop busy
for seconds (a burst of reconciles on a starved CPU) is still alive for the kubelet;
a loop silent past the stall limit is not, and readiness says what the loop last said."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

from tritonfleet.adapters.health import serve_probes


def get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def block_the_loop(seconds: float) -> None:
    """What a long stretch of CPU work without an await does to the event loop."""
    time.sleep(seconds)


def test_a_busy_loop_is_alive_a_stuck_one_is_not_and_readiness_follows_the_loop() -> None:
    reason: list[str | None] = ["memory not complete"]

    async def main() -> None:
        probes = await serve_probes("127.0.0.1", 0, lambda: reason[0], beat_s=0.05, stall_s=1.0)
        try:
            await asyncio.sleep(0.1)
            assert await asyncio.to_thread(get, probes.port, "/healthz") == (200, "ok\n")
            assert await asyncio.to_thread(get, probes.port, "/readyz") == (
                503,
                "not ready: memory not complete\n",
            )
            reason[0] = None
            await asyncio.sleep(0.2)
            assert (await asyncio.to_thread(get, probes.port, "/readyz"))[0] == 200
            # The loop blocked (no await) for less than the stall limit: the probe
            # thread still answers, at once, that the process is alive.
            started = time.monotonic()
            assert get(probes.port, "/healthz")[0] == 200
            block_the_loop(0.5)
            assert get(probes.port, "/healthz")[0] == 200
            assert time.monotonic() - started < 1.0
            # Blocked past it: stuck, restart it; and not ready meanwhile.
            block_the_loop(1.2)
            status, text = get(probes.port, "/healthz")
            assert status == 503 and "event loop silent" in text
            assert get(probes.port, "/readyz")[0] == 503
            await asyncio.sleep(0.2)  # the loop beats again: alive again
            assert (await asyncio.to_thread(get, probes.port, "/healthz"))[0] == 200
            assert (await asyncio.to_thread(get, probes.port, "/nope"))[0] == 404
        finally:
            await probes.stop()

    asyncio.run(main())


def test_an_ipv6_listen_address_is_served() -> None:
    async def main() -> None:
        probes = await serve_probes("::1", 0, lambda: None, beat_s=0.05)
        try:
            assert await asyncio.to_thread(get, probes.port, "/healthz", "[::1]") == (200, "ok\n")
        finally:
            await probes.stop()

    asyncio.run(main())
