"""What one request leaves in ``/metrics``: latency, time to first token, tokens,
cost, errors, retries and failovers.

The dispatcher opens a :class:`Ledger` when a request arrives; the attempt
policy, the backend calls and the stream relays write to it as the request
goes, and nothing else on the request path touches
:class:`~tritonfleet.gateway.metrics.GatewayMetrics`. Token counts come from
the backend's answer - Triton's outputs (through the mapping) or the
provider's ``usage`` (read by :func:`hosted_usage` and :func:`usage_numbers`
here) - and are estimated when the answer has none.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tritonfleet.desired.gateway.openai_mapping import GenerateRequest, estimate_tokens
from tritonfleet.desired.gateway.prices import Backend, PriceTable, request_cost
from tritonfleet.desired.gateway.routes import Route
from tritonfleet.gateway.metrics import GatewayMetrics


class Ledger:
    """The metrics of one request, timed from its arrival (``t0``)."""

    __slots__ = ("_hosted_model", "_metrics", "_prices", "first_token_at", "model", "t0")

    def __init__(self, metrics: GatewayMetrics, prices: PriceTable, route: Route) -> None:
        self._metrics = metrics
        self._prices = prices
        hosted = route.hosted
        self._hosted_model = hosted.model if hosted is not None else None
        self.model = route.name
        self.t0 = time.perf_counter()
        self.first_token_at: float | None = None

    def demand(self, activation: bool) -> None:
        """A request arrived; ``activation``: it found no ready replica."""
        self._metrics.demand(self.model, activation)

    def answered(self, backend: str, status: int) -> None:
        """The answer is complete (``backend`` ``none``: nobody could answer)."""
        self._metrics.answered(self.model, backend, status, time.perf_counter() - self.t0)

    def first_token(self, backend: Backend) -> None:
        self.first_token_at = time.perf_counter()
        self._metrics.first_token(self.model, backend, self.first_token_at - self.t0)

    def attempt(self, revision: str | None, outcome: str, started: float) -> None:
        """One Triton attempt at a pod of ``revision``: ok, failed or rejected; an ok
        one's latency runs from ``started`` to its first token, or to its whole answer."""
        if not revision:
            return
        seconds = None
        if outcome == "ok":
            seconds = (self.first_token_at or time.perf_counter()) - started
        self._metrics.revisions.attempt(self.model, revision, outcome, seconds)

    def tokens(self, backend: Backend, prompt: int, completion: int, estimated: bool) -> None:
        """The tokens of the answer, and their cost from the price table."""
        cost = request_cost(self._prices, self._hosted_model, backend, prompt, completion)
        self._metrics.usage(self.model, backend, prompt, completion, estimated, cost)

    def error(self, backend: Backend, kind: str) -> None:
        """One failed attempt (the request may still be served)."""
        self._metrics.error(self.model, backend, kind)

    def failover(self, reason: str) -> None:
        self._metrics.failover(self.model, reason)

    def retried(self) -> None:
        self._metrics.retries.labels(self.model).inc()

    def budget_exhausted(self) -> None:
        self._metrics.budget_exhausted.labels(self.model).inc()


# --- usage in a provider's answer -------------------------------------------------------


def collect_text(obj: dict[str, Any], into: list[str]) -> None:
    """Append the text of a streamed chunk's first choice (chat delta or completion)."""
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


def usage_numbers(usage: Any, treq: GenerateRequest, completion_text: str) -> tuple[int, int, bool]:
    """(prompt, completion, estimated) from a provider's ``usage`` block, else estimated."""
    if isinstance(usage, dict):
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(p, int) and isinstance(c, int):
            return p, c, False
    return estimate_tokens(treq.prompt), estimate_tokens(completion_text), True


def hosted_usage(raw: bytes, treq: GenerateRequest) -> tuple[int, int, bool]:
    """(prompt, completion, estimated) of a whole provider answer."""
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
        return usage_numbers(obj.get("usage"), treq, "".join(text))
    return estimate_tokens(treq.prompt), 0, True


def hosted_embedding_usage(raw: bytes, texts: list[str]) -> tuple[int, bool]:
    """(prompt tokens, estimated) of a provider's embeddings answer."""
    try:
        usage = json.loads(raw).get("usage") or {}
        return int(usage.get("prompt_tokens", 0)), "prompt_tokens" not in usage
    except (ValueError, AttributeError, TypeError):
        return sum(estimate_tokens(t) for t in texts), True
