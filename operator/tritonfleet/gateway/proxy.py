"""The request path: try Triton pods, fail over to the hosted provider, answer.

For each request the :class:`Dispatcher` asks the state for a plan (pods to
try, least outstanding first; whether the hosted provider backs them up) and
runs it:

1. Triton pods in order. A failure — refused connection, timeout, broken
   connection, 5xx, model not loaded on that pod — is recorded in the pod's
   breaker and the next pod is tried, as long as the retry budget allows and
   **no byte has been sent to the client**. Non-streamed answers are read
   whole before anything is sent; streamed ones are committed (status line
   and headers) only once the first token is in hand.
2. The hosted provider, if the route has one and the mode allows: the client's
   OpenAI body is forwarded with the provider's model name and the gateway's
   key. A 429 is waited out when its Retry-After fits the budget, else passed
   on to the client with Retry-After.
3. Nobody could answer: 503 with an OpenAI-style error naming each reason.

A stream that breaks after its first byte cannot be retried without sending
the client text twice; it ends with an SSE error event and ``data: [DONE]``.

The hot path keeps work minimal: one JSON decode of the client body (in the
handler), one encode of the Triton body, one decode of Triton's answer, one
encode of the OpenAI answer; pooled keep-alive connections; no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from tritonfleet.adapters.hosted import HostedClient, HostedStream
from tritonfleet.adapters.triton_http import (
    TritonClient,
    TritonStream,
    UpstreamDisconnectedError,
    UpstreamError,
    error_message,
)
from tritonfleet.desired.gateway.openai_mapping import (
    EmbeddingRequest,
    GenerateMapping,
    GenerateRequest,
    StreamAssembler,
    chunk_body,
    completion_body,
    embedding_batches,
    embeddings_body,
    estimate_tokens,
    infer_body,
    parse_generate_response,
    parse_infer_embeddings,
    usage_chunk,
)
from tritonfleet.desired.gateway.routing import Reason, Route, Timeouts, request_cost
from tritonfleet.gateway.errors import (
    BACKEND_HEADER,
    ESTIMATED_HEADER,
    POD_HEADER,
    REASON_HEADER,
    error_response,
    sse_error_event,
)
from tritonfleet.gateway.metrics import GatewayMetrics
from tritonfleet.gateway.secrets import REDACTOR, KeyStore, MissingKeyError
from tritonfleet.gateway.state import GatewayState, PodRuntime, RouteRuntime

log = logging.getLogger("tritonfleet.gateway")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # no proxy buffering in front of us
}

REASON_TEXT: dict[str, str] = {
    "mode_hosted": "model is in hosted mode",
    "no_ready_replica": "no Triton replica is ready",
    "breaker_open": "Triton circuit breaker is open",
    "queue_time": "Triton queue time is over budget",
    "triton_failed": "Triton failed",
}

Attempt = tuple[web.StreamResponse, UpstreamError | None]


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


class UpstreamHTTPError(UpstreamError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def triton_http_failure(status: int, message: str) -> Exception:
    """Sort a Triton error status into retry-elsewhere or client error."""
    lowered = message.lower()
    if status >= 500:
        return UpstreamHTTPError(f"http_{status}", message)
    if status in (404, 429) or "unknown model" in lowered or "not ready" in lowered:
        # Model not (or no longer) loaded on this pod, or pod overloaded.
        return UpstreamHTTPError("model_unavailable" if status != 429 else "http_429", message)
    return TritonRejectedError(status, message)


class ClientGoneError(Exception):
    """The client closed the connection while we were writing to it."""


async def _write(resp: web.StreamResponse, data: bytes) -> None:
    try:
        await resp.write(data)
    except (ConnectionError, RuntimeError) as err:
        raise ClientGoneError() from err


# One encoder, built once: json.dumps with non-default arguments builds a new
# encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _sse(obj: Any) -> bytes:
    return b"data: " + _encode(obj).encode() + b"\n\n"


def _json(obj: Any) -> bytes:
    return _encode(obj).encode()


class _Ids:
    """Response ids: a random per-process prefix and a counter (no syscall per
    request, unlike secrets.token_hex)."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(6)
        self.n = 0

    def next(self, kind: str) -> str:
        self.n += 1
        return f"{kind}-{self.prefix}{self.n:08x}"


