"""The entry of the request path: one validated OpenAI request in, one answer out.

``gateway.app`` has authenticated and parsed the request and found its route;
:meth:`Dispatcher.generate` and :meth:`Dispatcher.embeddings` open the request's
:class:`~.accounting.Ledger`, build its job (:mod:`.jobs`) and hand the attempt
policy (:mod:`.attempts`) one way to try a Triton pod (:mod:`.triton_calls`) and
one way to try the hosted provider (:mod:`.hosted_calls`) for it.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from aiohttp import web

from tritonfleet.adapters.hosted import HostedClient
from tritonfleet.adapters.triton_http import TritonClient
from tritonfleet.desired.gateway.openai_mapping import EmbeddingRequest, GenerateRequest
from tritonfleet.gateway.metrics import GatewayMetrics
from tritonfleet.gateway.proxy.accounting import Ledger
from tritonfleet.gateway.proxy.attempts import AttemptPolicy
from tritonfleet.gateway.proxy.hosted_calls import HostedCalls
from tritonfleet.gateway.proxy.jobs import EmbeddingJob, GenerateJob
from tritonfleet.gateway.proxy.triton_calls import TritonCalls
from tritonfleet.gateway.secrets import KeyStore
from tritonfleet.gateway.state import GatewayState, RouteRuntime


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
        self.metrics = metrics
        self.policy = AttemptPolicy(state, keys)
        self.triton = TritonCalls(triton)
        self.hosted = HostedCalls(hosted)

    def _ledger(self, rr: RouteRuntime) -> Ledger:
        return Ledger(self.metrics, self.state.table.prices, rr.route)

    async def generate(
        self, request: web.Request, rr: RouteRuntime, body: dict[str, Any], treq: GenerateRequest
    ) -> web.StreamResponse:
        """A chat or text completion, whole or streamed."""
        job = GenerateJob(request, rr.route, body, treq, self._ledger(rr))
        try:
            return await self.policy.run(
                rr,
                job.ledger,
                job.deadlines.slot_wait,
                partial(self.triton.generate, job),
                partial(self.hosted.generate, job),
            )
        except asyncio.CancelledError:
            job.ledger.answered("none", 499)  # the client left; its attempts were cancelled
            raise

    async def embeddings(
        self, rr: RouteRuntime, body: dict[str, Any], ereq: EmbeddingRequest
    ) -> web.StreamResponse:
        job = EmbeddingJob(rr.route, body, ereq, self._ledger(rr))
        try:
            return await self.policy.run(
                rr,
                job.ledger,
                job.deadlines.slot_wait,
                partial(self.triton.embeddings, job),
                partial(self.hosted.embeddings, job),
            )
        except asyncio.CancelledError:
            job.ledger.answered("none", 499)
            raise
