"""OpenAI ↔ Triton field mapping: how an OpenAI request becomes a Triton
``generate``/``generate_stream``/``infer`` body, and how Triton's outputs become
an OpenAI response, chunk or usage block.

Sits between the gateway's HTTP handlers (which parse bytes and write bytes)
and the route table (which says, per model, which Triton inputs and outputs
carry which OpenAI field). Everything here is pure: dicts in, dicts out, no
I/O, so every rule — chat templates, unsupported parameters, stop sequences,
token estimation — is unit-tested without a server.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# --- errors -------------------------------------------------------------------


class RequestError(ValueError):
    """The client's request cannot be served as sent: an OpenAI-style 400."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = "invalid_request_error",
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


# --- chat templates -----------------------------------------------------------

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    """How a list of chat messages becomes one prompt string.

    ``message`` is applied to every message with ``{role}`` and ``{content}``
    substituted (plain replacement, so braces inside content are safe);
    ``begin`` opens the prompt and ``generation_prompt`` closes it, cueing the
    model to answer as the assistant. ``role_names`` renames roles for models
    trained with other names (e.g. ``developer`` → ``system``).
    """

    message: str
    begin: str = ""
    generation_prompt: str = ""
    role_names: Mapping[str, str] = field(default_factory=dict)

    def render(self, messages: Sequence[tuple[str, str]]) -> str:
        # Roles come from a fixed set, so substituting them first is safe; the
        # content goes in last and is never scanned for placeholders.
        parts = [self.begin]
        for role, content in messages:
            text = self.message.replace("{role}", self.role_names.get(role, role))
            before, sep, after = text.partition("{content}")
            parts.append(before + content + after if sep else text)
        parts.append(self.generation_prompt)
        return "".join(parts)


BUILTIN_TEMPLATES: dict[str, ChatTemplate] = {
    # ChatML: Qwen, many Mistral/Llama fine-tunes, OpenAI's own legacy format.
    "chatml": ChatTemplate(
        message="<|im_start|>{role}\n{content}<|im_end|>\n",
        generation_prompt="<|im_start|>assistant\n",
        role_names={"developer": "system"},
    ),
    # Llama 3.x instruct.
    "llama3": ChatTemplate(
        begin="<|begin_of_text|>",
        message="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
        role_names={"developer": "system", "tool": "ipython"},
    ),
    # Human-readable transcript: base models and toy models.
    "plain": ChatTemplate(message="{role}: {content}\n", generation_prompt="assistant:"),
    # Contents only, one per line: the model does its own templating.
    "raw": ChatTemplate(message="{content}\n"),
}


def template_from(value: str | Mapping[str, Any]) -> ChatTemplate:
    """A builtin template by name, or a custom one from its fields."""
    if isinstance(value, str):
        try:
            return BUILTIN_TEMPLATES[value]
        except KeyError:
            known = ", ".join(sorted(BUILTIN_TEMPLATES))
            raise ValueError(f"unknown chat template {value!r} (builtin: {known})") from None
    message = value.get("message")
    if not isinstance(message, str) or "{content}" not in message:
        raise ValueError("a custom chat template needs `message` containing {content}")
    return ChatTemplate(
        message=message,
        begin=str(value.get("begin", "")),
        generation_prompt=str(value.get("generationPrompt", "")),
        role_names=dict(value.get("roleNames") or {}),
    )


