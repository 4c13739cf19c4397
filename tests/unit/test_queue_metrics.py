"""Unit tests of the pure queue-time math (``tritonfleet.desired.triton.metrics``).

Why: the autoscaler trusts this number; a negative value after a pod restart, a
per-item instead of per-request mean, or a "no data" read as 0 would scale fleets
wrongly. Parsing is tested on real Triton 2.51 exposition, the window math on
hand-picked cases and on random monotone counters with random resets (hypothesis).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritonfleet.desired.gateway.plan import queue_counters
from tritonfleet.desired.triton.metrics import (
    ModelCounters,
    NoData,
    PodHistory,
    QueueSignal,
    Sample,
    counter_increase,
    pair_increase,
    parse_triton_metrics,
    window_signal,
)

# Shape of tritonserver 2.51's /metrics (trimmed).
TRITON_TEXT = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="toy_llm",version="1"} 12
nv_inference_request_success{model="toy_llm",version="2"} 3
nv_inference_request_success{model="toy_embed",version="1"} 0
# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="toy_llm",reason="BACKEND",version="1"} 4
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="toy_llm",version="1"} 96
# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="toy_llm",version="1"} 24000
nv_inference_queue_duration_us{model="toy_llm",version="2"} 6000
nv_inference_queue_duration_us{model="toy_embed",version="1"} 0
# HELP nv_inference_pending_request_count Instantaneous number of pending requests
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="toy_llm",version="1"} 5
nv_inference_pending_request_count{model="toy_llm",version="2"} 1
nv_inference_pending_request_count{model="toy_embed",version="1"} 0
# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.25
"""


def test_parse_sums_versions_and_ignores_other_series() -> None:
    assert parse_triton_metrics(TRITON_TEXT) == {
        "toy_llm": ModelCounters(queue_us=30000.0, success=15.0, pending=6.0),
        "toy_embed": ModelCounters(0.0, 0.0, 0.0),
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("# only a comment\n", {}),
        ('nv_inference_request_success{version="1"} 3\n', {}),  # no model label
        ('nv_inference_request_success{model="m",version="1"} abc\n', {}),
        ('nv_inference_request_success{model="m",version="1"} NaN\n', {}),
        ('nv_inference_count{model="m",version="1"} 7\n', {}),  # items, not requests
        (
            'nv_inference_request_success{model="m",version="1"} 3 1700000000000\n',
            {"m": ModelCounters(0.0, 3.0, 0.0)},
        ),  # exposition timestamp
        (
            'nv_inference_queue_duration_us{version="1",model="a,b=\\"c\\""} 1e3\n',
            {'a,b=\\"c\\"': ModelCounters(1000.0, 0.0, 0.0)},
        ),  # label order, escapes, exponent
        (
            'nv_inference_pending_request_count{model="m",version="1"} 2\r\n',
            {"m": ModelCounters(0.0, 0.0, 2.0)},
        ),
    ],
)
def test_parse_edge_cases(text: str, expected: dict[str, ModelCounters]) -> None:
    assert parse_triton_metrics(text) == expected


def test_gateway_queue_counters_reuses_the_parser() -> None:
    assert queue_counters(TRITON_TEXT) == {"toy_llm": (30000.0, 15.0), "toy_embed": (0.0, 0.0)}


@pytest.mark.parametrize(
    ("before", "after", "increase"),
    [(10, 15, 5), (10, 10, 0), (10, 3, 3), (10, 0, 0), (0, 0, 0), (0, 7, 7)],
)
def test_counter_increase(before: float, after: float, increase: float) -> None:
    assert counter_increase(before, after) == increase


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ((1000, 10), (3000, 12), (2000, 2)),
        ((1000, 10), (1000, 10), (0, 0)),
        ((1000, 10), (500, 2), (500, 2)),  # restart: both reset
        ((1000, 10), (5000, 2), (5000, 2)),  # only success went down: still a reset
        ((1000, 10), (10, 30), (10, 30)),  # only queue went down: still a reset
    ],
)
def test_pair_increase(
    before: tuple[float, float], after: tuple[float, float], expected: tuple[float, float]
) -> None:
    b = ModelCounters(before[0], before[1])
    a = ModelCounters(after[0], after[1])
    assert pair_increase(b, a) == expected


def s(at: float, **models: tuple[float, float, float]) -> Sample:
    return Sample(at, {m: ModelCounters(*v) for m, v in models.items()})


def signal(*pods: PodHistory, now: float = 10.0, window: float = 10.0) -> QueueSignal | NoData:
    return window_signal("m", pods, now=now, window=window)


def test_mean_is_per_request_summed_over_pods() -> None:
    a = PodHistory([s(0, m=(0, 0, 0)), s(5, m=(40_000, 10, 3))])
    b = PodHistory([s(1, m=(1_000, 1, 0)), s(6, m=(11_000, 11, 2))])
    out = signal(a, b)
    assert out == QueueSignal("m", queue_ms=50_000 / 20 / 1000, pending=5, requests=20,
                              queue_us=50_000, pods=2)  # fmt: skip
    assert not out.idle


def test_no_traffic_is_zero_and_idle_not_no_data() -> None:
    out = signal(PodHistory([s(1, m=(500, 5, 0)), s(6, m=(500, 5, 0))]))
    assert isinstance(out, QueueSignal)
    assert out.queue_ms == 0.0 and out.requests == 0 and out.idle and out.pending == 0


