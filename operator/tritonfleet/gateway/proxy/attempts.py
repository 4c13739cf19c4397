"""The attempt policy: which backend is tried, how often, and what the client
gets when none can answer.

Given a request's :class:`~tritonfleet.desired.gateway.plan.Plan`, :class:`AttemptPolicy`
runs it:

1. Triton pods in the plan's order. A failure - refused connection, timeout,
   broken connection, 5xx, model not loaded on that pod - is recorded in the
   pod's breaker and the next pod is tried, as long as the retry budget allows.
   An attempt that fails raises before anything reached the client (the calls
   read whole answers completely and commit streams only with the first token
   in hand), so retrying never repeats a byte. A Triton 4xx is the client's
   problem: answered as a 400, no failover.
2. The hosted provider, if the plan allows it: connection errors and 5xx are
   retried up to ``maxHostedAttempts``; a 429 is waited out when its
   Retry-After fits the budget, else passed on with Retry-After; a 401/403
   becomes a 502; other 4xx are passed on, redacted.
3. Nobody could answer: 503 with an OpenAI-style error naming each reason; a
   request whose ``totalMs`` ran out: 504.

Every pod of the model at the gateway's in-flight cap: the request waits for a
slot (up to ``firstByteMs``), or spills over at once when the model has a
queue-time budget; still no slot: the provider if failover covers unavailability,
else 503. A client that leaves cancels its request, attempts included: nothing
is sent anywhere on behalf of a client who is gone.

The calls (:mod:`.triton_calls`, :mod:`.hosted_calls`) do one attempt each and
report its outcome in the vocabulary defined here: an :data:`Attempt` (the
response, and the error of a stream that broke after its first byte), or one of
the exceptions below.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from tritonfleet.adapters.triton_http import UpstreamError
from tritonfleet.desired.gateway.plan import Plan
from tritonfleet.desired.gateway.routes import Endpoint, Route
from tritonfleet.gateway.errors import BACKEND_HEADER, error_response, pod_headers
from tritonfleet.gateway.proxy.accounting import Ledger
from tritonfleet.gateway.secrets import REDACTOR, KeyStore, MissingKeyError
from tritonfleet.gateway.state import GatewayState, PodRuntime, RouteRuntime

log = logging.getLogger("tritonfleet.gateway")

# The answer sent (or being streamed), and the error of a stream that broke
# after its first byte (the client got an SSE error event; the backend is suspect).
Attempt = tuple[web.StreamResponse, UpstreamError | None]
TritonAttempt = Callable[[PodRuntime], Awaitable[Attempt]]
HostedAttempt = Callable[[str | None, str], Awaitable[Attempt]]  # (API key, failover reason)

REASON_TEXT: dict[str, str] = {
    "mode_hosted": "model is in hosted mode",
    "no_ready_replica": "no Triton replica is ready",
    "breaker_open": "Triton circuit breaker is open",
    "queue_time": "Triton queue time is over budget",
    "saturated": "every Triton pod is at the gateway's in-flight limit",
    "triton_failed": "Triton failed",
}


class DeadlineExceeded(Exception):  # noqa: N818 - named for what happened
    """The request's ``totalMs`` is used up: no further attempt is started."""


