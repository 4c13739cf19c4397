"""The price table and the cost of one answer.

Prices are USD per million tokens, looked up by the provider's model name. The
gateway's accounting (``tritonfleet.gateway.proxy.accounting``) asks
:func:`request_cost` what each answer cost, and - when Triton served it - what
the same tokens would have cost on the route's hosted provider: the saving a
platform team reports. The table is built from the defaults below, overridden
by the ``prices`` section of a routes file or a ``--prices FILE``
(:func:`~tritonfleet.desired.gateway.routes_file.load_prices`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Backend = Literal["triton", "hosted"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float


# Public list prices (USD per million tokens: input, output) of the providers
# the brief names; the output prices are the ones the chart documents.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4.1": Price(2.00, 8.00),
    "claude-sonnet-4.5": Price(3.00, 15.00),
    "gemini-2.5-flash": Price(0.30, 2.50),
    "deepseek-v3.2": Price(0.28, 0.42),
}

# Names providers use on the wire for the models above.
DEFAULT_ALIASES: dict[str, str] = {
    "deepseek-chat": "deepseek-v3.2",
    "deepseek-reasoner": "deepseek-v3.2",
    "deepseek-v3.2-exp": "deepseek-v3.2",
    "claude-sonnet-4-5": "claude-sonnet-4.5",
    "gemini-2.5-flash-latest": "gemini-2.5-flash",
}

_DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True, slots=True)
class PriceTable:
    prices: Mapping[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    aliases: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ALIASES))
    triton: Price = Price(0.0, 0.0)  # own cost of Triton tokens, if a team sets one

    def lookup(self, model: str | None) -> Price | None:
        """Price of a provider model name: exact, then without a ``provider/``
        prefix and a date suffix, then through the aliases."""
        if not model:
            return None
        name = model.lower()
        for candidate in (name, name.rsplit("/", 1)[-1]):
            for key in (candidate, _DATE_SUFFIX.sub("", candidate)):
                if key in self.prices:
                    return self.prices[key]
                alias = self.aliases.get(key)
                if alias is not None and alias in self.prices:
                    return self.prices[alias]
        return None


def cost_usd(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000


@dataclass(frozen=True, slots=True)
class Cost:
    """What one answer cost, and what it would have cost on the hosted API."""

    usd: float
    hosted_equivalent_usd: float  # only when Triton served; else 0
    saving_usd: float


def request_cost(
    table: PriceTable,
    hosted_model: str | None,
    backend: Backend,
    prompt_tokens: int,
    completion_tokens: int,
) -> Cost:
    """Cost of an answer from ``backend``, for a route whose provider model is
    ``hosted_model`` (None: no provider, so no hosted equivalent)."""
    hosted_price = table.lookup(hosted_model)
    if backend == "hosted":
        return Cost(cost_usd(hosted_price, prompt_tokens, completion_tokens), 0.0, 0.0)
    own = cost_usd(table.triton, prompt_tokens, completion_tokens)
    if hosted_price is None:
        return Cost(own, 0.0, 0.0)
    equivalent = cost_usd(hosted_price, prompt_tokens, completion_tokens)
    return Cost(own, equivalent, equivalent - own)