_ids = _Ids()


class Dispatcher:
    def __init__(
        self,
        state: GatewayState,
        triton: TritonClient,
        hosted: HostedClient,
        keys: KeyStore,
        metrics: GatewayMetrics,
    ) -> None:
        self.state = state
        self.triton = triton
        self.hosted = hosted
        self.keys = keys
        self.metrics = metrics
        self._timeouts: dict[Timeouts, tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]] = {}

    def timeouts(self, t: Timeouts) -> tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]:
        """(whole answer, stream) client timeouts for a route; built once."""
        pair = self._timeouts.get(t)
        if pair is None:
            whole = aiohttp.ClientTimeout(total=t.total_s, sock_connect=t.connect_s)
            stream = aiohttp.ClientTimeout(
                total=t.total_s, sock_connect=t.connect_s, sock_read=max(t.first_byte_s, t.idle_s)
            )
            pair = self._timeouts[t] = (whole, stream)
        return pair

    # -- orchestration ----------------------------------------------------------------

    async def _dispatch(
        self,
        rr: RouteRuntime,
        t0: float,
        triton_attempt: Callable[[PodRuntime], Awaitable[Attempt]],
        hosted_attempt: Callable[[str | None, str], Awaitable[Attempt]],
    ) -> web.StreamResponse:
        route = rr.route
        rr.budget.deposit()
        plan = self.state.plan_for(rr)
        self.metrics.demand(route.name, plan.activation)
        notes: list[str] = []
        reason: str = plan.reason
        if plan.pods:
            if rr.model_breaker.acquire():
                resp = await self._try_triton(rr, plan.pods, triton_attempt, notes, t0)
                if resp is not None:
                    return resp
                reason = "triton_failed"
            else:
                reason = "breaker_open"
        if reason != "triton_failed":
            notes.append(REASON_TEXT[reason])
        if not plan.hosted or route.hosted is None:
            if route.hosted is None:
                notes.append("no hosted failover is configured")
            elif route.mode == "triton":
                notes.append("failover is disabled (mode: triton)")
            return self._unavailable(route, notes, t0)
        if reason != "mode_hosted":
            self.metrics.failover(route.name, reason)
            log.debug("model %s: failing over to hosted (%s)", route.name, reason)
        return await self._try_hosted(rr, reason, hosted_attempt, notes, t0)

    async def _try_triton(
        self,
        rr: RouteRuntime,
        pods: tuple[Any, ...],
        attempt: Callable[[PodRuntime], Awaitable[Attempt]],
        notes: list[str],
        t0: float,
    ) -> web.StreamResponse | None:
        route = rr.route
        attempted = 0
        outstanding = self.state.outstanding
        for ep in pods:
            pod = rr.pods.get(ep.url)
            if pod is None or not pod.breaker.acquire():
                continue
            if attempted:
                if not rr.budget.try_withdraw():
                    pod.breaker.release()
                    self.metrics.budget_exhausted.labels(route.name).inc()
                    notes.append("retry budget exhausted")
                    break
                self.metrics.retries.labels(route.name).inc()
            attempted += 1
            outstanding[ep.url] += 1
            try:
                resp, broken = await attempt(pod)
            except UpstreamError as err:
                self._pod_failed(route, pod, err)
                notes.append(f"Triton pod {ep.name}: {err.kind}")
                continue
            except TritonRejectedError as rej:
                pod.breaker.release()
                rr.model_breaker.release()
                self.metrics.answered(route.name, "triton", 400, time.perf_counter() - t0)
                return error_response(
                    400,
                    f"Triton rejected the request: {rej.message}",
                    code="triton_rejected",
                    backend="triton",
                    headers={POD_HEADER: ep.name},
                )
            except Exception as exc:
                # A bug or an answer we cannot read: count it against the pod
                # and try the next one rather than fail the request.
                log.exception("model %s, pod %s: unexpected error", route.name, ep.name)
                self._pod_failed(route, pod, UpstreamError(type(exc).__name__))
                notes.append(f"Triton pod {ep.name}: error")
                continue
            except BaseException:
                # Cancelled (client gone, shutdown): no verdict on the pod, and
                # a claimed half-open probe must not stay claimed forever.
                pod.breaker.release()
                rr.model_breaker.release()
                raise
            finally:
                outstanding[ep.url] -= 1
            if broken is not None:
                # The stream broke after its first byte: the client got an SSE
                # error event; the pod is suspect.
                self._pod_failed(route, pod, broken)
                rr.model_breaker.release()
            else:
                pod.breaker.success()
                rr.model_breaker.success()
            return resp
        if attempted:
            rr.model_breaker.failure()
        else:
            rr.model_breaker.release()
            notes.append(REASON_TEXT["breaker_open"])
        return None

    def _pod_failed(self, route: Route, pod: PodRuntime, err: UpstreamError) -> None:
        hard = err.kind == "connect"
        if hard:
            pod.healthy = False  # nothing listens: wait for the prober to see it back
        pod.breaker.failure(hard=hard)
        self.metrics.error(route.name, "triton", err.kind)
        log.debug("model %s, pod %s: %s", route.name, pod.endpoint.name, err.message)

    async def _try_hosted(
        self,
        rr: RouteRuntime,
        reason: str,
        attempt: Callable[[str | None, str], Awaitable[Attempt]],
        notes: list[str],
        t0: float,
    ) -> web.StreamResponse:
        route = rr.route
        target = route.hosted
        assert target is not None
        try:
            key = self.keys.get(target.api_key)
        except MissingKeyError as err:
            log.error("model %s: hosted API key unavailable: %s", route.name, err)
            notes.append("hosted provider: API key unavailable")
            return self._unavailable(route, notes, t0)
        deadline = t0 + route.timeouts.total_s
        for n in range(route.retry.max_hosted_attempts):
            if not rr.hosted_breaker.acquire():
                notes.append("hosted provider: circuit breaker is open")
                break
            try:
                resp, broken = await attempt(key, reason)
            except UpstreamError as err:
                rr.hosted_breaker.failure(hard=err.kind == "connect")
                self.metrics.error(route.name, "hosted", err.kind)
                notes.append(f"hosted provider: {err.kind}")
                continue
            except HostedStatusError as hs:
                if hs.status == 429:
                    rr.hosted_breaker.release()
                    self.metrics.error(route.name, "hosted", "rate_limited")
                    wait = hs.retry_after if hs.retry_after is not None else 1.0
                    last = n + 1 >= route.retry.max_hosted_attempts
                    fits = wait <= route.retry.max_retry_after_s
                    if fits and not last and time.perf_counter() + wait < deadline:
                        await asyncio.sleep(wait)
                        continue
                    return self._rate_limited(route, wait, t0)
                if hs.status >= 500:
                    rr.hosted_breaker.failure()
                    self.metrics.error(route.name, "hosted", f"http_{hs.status}")
                    notes.append(f"hosted provider: HTTP {hs.status}")
                    continue
                rr.hosted_breaker.release()
                return self._hosted_client_error(route, hs, t0)
            except BaseException:
                rr.hosted_breaker.release()  # cancelled or a bug: no verdict
                raise
            if broken is not None:
                rr.hosted_breaker.failure()
                self.metrics.error(route.name, "hosted", "stream_broken")
            else:
                rr.hosted_breaker.success()
            return resp
        return self._unavailable(route, notes, t0)

    def _unavailable(self, route: Route, notes: list[str], t0: float) -> web.Response:
        reasons = "; ".join(dict.fromkeys(notes)) or "no backend"
        self.metrics.answered(route.name, "none", 503, time.perf_counter() - t0)
        log.warning("model %s: no backend could answer: %s", route.name, reasons)
        return error_response(
            503,
            f"Model '{route.name}' is temporarily unavailable: {reasons}.",
            code="backend_unavailable",
            headers={"Retry-After": "1"},
        )

    def _rate_limited(self, route: Route, wait: float, t0: float) -> web.Response:
        self.metrics.answered(route.name, "hosted", 429, time.perf_counter() - t0)
        seconds = max(1, math.ceil(wait))
        return error_response(
            429,
            f"Model '{route.name}': the hosted provider is rate limiting; retry after {seconds} s.",
            code="rate_limit_exceeded",
            backend="hosted",
            headers={"Retry-After": str(seconds)},
        )

    def _hosted_client_error(self, route: Route, hs: HostedStatusError, t0: float) -> web.Response:
        self.metrics.answered(route.name, "hosted", hs.status, time.perf_counter() - t0)
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

    def _account(
        self,
        route: Route,
        backend: str,
        prompt_tokens: int,
        completion_tokens: int,
        estimated: bool,
    ) -> None:
        cost = request_cost(
            self.state.table.prices,
            route,
            "triton" if backend == "triton" else "hosted",
            prompt_tokens,
            completion_tokens,
        )
        self.metrics.usage(route.name, backend, prompt_tokens, completion_tokens, estimated, cost)

    # -- chat and text completions ------------------------------------------------------

    async def generate(
        self,
        request: web.Request,
        rr: RouteRuntime,
        body: dict[str, Any],
        treq: GenerateRequest,
    ) -> web.StreamResponse:
        t0 = time.perf_counter()
        route = rr.route
        mapping = route.generate
        assert mapping is not None
        triton_body = _json(treq.body)
        rid = _ids.next("chatcmpl" if treq.chat else "cmpl")
        created = int(time.time())

        async def on_triton(pod: PodRuntime) -> Attempt:
            if treq.stream:
                return await self._triton_stream(
                    request, route, mapping, pod, treq, triton_body, rid, created, t0
                )
            return await self._triton_whole(
                route, mapping, pod, treq, triton_body, rid, created, t0
            ), None

        async def on_hosted(key: str | None, reason: str) -> Attempt:
            return await self._hosted_generate(request, route, body, treq, key, reason, t0)

        return await self._dispatch(rr, t0, on_triton, on_hosted)

    @contextlib.asynccontextmanager
    async def _triton_stream_open(
        self, route: Route, url: str, triton_body: bytes, stream_timeout: aiohttp.ClientTimeout
    ) -> AsyncIterator[TritonStream]:
        """An accepted generate_stream answer; a refusal raises as a Triton failure
        (so it is retried elsewhere), and the connection is always released."""
        stream = await self.triton.generate_stream(
            url, route.triton_model, triton_body, stream_timeout, route.timeouts.idle_s
        )
        async with stream:
            if stream.status != 200:
                raise triton_http_failure(stream.status, await stream.error_body())
            yield stream

    async def _triton_whole(
        self,
        route: Route,
        mapping: GenerateMapping,
        pod: PodRuntime,
        treq: GenerateRequest,
        triton_body: bytes,
        rid: str,
        created: int,
        t0: float,
    ) -> web.Response:
        whole, stream_timeout = self.timeouts(route.timeouts)
        url = pod.endpoint.url
        if mapping.decoupled:
            # A decoupled model answers only on generate_stream: assemble it.
            async with self._triton_stream_open(route, url, triton_body, stream_timeout) as stream:
                asm = StreamAssembler(mapping, treq)
                async for event in stream.events(route.timeouts.first_byte_s):
                    asm.feed(event)
                    if asm.done:
                        break
                asm.flush()
                gen = asm.result()
        else:
            status, raw = await self.triton.generate(url, route.triton_model, triton_body, whole)
            if status != 200:
                raise triton_http_failure(status, error_message(raw))
            try:
                data = json.loads(raw)
            except ValueError:
                raise UpstreamDisconnectedError(f"triton {url}: answer is not JSON") from None
            gen = parse_generate_response(data, mapping, treq)
        payload = completion_body(rid, created, route.name, gen, chat=treq.chat)
        headers = {BACKEND_HEADER: "triton", POD_HEADER: pod.endpoint.name}
        if gen.estimated:
            headers[ESTIMATED_HEADER] = "true"
        self._account(route, "triton", gen.prompt_tokens, gen.completion_tokens, gen.estimated)
        self.metrics.answered(route.name, "triton", 200, time.perf_counter() - t0)
        return web.Response(body=_json(payload), content_type="application/json", headers=headers)

    async def _triton_stream(
        self,
        request: web.Request,
        route: Route,
        mapping: GenerateMapping,
        pod: PodRuntime,
        treq: GenerateRequest,
        triton_body: bytes,
        rid: str,
        created: int,
        t0: float,
    ) -> Attempt:
        _, stream_timeout = self.timeouts(route.timeouts)
        async with self._triton_stream_open(
            route, pod.endpoint.url, triton_body, stream_timeout
        ) as stream:
            asm = StreamAssembler(mapping, treq)
            events = stream.events(route.timeouts.first_byte_s)
            try:
                # Nothing is sent until the first token is in hand: until then a
                # failure (raised from here) is retried elsewhere.
                first = ""
                ended = False
                while not first and not asm.done:
                    try:
                        event = await events.__anext__()
                    except StopAsyncIteration:
                        ended = True
                        break
                    first = asm.feed(event)
                headers = {**SSE_HEADERS, BACKEND_HEADER: "triton", POD_HEADER: pod.endpoint.name}
                if not mapping.counts_tokens or treq.stops:
                    headers[ESTIMATED_HEADER] = "true"
                resp = web.StreamResponse(headers=headers)
                return await self._relay_triton(
                    request, resp, route, asm, events, first, ended, treq, rid, created, t0
                )
            finally:
                await events.aclose()

    async def _relay_triton(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        route: Route,
        asm: StreamAssembler,
        events: AsyncGenerator[dict[str, Any], None],
        first: str,
        ended: bool,
        treq: GenerateRequest,
        rid: str,
        created: int,
        t0: float,
    ) -> Attempt:
        chat = treq.chat
        name = route.name
        broken: UpstreamError | None = None
        try:
            await resp.prepare(request)
            self.metrics.first_token(name, "triton", time.perf_counter() - t0)
            await _write(
                resp, _sse(chunk_body(rid, created, name, chat=chat, text=first, first=True))
            )
            if not ended and not asm.done:
                try:
                    async for event in events:
                        piece = asm.feed(event)
                        if piece:
                            await _write(
                                resp, _sse(chunk_body(rid, created, name, chat=chat, text=piece))
                            )
                        if asm.done:
                            break
                except UpstreamError as err:
                    broken = err
            if broken is not None:
                self.metrics.error(name, "triton", "stream_broken")
                await _write(
                    resp,
                    sse_error_event(
                        f"The Triton backend failed mid-stream ({broken.kind}); the answer is "
                        "incomplete."
                    ),
                )
                await resp.write_eof()
                self.metrics.answered(name, "triton", 200, time.perf_counter() - t0)
                gen = asm.result()
                self._account(route, "triton", gen.prompt_tokens, gen.completion_tokens, True)
                return resp, broken
            tail = asm.flush()
            if tail:
                await _write(resp, _sse(chunk_body(rid, created, name, chat=chat, text=tail)))
            gen = asm.result()
            closing = chunk_body(
                rid, created, name, chat=chat, text=None, finish_reason=gen.finish_reason
            )
            out = _sse(closing)
            if treq.include_usage:
                out += _sse(usage_chunk(rid, created, name, gen, chat=chat))
            await _write(resp, out + b"data: [DONE]\n\n")
            await resp.write_eof()
        except ClientGoneError:
            log.debug("model %s: client went away mid-stream", name)
            self.metrics.answered(name, "triton", 499, time.perf_counter() - t0)
            return resp, None
        self._account(route, "triton", gen.prompt_tokens, gen.completion_tokens, gen.estimated)
        self.metrics.answered(name, "triton", 200, time.perf_counter() - t0)
        return resp, None

    # -- hosted ---------------------------------------------------------------------------

    def _hosted_headers(self, reason: str) -> dict[str, str]:
        headers = {BACKEND_HEADER: "hosted"}
        if reason != "mode_hosted":
            headers[REASON_HEADER] = reason
        return headers

    async def _hosted_generate(
        self,
        request: web.Request,
        route: Route,
        body: dict[str, Any],
        treq: GenerateRequest,
        key: str | None,
        reason: str,
        t0: float,
    ) -> Attempt:
        target = route.hosted
        assert target is not None
        upstream = dict(body)
        upstream["model"] = target.model
        if treq.stream:
            # Always ask for usage so cost is accounted; dropped again below
            # when the client did not ask for it.
            upstream["stream_options"] = {"include_usage": True}
        data = _json(upstream)
        path = "/chat/completions" if treq.chat else "/completions"
        whole, stream_timeout = self.timeouts(route.timeouts)
        if not treq.stream:
            r = await self.hosted.post(target.base_url, path, data, key, whole)
            if r.status != 200:
                raise HostedStatusError(r.status, r.body, r.retry_after)
            prompt, completion, estimated = _hosted_usage(r.body, treq)
            self._account(route, "hosted", prompt, completion, estimated)
            self.metrics.answered(route.name, "hosted", 200, time.perf_counter() - t0)
            return web.Response(
                body=r.body, content_type="application/json", headers=self._hosted_headers(reason)
            ), None
        stream = await self.hosted.stream(
            target.base_url, path, data, key, stream_timeout, route.timeouts.idle_s
        )
        async with stream:
            if stream.status != 200:
                raise HostedStatusError(stream.status, await stream.read_all(), stream.retry_after)
            return await self._relay_hosted(request, route, stream, treq, reason, t0)

    async def _relay_hosted(
        self,
        request: web.Request,
        route: Route,
        stream: HostedStream,
        treq: GenerateRequest,
        reason: str,
        t0: float,
    ) -> Attempt:
        lines = stream.lines()
        name = route.name
        try:
            line: bytes | None = None
            async for raw in lines:  # until the first data line, failures are retryable
                if raw.startswith(b"data:"):
                    line = raw
                    break
            if line is None:
                raise UpstreamDisconnectedError("hosted: stream ended before any data")
            resp = web.StreamResponse(headers={**SSE_HEADERS, **self._hosted_headers(reason)})
            usage: Any = None
            text: list[str] = []
            broken: UpstreamError | None = None
            provider_error = False
            try:
                await resp.prepare(request)
                self.metrics.first_token(name, "hosted", time.perf_counter() - t0)
                while line is not None:
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        break
                    forward = True
                    try:
                        obj = json.loads(payload)
                    except ValueError:
                        obj = None
                    if isinstance(obj, dict):
                        if obj.get("usage"):
                            usage = obj["usage"]
                            # A usage-only chunk the client did not ask for.
                            forward = treq.include_usage or bool(obj.get("choices"))
                        _collect_text(obj, text)
                        provider_error = bool(obj.get("error"))
                    if forward:
                        await _write(
                            resp,
                            b"data: " + REDACTOR(payload.decode()).encode() + b"\n\n"
                            if provider_error
                            else b"data: " + payload + b"\n\n",
                        )
                    if provider_error:
                        broken = UpstreamDisconnectedError("hosted: error event mid-stream")
                        break
                    line = None
                    try:
                        async for raw in lines:
                            if raw.startswith(b"data:"):
                                line = raw
                                break
                    except UpstreamError as err:
                        broken = err
                if broken is not None and not provider_error:
                    self.metrics.error(name, "hosted", "stream_broken")
                    await _write(
                        resp,
                        sse_error_event(
                            f"The hosted provider failed mid-stream ({broken.kind}); the answer "
                            "is incomplete."
                        ),
                    )
                else:
                    # Also closes a stream the provider ended without [DONE].
                    await _write(resp, b"data: [DONE]\n\n")
                await resp.write_eof()
            except ClientGoneError:
                self.metrics.answered(name, "hosted", 499, time.perf_counter() - t0)
                return resp, None
        finally:
            await lines.aclose()
        prompt, completion, estimated = _usage_numbers(usage, treq, "".join(text))
        self._account(route, "hosted", prompt, completion, estimated)
        self.metrics.answered(name, "hosted", 200, time.perf_counter() - t0)
        return resp, broken

    # -- embeddings -----------------------------------------------------------------------

    async def embeddings(
        self, rr: RouteRuntime, body: dict[str, Any], ereq: EmbeddingRequest
    ) -> web.StreamResponse:
        t0 = time.perf_counter()
        route = rr.route
        mapping = route.embedding
        assert mapping is not None
        batches = embedding_batches(ereq.texts, mapping)
        bodies = [_json(infer_body(batch, mapping)) for batch in batches]

        async def one(url: str, batch: list[str] | Any, raw_body: bytes) -> list[list[float]]:
            whole, _ = self.timeouts(route.timeouts)
            status, raw = await self.triton.infer(url, route.triton_model, raw_body, whole)
            if status != 200:
                raise triton_http_failure(status, error_message(raw))
            try:
                return parse_infer_embeddings(json.loads(raw), mapping, len(batch))
            except ValueError as err:
                raise UpstreamDisconnectedError(f"triton {url}: {err}") from None

        async def on_triton(pod: PodRuntime) -> Attempt:
            url = pod.endpoint.url
            parts = await asyncio.gather(
                *(one(url, b, rb) for b, rb in zip(batches, bodies, strict=True))
            )
            vectors = [v for part in parts for v in part]
            payload = embeddings_body(route.name, vectors, ereq.texts, b64=ereq.base64)
            tokens = payload["usage"]["prompt_tokens"]
            self._account(route, "triton", tokens, 0, True)
            self.metrics.answered(route.name, "triton", 200, time.perf_counter() - t0)
            return web.Response(
                body=_json(payload),
                content_type="application/json",
                headers={
                    BACKEND_HEADER: "triton",
                    POD_HEADER: pod.endpoint.name,
                    ESTIMATED_HEADER: "true",
                },
            ), None

        async def on_hosted(key: str | None, reason: str) -> Attempt:
            target = route.hosted
            assert target is not None
            upstream = dict(body)
            upstream["model"] = target.model
            whole, _ = self.timeouts(route.timeouts)
            r = await self.hosted.post(target.base_url, "/embeddings", _json(upstream), key, whole)
            if r.status != 200:
                raise HostedStatusError(r.status, r.body, r.retry_after)
            try:
                usage = json.loads(r.body).get("usage") or {}
                tokens = int(usage.get("prompt_tokens", 0))
                estimated = "prompt_tokens" not in usage
            except (ValueError, AttributeError, TypeError):
                tokens, estimated = sum(estimate_tokens(t) for t in ereq.texts), True
            self._account(route, "hosted", tokens, 0, estimated)
            self.metrics.answered(route.name, "hosted", 200, time.perf_counter() - t0)
            return web.Response(
                body=r.body, content_type="application/json", headers=self._hosted_headers(reason)
            ), None

        return await self._dispatch(rr, t0, on_triton, on_hosted)


