"""What a canary step is judged on, gathered while it runs: every gateway replica's
per-revision series and Triton's queue time on each revision's pods.

Why: the rollout state machine (``desired.kube.rollout``) compares the canary with the
stable revision over the step's window, on what the clients saw. Only the gateways saw
it (``gateway.revision_metrics``), and there may be several replicas: each one's
counters are read, their increase since the step began taken per replica (a restarted
replica counts from zero) and summed. Queue time per revision comes from the queue
collector's histories of that revision's Triton pods (``scaling.collector``).

Where it sits: ``tritonfleet.scaling``, started with the collector by
``scaling.in_operator``. Every ``interval`` seconds, and only while some object has a
step being judged (``status.rollout.phase: Analyzing``, read from the operator's
memory), :class:`RolloutSignals` reads the gateway pages (``scaling.gateways``) and
keeps the latest page of each replica, plus, per step, each replica's page when the
step was first seen: the baseline its increase is counted from. A step first seen
late (an operator restart) counts from then, never from before the step. The
reconcile asks :meth:`RolloutSignals.measure` - memory only - through the callable
the operator's composition root (``cli.operator``) hands it; ``handlers`` and
``scaling`` never import each other. The numbers: ``desired.kube.analysis``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from tritonfleet.adapters.kube import KubeApi
from tritonfleet.adapters.metrics_scrape import MetricsScraper
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.api.status import RevisionNumbers
from tritonfleet.desired.kube.analysis import (
    MeasureQuery,
    RevisionCounters,
    RouteRevision,
    increase,
    numbers,
    parse_gateway_revisions,
)
from tritonfleet.desired.kube.views import OwnerViews, owner_of
from tritonfleet.scaling.gateways import GatewayPages
from tritonfleet.scaling.rounds import RoundLoop
from tritonfleet.scaling.zero import route_name

log = logging.getLogger("tritonfleet.scaling.rollouts")

Page = Mapping[RouteRevision, RevisionCounters]
StepKey = tuple[str, str, float]  # namespace, route, epoch seconds the step began
QueueMs = Callable[[str, str, tuple[str, ...], float], float | None]


class Owners(Protocol):
    """What the signals read of the operator's memory (``handlers.state.World``)."""

    def owner_keys(self) -> Iterator[tuple[str, str, str]]: ...
    def owner(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...


def step_started(stamp: str) -> float:
    """``status.rollout.stepStartedAt`` as epoch seconds (the step's key)."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class RolloutSignals(RoundLoop):
    """The canary numbers of every step being judged (see the module docstring)."""

    task_name = "rollouts"
    log = log

    def __init__(
        self,
        world: Owners,
        views: OwnerViews,
        settings: OperatorSettings,
        client: KubeApi | None,
        queue_ms: QueueMs,
        *,
        scraper: MetricsScraper | None = None,
        interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``queue_ms(namespace, model, pods, window)``: Triton's mean queue time on those
        pods (the collector's); ``client`` lists the gateway pods."""
        self.world = world
        self.views = views
        self.queue_ms = queue_ms
        self.interval = interval
        self.clock = clock
        self._scraper = scraper if scraper is not None else MetricsScraper(timeout=2.0)
        self._client = client
        self.gateways = GatewayPages(settings, client, self._scraper, clock)
        self._latest: dict[str, Page] = {}  # gateway URL → its latest page, parsed
        self._baselines: dict[StepKey, dict[str, Page]] = {}
        self._task: asyncio.Task[None] | None = None

    # -- one round ------------------------------------------------------------------------

    def steps(self) -> tuple[set[StepKey], bool]:
        """The canary steps being judged now, from the owners' status; and whether any
        canary runs at all (its next step's baseline is read ahead of it)."""
        out: set[StepKey] = set()
        canaries = False
        for kind, namespace, name in list(self.world.owner_keys()):
            body = self.world.owner(kind, namespace, name)
            if body is None:
                continue
            rollout = owner_of(body).status.rollout
            if rollout is None or rollout.strategy != "Canary":
                continue
            canaries = canaries or rollout.phase in ("Progressing", "Analyzing")
            if rollout.phase != "Analyzing" or not rollout.step_started_at:
                continue
            route = route_name(body, self.views.of(body))
            out.add((namespace, route, step_started(rollout.step_started_at)))
        return out, canaries

    async def round(self) -> None:
        steps, canaries = self.steps()
        for gone in set(self._baselines) - steps:
            del self._baselines[gone]
        if not canaries:
            self._latest.clear()  # no canary: nothing read, nothing kept
            return
        seen_before = dict(self._latest)
        pages = await self.gateways.fetch()
        self._latest = {url: parse_gateway_revisions(text) for url, text in pages.items()}
        for step in steps:
            baseline = self._baselines.get(step)
            if baseline is None:
                # First sight of the step: each replica's page from before it is where
                # its increase starts (at worst a round late: a few requests uncounted).
                self._baselines[step] = {url: seen_before.get(url, page)
                                         for url, page in self._latest.items()}  # fmt: skip
            else:
                # A replica that appeared during the step started from zero.
                for url in self._latest:
                    baseline.setdefault(url, {})

    # -- what the reconcile asks --------------------------------------------------------------

    def measure(self, query: MeasureQuery) -> Mapping[str, RevisionNumbers]:
        """Each revision's numbers over the step (memory only); {} before the step's
        baseline is known."""
        baseline = self._baselines.get((query.namespace, query.route, query.since))
        if baseline is None:
            return {}
        revisions = {rev for page in self._latest.values() for route, rev in page
                     if route == query.route} | set(query.pods)  # fmt: skip
        window = max(self.clock() - query.since, 1.0)
        out: dict[str, RevisionNumbers] = {}
        for revision in revisions:
            key = (query.route, revision)
            parts = [
                increase(baseline.get(url, {}).get(key), page[key])
                for url, page in self._latest.items()
                if key in page
            ]
            pods = query.pods.get(revision, ())
            queue = self.queue_ms(query.namespace, query.model, pods, window) if pods else None
            measured = numbers(parts, queue)
            if measured is not None:
                out[revision] = measured
        return out
