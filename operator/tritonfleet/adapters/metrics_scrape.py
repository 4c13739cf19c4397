"""Reading a Prometheus ``/metrics`` page over HTTP: the text, or why not.

Why: the operator scrapes two kinds of pods on an interval, the Triton pods of its
models (queue time, ``scaling.collector``) and the gateway replicas (the newest
request per model, ``scaling.zero``). Both want the same thing: one GET with a
short deadline that never raises for an unreachable pod, so that one silent pod
costs a round nothing but its own data. This adapter is that GET; the text is
parsed by the pure ``desired.triton.metrics``.

Pod IPs are dialled directly: no proxy from the environment, no redirects
followed. One keep-alive pool (an aiohttp session, made on first use) serves
every scrape of a scraper until :meth:`MetricsScraper.close`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True, slots=True)
class Scraped:
    """One scrape: ``text`` when the page answered 200, else None and ``error``."""

    text: str | None
    error: str = ""


class MetricsScraper:
    """GET ``/metrics`` URLs with a deadline each (see the module docstring)."""

    def __init__(self, timeout: float = 2.0) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env stays False: pod IPs are scraped directly, never through a proxy.
            self._session = aiohttp.ClientSession()
        return self._session

    async def scrape(self, url: str) -> Scraped:
        """The page at ``url``; any failure (refused, timeout, reset, not 200, bad
        encoding) is a :class:`Scraped` without text, never an exception."""
        deadline = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with self._http().get(url, timeout=deadline, allow_redirects=False) as resp:
                if resp.status != 200:
                    return Scraped(None, f"HTTP {resp.status}")
                return Scraped(await resp.text())
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return Scraped(None, f"{type(error).__name__}: {error}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
