"""Prices and cost (desired/gateway/prices.py): lookups by provider name, the documented
defaults, and what an answer cost on either backend."""

from __future__ import annotations

import pytest

from tritonfleet.desired.gateway.prices import (
    DEFAULT_PRICES,
    Price,
    PriceTable,
    cost_usd,
    request_cost,
)


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("gpt-4.1", Price(2.0, 8.0)),
        ("GPT-4.1-2025-04-14", Price(2.0, 8.0)),
        ("openai/gpt-4.1", Price(2.0, 8.0)),
        ("claude-sonnet-4-5-20250929", Price(3.0, 15.0)),
        ("gemini-2.5-flash", Price(0.30, 2.50)),
        ("deepseek-chat", Price(0.28, 0.42)),
        ("gpt-4.1-mini", None),  # not a prefix match: a different model
        (None, None),
    ],
)
def test_price_lookup(name: str | None, want: Price | None) -> None:
    assert PriceTable().lookup(name) == want


def test_default_output_prices_are_the_documented_ones() -> None:
    assert {k: v.output for k, v in DEFAULT_PRICES.items()} == {
        "gpt-4.1": 8.0,
        "claude-sonnet-4.5": 15.0,
        "gemini-2.5-flash": 2.5,
        "deepseek-v3.2": 0.42,
    }


def test_cost_math() -> None:
    assert cost_usd(Price(2.0, 8.0), 1_000_000, 500_000) == pytest.approx(6.0)
    assert cost_usd(None, 10, 10) == 0.0
    hosted = request_cost(PriceTable(), "gpt-4.1", "hosted", 1000, 2000)
    assert hosted.usd == pytest.approx(0.018) and hosted.hosted_equivalent_usd == 0
    own = PriceTable(triton=Price(0.0, 1.0))
    triton = request_cost(own, "gpt-4.1", "triton", 1000, 2000)
    assert triton.usd == pytest.approx(0.002)
    assert triton.hosted_equivalent_usd == pytest.approx(0.018)
    assert triton.saving_usd == pytest.approx(0.016)
    # a provider model with no price (or no provider at all): no saving to report
    assert request_cost(PriceTable(), "mystery", "triton", 5, 5).hosted_equivalent_usd == 0
    assert request_cost(own, None, "triton", 5, 5) == request_cost(own, "mystery", "triton", 5, 5)
