"""The gateway replicas' ``/metrics`` pages, as the operator reads them.

Why: two loops of the operator read what every gateway replica measured - scale to
zero (``scaling.zero``: the newest request per model) and canary analysis
(``scaling.rollout_signals``: attempts and latency per revision). Both list the
gateway pods by ``TRITONFLEET_GATEWAY_POD_SELECTOR`` (set by the chart; listed again
every :data:`GATEWAY_RELIST_S`, they rarely change), dial only pod IPs inside
``dialPodNetworks``, and take each page or nothing (a replica that does not answer
says nothing this round; the others may). Reading the pages needs no write access
on the gateways, and any number of replicas is safe: the readers sum or max over them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from tritonfleet.adapters.kube import ApiError, KubeApi
from tritonfleet.adapters.metrics_scrape import MetricsScraper
from tritonfleet.api.settings import OperatorSettings

log = logging.getLogger("tritonfleet.scaling.gateways")

GATEWAY_RELIST_S = 30.0  # how often the gateway pods are listed (they rarely change)


class GatewayPages:
    """Every gateway replica's ``/metrics`` text, by URL (see the module docstring)."""

    def __init__(
        self,
        settings: OperatorSettings,
        client: KubeApi | None,
        scraper: MetricsScraper,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.client = client
        self.scraper = scraper
        self.clock = clock
        self.urls: list[str] = []
        self._listed = -math.inf

    async def fetch(self) -> dict[str, str]:
        """URL → page of each replica that answered (re-listing the pods when due)."""
        selector = self.settings.gateway_pod_selector
        if not selector or self.client is None:
            return {}
        now = self.clock()
        if now - self._listed >= GATEWAY_RELIST_S:
            try:
                pods = await self.client.list(
                    "Pod", self.settings.gateway_namespace or None, label_selector=selector
                )
            except (ApiError, OSError, TimeoutError) as error:
                log.warning("listing the gateway pods (%s): %s", selector, error)
            else:
                self.urls = self._urls(pods)
                self._listed = now
        urls = list(self.urls)
        scrapes = await asyncio.gather(*(self.scraper.scrape(url) for url in urls))
        return {url: s.text for url, s in zip(urls, scrapes, strict=True) if s.text is not None}

    def _urls(self, pods: list[dict[str, Any]]) -> list[str]:
        port = self.settings.gateway_metrics_port
        urls = []
        for pod in pods:
            ip = str((pod.get("status") or {}).get("podIP") or "")
            if ip and self.settings.may_dial(ip):
                host = f"[{ip}]" if ":" in ip else ip
                urls.append(f"http://{host}:{port}/metrics")
        return urls