class TritonRejectedError(Exception):
    """Triton refused the request itself (4xx): the client's problem, no failover."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HostedStatusError(Exception):
    """The hosted provider answered with an error status before any byte was sent."""

    def __init__(self, status: int, body: bytes, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body
        self.retry_after = retry_after


class AttemptPolicy:
    def __init__(self, state: GatewayState, keys: KeyStore) -> None:
        self.state = state
        self.keys = keys

    async def run(
        self,
        rr: RouteRuntime,
        ledger: Ledger,
        slot_wait_s: Callable[[], float],
        on_triton: TritonAttempt,
        on_hosted: HostedAttempt,
    ) -> web.StreamResponse:
        """``slot_wait_s``: how long the request may still wait for a free pod
        (raises :class:`DeadlineExceeded` when nothing is left of it)."""
        notes: list[str] = []
        try:
            return await self._run(rr, ledger, slot_wait_s, on_triton, on_hosted, notes)
        except DeadlineExceeded as err:
            return _timed_out(rr.route, str(err), notes, ledger)

    async def _run(
        self,
        rr: RouteRuntime,
        ledger: Ledger,
        slot_wait_s: Callable[[], float],
        on_triton: TritonAttempt,
        on_hosted: HostedAttempt,
        notes: list[str],
    ) -> web.StreamResponse:
        route = rr.route
        rr.budget.deposit()
        plan = self.state.plan_for(rr)
        ledger.demand(plan.activation)
        if plan.reason == "saturated" and not plan.hosted:
            plan = await self._wait_for_slot(rr, plan, slot_wait_s())
        hosted = plan.hosted
        if plan.reason == "saturated" and not hosted:
            # Waited long enough: the provider takes it if failover covers Triton
            # being unable to answer.
            hosted = route.can_host and route.failover is not None and route.failover.on_unavailable
        reason: str = plan.reason
        if plan.pods:
            if rr.model_breaker.acquire():
                resp = await self._try_triton(rr, plan.pods, on_triton, notes, ledger)
                if resp is not None:
                    return resp
                reason = "triton_failed"
            else:
                reason = "breaker_open"
        if reason != "triton_failed":
            notes.append(REASON_TEXT[reason])
        if not hosted or route.hosted is None:
            if route.hosted is None:
                notes.append("no hosted failover is configured")
            elif route.mode == "triton":
                notes.append("failover is disabled (mode: triton)")
            return _no_answer(route, notes, ledger)
        if reason != "mode_hosted":
            ledger.failover(reason)
            log.debug("model %s: failing over to hosted (%s)", route.name, reason)
        return await self._try_hosted(rr, reason, on_hosted, notes, ledger)

    async def _wait_for_slot(self, rr: RouteRuntime, plan: Plan, within_s: float) -> Plan:
        """Wait (up to ``within_s``) until a pod of the route has room; the new plan."""
        loop = asyncio.get_running_loop()
        until = loop.time() + within_s
        urls = [ep.url for ep in rr.route.endpoints]
        while plan.reason == "saturated" and not plan.hosted:
            if not await self.state.wait_for_slot(urls, until - loop.time()):
                break
            plan = self.state.plan_for(rr)
        return plan

    async def _try_triton(
        self,
        rr: RouteRuntime,
        pods: tuple[Endpoint, ...],
        attempt: TritonAttempt,
        notes: list[str],
        ledger: Ledger,
    ) -> web.StreamResponse | None:
        """The first answer from the plan's pods, or None when none answered."""
        attempted = 0
        state = self.state
        for ep in pods:
            pod = rr.pods.get(ep.url)
            if pod is None or not state.has_slot(ep.url) or not pod.breaker.acquire():
                continue
            if attempted:
                if not rr.budget.try_withdraw():
                    pod.breaker.release()
                    ledger.budget_exhausted()
                    notes.append("retry budget exhausted")
                    break
                ledger.retried()
            attempted += 1
            state.acquire(ep.url)
            started = time.perf_counter()
            try:
                resp, broken = await attempt(pod)
            except DeadlineExceeded:
                pod.breaker.release()
                rr.model_breaker.release()
                raise
            except UpstreamError as err:
                _pod_failed(rr.route, pod, err, ledger)
                ledger.attempt(ep.revision, "failed", started)
                notes.append(f"Triton pod {ep.name}: {_why(err)}")
                continue
            except TritonRejectedError as rej:
                pod.breaker.release()
                rr.model_breaker.release()
                ledger.attempt(ep.revision, "rejected", started)
                ledger.answered("triton", 400)
                return error_response(
                    400,
                    f"Triton rejected the request: {rej.message}",
                    code="triton_rejected",
                    backend="triton",
                    headers=pod_headers(ep),
                )
            except Exception as exc:
                # A bug or an answer we cannot read: count it against the pod
                # and try the next one rather than fail the request.
                log.exception("model %s, pod %s: unexpected error", rr.route.name, ep.name)
                _pod_failed(rr.route, pod, UpstreamError(type(exc).__name__), ledger)
                ledger.attempt(ep.revision, "failed", started)
                notes.append(f"Triton pod {ep.name}: error")
                continue
            except BaseException:
                # Cancelled (client gone, shutdown): no verdict on the pod, and
                # a claimed half-open probe must not stay claimed forever.
                pod.breaker.release()
                rr.model_breaker.release()
                raise
            finally:
                state.release(ep.url)
            if broken is not None:
                _pod_failed(rr.route, pod, broken, ledger)
                rr.model_breaker.release()
            else:
                pod.breaker.success()
                rr.model_breaker.success()
            ledger.attempt(ep.revision, "failed" if broken is not None else "ok", started)
            return resp
        if attempted:
            rr.model_breaker.failure()
        else:
            rr.model_breaker.release()
            notes.append(REASON_TEXT["breaker_open"])
        return None

    async def _try_hosted(
        self,
        rr: RouteRuntime,
        reason: str,
        attempt: HostedAttempt,
        notes: list[str],
        ledger: Ledger,
    ) -> web.StreamResponse:
        route = rr.route
        target = route.hosted
        assert target is not None
        try:
            key = self.keys.get(target.api_key)
        except MissingKeyError as err:
            log.error("model %s: hosted API key unavailable: %s", route.name, err)
            notes.append("hosted provider: API key unavailable")
            return _unavailable(route, notes, ledger)
        deadline = ledger.t0 + route.timeouts.total_s
        for n in range(route.retry.max_hosted_attempts):
            if not rr.hosted_breaker.acquire():
                notes.append("hosted provider: circuit breaker is open")
                break
            try:
                resp, broken = await attempt(key, reason)
            except DeadlineExceeded:
                rr.hosted_breaker.release()
                raise
            except UpstreamError as err:
                rr.hosted_breaker.failure(hard=err.kind == "connect")
                ledger.error("hosted", err.kind)
                notes.append(f"hosted provider: {_why(err)}")
                continue
            except HostedStatusError as hs:
                if hs.status == 429:
                    rr.hosted_breaker.release()
                    ledger.error("hosted", "rate_limited")
                    wait = hs.retry_after if hs.retry_after is not None else 1.0
                    last = n + 1 >= route.retry.max_hosted_attempts
                    fits = wait <= route.retry.max_retry_after_s
                    if fits and not last and time.perf_counter() + wait < deadline:
                        await asyncio.sleep(wait)
                        continue
                    return _rate_limited(route, wait, ledger)
                if hs.status >= 500:
                    rr.hosted_breaker.failure()
                    ledger.error("hosted", f"http_{hs.status}")
                    notes.append(f"hosted provider: HTTP {hs.status}")
                    continue
                rr.hosted_breaker.release()
                return _hosted_client_error(route, hs, ledger)
            except BaseException:
                rr.hosted_breaker.release()  # cancelled or a bug: no verdict
                raise
            if broken is not None:
                rr.hosted_breaker.failure()
                ledger.error("hosted", "stream_broken")
            else:
                rr.hosted_breaker.success()
            return resp
        return _no_answer(route, notes, ledger)


