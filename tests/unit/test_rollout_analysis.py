"""Canary analysis, the pure half (desired.kube.analysis): the gateways' per-revision
series read back, a replica's increase over a step (restarts included), the p99 from a
histogram, the numbers summed over replicas, and the verdict against the stable
revision."""

from __future__ import annotations

import math

import pytest

from tritonfleet.api.rollout import CanaryAnalysis
from tritonfleet.api.status import RevisionNumbers
from tritonfleet.desired.kube.analysis import (
    RevisionCounters,
    increase,
    judge,
    numbers,
    parse_gateway_revisions,
    quantile_ms,
)

METRICS = """\
# HELP tritonfleet_gateway_revision_attempts_total Triton attempts by revision.
# TYPE tritonfleet_gateway_revision_attempts_total counter
tritonfleet_gateway_revision_attempts_total{model="toy_llm",revision="a1",outcome="ok"} 90.0
tritonfleet_gateway_revision_attempts_total{model="toy_llm",revision="a1",outcome="failed"} 4.0
tritonfleet_gateway_revision_attempts_total{model="toy_llm",revision="a1",outcome="rejected"} 6.0
tritonfleet_gateway_revision_attempts_total{model="toy_llm",revision="b2",outcome="ok"} 10.0
tritonfleet_gateway_revision_latency_seconds_bucket{model="toy_llm",revision="a1",le="0.01"} 50.0
tritonfleet_gateway_revision_latency_seconds_bucket{model="toy_llm",revision="a1",le="0.1"} 89.0
tritonfleet_gateway_revision_latency_seconds_bucket{model="toy_llm",revision="a1",le="+Inf"} 90.0
tritonfleet_gateway_revision_latency_seconds_sum{model="toy_llm",revision="a1"} 2.5
tritonfleet_gateway_revision_latency_seconds_count{model="toy_llm",revision="a1"} 90.0
tritonfleet_gateway_revision_attempts_total{model="",revision="x",outcome="ok"} 1.0
tritonfleet_gateway_requests_total{model="toy_llm",backend="triton",code="200"} 100.0
"""


def test_the_gateways_series_are_read_back_per_route_and_revision() -> None:
    parsed = parse_gateway_revisions(METRICS)
    assert set(parsed) == {("toy_llm", "a1"), ("toy_llm", "b2")}
    a1 = parsed[("toy_llm", "a1")]
    assert (a1.ok, a1.failed, a1.rejected, a1.attempts, a1.errors) == (90, 4, 6, 100, 10)
    assert a1.buckets == ((0.01, 50.0), (0.1, 89.0), (math.inf, 90.0))
    assert parsed[("toy_llm", "b2")].buckets == ()


def test_a_replicas_increase_over_a_step_is_its_counters_minus_those_at_the_start() -> None:
    start = RevisionCounters(ok=5, failed=1, buckets=((0.1, 5.0), (math.inf, 5.0)))
    now = RevisionCounters(ok=20, failed=3, rejected=2, buckets=((0.1, 18.0), (math.inf, 20.0)))
    assert increase(start, now) == RevisionCounters(
        ok=15, failed=2, rejected=2, buckets=((0.1, 13.0), (math.inf, 15.0))
    )
    # A replica that came up during the step started from zero.
    assert increase(None, now) == now


def test_a_gateway_restart_in_the_window_counts_from_its_reset() -> None:
    before = RevisionCounters(ok=50, failed=5, buckets=((0.1, 50.0),))
    after = RevisionCounters(ok=7, failed=1, buckets=((0.1, 7.0),))
    assert increase(before, after) == after


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        (((0.01, 50.0), (0.1, 90.0), (math.inf, 100.0)), 0.5, 10.0),
        (((0.01, 0.0), (0.1, 100.0), (math.inf, 100.0)), 0.99, 99.1),
        (((0.01, 10.0), (0.1, 20.0), (math.inf, 100.0)), 0.99, 100.0),  # beyond: the last bound
        ((), 0.99, None),
        (((0.1, 0.0), (math.inf, 0.0)), 0.99, None),
    ],
)
def test_quantiles_interpolate_inside_their_bucket(
    buckets: tuple[tuple[float, float], ...], q: float, expected: float | None
) -> None:
    got = quantile_ms(buckets, q)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_numbers_sum_the_gateway_replicas() -> None:
    one = RevisionCounters(ok=40, failed=1, rejected=1, buckets=((0.05, 40), (math.inf, 40)))
    two = RevisionCounters(ok=58, failed=0, rejected=0, buckets=((0.05, 58), (math.inf, 58)))
    total = numbers([one, two], queue_time_ms=3.04)
    assert total == RevisionNumbers(
        requests=100, errors=2, error_rate=0.02, p99_latency_ms=49.5, queue_time_ms=3.0
    )
    assert numbers([]) is None


ANALYSIS = CanaryAnalysis(max_error_rate=0.05, max_p99_latency_ms=500, max_queue_time_ms=50)


def n(
    requests: int, errors: int = 0, p99: float | None = None, queue: float | None = None
) -> RevisionNumbers:
    rate = errors / requests if requests else None
    return RevisionNumbers(
        requests=requests, errors=errors, error_rate=rate, p99_latency_ms=p99, queue_time_ms=queue
    )


@pytest.mark.parametrize(
    ("canary", "stable", "status", "words"),
    [
        (None, n(100), "Pending", "0 of 20 canary requests"),
        (n(19, 19), n(100), "Pending", "19 of 20"),
        (n(100, 20), n(1000), "Failed", "error rate 20.0 % (20/100) against 0.0 %"),
        # Errors the clients cause show on both revisions and cancel out.
        (n(100, 12), n(1000, 100), "Passed", "within limits"),
        (n(100, 16), n(1000, 100), "Failed", "more than 5 points above"),
        (n(100, p99=900), n(1000, p99=100), "Failed", "p99 latency 900 ms over the limit"),
        (n(100, p99=900), n(1000, p99=950), "Passed", ""),  # the cluster is slow, not it
        (n(100, p99=900), None, "Failed", "p99 latency"),
        (n(100, queue=80), n(1000, queue=10), "Failed", "queue time 80 ms"),
        (n(100, queue=80), n(1000, queue=90), "Passed", ""),
        (n(100, p99=400, queue=40), n(1000), "Passed", "within limits over 100"),
    ],
)
def test_the_canary_is_judged_against_the_stable_revision(
    canary: RevisionNumbers | None, stable: RevisionNumbers | None, status: str, words: str
) -> None:
    verdict = judge(ANALYSIS, canary, stable)
    assert verdict.status == status
    assert words in verdict.why


def test_without_a_latency_or_queue_limit_only_errors_count() -> None:
    plain = CanaryAnalysis()
    assert judge(plain, n(100, p99=99999, queue=9999), n(100)).status == "Passed"
    assert judge(CanaryAnalysis(min_requests=0), n(1), None).status == "Passed"
