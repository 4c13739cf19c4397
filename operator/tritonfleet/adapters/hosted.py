"""Async client for a hosted OpenAI-compatible API (DeepSeek, OpenAI, a
reseller of Claude/Gemini...): the gateway's failover target.

Sits under ``tritonfleet.gateway``: the gateway hands over an OpenAI request
body (model already replaced by the provider's name) and the API key; this
module sends it with ``Authorization: Bearer``, returns the answer or an open
SSE stream, and reads ``Retry-After`` on 429. The key is only ever put in the
request header — never in a message, exception or log line — and provider
error bodies are passed through :func:`redact` before anyone sees them, since
some providers echo (part of) the key back.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncGenerator, Iterable, Mapping

import aiohttp

from tritonfleet.adapters.streams import OpenStream
from tritonfleet.adapters.triton_http import UpstreamTimeoutError, classify

__all__ = ["HostedClient", "HostedResponse", "HostedStream", "parse_retry_after", "redact"]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and its recognisable halves) masked."""
    for secret in secrets:
        if len(secret) < 8:
            continue  # too short to find reliably; never logged anyway
        text = text.replace(secret, "***")
        # Providers echo keys partially ("sk-abc...wxyz"): mask long fragments too.
        half = len(secret) // 2
        if half >= 8:
            text = text.replace(secret[:half], "***").replace(secret[-half:], "***")
    return text


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI's) or ``Retry-After``
    (seconds or an HTTP date); None when absent or unreadable."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


class HostedResponse:
    """A whole (non-streamed) answer."""

    __slots__ = ("body", "retry_after", "status")

    def __init__(self, status: int, body: bytes, retry_after: float | None) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after


class HostedStream(OpenStream):
    """An open SSE answer; iterate ``lines()`` for raw lines (without newline)."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        idle_s: float,
        what: str,
        first_by: float | None = None,
    ) -> None:
        super().__init__(response, idle_s, what, first_by)
        self.retry_after = parse_retry_after(response.headers) if response.status == 429 else None

    async def read_all(self) -> bytes:
        try:
            return await self.response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise classify(err, self._what) from err

    async def lines(self) -> AsyncGenerator[bytes, None]:
        """Raw lines; the stream's first-event deadline bounds the wait for the
        first ``data:`` line (a provider sending only comments or blank lines does
        not keep it waiting), the idle timeout each line."""
        content = self.response.content
        first_by = self.first_by
        while True:
            wait = self._idle_s
            if first_by is not None:
                wait = min(wait, self.first_wait())
            try:
                line = await asyncio.wait_for(content.readline(), wait)
            except TimeoutError as err:
                if first_by is not None and time.perf_counter() >= first_by:
                    raise UpstreamTimeoutError(f"{self._what}: no first event in time") from err
                raise UpstreamTimeoutError(
                    f"{self._what}: no event for {self._idle_s:.3g} s"
                ) from err
            except (aiohttp.ClientError, OSError) as err:
                raise classify(err, self._what) from err
            if not line:
                return
            if first_by is not None and line.startswith(b"data:"):
                first_by = None
            yield line.rstrip(b"\r\n")


class HostedClient:
    """POSTs OpenAI requests to one or more providers over one shared session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def post(
        self,
        base_url: str,
        path: str,
        body: bytes,
        api_key: str | None,
        client_timeout: aiohttp.ClientTimeout,
    ) -> HostedResponse:
        what = f"hosted {base_url}"
        try:
            async with self.session.post(
                base_url + path, data=body, headers=_headers(api_key), timeout=client_timeout
            ) as resp:
                raw = await resp.read()
                retry = parse_retry_after(resp.headers) if resp.status == 429 else None
                return HostedResponse(resp.status, raw, retry)
        except TimeoutError as err:
            # The total covers the body too: a provider dripping its answer is cut here.
            raise UpstreamTimeoutError(
                f"{what}: no whole answer within {client_timeout.total or 0:.3g} s"
            ) from err
        except (aiohttp.ClientError, OSError) as err:
            raise classify(err, what) from err

    async def stream(
        self,
        base_url: str,
        path: str,
        body: bytes,
        api_key: str | None,
        client_timeout: aiohttp.ClientTimeout,
        idle_s: float,
        first_s: float | None = None,
    ) -> HostedStream:
        """Open an SSE answer; ``first_s`` bounds the headers and the first event together."""
        what = f"hosted {base_url}"
        first_by = time.perf_counter() + first_s if first_s is not None else None
        try:
            # asyncio.timeout, not wait_for: no extra task, so no extra loop turns in
            # which a connection closed right after its first bytes loses them.
            async with asyncio.timeout(first_s):
                resp = await self.session.post(
                    base_url + path, data=body, headers=_headers(api_key), timeout=client_timeout
                )
        except TimeoutError as err:
            raise UpstreamTimeoutError(f"{what}: no answer within {first_s or 0:.3g} s") from err
        except (aiohttp.ClientError, OSError) as err:
            raise classify(err, what) from err
        return HostedStream(resp, idle_s, what, first_by)