def message_pairs(messages: Any) -> list[tuple[str, str]]:
    """Validate OpenAI ``messages`` and reduce them to (role, text) pairs."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty array", param="messages")
    pairs: list[tuple[str, str]] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise RequestError(f"{where} must be an object", param=where)
        role = msg.get("role")
        if role not in ROLES:
            raise RequestError(
                f"{where}.role must be one of {sorted(ROLES)}", param=f"{where}.role"
            )
        if msg.get("tool_calls") or msg.get("function_call"):
            raise RequestError(
                "tool calls are not supported by this model",
                param=f"{where}.tool_calls",
                code="unsupported_parameter",
            )
        pairs.append((role, _content_text(msg.get("content"), where)))
    return pairs


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise RequestError(
                    "only text content parts are supported by this model",
                    param=f"{where}.content[{j}]",
                    code="unsupported_content",
                )
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise RequestError(f"{where}.content must be a string or an array", param=f"{where}.content")


# --- the per-model mapping ------------------------------------------------------

StreamOutput = Literal["delta", "cumulative"]

# OpenAI sampling fields the gateway can pass to a Triton input when mapped.
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty")

# Fields with no effect on the generated text: always accepted, never sent on.
HARMLESS_FIELDS = frozenset({"user", "store", "metadata", "service_tier", "parallel_tool_calls"})

# Values that mean "not used"; such a field is accepted even when unmapped.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "top_p": (1, 1.0),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False, None),
    "top_logprobs": (0, None),
    "logit_bias": ({},),
    "tools": ([],),
    "tool_choice": ("none",),
    "response_format": ({"type": "text"},),
    "echo": (False,),
    "best_of": (1,),
    "suffix": ("",),
    "n": (1,),
}

_CORE_CHAT = frozenset({"model", "messages", "stream", "stream_options"})
_CORE_COMPLETION = frozenset({"model", "prompt", "stream", "stream_options"})


@dataclass(frozen=True, slots=True)
class GenerateMapping:
    """Per-model mapping of OpenAI fields to a Triton generate-style model.

    ``inputs`` maps an OpenAI request field (``max_tokens``, ``temperature``,
    ``top_p``, ``stop``, penalties, ``seed`` or any custom field a client sends
    through ``extra_body``) to the name of the Triton input that receives it.
    A field sent but not mapped is refused with 400 unless it is neutral
    (e.g. ``top_p: 1``) or listed in ``ignore``; ``stop`` unmapped is applied
    by the gateway itself on the generated text.
    """

    prompt_input: str = "text_input"
    inputs: Mapping[str, str] = field(
        default_factory=lambda: {
            "max_tokens": "max_tokens",
            "temperature": "temperature",
            "top_p": "top_p",
        }
    )
    text_output: str = "text_output"
    prompt_tokens_output: str | None = "prompt_tokens"
    completion_tokens_output: str | None = "completion_tokens"
    finish_reason_output: str | None = "finish_reason"
    chat_template: ChatTemplate = BUILTIN_TEMPLATES["chatml"]
    extra_inputs: Mapping[str, Any] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset({"seed"})
    stream_output: StreamOutput = "delta"
    decoupled: bool = False

    @property
    def counts_tokens(self) -> bool:
        """Whether the model reports both token counts (usage not estimated)."""
        return self.prompt_tokens_output is not None and self.completion_tokens_output is not None


@dataclass(frozen=True, slots=True)
class EmbeddingMapping:
    """Per-model mapping of ``/v1/embeddings`` to a Triton ``infer`` call."""

    input: str = "text"
    output: str = "embedding"
    batched: bool = True  # max_batch_size > 0: shape [n, 1] instead of [n]
    max_batch_size: int = 0  # > 0: split larger requests into several infers


# --- requests ---------------------------------------------------------------------


@dataclass(slots=True)
class GenerateRequest:
    """An OpenAI request translated for Triton, plus what the answer needs."""

    body: dict[str, Any]
    prompt: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    stops: tuple[str, ...]  # applied by the gateway (stop not mapped to an input)
    chat: bool


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"'{name}' must be a number", param=name)
    if not lo <= value <= hi:
        raise RequestError(f"'{name}' must be between {lo:g} and {hi:g}", param=name)
    return float(value)


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value) and len(value) <= 4:
        return tuple(s for s in value if s)
    raise RequestError("'stop' must be a string or an array of up to 4 strings", param="stop")


def _is_neutral(name: str, value: Any) -> bool:
    return value is None or value in _NEUTRAL.get(name, ())


# Bounds on values that leave the gateway, so a value no backend can read is the
# client's 400 here, never a backend failure held against a pod: Triton reads
# max_tokens as INT32 (and silently wraps larger values), and cannot parse
# integers beyond 64 bits or nested JSON into a tensor.
MAX_TOKENS_LIMIT = 2**31 - 1
_FLOAT32_MAX = 3.4028234663852886e38
_PENALTY = (-2.0, 2.0)  # presence_penalty and frequency_penalty, as OpenAI bounds them


def _tensor_value(value: Any, name: str) -> Any:
    """A custom field bound for a Triton input: a scalar or a flat list of scalars."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, float) and not -_FLOAT32_MAX <= item <= _FLOAT32_MAX:
            raise RequestError(f"'{name}' is out of range for a 32-bit float", param=name)
        if not isinstance(item, str | int | float | bool):
            raise RequestError(
                f"'{name}' must be a string, number or boolean, or a list of them", param=name
            )
    return value


