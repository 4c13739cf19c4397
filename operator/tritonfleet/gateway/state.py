"""The gateway's live view of its routes: per model, per pod.

A route source publishes an immutable :class:`~tritonfleet.desired.gateway.routes.RouteTable`;
:class:`GatewayState` wraps each route in a :class:`RouteRuntime` holding what
only the running gateway knows — breakers, health seen by the prober, Triton's
recent queue time, the retry budget, requests in flight per pod — and keeps
that runtime across table updates for pods and models that stay, so a reload
does not forget that a pod is down.

``plan_for`` turns that runtime into the pure
:func:`~tritonfleet.desired.gateway.plan.plan` decision for one request; while a
route has a canary split it first picks the request's revision
(:func:`~tritonfleet.desired.gateway.plan.next_revision`, whose credits the route's
runtime keeps while the split stays the same).

Requests in flight are counted per pod URL (a pod serves several models), and
``max_inflight_per_pod`` caps them: a request that finds every pod of its model
at the cap waits here (:meth:`GatewayState.wait_for_slot`) until an attempt on
one of them ends, instead of opening yet another connection to a pod that is
already saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterable

from tritonfleet.desired.gateway.plan import Plan, PodView, next_revision, plan
from tritonfleet.desired.gateway.routes import Endpoint, Route, RouteTable
from tritonfleet.gateway.breaker import BreakerState, CircuitBreaker, RetryBudget
from tritonfleet.gateway.metrics import GatewayMetrics, PodSample

log = logging.getLogger("tritonfleet.gateway")


class PodRuntime:
    __slots__ = ("breaker", "endpoint", "healthy", "probe_timeouts", "queue_ms")

    def __init__(self, endpoint: Endpoint, breaker: CircuitBreaker) -> None:
        self.endpoint = endpoint
        self.breaker = breaker
        # Optimistic until the prober says otherwise: a pod listed as ready by
        # the operator (or the routes file) is tried; a dead one trips its
        # breaker on the first refused connection, at no cost to the client.
        self.healthy = True
        self.queue_ms: float | None = None
        self.probe_timeouts = 0  # health probes in a row that got no answer in time


class RouteRuntime:
    __slots__ = (
        "budget",
        "credits",
        "hosted_breaker",
        "model_breaker",
        "pods",
        "rotation",
        "route",
    )

    def __init__(
        self,
        route: Route,
        pods: dict[str, PodRuntime],
        model_breaker: CircuitBreaker,
        hosted_breaker: CircuitBreaker,
        budget: RetryBudget,
    ) -> None:
        self.route = route
        self.pods = pods  # by endpoint URL
        self.model_breaker = model_breaker
        self.hosted_breaker = hosted_breaker
        self.budget = budget
        self.rotation = 0
        self.credits: dict[str, int] = {}  # the split's round-robin (next_revision)


class GatewayState:
    def __init__(
        self, metrics: GatewayMetrics, max_inflight_per_pod: int = 0, max_waiting: int = 1024
    ) -> None:
        self.metrics = metrics
        self.table = RouteTable({})
        self.routes: dict[str, RouteRuntime] = {}
        self.outstanding: defaultdict[str, int] = defaultdict(int)  # by pod URL
        self.loaded = False  # a table was published at least once (readiness)
        metrics.pods = self.pod_samples
        self.max_inflight_per_pod = max_inflight_per_pod  # 0: no cap
        self.max_waiting = max_waiting
        self._waiters: defaultdict[str, deque[asyncio.Future[None]]] = defaultdict(deque)
        self.waiting = 0

    # -- requests in flight per pod ------------------------------------------------------

    def has_slot(self, url: str) -> bool:
        cap = self.max_inflight_per_pod
        return not cap or self.outstanding.get(url, 0) < cap

    def acquire(self, url: str) -> None:
        self.outstanding[url] += 1

    def release(self, url: str) -> None:
        """An attempt on ``url`` ended: its slot goes to the longest waiter for that pod."""
        left = self.outstanding[url] - 1
        if left > 0:
            self.outstanding[url] = left
        else:
            # Gone pods must not leave a key behind for ever.
            del self.outstanding[url]
        waiters = self._waiters.get(url)
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                break
        if waiters is not None and not waiters:
            del self._waiters[url]

    async def wait_for_slot(self, urls: Iterable[str], timeout_s: float) -> bool:
        """Wait until an attempt on one of ``urls`` ends (True), or ``timeout_s``
        passes or too many requests already wait (False)."""
        if self.waiting >= self.max_waiting or timeout_s <= 0:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        keys = list(urls)
        for url in keys:
            self._waiters[url].append(fut)
        self.waiting += 1
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
            for url in keys:
                queue = self._waiters.get(url)
                if queue is not None:
                    with contextlib.suppress(ValueError):
                        queue.remove(fut)
                    if not queue:
                        del self._waiters[url]

    def _watch(self, model: str, backend: str, pod: str) -> Callable[[BreakerState], None]:
        def changed(state: BreakerState) -> None:
            level = logging.WARNING if state is BreakerState.OPEN else logging.INFO
            where = f"pod {pod}" if pod != "*" else f"{backend} (model-wide)"
            log.log(level, "breaker %s for model %s, %s", state.name.lower(), model, where)

        return changed

    def publish(self, table: RouteTable) -> None:
        """Adopt a new table, keeping the runtime of models and pods that stay."""
        old = self.routes
        new: dict[str, RouteRuntime] = {}
        for name, route in table.routes.items():
            prev = old.get(name)
            same_policy = prev is not None and prev.route.breaker == route.breaker
            pods: dict[str, PodRuntime] = {}
            for ep in route.endpoints:
                kept = prev.pods.get(ep.url) if prev is not None and same_policy else None
                if kept is not None:
                    kept.endpoint = ep
                    pods[ep.url] = kept
                else:
                    breaker = CircuitBreaker(
                        route.breaker, on_change=self._watch(name, "triton", ep.name)
                    )
                    pods[ep.url] = PodRuntime(ep, breaker)
            if prev is not None and same_policy:
                runtime = RouteRuntime(
                    route, pods, prev.model_breaker, prev.hosted_breaker, prev.budget
                )
            else:
                runtime = RouteRuntime(
                    route,
                    pods,
                    CircuitBreaker(route.breaker, on_change=self._watch(name, "triton", "*")),
                    CircuitBreaker(route.breaker, on_change=self._watch(name, "hosted", "*")),
                    RetryBudget(route.retry.budget_percent, route.retry.min_retries_per_s),
                )
            if prev is not None and prev.route.split == route.split:
                runtime.credits = prev.credits
            new[name] = runtime
            self.metrics.ready_pods.labels(name).set(len(pods))
        for name in set(old) - set(new):
            self.metrics.ready_pods.remove(name)
        self.metrics.revisions.keep(
            {
                name: {ep.revision for ep in r.endpoints if ep.revision} | {v for v, _ in r.split}
                for name, r in table.routes.items()
            }
        )
        self.table = table
        self.routes = new
        self.metrics.routes.set(len(new))
        self.loaded = True

    def pod_samples(self) -> Iterable[PodSample]:
        """Every breaker of the current table, for ``/metrics`` (gone pods are not here)."""
        for name, rr in self.routes.items():
            yield PodSample(name, "triton", "*", int(rr.model_breaker.state))
            if rr.route.hosted is not None:
                yield PodSample(name, "hosted", "*", int(rr.hosted_breaker.state))
            for url, pod in rr.pods.items():
                queue = pod.queue_ms / 1000 if pod.queue_ms is not None else None
                yield PodSample(
                    name,
                    "triton",
                    pod.endpoint.name,
                    int(pod.breaker.state),
                    queue,
                    self.outstanding.get(url, 0),
                )

    def plan_for(self, rr: RouteRuntime) -> Plan:
        outstanding = self.outstanding
        cap = self.max_inflight_per_pod or 1 << 62
        views = []
        for url, p in rr.pods.items():
            n = outstanding.get(url, 0)
            views.append(
                PodView(p.endpoint, n, p.healthy, p.breaker.admits(), p.queue_ms, n >= cap)
            )
        rr.rotation += 1
        revision = None
        if rr.route.split:
            revision, rr.credits = next_revision(rr.route.split, rr.credits)
        return plan(
            rr.route,
            views,
            model_admits=rr.model_breaker.admits(),
            rotation=rr.rotation,
            revision=revision,
        )
