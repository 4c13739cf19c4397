"""One attempt at a Triton pod, and the translation of its answer into OpenAI's.

The attempt policy calls :meth:`TritonCalls.generate` or
:meth:`TritonCalls.embeddings` with a job and a pod. Everything that can fail
happens before the client sees a byte, so a failure here raises and the policy
tries the next pod: a whole answer (``generate``, ``infer``, or a decoupled
model's stream assembled) is read and translated completely before it is
returned; a stream is read up to its first token and only then handed to
:func:`~tritonfleet.gateway.proxy.relay.relay_triton`. Triton's error statuses
are sorted here (:func:`triton_http_failure`): 5xx, 404, 429 and "model not
ready" are the pod's failure (try elsewhere); other 4xx, and a 5xx saying Triton
could not parse the request's values, are the client's (a 400, never held against
the pod: one client's bad value must not open a breaker for everyone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from aiohttp import web

from tritonfleet.adapters.triton_http import (
    TritonClient,
    TritonStream,
    UpstreamDisconnectedError,
    UpstreamError,
    error_message,
)
from tritonfleet.desired.gateway.openai_mapping import (
    StreamAssembler,
    completion_body,
    embeddings_body,
    parse_generate_response,
    parse_infer_embeddings,
)
from tritonfleet.gateway.errors import BACKEND_HEADER, ESTIMATED_HEADER, pod_headers
from tritonfleet.gateway.proxy.attempts import Attempt, TritonRejectedError
from tritonfleet.gateway.proxy.jobs import EmbeddingJob, GenerateJob
from tritonfleet.gateway.proxy.relay import relay_triton
from tritonfleet.gateway.proxy.wire import SSE_HEADERS, json_bytes
from tritonfleet.gateway.state import PodRuntime


class UpstreamHTTPError(UpstreamError):
    """Triton answered with a status that says "not this pod, not now"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# Triton 2.51 answers 500 to a value it cannot read into the input's type
# ("Unable to parse 'data': attempt to access JSON non-signed-integer as
# signed-integer", "Unable to parse JSON bytes array: ..."): the request's fault.
_CLIENT_PARSE_ERRORS = ("unable to parse", "failed to parse")


def triton_http_failure(status: int, message: str) -> Exception:
    """Sort a Triton error status into retry-elsewhere or client error."""
    lowered = message.lower()
    if lowered.startswith(_CLIENT_PARSE_ERRORS):
        return TritonRejectedError(400, message)
    if status >= 500:
        return UpstreamHTTPError(f"http_{status}", message)
    if status in (404, 429) or "unknown model" in lowered or "not ready" in lowered:
        # Model not (or no longer) loaded on this pod, or pod overloaded.
        return UpstreamHTTPError("model_unavailable" if status != 429 else "http_429", message)
    return TritonRejectedError(status, message)


class TritonCalls:
    def __init__(self, client: TritonClient) -> None:
        self.client = client

    async def generate(self, job: GenerateJob, pod: PodRuntime) -> Attempt:
        if job.treq.stream:
            return await self._stream(job, pod)
        return await self._whole(job, pod), None

    @contextlib.asynccontextmanager
    async def _open_stream(
        self, job: GenerateJob, url: str, whole: bool = False
    ) -> AsyncIterator[TritonStream]:
        """An accepted generate_stream answer; a refusal raises as a Triton failure
        (so it is retried elsewhere), and the connection is always released."""
        route = job.route
        stream = await self.client.generate_stream(
            url,
            route.triton_model,
            job.triton_body,
            job.deadlines.stream(whole),
            route.timeouts.idle_s,
            job.deadlines.first_byte(),
        )
        async with stream:
            if stream.status != 200:
                raise triton_http_failure(stream.status, await stream.error_body())
            yield stream

    async def _whole(self, job: GenerateJob, pod: PodRuntime) -> web.Response:
        route, mapping, treq = job.route, job.mapping, job.treq
        url = pod.endpoint.url
        if mapping.decoupled:
            # A decoupled model answers only on generate_stream: assemble it.
            async with self._open_stream(job, url, whole=True) as stream:
                asm = StreamAssembler(mapping, treq)
                async for event in stream.events():
                    asm.feed(event)
                    if asm.done:
                        break
                asm.flush()
                gen = asm.result()
        else:
            status, raw = await self.client.generate(
                url, route.triton_model, job.triton_body, job.deadlines.whole()
            )
            if status != 200:
                raise triton_http_failure(status, error_message(raw))
            try:
                data = json.loads(raw)
            except ValueError:
                raise UpstreamDisconnectedError(f"triton {url}: answer is not JSON") from None
            gen = parse_generate_response(data, mapping, treq)
        payload = completion_body(job.rid, job.created, route.name, gen, chat=treq.chat)
        headers = {BACKEND_HEADER: "triton", **pod_headers(pod.endpoint)}
        if gen.estimated:
            headers[ESTIMATED_HEADER] = "true"
        job.ledger.tokens("triton", gen.prompt_tokens, gen.completion_tokens, gen.estimated)
        job.ledger.answered("triton", 200)
        return web.Response(
            body=json_bytes(payload), content_type="application/json", headers=headers
        )

    async def _stream(self, job: GenerateJob, pod: PodRuntime) -> Attempt:
        mapping, treq = job.mapping, job.treq
        async with self._open_stream(job, pod.endpoint.url) as stream:
            asm = StreamAssembler(mapping, treq)
            events = stream.events()
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
                headers = {**SSE_HEADERS, BACKEND_HEADER: "triton", **pod_headers(pod.endpoint)}
                if not mapping.counts_tokens or treq.stops:
                    headers[ESTIMATED_HEADER] = "true"
                return await relay_triton(job, headers, asm, events, first, ended)
            finally:
                await events.aclose()

    async def embeddings(self, job: EmbeddingJob, pod: PodRuntime) -> Attempt:
        route = job.route
        url = pod.endpoint.url

        async def one(batch_size: int, body: bytes) -> list[list[float]]:
            status, raw = await self.client.infer(
                url, route.triton_model, body, job.deadlines.whole()
            )
            if status != 200:
                raise triton_http_failure(status, error_message(raw))
            try:
                return parse_infer_embeddings(json.loads(raw), job.mapping, batch_size)
            except ValueError as err:
                raise UpstreamDisconnectedError(f"triton {url}: {err}") from None

        parts = await asyncio.gather(
            *(one(len(b), body) for b, body in zip(job.batches, job.bodies, strict=True))
        )
        vectors = [v for part in parts for v in part]
        texts = job.ereq.texts
        payload = embeddings_body(route.name, vectors, texts, b64=job.ereq.base64)
        job.ledger.tokens("triton", payload["usage"]["prompt_tokens"], 0, True)
        job.ledger.answered("triton", 200)
        headers = {
            BACKEND_HEADER: "triton",
            **pod_headers(pod.endpoint),
            ESTIMATED_HEADER: "true",
        }
        return web.Response(
            body=json_bytes(payload), content_type="application/json", headers=headers
        ), None
