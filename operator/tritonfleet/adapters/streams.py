"""The lifecycle of an open streaming HTTP answer, shared by the Triton and
hosted-API clients the gateway uses.

A finished stream hands its connection back to the pool; one abandoned
mid-way (client gone, backend broke) is closed instead, since draining a long
generation would only waste the backend's work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import aiohttp


class OpenStream:
    """An open streamed response; use as an async context manager."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        idle_s: float,
        what: str,
        first_by: float | None = None,
    ) -> None:
        self.response = response
        self.status = response.status
        self._idle_s = idle_s
        self._what = what
        # time.perf_counter() by which the first event must be in (None: idle_s only)
        self.first_by = first_by
        self.on_close: Callable[[Any], None] | None = None  # told when the stream is done

    def first_wait(self) -> float:
        """How long the first event may still take."""
        if self.first_by is None:
            return self._idle_s
        return max(0.0, self.first_by - time.perf_counter())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.on_close is not None:
            self.on_close(self)
        if exc_type is None and self.response.content.at_eof():
            self.response.release()
        else:
            self.response.close()
