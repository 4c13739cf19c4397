"""Scale to zero and back: the operator's scaler for ``replicas.min: 0`` models.

Why: an HPA never goes below one replica on its own metric, and a GPU replica that
serves nobody is the most expensive thing in the fleet. This loop takes an idle
``min: 0`` model's Deployment to zero (the HPA stays, inactive at zero) and brings it
back when a request arrives, while the gateway's failover answers in the meantime.

Where it sits: ``tritonfleet.scaling``, started with the collector by
``scaling.in_operator``. Every ``interval`` seconds :class:`ZeroScaler` reads the
owners and their Deployments from the operator's memory, their parsed specs from the
shared ``desired.kube.views.OwnerViews`` (parsed once per generation, not every
round), Triton's queue signals from the collector, and — only when some model is at
zero — each gateway replica's newest request per model from its ``/metrics``
(``tritonfleet_gateway_last_request_timestamp_seconds``, through
``adapters.metrics_scrape``; the max over replicas, so any number of gateway replicas
is safe and none needs write access). The pure
``desired.kube.autoscaling.zero_decision`` decides (the gateway pages are read by
``scaling.gateways``); this module only carries the
decision out: one merge patch of the Deployment (``spec.replicas`` and the
``tritonfleet.io/scaled-to-zero`` record, field manager ``tritonfleet-scaler``, never
fighting the reconciler's server-side apply, which leaves ``replicas`` to the HPA) and
one Event on the model. The reconciler reads the record from its Deployment watch and
says in the status when and why the model is at zero.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from tritonfleet.adapters.kube import ApiError, KubeApi
from tritonfleet.adapters.metrics_scrape import MetricsScraper
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.gateway.cluster import OPENAI_NAME_ANNOTATION
from tritonfleet.desired.kube.autoscaling import (
    ACTIVATED_AT_ANNOTATION,
    SCALED_TO_ZERO_ANNOTATION,
    Activity,
    ScaleChange,
    pooled_zero_decision,
    zero_decision,
)
from tritonfleet.desired.kube.loading import TritonPod
from tritonfleet.desired.kube.objects import Target
from tritonfleet.desired.kube.observed import ChildState
from tritonfleet.desired.kube.views import OwnerView, OwnerViews
from tritonfleet.desired.triton.metrics import QueueResult, QueueSignal, parse_gateway_demand
from tritonfleet.scaling.gateways import GatewayPages
from tritonfleet.scaling.rounds import RoundLoop

log = logging.getLogger("tritonfleet.scaling.zero")

SCALER_FIELD_MANAGER = "tritonfleet-scaler"


class ScalerView(Protocol):
    """What the scaler reads of (and tells) the operator's memory (``handlers.state.World``)."""

    def owner_keys(self, kinds: Collection[str] = ...) -> Iterator[tuple[str, str, str]]: ...
    def owner(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    def children(self, owner_uid: str) -> Mapping[tuple[str, str, str], ChildState]: ...
    def remember_child(self, body: Mapping[str, Any]) -> ChildState: ...
    def triton_pods(self) -> list[TritonPod]: ...


def route_name(body: Mapping[str, Any], view: OwnerView) -> str:
    """The model's OpenAI name, as the gateway labels its demand with it
    (``desired.gateway.cluster.openai_name``). The annotation is read from the fresh
    body: it changes without a new generation, so the cached view may not have it."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(OPENAI_NAME_ANNOTATION) or view.triton_name)


@dataclass(frozen=True)
class _Pooled:
    """A pooled object the scaler looks at: its key, body, Triton and OpenAI names, its
    pool's idle time (None: off) and its records on itself."""

    key: tuple[str, str, str]
    body: Mapping[str, Any]
    triton_name: str
    route: str
    after: int | None
    mark: str
    activated_at: str

    @property
    def marked(self) -> bool:
        return bool(self.mark)


class ZeroScaler(RoundLoop):
    """The scale-to-zero loop of one operator process (see the module docstring)."""

    task_name = "zero-scaler"
    log = log

    def __init__(
        self,
        world: ScalerView,
        views: OwnerViews,
        results: Callable[[], Mapping[tuple[str, str], QueueResult]],
        settings: OperatorSettings,
        client: KubeApi | None,
        *,
        scraper: MetricsScraper | None = None,
        interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``client`` writes as field manager ``tritonfleet-scaler`` (None: decide, never
        write); it and ``scraper`` are closed by :meth:`stop`."""
        self.world = world
        self.views = views
        self.results = results
        self.settings = settings
        self.interval = interval
        self.clock = clock
        self.since = clock()  # nothing is known about activity before this process
        self._client = client
        self._scraper = scraper if scraper is not None else MetricsScraper(timeout=2.0)
        self._busy: dict[tuple[str, str], float] = {}
        # Since when each model has had data without a break: idleness is only ever
        # what was observed, so the idle clock starts when its pods could be scraped.
        self._observed: dict[tuple[str, str], float] = {}
        self._demand: dict[str, float] = {}
        self._gateways = GatewayPages(settings, client, self._scraper, clock)
        self._task: asyncio.Task[None] | None = None

    # -- one round ----------------------------------------------------------------------

    async def round(self) -> list[tuple[tuple[str, str, str], ScaleChange]]:
        """Decide and carry out every model's change; the changes made."""
        now = self.clock()
        results = self.results()
        for model, result in results.items():
            if not isinstance(result, QueueSignal):
                self._observed.pop(model, None)
                continue
            self._observed.setdefault(model, now)
            if not result.idle:
                self._busy[model] = now
        for model in [m for m in self._observed if m not in results]:
            del self._observed[model]
        candidates = list(self._candidates())
        pooled = list(self._pooled())
        if not candidates and not pooled:
            return []
        if any(dep.scaled_to_zero for *_, dep in candidates) or any(p.marked for p in pooled):
            await self._refresh_demand()  # only a model at zero needs the gateways' word
        made = []
        for key, body, target, route, dep in candidates:
            activity = self._activity(results, target.namespace, target.triton_name, route, now)
            change = zero_decision(
                target, dep.replicas, dep.scaled_to_zero, dep.activated_at, activity, now
            )
            if change is not None and await self._carry_out(key, body, dep, change):
                made.append((key, change))
        for found in pooled:
            activity = self._activity(results, found.key[1], found.triton_name, found.route, now)
            change = pooled_zero_decision(
                found.after, found.mark, found.activated_at, activity, now
            )
            if change is not None and await self._patch_owner(found.key, found.body, change):
                made.append((found.key, change))
        return made

    def _activity(
        self,
        results: Mapping[tuple[str, str], QueueResult],
        namespace: str,
        triton_name: str,
        route: str,
        now: float,
    ) -> Activity:
        model = (namespace, triton_name)
        return Activity(
            signal=results.get(model),
            busy_at=self._busy.get(model),
            demand_at=self._demand.get(route),
            since=max(self.since, self._observed.get(model, now)),
        )

    def _pooled(self) -> Iterator[_Pooled]:
        """Every pooled object that may scale to zero inside its pool, or is at zero."""
        for key in list(self.world.owner_keys()):
            body = self.world.owner(*key)
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                continue
            view = self.views.of(body)
            pool = view.pool
            annotations = (body.get("metadata") or {}).get("annotations") or {}
            mark = str(annotations.get(SCALED_TO_ZERO_ANNOTATION) or "")
            after = pool.scale_to_zero_after_seconds if pool is not None else None
            if pool is None or (after is None and not mark):
                continue
            activated = str(annotations.get(ACTIVATED_AT_ANNOTATION) or "")
            yield _Pooled(
                key, body, view.triton_name, route_name(body, view), after, mark, activated
            )

    def _candidates(
        self,
    ) -> Iterator[tuple[tuple[str, str, str], dict[str, Any], Target, str, ChildState]]:
        """(key, body, target, route name, Deployment) of every model that scales to zero
        or is at zero by our hand."""
        for key in list(self.world.owner_keys()):
            body = self.world.owner(*key)
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                continue
            children = self.world.children(str(body["metadata"].get("uid", "")))
            deployments = [c for c in children.values() if c.kind == "Deployment"]
            marked = any(d.scaled_to_zero for d in deployments)
            view = self.views.of(body)
            if not (view.may_scale_to_zero or marked):
                continue  # a thousand ordinary models cost a dictionary lookup each
            members = partial(self.world.owner, "TritonModel", key[1])
            target = self.views.rendering(body, members).target
            if target is None:
                continue  # an invalid spec has no Deployment to scale
            dep = children.get(("Deployment", key[1], target.deployment_name))
            if dep is not None and not dep.deleting:
                yield key, body, target, route_name(body, view), dep

    async def _patch_owner(
        self, key: tuple[str, str, str], body: Mapping[str, Any], change: ScaleChange
    ) -> bool:
        """A pooled object's change: the record on the object itself (its pool's placement
        and its loader follow it)."""
        if self._client is None:
            return False
        try:
            await self._client.patch(*key, change.patch())
        except ApiError as error:
            log.warning("%s %s/%s: could not %s: %s", *key, change.reason, error)
            return False
        log.info("%s %s/%s: %s", *key, change.message)
        await self._event(key, body, change)
        return True

    async def _event(
        self, key: tuple[str, str, str], body: Mapping[str, Any], change: ScaleChange
    ) -> None:
        assert self._client is not None
        try:
            await self._client.post_event(
                body, type_="Normal", reason=change.reason, message=change.message
            )
        except (TimeoutError, ApiError, OSError) as error:
            log.warning("could not post event %s on %s: %s", change.reason, key[2], error)

    async def _carry_out(
        self,
        key: tuple[str, str, str],
        body: Mapping[str, Any],
        dep: ChildState,
        change: ScaleChange,
    ) -> bool:
        if self._client is None:
            return False
        try:
            updated = await self._client.patch(
                "Deployment", dep.namespace, dep.name, change.patch()
            )
        except ApiError as error:
            log.warning("%s %s/%s: could not %s: %s", *key, change.reason, error)
            return False
        self.world.remember_child(updated)  # next round must not act on the old copy
        log.info("%s %s/%s: %s", *key, change.message)
        await self._event(key, body, change)
        return True

    # -- the gateways' activation signal --------------------------------------------------

    async def _refresh_demand(self) -> None:
        for text in (await self._gateways.fetch()).values():
            for route, stamp in parse_gateway_demand(text).items():
                # The max ever seen: a restarted gateway forgets, the demand stays true.
                self._demand[route] = max(stamp, self._demand.get(route, 0.0))