@pytest.mark.parametrize(
    ("pods", "reason"),
    [
        ((), "no pod scraped"),
        ((PodHistory([]),), "no pod scraped"),
        ((PodHistory([s(1, m=(0, 0, 0)), s(6, m=(9, 9, 0))], up=False),), "no pod scraped"),
        ((PodHistory([s(-5, m=(0, 0, 0)), s(-1, m=(9, 9, 0))]),), "no pod scraped"),  # stale
        ((PodHistory([s(1, other=(0, 0, 0)), s(6, other=(1, 1, 0))]),), "no pod reported"),
        ((PodHistory([s(6, m=(9, 9, 4))]),), "only one scrape"),
    ],
)
def test_no_data(pods: tuple[PodHistory, ...], reason: str) -> None:
    out = signal(*pods)
    assert isinstance(out, NoData) and out.model == "m"
    assert reason in out.reason


def test_down_pod_is_left_out_but_up_pod_counts() -> None:
    up = PodHistory([s(1, m=(0, 0, 0)), s(6, m=(4_000, 2, 1))])
    down = PodHistory([s(1, m=(0, 0, 0)), s(3, m=(900_000, 1, 7))], up=False)
    out = signal(up, down)
    assert isinstance(out, QueueSignal)
    assert (out.queue_ms, out.pending, out.pods) == (2.0, 1, 1)


def test_samples_outside_the_window_are_ignored() -> None:
    pod = PodHistory([s(-20, m=(0, 0, 0)), s(1, m=(10_000, 10, 0)), s(9, m=(30_000, 20, 0))])
    out = signal(pod)
    assert isinstance(out, QueueSignal)
    assert (out.queue_us, out.requests, out.queue_ms) == (20_000, 10, 2.0)


def test_restart_inside_the_window_never_goes_negative() -> None:
    pod = PodHistory([s(1, m=(100_000, 100, 0)), s(3, m=(120_000, 110, 0)), s(5, m=(3_000, 3, 1))])
    out = signal(pod)
    assert isinstance(out, QueueSignal)
    assert (out.queue_us, out.requests) == (23_000, 13)
    assert out.queue_ms == pytest.approx(23_000 / 13 / 1000)


def test_model_loaded_later_counts_from_zero() -> None:
    pod = PodHistory([s(1), s(3, m=(2_000, 1, 0)), s(5, m=(6_000, 3, 0))])
    out = signal(pod)
    assert isinstance(out, QueueSignal)
    assert (out.queue_us, out.requests) == (6_000, 3)


def test_unordered_samples_are_sorted() -> None:
    pod = PodHistory([s(5, m=(6_000, 3, 2)), s(1, m=(0, 0, 0))])
    out = signal(pod)
    assert isinstance(out, QueueSignal)
    assert (out.queue_ms, out.pending) == (2.0, 2)


# --- random counters with random resets ---------------------------------------------------

# One scrape interval of one pod: (Δqueue_us, Δsuccess, restarted during the interval).
intervals = st.lists(
    st.tuples(st.integers(0, 10**9), st.integers(0, 10**4), st.booleans()),
    min_size=1,
    max_size=30,
)


def _simulate(steps: list[tuple[int, int, bool]], pending: int) -> tuple[PodHistory, int, int]:
    """Scrapes of one pod at t = 0, 1, 2, ...; returns the history and the true Δs.

    A restart between two scrapes resets both counters, so the next scrape shows only
    what happened since the restart. A restart that leaves both counters at or above
    their old values cannot be seen in any scrape; it is simulated as plain traffic,
    because no reader of the counters could tell the difference.
    """
    q = n = 0
    samples = [Sample(0.0, {"m": ModelCounters(0, 0, pending)})]
    true_q = true_n = 0
    for i, (dq, dn, restart) in enumerate(steps, start=1):
        if restart and (dq < q or dn < n):
            q, n = dq, dn
        else:
            q, n = q + dq, n + dn
        true_q += dq
        true_n += dn
        samples.append(Sample(float(i), {"m": ModelCounters(q, n, pending)}))
    return PodHistory(samples), true_q, true_n


@settings(max_examples=300, deadline=None)
@given(pods=st.lists(st.tuples(intervals, st.integers(0, 50)), min_size=1, max_size=4))
def test_random_resets_give_the_true_per_request_mean(
    pods: list[tuple[list[tuple[int, int, bool]], int]],
) -> None:
    histories, total_q, total_n, total_pending = [], 0, 0, 0
    for steps, pending in pods:
        history, q, n = _simulate(steps, pending)
        histories.append(history)
        total_q, total_n, total_pending = total_q + q, total_n + n, total_pending + pending
    now = float(max(len(steps) for steps, _ in pods))
    out = window_signal("m", histories, now=now, window=now + 1)
    assert isinstance(out, QueueSignal)
    assert out.queue_ms >= 0 and out.queue_us >= 0 and out.requests >= 0
    assert (out.queue_us, out.requests) == (total_q, total_n)
    assert out.pending == total_pending
    if total_n == 0:
        assert out.idle and out.queue_ms == 0.0
    else:
        assert math.isclose(out.queue_ms, total_q / total_n / 1000, rel_tol=1e-12)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.tuples(st.floats(0, 1e12), st.floats(0, 1e9), st.floats(0, 1e4)),
        min_size=0,
        max_size=20,
    ),
    window=st.floats(0.5, 30),
    up=st.booleans(),
)
def test_arbitrary_readings_never_give_a_negative_or_nan(
    values: list[tuple[float, float, float]], window: float, up: bool
) -> None:
    """Any readings at all (resets anywhere, gauges jumping): never negative, never NaN,
    and a pod that is down never yields a value."""
    history = PodHistory(
        [Sample(float(i), {"m": ModelCounters(*v)}) for i, v in enumerate(values)], up
    )
    out = window_signal("m", [history], now=float(len(values)), window=window)
    if isinstance(out, NoData):
        return
    assert up
    for x in (out.queue_ms, out.queue_us, out.requests, out.pending):
        assert x >= 0 and not math.isnan(x)
