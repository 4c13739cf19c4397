"""One client request as the proxy carries it through its attempts.

The dispatcher builds a job once per request, before the first attempt: the
parsed OpenAI request, the body Triton will get (encoded once, however many
pods are tried), the answer's id, the socket deadlines of the route's
timeouts and the request's :class:`~tritonfleet.gateway.proxy.accounting.Ledger`.
The Triton and hosted calls read everything they need from it.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web

from tritonfleet.desired.gateway.openai_mapping import (
    EmbeddingMapping,
    EmbeddingRequest,
    GenerateMapping,
    GenerateRequest,
    embedding_batches,
    infer_body,
)
from tritonfleet.desired.gateway.routes import Route, Timeouts
from tritonfleet.gateway.proxy.accounting import Ledger
from tritonfleet.gateway.proxy.wire import json_bytes


@functools.lru_cache(maxsize=256)
def client_timeouts(t: Timeouts) -> tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]:
    """(whole answer, stream) socket deadlines for a route's timeouts; built once each."""
    whole = aiohttp.ClientTimeout(total=t.total_s, sock_connect=t.connect_s)
    stream = aiohttp.ClientTimeout(
        total=t.total_s, sock_connect=t.connect_s, sock_read=max(t.first_byte_s, t.idle_s)
    )
    return whole, stream


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


class GenerateJob:
    """A chat or text completion: ``treq`` is the request translated for Triton,
    ``body`` the client's own (sent on to the provider with its model name)."""

    __slots__ = (
        "body",
        "created",
        "ledger",
        "mapping",
        "request",
        "rid",
        "route",
        "stream_timeout",
        "treq",
        "triton_body",
        "whole_timeout",
    )

    def __init__(
        self,
        request: web.Request,
        route: Route,
        body: dict[str, Any],
        treq: GenerateRequest,
        ledger: Ledger,
    ) -> None:
        assert route.generate is not None
        self.request = request
        self.route = route
        self.mapping: GenerateMapping = route.generate
        self.body = body
        self.treq = treq
        self.ledger = ledger
        self.triton_body = json_bytes(treq.body)
        self.rid = _ids.next("chatcmpl" if treq.chat else "cmpl")
        self.created = int(time.time())
        self.whole_timeout, self.stream_timeout = client_timeouts(route.timeouts)


class EmbeddingJob:
    """An embeddings request: its texts in the batches Triton takes, each
    batch's ``infer`` body encoded once."""

    __slots__ = ("batches", "bodies", "body", "ereq", "ledger", "mapping", "route", "whole_timeout")

    def __init__(
        self, route: Route, body: dict[str, Any], ereq: EmbeddingRequest, ledger: Ledger
    ) -> None:
        assert route.embedding is not None
        self.route = route
        self.mapping: EmbeddingMapping = route.embedding
        self.body = body
        self.ereq = ereq
        self.ledger = ledger
        self.batches: list[Sequence[str]] = embedding_batches(ereq.texts, self.mapping)
        self.bodies = [json_bytes(infer_body(batch, self.mapping)) for batch in self.batches]
        self.whole_timeout, _ = client_timeouts(route.timeouts)
