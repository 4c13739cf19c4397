"""A deterministic OpenAI-compatible "hosted provider" for tests and benchmarks.

The gateway's failover target in every test: a real aiohttp server speaking the
OpenAI wire format — ``/v1/chat/completions`` and ``/v1/completions`` (whole
and SSE-streamed, with ``stream_options.include_usage``), ``/v1/embeddings``,
``/v1/models`` — whose answers are a pure function of the request, and which
can be told to misbehave:

* ``fail_status``: answer 5xx (or any status) — for ``fail_count`` requests or until reset;
* ``rate_limit``: answer 429 with ``Retry-After`` (seconds) for ``rate_limit_count`` requests;
* ``delay_ms`` before answering, ``token_delay_ms`` between streamed tokens;
* ``drip_ms``: send the answer (whole or streamed) one byte at a time, this long apart;
* ``break_after_tokens``: cut a stream's connection after N tokens;
* ``die()``/``revive()``: stop listening altogether (connection refused) and come back.

It records every request (path, headers including ``Authorization``, JSON body)
so tests can assert the gateway sent the right key and model name. Control it
from Python (:class:`HostedAPI`, which runs the server on its own thread and
loop) or over HTTP (``POST /admin/behaviour``, ``POST /admin/reset``,
``GET /admin/requests``, ``POST /admin/die``).

Standalone: ``python -m hack.devtools.hosted_api --port 9000 [--api-key KEY]``.

Answers: the completion is ``hosted`` followed by the prompt's words (last user
message for chat), cycled to ``max_tokens`` words (default 8); usage counts
words. Embeddings are 16-dim unit vectors from hashing the words.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_MAX_TOKENS = 8
EMBED_DIM = 16


@dataclass
class Behaviour:
    fail_status: int | None = None
    fail_count: int | None = None  # None: every request while fail_status is set
    rate_limit: float | None = None  # Retry-After seconds
    rate_limit_count: int | None = None
    delay_ms: float = 0.0
    token_delay_ms: float = 0.0
    break_after_tokens: int | None = None
    echo_key_in_errors: bool = False  # like providers that echo the key they got
    drip_ms: float = 0.0  # send every answer byte by byte, this long apart


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.time)


def _words(text: str) -> list[str]:
    return text.split()


def _prompt_of(body: dict[str, Any], chat: bool) -> str:
    if not chat:
        prompt = body.get("prompt", "")
        return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    for msg in reversed(body.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def answer_tokens(prompt: str, max_tokens: int | None) -> list[str]:
    """The deterministic completion, as a list of word tokens."""
    n = max_tokens or DEFAULT_MAX_TOKENS
    source = ["hosted", *_words(prompt)]
    return [source[i % len(source)] for i in range(n)]


def embed(text: str) -> list[float]:
    vec = [0.0] * EMBED_DIM
    for word in _words(text.lower()):
        h = hashlib.sha256(word.encode()).digest()
        vec[h[0] % EMBED_DIM] += 1.0 if h[1] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    return [x / norm for x in vec]


class HostedServer:
    """The aiohttp application and its mutable behaviour (one event loop)."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.behaviour = Behaviour()
        self.requests: list[Recorded] = []
        self.cancelled = 0  # requests whose caller hung up before the answer was complete
        self.app = web.Application(middlewares=[self._count_cancelled])
        r = self.app.router
        r.add_post("/v1/chat/completions", self.chat)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/embeddings", self.embeddings)
        r.add_get("/v1/models", self.models)
        r.add_post("/admin/behaviour", self.admin_behaviour)
        r.add_post("/admin/reset", self.admin_reset)
        r.add_get("/admin/requests", self.admin_requests)

    @web.middleware
    async def _count_cancelled(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    # -- misbehaviour ---------------------------------------------------------------

    async def _drip(
        self, request: web.Request, body: bytes, content_type: str
    ) -> web.StreamResponse:
        """``body`` one byte at a time, ``drip_ms`` apart (headers at once)."""
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        for i in range(len(body)):
            await resp.write(body[i : i + 1])
            await asyncio.sleep(self.behaviour.drip_ms / 1000)
        await resp.write_eof()
        return resp

    def _take(self, count_attr: str) -> bool:
        count = getattr(self.behaviour, count_attr)
        if count is None:
            return True
        if count <= 0:
            return False
        setattr(self.behaviour, count_attr, count - 1)
        return True

    async def _gate(self, request: web.Request) -> tuple[Any, web.Response | None]:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        b = self.behaviour
        auth = request.headers.get("Authorization", "")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            shown = auth.removeprefix("Bearer ") if b.echo_key_in_errors else "***"
            return body, self._error(401, f"Incorrect API key provided: {shown}", "invalid_api_key")
        if b.delay_ms:
            await asyncio.sleep(b.delay_ms / 1000)
        if b.rate_limit is not None and self._take("rate_limit_count"):
            resp = self._error(429, "Rate limit reached", "rate_limit_exceeded")
            resp.headers["Retry-After"] = f"{b.rate_limit:g}"
            return body, resp
        if b.fail_status is not None and self._take("fail_count"):
            message = f"injected failure {b.fail_status}"
            if b.echo_key_in_errors:
                message += f" (request carried {auth})"
            return body, self._error(b.fail_status, message, "injected")
        if not isinstance(body, dict):
            return body, self._error(400, "body must be a JSON object", "invalid_json")
        return body, None

    @staticmethod
    def _error(status: int, message: str, code: str) -> web.Response:
        payload = {"error": {"message": message, "type": "api_error", "param": None, "code": code}}
        return web.json_response(payload, status=status)

    # -- OpenAI endpoints ---------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body, problem = await self._gate(request)
        if problem is not None:
            return problem
        prompt = _prompt_of(body, chat)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        tokens = answer_tokens(prompt, max_tokens)
        model = body.get("model", "hosted-model")
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        usage = {
            "prompt_tokens": len(_words(prompt)),
            "completion_tokens": len(tokens),
            "total_tokens": len(_words(prompt)) + len(tokens),
        }
        if not body.get("stream"):
            text = " ".join(tokens)
            choice: dict[str, Any] = (
                {"index": 0, "message": {"role": "assistant", "content": text}}
                if chat
                else {"index": 0, "text": text, "logprobs": None}
            )
            choice["finish_reason"] = "length"
            answer = {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
            if self.behaviour.drip_ms:
                return await self._drip(request, json.dumps(answer).encode(), "application/json")
            return web.json_response(answer)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        async for chunk in self._chunks(rid, created, model, chat, tokens, usage, include_usage):
            if chunk is None:  # break_after_tokens: drop the connection mid-stream
                assert request.transport is not None
                request.transport.close()
                return resp
            if self.behaviour.drip_ms:
                for i in range(len(chunk)):
                    await resp.write(chunk[i : i + 1])
                    await asyncio.sleep(self.behaviour.drip_ms / 1000)
                continue
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def _chunks(
        self,
        rid: str,
        created: int,
        model: str,
        chat: bool,
        tokens: list[str],
        usage: dict[str, int],
        include_usage: bool,
    ) -> AsyncIterator[bytes | None]:
        obj = "chat.completion.chunk" if chat else "text_completion"

        def frame(choices: list[Any], extra: dict[str, Any] | None = None) -> bytes:
            payload: dict[str, Any] = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": model,
                "choices": choices,
            }
            if extra:
                payload.update(extra)
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        if chat:
            yield frame(
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            )
        b = self.behaviour
        for i, token in enumerate(tokens):
            if b.break_after_tokens is not None and i >= b.break_after_tokens:
                yield None
                return
            if b.token_delay_ms:
                await asyncio.sleep(b.token_delay_ms / 1000)
            text = token if i == 0 else " " + token
            choice = (
                {"index": 0, "delta": {"content": text}, "finish_reason": None}
                if chat
                else {"index": 0, "text": text, "finish_reason": None}
            )
            yield frame([choice])
        last = (
            {"index": 0, "delta": {}, "finish_reason": "length"}
            if chat
            else {"index": 0, "text": "", "finish_reason": "length"}
        )
        yield frame([last])
        if include_usage:
            yield frame([], {"usage": usage})
        yield b"data: [DONE]\n\n"

    async def embeddings(self, request: web.Request) -> web.Response:
        body, problem = await self._gate(request)
        if problem is not None:
            return problem
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else list(raw or [])
        tokens = sum(len(_words(t)) for t in texts)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": embed(t)}
                    for i, t in enumerate(texts)
                ],
                "model": body.get("model", "hosted-embed"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "hosted-model", "object": "model", "created": 0}]}
        )

    # -- admin ------------------------------------------------------------------------

    def set(self, **changes: Any) -> None:
        for key, value in changes.items():
            if not hasattr(self.behaviour, key):
                raise ValueError(f"unknown behaviour {key!r}")
            setattr(self.behaviour, key, value)

    def reset(self) -> None:
        self.behaviour = Behaviour()
        self.requests.clear()

    async def admin_behaviour(self, request: web.Request) -> web.Response:
        try:
            self.set(**await request.json())
        except (ValueError, TypeError) as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response(asdict(self.behaviour))

    async def admin_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response(asdict(self.behaviour))

    async def admin_requests(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(r) for r in self.requests])


