"""The lifecycle of an open streaming HTTP answer, shared by the Triton and
hosted-API clients the gateway uses.

A finished stream hands its connection back to the pool; one abandoned
mid-way (client gone, backend broke) is closed instead, since draining a long
generation would only waste the backend's work.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import aiohttp


class OpenStream:
    """An open streamed response; use as an async context manager."""

    def __init__(self, response: aiohttp.ClientResponse, idle_s: float, what: str) -> None:
        self.response = response
        self.status = response.status
        self._idle_s = idle_s
        self._what = what

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self.response.content.at_eof():
            self.response.release()
        else:
            self.response.close()