def build_generate_request(
    req: Mapping[str, Any], mapping: GenerateMapping, *, chat: bool
) -> GenerateRequest:
    """Translate a parsed ``/v1/chat/completions`` or ``/v1/completions`` body."""
    if chat:
        prompt = mapping.chat_template.render(message_pairs(req.get("messages")))
    else:
        prompt = _completion_prompt(req.get("prompt"))
    stream = req.get("stream") is True
    options = req.get("stream_options")
    include_usage = bool(stream and isinstance(options, dict) and options.get("include_usage"))

    body: dict[str, Any] = {mapping.prompt_input: prompt}
    body.update(mapping.extra_inputs)
    max_tokens: int | None = None
    stops: tuple[str, ...] = ()
    core = _CORE_CHAT if chat else _CORE_COMPLETION
    for name, value in req.items():
        if name in core or name in HARMLESS_FIELDS:
            continue
        if name == "max_completion_tokens":
            name = "max_tokens"
        if name == "max_tokens":
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 1 <= value <= MAX_TOKENS_LIMIT
            ):
                raise RequestError(
                    f"'max_tokens' must be a positive integer up to {MAX_TOKENS_LIMIT}", param=name
                )
            max_tokens = value
        elif name == "temperature" and value is not None:
            _number(value, name, 0.0, 2.0)
        elif name == "top_p" and value is not None:
            _number(value, name, 0.0, 1.0)
        elif name in ("presence_penalty", "frequency_penalty") and value is not None:
            _number(value, name, *_PENALTY)
        elif (
            name == "seed"
            and value is not None
            and (isinstance(value, bool) or not isinstance(value, int))
        ):
            raise RequestError("'seed' must be an integer", param=name)
        elif name == "stop":
            stops = _stops(value)
            if "stop" in mapping.inputs:
                if stops:
                    body[mapping.inputs["stop"]] = list(stops)
                stops = ()
            continue
        elif name == "n" and value not in (None, 1):
            raise RequestError("only n=1 is supported", param="n", code="unsupported_parameter")
        target = mapping.inputs.get(name)
        if target is not None:
            if value is not None:
                body[target] = _tensor_value(value, name)
        elif not (name in mapping.ignore or _is_neutral(name, value)):
            if name in _NEUTRAL or name in SAMPLING_FIELDS or name in ("seed", "stop"):
                message = f"Unsupported parameter for this model: '{name}'"
            else:
                message = f"Unrecognized request argument supplied: {name}"
            raise RequestError(message, param=name, code="unsupported_parameter")
    return GenerateRequest(
        body=body,
        prompt=prompt,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        stops=stops,
        chat=chat,
    )


def _completion_prompt(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, str) for p in prompt):
        raise RequestError(
            "batched prompts are not supported; send one prompt per request",
            param="prompt",
            code="unsupported_parameter",
        )
    raise RequestError("'prompt' must be a string", param="prompt")


# --- responses ----------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """Rough token count when the model reports none: ~4 characters per token,
    the usual rule of thumb for English with BPE tokenizers."""
    return math.ceil(len(text) / 4) if text else 0


_FINISH = {"length": "length", "stop": "stop", "eos": "stop", "end_id": "stop"}


def finish_reason_of(raw: Any, completion_tokens: int, max_tokens: int | None) -> str:
    if isinstance(raw, str) and raw:
        return _FINISH.get(raw, "stop")
    if max_tokens is not None and completion_tokens >= max_tokens:
        return "length"
    return "stop"


def _scalar(value: Any) -> Any:
    # Triton's generate returns single-element outputs as scalars, batched ones as lists.
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def _int_or_none(value: Any) -> int | None:
    value = _scalar(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut before the stop sequence that is completed first, as generation would have stopped
    there: in "XXaX" with stops "a" and "XaX", "a" ends first, so the answer is "XX" even though
    "XaX" starts earlier. (Choosing by start made a streamed answer, which sees "XXa" first,
    differ from the same text answered whole.) Among stops ending together the longer one wins."""
    ends = [(i + len(s), i) for i, s in ((text.find(s), s) for s in stops) if i >= 0]
    if not ends:
        return text, False
    _, cut = min(ends)
    return text[:cut], True


@dataclass(slots=True)
class Generation:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    estimated: bool


