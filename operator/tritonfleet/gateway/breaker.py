"""Circuit breakers and the retry budget: the gateway's memory of what failed.

The gateway keeps one :class:`CircuitBreaker` per (model, pod), one per model
(tripped only when a request found *no* Triton pod able to answer) and one per
model for its hosted provider. A :class:`RetryBudget` per model caps how many
re-sends to Triton the gateway makes, so a struggling fleet is not hit with a
retry storm. Both take the clock as a parameter: they are plain state machines,
unit-tested with a fake clock, and cost a few attribute reads per request.

States (the value is what the ``tritonfleet_gateway_breaker_state`` gauge shows):

* CLOSED (0) — requests flow; ``failure_threshold`` consecutive failures, or one
  hard failure (connection refused: nothing listens there), open it.
* OPEN (2) — no requests for ``open_s``; each failed probe doubles that, up to
  ``max_open_s``.
* HALF_OPEN (1) — after ``open_s``, or as soon as the health prober sees the
  model ready again, exactly one request at a time is let through as a probe;
  success closes the breaker, failure re-opens it. A probe that fails costs the
  client nothing: the gateway retries it elsewhere before any byte is sent.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import IntEnum

from tritonfleet.desired.gateway.routes import BreakerSettings

Clock = Callable[[], float]


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    __slots__ = (
        "_clock",
        "_failures",
        "_open_for",
        "_open_until",
        "_probing",
        "_state",
        "on_change",
        "settings",
    )

    def __init__(
        self,
        settings: BreakerSettings,
        clock: Clock = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._open_for = settings.open_s
        self._open_until = 0.0
        self._probing = False
        self.on_change = on_change

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self.on_change is not None:
                self.on_change(state)

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            self._probing = False
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def admits(self) -> bool:
        """Whether a request may be sent now (no side effect but the timer)."""
        state = self.state
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._probing
        )

    def acquire(self) -> bool:
        """Claim the right to send: always when closed, once when half-open."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def release(self) -> None:
        """The request ended with no verdict on the backend (client error, cancel)."""
        self._probing = False

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        self._open_for = self.settings.open_s
        self._set(BreakerState.CLOSED)

    def failure(self, *, hard: bool = False) -> None:
        state = self.state
        if state is BreakerState.OPEN:
            return  # a straggler that started before the breaker opened
        if state is BreakerState.HALF_OPEN:
            # The probe failed: stay away longer each time.
            self._open_for = min(self._open_for * 2, self.settings.max_open_s)
            self._trip()
            return
        self._failures += 1
        if hard or self._failures >= self.settings.failure_threshold:
            self._trip()

    def _trip(self) -> None:
        self._failures = 0
        self._probing = False
        self._open_until = self._clock() + self._open_for
        self._set(BreakerState.OPEN)

    def probe_ok(self) -> None:
        """The health prober found the backend ready: skip the rest of the open
        period and let the next request probe."""
        if self._state is BreakerState.OPEN:
            self._open_until = self._clock()
            self._probing = False
            self._set(BreakerState.HALF_OPEN)


class RetryBudget:
    """Finagle-style retry budget: re-sends allowed in a sliding window are
    ``min_per_s * window + percent/100 * requests in the window``.

    Kept in one-second buckets, so a deposit or withdrawal is O(1).
    """

    __slots__ = ("_buckets", "_clock", "_deposits", "_min", "_ratio", "_window", "_withdrawals")

    def __init__(
        self,
        percent: float,
        min_per_s: float,
        window_s: int = 10,
        clock: Clock = time.monotonic,
    ) -> None:
        self._ratio = percent / 100.0
        self._min = min_per_s * window_s
        self._window = window_s
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, deposits, withdrawals]
        self._deposits = 0
        self._withdrawals = 0

    def _bucket(self) -> list[int]:
        now = int(self._clock())
        buckets = self._buckets
        while buckets and buckets[0][0] <= now - self._window:
            _, d, w = buckets.popleft()
            self._deposits -= d
            self._withdrawals -= w
        if not buckets or buckets[-1][0] != now:
            buckets.append([now, 0, 0])
        return buckets[-1]

    def deposit(self) -> None:
        """Count one original request."""
        self._bucket()[1] += 1
        self._deposits += 1

    def try_withdraw(self) -> bool:
        """Take one re-send from the budget, if there is one left."""
        bucket = self._bucket()
        if self._withdrawals + 1 > self._min + self._ratio * self._deposits:
            return False
        bucket[2] += 1
        self._withdrawals += 1
        return True

    @property
    def available(self) -> float:
        self._bucket()
        return self._min + self._ratio * self._deposits - self._withdrawals