class HostedAPI:
    """Runs a :class:`HostedServer` on its own thread so synchronous tests
    (and the openai SDK's sync client) can use it.

    >>> api = HostedAPI(api_key="sk-test").start()
    >>> api.base_url          # http://127.0.0.1:PORT/v1
    >>> api.set(fail_status=503, fail_count=2); api.requests; api.die(); api.revive()
    >>> api.stop()
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None) -> None:
        self.host = host
        self.port = port
        self.server = HostedServer(api_key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self) -> None:
        self._runner = web.AppRunner(self.server.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> HostedAPI:
        self._thread.start()
        self._call(self._listen())
        return self

    def die(self) -> None:
        """Stop listening: new connections are refused (in-flight ones are cut)."""
        self._call(self._close())

    def revive(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def set(self, **changes: Any) -> None:
        self._loop.call_soon_threadsafe(lambda: self.server.set(**changes))
        # make the change visible before returning
        self._call(asyncio.sleep(0))

    def reset(self) -> None:
        self._call(self._reset())

    async def _reset(self) -> None:
        self.server.reset()

    @property
    def requests(self) -> list[Recorded]:
        return list(self.server.requests)

    def __enter__(self) -> HostedAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Deterministic OpenAI-compatible test server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--api-key", help="require this bearer key")
    args = parser.parse_args(argv)
    server = HostedServer(args.api_key)
    print(f"hosted API stand-in on http://{args.host}:{args.port}/v1", flush=True)
    web.run_app(server.app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
