"""One client request as the proxy carries it through its attempts.

The dispatcher builds a job once per request, before the first attempt: the
parsed OpenAI request, the body Triton will get (encoded once, however many
pods are tried), the answer's id, the request's :class:`Deadlines` and its
:class:`~tritonfleet.gateway.proxy.accounting.Ledger`. The Triton and hosted
calls read everything they need from it.
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
from tritonfleet.gateway.proxy.attempts import DeadlineExceeded
from tritonfleet.gateway.proxy.wire import json_bytes


@functools.lru_cache(maxsize=256)
def whole_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    """The socket deadline of one whole-answer attempt with time to spare; built once."""
    return aiohttp.ClientTimeout(total=t.answer_s, sock_connect=t.connect_s)


class Deadlines:
    """What one attempt may take: its own deadline (``answerMs`` for a whole answer,
    ``firstByteMs``/``idleMs`` for a stream), never more than is left of the
    request's ``totalMs``. An attempt started with nothing left raises
    :class:`~tritonfleet.gateway.proxy.attempts.DeadlineExceeded` instead."""

    __slots__ = ("end", "timeouts")

    def __init__(self, timeouts: Timeouts, t0: float) -> None:
        self.timeouts = timeouts
        self.end = t0 + timeouts.total_s  # time.perf_counter() scale, like the ledger's t0

    def left(self) -> float:
        left = self.end - time.perf_counter()
        if left <= 0:
            raise DeadlineExceeded(f"no answer within totalMs ({self.timeouts.total_s:g} s)")
        return left

    def whole(self) -> aiohttp.ClientTimeout:
        t = self.timeouts
        left = self.left()
        if left >= t.answer_s:
            return whole_timeout(t)
        return aiohttp.ClientTimeout(total=left, sock_connect=min(t.connect_s, left))

    def stream(self, whole: bool = False) -> aiohttp.ClientTimeout:
        """A stream's socket deadline: the rest of the request at most, and
        ``answerMs`` for a stream read whole (a decoupled model's answer assembled)."""
        t = self.timeouts
        left = self.left()
        total = min(left, t.answer_s) if whole else left
        return aiohttp.ClientTimeout(
            total=total,
            sock_connect=min(t.connect_s, total),
            sock_read=max(t.first_byte_s, t.idle_s),
        )

    def first_byte(self) -> float:
        return min(self.timeouts.first_byte_s, self.left())

    def slot_wait(self) -> float:
        """How long the request may wait for a pod with room: as long as for a first byte."""
        return self.first_byte()


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
        "deadlines",
        "ledger",
        "mapping",
        "request",
        "rid",
        "route",
        "treq",
        "triton_body",
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
        self.deadlines = Deadlines(route.timeouts, ledger.t0)


class EmbeddingJob:
    """An embeddings request: its texts in the batches Triton takes, each
    batch's ``infer`` body encoded once."""

    __slots__ = ("batches", "bodies", "body", "deadlines", "ereq", "ledger", "mapping", "route")

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
        self.deadlines = Deadlines(route.timeouts, ledger.t0)