def _collect_text(obj: dict[str, Any], into: list[str]) -> None:
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices:
        return
    choice = choices[0]
    if not isinstance(choice, dict):
        return
    delta = choice.get("delta")
    if isinstance(delta, dict) and isinstance(delta.get("content"), str):
        into.append(delta["content"])
    elif isinstance(choice.get("text"), str):
        into.append(choice["text"])


def _usage_numbers(
    usage: Any, treq: GenerateRequest, completion_text: str
) -> tuple[int, int, bool]:
    if isinstance(usage, dict):
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(p, int) and isinstance(c, int):
            return p, c, False
    return estimate_tokens(treq.prompt), estimate_tokens(completion_text), True


def _hosted_usage(raw: bytes, treq: GenerateRequest) -> tuple[int, int, bool]:
    try:
        obj = json.loads(raw)
    except ValueError:
        return estimate_tokens(treq.prompt), 0, True
    text: list[str] = []
    if isinstance(obj, dict):
        for choice in obj.get("choices") or []:
            if isinstance(choice, dict):
                message = choice.get("message")
                if isinstance(message, dict) and isinstance(message.get("content"), str):
                    text.append(message["content"])
                elif isinstance(choice.get("text"), str):
                    text.append(choice["text"])
        return _usage_numbers(obj.get("usage"), treq, "".join(text))
    return estimate_tokens(treq.prompt), 0, True


def reason_text(reason: Reason) -> str:
    return REASON_TEXT.get(reason, reason)