def parse_generate_response(
    resp: Mapping[str, Any], mapping: GenerateMapping, req: GenerateRequest
) -> Generation:
    """A Triton ``generate`` answer → text, finish reason and usage."""
    raw_text = _scalar(resp.get(mapping.text_output, ""))
    text = raw_text if isinstance(raw_text, str) else str(raw_text)
    text, stopped = _cut_at_stop(text, req.stops)
    prompt_tokens = (
        _int_or_none(resp.get(mapping.prompt_tokens_output))
        if mapping.prompt_tokens_output
        else None
    )
    completion_tokens = (
        _int_or_none(resp.get(mapping.completion_tokens_output))
        if mapping.completion_tokens_output
        else None
    )
    estimated = prompt_tokens is None or completion_tokens is None or stopped
    if prompt_tokens is None:
        prompt_tokens = estimate_tokens(req.prompt)
    if completion_tokens is None or stopped:
        # After a gateway-side stop the model's count covers text we dropped.
        completion_tokens = estimate_tokens(text)
    raw_finish = (
        _scalar(resp.get(mapping.finish_reason_output)) if mapping.finish_reason_output else None
    )
    finish = "stop" if stopped else finish_reason_of(raw_finish, completion_tokens, req.max_tokens)
    return Generation(text, finish, prompt_tokens, completion_tokens, estimated)


class StreamAssembler:
    """Turns Triton ``generate_stream`` events into text deltas for the client.

    Handles models that stream cumulative text, applies stop sequences the
    model does not know (holding back a tail that could be the start of one,
    so a stop string split across tokens is still caught) and keeps the token
    counts the model reports.
    """

    __slots__ = (
        "_held",
        "_mapping",
        "_req",
        "_seen",
        "completion_tokens",
        "done",
        "finish_raw",
        "prompt_tokens",
        "stopped",
        "text",
    )

    def __init__(self, mapping: GenerateMapping, req: GenerateRequest) -> None:
        self._mapping = mapping
        self._req = req
        self._seen = ""  # cumulative text from the model (cumulative mode)
        self._held = ""  # text not yet released because it may begin a stop sequence
        self.text = ""  # text released to the client so far
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.finish_raw: Any = None
        self.stopped = False
        self.done = False

    def feed(self, event: Mapping[str, Any]) -> str:
        """One event → the text to send now (may be empty)."""
        if self.done:
            return ""
        m = self._mapping
        raw = _scalar(event.get(m.text_output, ""))
        piece = raw if isinstance(raw, str) else str(raw)
        if m.stream_output == "cumulative":
            piece, self._seen = piece[len(self._seen) :], piece
        if m.prompt_tokens_output:
            count = _int_or_none(event.get(m.prompt_tokens_output))
            if count is not None:
                self.prompt_tokens = count
        if m.completion_tokens_output:
            count = _int_or_none(event.get(m.completion_tokens_output))
            if count is not None:
                self.completion_tokens = count
        if m.finish_reason_output:
            finish = _scalar(event.get(m.finish_reason_output))
            if finish:
                self.finish_raw = finish
        return self._release(piece)

    def _release(self, piece: str) -> str:
        stops = self._req.stops
        if not stops:
            self.text += piece
            return piece
        pending = self._held + piece
        cut, stopped = _cut_at_stop(pending, stops)
        if stopped:
            self.stopped = self.done = True
            self._held = ""
            self.text += cut
            return cut
        # Hold back the longest tail that is a prefix of some stop sequence.
        keep = 0
        for stop in stops:
            for n in range(min(len(stop) - 1, len(pending)), keep, -1):
                if pending.endswith(stop[:n]):
                    keep = n
                    break
        out = pending[: len(pending) - keep]
        self._held = pending[len(pending) - keep :]
        self.text += out
        return out

    def flush(self) -> str:
        """At the end of the stream: release held text (it never became a stop)."""
        out, self._held = self._held, ""
        self.text += out
        return out

    def result(self) -> Generation:
        estimated = self.prompt_tokens is None or self.completion_tokens is None or self.stopped
        prompt_tokens = (
            self.prompt_tokens
            if self.prompt_tokens is not None
            else estimate_tokens(self._req.prompt)
        )
        completion_tokens = (
            estimate_tokens(self.text)
            if self.completion_tokens is None or self.stopped
            else self.completion_tokens
        )
        finish = (
            "stop"
            if self.stopped
            else finish_reason_of(self.finish_raw, completion_tokens, self._req.max_tokens)
        )
        return Generation(self.text, finish, prompt_tokens, completion_tokens, estimated)


