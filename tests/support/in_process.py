"""Helpers for the in-process tests of the operator's processes (tests/unit): run a
harness on a fresh event loop, and count how often owner bodies are parsed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from tritonfleet.desired.kube import views

H = TypeVar("H")


def run_in_loop(
    make: Callable[[], H],
    test: Callable[[H], Awaitable[None]],
    stop: Callable[[H], Awaitable[None]],
) -> None:
    """``test(make())`` on a new event loop, the harness always stopped, so that
    background passes and timers do not outlive the test."""

    async def main() -> None:
        harness = make()
        try:
            await test(harness)
        finally:
            await stop(harness)

    asyncio.run(main())


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the owner bodies ``desired.kube.views`` parses (validates and renders)
    from now on, in order."""
    seen: list[str] = []
    real = views.parse_owner

    def counting(body: Any) -> Any:
        seen.append(body["metadata"]["name"])
        return real(body)

    monkeypatch.setattr(views, "parse_owner", counting)
    return seen