def _why(err: UpstreamError) -> str:
    """A failure as the client reads it: the kind, and for a timeout which limit."""
    if err.kind == "timeout":
        return f"timeout ({err.message.split(': ', 1)[-1]})"
    return err.kind


def _pod_failed(route: Route, pod: PodRuntime, err: UpstreamError, ledger: Ledger) -> None:
    hard = err.kind == "connect"
    if hard:
        pod.healthy = False  # nothing listens: wait for the prober to see it back
    pod.breaker.failure(hard=hard)
    ledger.error("triton", err.kind)
    log.debug("model %s, pod %s: %s", route.name, pod.endpoint.name, err.message)


# --- answers when no backend could give one -----------------------------------------------


def _unavailable(route: Route, notes: list[str], ledger: Ledger) -> web.Response:
    reasons = "; ".join(dict.fromkeys(notes)) or "no backend"
    ledger.answered("none", 503)
    log.warning("model %s: no backend could answer: %s", route.name, reasons)
    return error_response(
        503,
        f"Model '{route.name}' is temporarily unavailable: {reasons}.",
        code="backend_unavailable",
        headers={"Retry-After": "1"},
    )


def _no_answer(route: Route, notes: list[str], ledger: Ledger) -> web.Response:
    """503, or 504 when the attempts ran into the request's ``totalMs``."""
    total = route.timeouts.total_s
    if time.perf_counter() >= ledger.t0 + total - 0.005:
        return _timed_out(route, f"no answer within totalMs ({total:g} s)", notes, ledger)
    return _unavailable(route, notes, ledger)


def _timed_out(route: Route, why: str, notes: list[str], ledger: Ledger) -> web.Response:
    tried = "; ".join(dict.fromkeys(notes))
    ledger.answered("none", 504)
    log.warning("model %s: %s (%s)", route.name, why, tried or "nothing tried")
    return error_response(
        504,
        f"Model '{route.name}': {why}" + (f": {tried}." if tried else "."),
        code="upstream_timeout",
    )


def _rate_limited(route: Route, wait: float, ledger: Ledger) -> web.Response:
    ledger.answered("hosted", 429)
    seconds = max(1, math.ceil(wait))
    return error_response(
        429,
        f"Model '{route.name}': the hosted provider is rate limiting; retry after {seconds} s.",
        code="rate_limit_exceeded",
        backend="hosted",
        headers={"Retry-After": str(seconds)},
    )


def _hosted_client_error(route: Route, hs: HostedStatusError, ledger: Ledger) -> web.Response:
    ledger.answered("hosted", hs.status)
    if hs.status in (401, 403):
        log.error(
            "model %s: the hosted provider refused the gateway's API key (HTTP %d)",
            route.name,
            hs.status,
        )
        return error_response(
            502,
            f"Model '{route.name}': the hosted provider rejected the gateway's credentials.",
            code="upstream_auth_failed",
            backend="hosted",
        )
    # The provider's verdict on the request itself (context too long...):
    # pass it on, minus anything that looks like our key.
    body = REDACTOR(hs.body.decode(errors="replace")).encode()
    return web.Response(
        status=hs.status,
        body=body,
        content_type="application/json",
        headers={BACKEND_HEADER: "hosted"},
    )