# --- OpenAI response bodies ---------------------------------------------------------


def usage_block(gen: Generation) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "total_tokens": gen.prompt_tokens + gen.completion_tokens,
    }
    if gen.estimated:
        usage["tritonfleet_estimated"] = True
    return usage


def completion_body(
    rid: str, created: int, model: str, gen: Generation, *, chat: bool
) -> dict[str, Any]:
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": gen.text},
            "logprobs": None,
            "finish_reason": gen.finish_reason,
        }
    else:
        choice = {
            "index": 0,
            "text": gen.text,
            "logprobs": None,
            "finish_reason": gen.finish_reason,
        }
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage_block(gen),
    }


def chunk_body(
    rid: str,
    created: int,
    model: str,
    *,
    chat: bool,
    text: str | None,
    finish_reason: str | None = None,
    first: bool = False,
) -> dict[str, Any]:
    """One streamed chunk: a text delta, or the closing one with ``finish_reason``."""
    if chat:
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
    else:
        choice = {
            "index": 0,
            "text": text or "",
            "logprobs": None,
            "finish_reason": finish_reason,
        }
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
    }


def usage_chunk(
    rid: str, created: int, model: str, gen: Generation, *, chat: bool
) -> dict[str, Any]:
    """The extra last chunk OpenAI sends when ``stream_options.include_usage`` is set."""
    return {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_block(gen),
    }


# --- embeddings -----------------------------------------------------------------------


@dataclass(slots=True)
class EmbeddingRequest:
    texts: list[str]
    base64: bool


def build_embedding_request(req: Mapping[str, Any]) -> EmbeddingRequest:
    """Validate a ``/v1/embeddings`` body (text inputs only)."""
    raw = req.get("input")
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        texts = list(raw)
    elif isinstance(raw, list) and raw:
        raise RequestError(
            "token-array inputs are not supported; send strings",
            param="input",
            code="unsupported_parameter",
        )
    else:
        raise RequestError(
            "'input' must be a string or a non-empty array of strings", param="input"
        )
    if len(texts) > 2048:
        raise RequestError("'input' may hold at most 2048 strings", param="input")
    fmt = req.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise RequestError("'encoding_format' must be float or base64", param="encoding_format")
    for name, value in req.items():
        if name in ("model", "input", "encoding_format") or name in HARMLESS_FIELDS:
            continue
        if value is not None:
            raise RequestError(
                f"Unsupported parameter for this model: '{name}'",
                param=name,
                code="unsupported_parameter",
            )
    return EmbeddingRequest(texts=texts, base64=fmt == "base64")


def embedding_batches(texts: Sequence[str], mapping: EmbeddingMapping) -> list[Sequence[str]]:
    size = mapping.max_batch_size
    if size <= 0 or len(texts) <= size:
        return [texts]
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def infer_body(texts: Sequence[str], mapping: EmbeddingMapping) -> dict[str, Any]:
    """The KServe v2 ``infer`` body for one batch of texts."""
    shape = [len(texts), 1] if mapping.batched else [len(texts)]
    return {
        "inputs": [{"name": mapping.input, "shape": shape, "datatype": "BYTES", "data": texts}],
        "outputs": [{"name": mapping.output}],
    }


def parse_infer_embeddings(
    resp: Mapping[str, Any], mapping: EmbeddingMapping, n: int
) -> list[list[float]]:
    """The ``infer`` answer → one vector per input text."""
    outputs = resp.get("outputs")
    if not isinstance(outputs, list):
        raise ValueError("infer response has no outputs")
    out = next(
        (o for o in outputs if isinstance(o, dict) and o.get("name") == mapping.output), None
    )
    if out is None:
        raise ValueError(f"infer response has no output {mapping.output!r}")
    data = out.get("data")
    if not isinstance(data, list) or n <= 0 or len(data) % n:
        raise ValueError(f"output {mapping.output!r} does not split into {n} vectors")
    dim = len(data) // n
    return [[float(x) for x in data[i * dim : (i + 1) * dim]] for i in range(n)]


def embeddings_body(
    model: str, vectors: Sequence[Sequence[float]], texts: Sequence[str], *, b64: bool
) -> dict[str, Any]:
    tokens = sum(estimate_tokens(t) for t in texts)
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": (
                base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if b64 else list(v)
            ),
        }
        for i, v in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "tritonfleet_estimated": True},
    }
