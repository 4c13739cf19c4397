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
from tritonfleet.adapters.triton_http import classify

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

    def __init__(self, response: aiohttp.ClientResponse, idle_s: float, what: str) -> None:
        super().__init__(response, idle_s, what)
        self.retry_after = parse_retry_after(response.headers) if response.status == 429 else None

    async def read_all(self) -> bytes:
        try:
            return await self.response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise classify(err, self._what) from err

    async def lines(self) -> AsyncGenerator[bytes, None]:
        content = self.response.content
        while True:
            try:
                line = await asyncio.wait_for(content.readline(), self._idle_s)
            except (TimeoutError, aiohttp.ClientError, OSError) as err:
                raise classify(err, self._what) from err
            if not line:
                return
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
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise classify(err, what) from err

    async def stream(
        self,
        base_url: str,
        path: str,
        body: bytes,
        api_key: str | None,
        client_timeout: aiohttp.ClientTimeout,
        idle_s: float,
    ) -> HostedStream:
        what = f"hosted {base_url}"
        try:
            resp = await self.session.post(
                base_url + path, data=body, headers=_headers(api_key), timeout=client_timeout
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise classify(err, what) from err
        return HostedStream(resp, idle_s, what)
