"""A loop of rounds on the operator's event loop, shared by the workers that run beside
the reconciler and read the gateways (scale to zero, a canary's measurements).

Why: each one is started once, runs one round every ``interval`` seconds, logs a failed
round and tries the next (one bad scrape must not stop scaling or judging for good),
and on stop closes the HTTP clients it used. Where it sits: ``tritonfleet.scaling``;
``scaling.zero.ZeroScaler`` and ``scaling.rollout_signals.RolloutSignals`` subclass it
and do their work in ``round``; ``scaling.in_operator`` starts and stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import ClassVar

from tritonfleet.adapters.kube import KubeApi
from tritonfleet.adapters.metrics_scrape import MetricsScraper


class RoundLoop:
    """``round()`` every ``interval`` seconds from :meth:`start` to :meth:`stop`."""

    #: The asyncio task's name, and what a failed round is logged as.
    task_name: ClassVar[str]
    log: ClassVar[logging.Logger]

    interval: float
    _scraper: MetricsScraper
    _client: KubeApi | None
    _task: asyncio.Task[None] | None

    async def round(self) -> object:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._scraper.close()
        if self._client is not None:
            await self._client.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not stop the work for good
                self.log.exception("%s round failed", self.task_name)
            await asyncio.sleep(self.interval)
