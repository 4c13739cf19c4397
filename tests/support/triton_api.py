"""An in-process stand-in for Triton's HTTP API, for the gateway's unit tests.

It answers the requests the gateway makes, on the wire as tritonserver does:
``POST /v2/models/<m>/generate`` (one JSON object, outputs as top-level keys),
``POST /v2/models/<m>/generate_stream`` (SSE, one ``data:`` event per token,
an ``{"error": ...}`` event for a failure), ``POST /v2/models/<m>/infer``
(KServe v2 tensors), ``GET /v2/models/<m>/ready`` and ``GET /metrics``
(``nv_inference_*`` counters); errors are ``{"error": "..."}`` with a 4xx/5xx
status, an unknown model is Triton's 400 "unknown model". The real
tritonserver runs in the integration tests; this one lets a unit test make a
pod fail in a chosen way at a chosen moment, in milliseconds.

Answers are a pure function of the request: the completion is the prompt's
words cycled to ``max_tokens`` (default 4); embeddings are ``[len(text), 1, 0, 0]``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_MAX_TOKENS = 4


@dataclass
class TritonBehaviour:
    fail_status: int | None = None  # answer every inference with this status
    fail_message: str = "injected failure"
    cut_after_events: int | None = None  # drop the connection after N stream events
    error_after_events: int | None = None  # send Triton's error event after N stream events
    ready: bool = True
    queue_ms_per_request: float = 0.0  # what /metrics reports as mean queue time
    delay_s: float = 0.0  # before answering an inference (a slow model)
    hung: bool = False  # accept, then answer nothing at all (a SIGSTOPped process)


@dataclass
class TritonAPI:
    models: Mapping[str, str] = field(
        default_factory=lambda: {"toy_llm": "generate", "toy_embed": "embedding"}
    )
    behaviour: TritonBehaviour = field(default_factory=TritonBehaviour)
    requests: list[tuple[str, Any]] = field(default_factory=list)  # (path, JSON body)
    in_flight: int = 0  # inferences being answered now
    max_in_flight: int = 0  # the most at once
    cancelled: int = 0  # inferences whose caller hung up before the answer
    app: web.Application = field(init=False)
    _queue: tuple[float, float] = (0.0, 0.0)  # (queue µs, successes) that /metrics reports
    _resume: asyncio.Event = field(default_factory=asyncio.Event)

    def hang(self) -> None:
        """From now on nothing is answered, probes included (SIGSTOP)."""
        self.behaviour.hung = True
        self._resume = asyncio.Event()

    def resume(self) -> None:
        """Answer again, the requests held meanwhile included (SIGCONT)."""
        self.behaviour.hung = False
        self._resume.set()

    @web.middleware
    async def _hold(self, request: web.Request, handler: Any) -> web.StreamResponse:
        inference = request.method == "POST"
        if inference:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.behaviour.hung:
                await self._resume.wait()
            if inference and self.behaviour.delay_s:
                await asyncio.sleep(self.behaviour.delay_s)
            response: web.StreamResponse = await handler(request)
            return response
        except asyncio.CancelledError:
            self.cancelled += inference
            raise
        finally:
            self.in_flight -= inference

    def __post_init__(self) -> None:
        self.app = web.Application(middlewares=[self._hold])
        r = self.app.router
        r.add_post("/v2/models/{model}/generate", self.generate)
        r.add_post("/v2/models/{model}/generate_stream", self.generate_stream)
        r.add_post("/v2/models/{model}/infer", self.infer)
        r.add_get("/v2/models/{model}/ready", self.ready)
        r.add_get("/metrics", self.metrics)

    def calls(self, suffix: str) -> int:
        """Inference requests whose path ends with ``suffix`` (``/generate``...)."""
        return sum(1 for path, _ in self.requests if path.endswith(suffix))

    # -- protocol ---------------------------------------------------------------------

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def _admit(self, request: web.Request, kind: str) -> tuple[Any, web.Response | None]:
        model = request.match_info["model"]
        body = await request.json()
        self.requests.append((request.path, body))
        if self.models.get(model) != kind:
            return body, self._error(400, f"Request for unknown model: '{model}' is not found")
        if self.behaviour.fail_status is not None:
            return body, self._error(self.behaviour.fail_status, self.behaviour.fail_message)
        return body, None

    @staticmethod
    def _tokens(body: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        words = str(body.get("text_input", "")).split() or ["<empty>"]
        n = int(body.get("max_tokens") or DEFAULT_MAX_TOKENS)
        return words, [words[i % len(words)] for i in range(n)]

    async def generate(self, request: web.Request) -> web.Response:
        body, problem = await self._admit(request, "generate")
        if problem is not None:
            return problem
        words, tokens = self._tokens(body)
        return web.json_response(
            {
                "model_name": request.match_info["model"],
                "model_version": "1",
                "text_output": " ".join(tokens),
                "prompt_tokens": len(words),
                "completion_tokens": len(tokens),
                "finish_reason": "length",
            }
        )

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        body, problem = await self._admit(request, "generate")
        if problem is not None:
            return problem
        words, tokens = self._tokens(body)
        b = self.behaviour
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, token in enumerate(tokens):
            if b.cut_after_events is not None and i >= b.cut_after_events:
                assert request.transport is not None
                request.transport.close()
                return resp
            if b.error_after_events is not None and i >= b.error_after_events:
                await resp.write(b'data: {"error":"' + b.fail_message.encode() + b'"}\n\n')
                break
            event = {
                "model_name": request.match_info["model"],
                "model_version": "1",
                "text_output": token if i == 0 else " " + token,
                "prompt_tokens": len(words),
                "completion_tokens": i + 1,
                "finish_reason": "length" if i == len(tokens) - 1 else "",
            }
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            await asyncio.sleep(0)  # one write per event, as a decoupled model sends them
        await resp.write_eof()
        return resp

    async def infer(self, request: web.Request) -> web.Response:
        body, problem = await self._admit(request, "embedding")
        if problem is not None:
            return problem
        tensor = body["inputs"][0]
        texts = [str(t) for t in tensor["data"]]
        data = [x for t in texts for x in (float(len(t)), 1.0, 0.0, 0.0)]
        output = {"name": "embedding", "datatype": "FP32", "shape": [len(texts), 4], "data": data}
        return web.json_response(
            {"model_name": request.match_info["model"], "model_version": "1", "outputs": [output]}
        )

    async def ready(self, request: web.Request) -> web.Response:
        if request.match_info["model"] in self.models and self.behaviour.ready:
            return web.Response()
        return self._error(400, "model is not ready")

    async def metrics(self, request: web.Request) -> web.Response:
        # Between two scrapes: one more success, which queued queue_ms_per_request.
        queue_us, successes = self._queue
        self._queue = (queue_us + self.behaviour.queue_ms_per_request * 1000, successes + 1)
        lines = []
        for model in self.models:
            labels = f'{{model="{model}",version="1"}}'
            lines.append(f"nv_inference_request_success{labels} {self._queue[1]}")
            lines.append(f"nv_inference_queue_duration_us{labels} {self._queue[0]}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
