"""Streaming to the client, from the first byte on: the part of a request that
can no longer be retried.

A call hands its stream over here only once it holds the first token (Triton)
or the first data line (hosted) - until then a failure is still retried
elsewhere. From here on the client has the status line: each event is
forwarded as it arrives, and a backend that breaks off ends the stream with an
SSE error event and ``data: [DONE]`` (the OpenAI SDKs raise it as
``APIError``), never a hang. A client that goes away ends the relay quietly
(counted as a 499). Each relay returns the backend's mid-stream error, if any,
for the attempt policy to hold against it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from tritonfleet.adapters.triton_http import UpstreamDisconnectedError, UpstreamError
from tritonfleet.desired.gateway.openai_mapping import StreamAssembler, chunk_body, usage_chunk
from tritonfleet.gateway.errors import sse_error_event
from tritonfleet.gateway.proxy.accounting import collect_text, usage_numbers
from tritonfleet.gateway.proxy.jobs import GenerateJob
from tritonfleet.gateway.proxy.wire import SSE_DONE, sse_frame
from tritonfleet.gateway.secrets import REDACTOR

log = logging.getLogger("tritonfleet.gateway")


class ClientGoneError(Exception):
    """The client closed the connection while we were writing to it."""


async def write(resp: web.StreamResponse, data: bytes) -> None:
    try:
        await resp.write(data)
    except (ConnectionError, RuntimeError) as err:
        raise ClientGoneError() from err


async def relay_triton(
    job: GenerateJob,
    headers: Mapping[str, str],
    asm: StreamAssembler,
    events: AsyncGenerator[dict[str, Any], None],
    first: str,
    ended: bool,
) -> tuple[web.StreamResponse, UpstreamError | None]:
    """Triton events → OpenAI chunks, starting with ``first`` (the first text,
    already read); ``ended``: Triton's stream is already over."""
    treq, chat, name, rid, created = job.treq, job.treq.chat, job.route.name, job.rid, job.created
    ledger = job.ledger
    resp = web.StreamResponse(headers=headers)
    broken: UpstreamError | None = None
    try:
        await resp.prepare(job.request)
        ledger.first_token("triton")
        await write(
            resp, sse_frame(chunk_body(rid, created, name, chat=chat, text=first, first=True))
        )
        if not ended and not asm.done:
            try:
                async for event in events:
                    piece = asm.feed(event)
                    if piece:
                        await write(
                            resp, sse_frame(chunk_body(rid, created, name, chat=chat, text=piece))
                        )
                    if asm.done:
                        break
            except UpstreamError as err:
                broken = err
        if broken is not None:
            ledger.error("triton", "stream_broken")
            await write(
                resp,
                sse_error_event(
                    f"The Triton backend failed mid-stream ({broken.kind}); the answer is "
                    "incomplete."
                ),
            )
            await resp.write_eof()
            ledger.answered("triton", 200)
            gen = asm.result()
            ledger.tokens("triton", gen.prompt_tokens, gen.completion_tokens, True)
            return resp, broken
        tail = asm.flush()
        if tail:
            await write(resp, sse_frame(chunk_body(rid, created, name, chat=chat, text=tail)))
        gen = asm.result()
        out = sse_frame(
            chunk_body(rid, created, name, chat=chat, text=None, finish_reason=gen.finish_reason)
        )
        if treq.include_usage:
            out += sse_frame(usage_chunk(rid, created, name, gen, chat=chat))
        await write(resp, out + SSE_DONE)
        await resp.write_eof()
    except ClientGoneError:
        log.debug("model %s: client went away mid-stream", name)
        ledger.answered("triton", 499)
        return resp, None
    ledger.tokens("triton", gen.prompt_tokens, gen.completion_tokens, gen.estimated)
    ledger.answered("triton", 200)
    return resp, None


async def relay_hosted(
    job: GenerateJob, headers: Mapping[str, str], first: bytes, lines: AsyncIterator[bytes]
) -> tuple[web.StreamResponse, UpstreamError | None]:
    """The provider's SSE data lines, forwarded as they are, starting with
    ``first``; a usage-only chunk the client did not ask for is dropped, and
    the usage kept for accounting."""
    treq, ledger = job.treq, job.ledger
    resp = web.StreamResponse(headers=headers)
    usage: Any = None
    text: list[str] = []
    broken: UpstreamError | None = None
    provider_error = False
    line: bytes | None = first
    try:
        await resp.prepare(job.request)
        ledger.first_token("hosted")
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
                    forward = treq.include_usage or bool(obj.get("choices"))
                collect_text(obj, text)
                provider_error = bool(obj.get("error"))
            if forward:
                await write(
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
            ledger.error("hosted", "stream_broken")
            await write(
                resp,
                sse_error_event(
                    f"The hosted provider failed mid-stream ({broken.kind}); the answer "
                    "is incomplete."
                ),
            )
        else:
            # Also closes a stream the provider ended without [DONE].
            await write(resp, SSE_DONE)
        await resp.write_eof()
    except ClientGoneError:
        ledger.answered("hosted", 499)
        return resp, None
    prompt, completion, estimated = usage_numbers(usage, treq, "".join(text))
    ledger.tokens("hosted", prompt, completion, estimated)
    ledger.answered("hosted", 200)
    return resp, broken
