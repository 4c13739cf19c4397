"""One attempt at the hosted provider: the client's OpenAI body, sent on.

The attempt policy calls :meth:`HostedCalls.generate` or
:meth:`HostedCalls.embeddings` when a request fails over (or the route is in
hosted mode), with the gateway's API key and the failover reason. The body is
the client's own with the provider's model name; streams always ask for usage,
so every answer is accounted. An error status raises
:class:`~tritonfleet.gateway.proxy.attempts.HostedStatusError` before any byte
reached the client (the policy decides: retry, wait out a 429, pass it on); a
stream is handed to :func:`~tritonfleet.gateway.proxy.relay.relay_hosted` once
its first data line is in.
"""

from __future__ import annotations

from aiohttp import web

from tritonfleet.adapters.hosted import HostedClient
from tritonfleet.adapters.triton_http import UpstreamDisconnectedError
from tritonfleet.gateway.errors import BACKEND_HEADER, REASON_HEADER
from tritonfleet.gateway.proxy.accounting import hosted_embedding_usage, hosted_usage
from tritonfleet.gateway.proxy.attempts import Attempt, HostedStatusError
from tritonfleet.gateway.proxy.jobs import EmbeddingJob, GenerateJob
from tritonfleet.gateway.proxy.relay import relay_hosted
from tritonfleet.gateway.proxy.wire import SSE_HEADERS, json_bytes


def _headers(reason: str) -> dict[str, str]:
    headers = {BACKEND_HEADER: "hosted"}
    if reason != "mode_hosted":
        headers[REASON_HEADER] = reason
    return headers


class HostedCalls:
    def __init__(self, client: HostedClient) -> None:
        self.client = client

    async def generate(self, job: GenerateJob, key: str | None, reason: str) -> Attempt:
        route, treq = job.route, job.treq
        target = route.hosted
        assert target is not None
        upstream = dict(job.body)
        upstream["model"] = target.model
        if treq.stream:
            # Always ask for usage so cost is accounted; the relay drops it
            # again when the client did not ask for it.
            upstream["stream_options"] = {"include_usage": True}
        data = json_bytes(upstream)
        path = "/chat/completions" if treq.chat else "/completions"
        if not treq.stream:
            r = await self.client.post(target.base_url, path, data, key, job.deadlines.whole())
            if r.status != 200:
                raise HostedStatusError(r.status, r.body, r.retry_after)
            prompt, completion, estimated = hosted_usage(r.body, treq)
            job.ledger.tokens("hosted", prompt, completion, estimated)
            job.ledger.answered("hosted", 200)
            return web.Response(
                body=r.body, content_type="application/json", headers=_headers(reason)
            ), None
        stream = await self.client.stream(
            target.base_url,
            path,
            data,
            key,
            job.deadlines.stream(),
            route.timeouts.idle_s,
            job.deadlines.first_byte(),
        )
        async with stream:
            if stream.status != 200:
                raise HostedStatusError(stream.status, await stream.read_all(), stream.retry_after)
            lines = stream.lines()
            try:
                first: bytes | None = None
                async for raw in lines:  # until the first data line, failures are retryable
                    if raw.startswith(b"data:"):
                        first = raw
                        break
                if first is None:
                    raise UpstreamDisconnectedError("hosted: stream ended before any data")
                return await relay_hosted(job, {**SSE_HEADERS, **_headers(reason)}, first, lines)
            finally:
                await lines.aclose()

    async def embeddings(self, job: EmbeddingJob, key: str | None, reason: str) -> Attempt:
        target = job.route.hosted
        assert target is not None
        upstream = dict(job.body)
        upstream["model"] = target.model
        r = await self.client.post(
            target.base_url, "/embeddings", json_bytes(upstream), key, job.deadlines.whole()
        )
        if r.status != 200:
            raise HostedStatusError(r.status, r.body, r.retry_after)
        tokens, estimated = hosted_embedding_usage(r.body, job.ereq.texts)
        job.ledger.tokens("hosted", tokens, 0, estimated)
        job.ledger.answered("hosted", 200)
        return web.Response(
            body=r.body, content_type="application/json", headers=_headers(reason)
        ), None
