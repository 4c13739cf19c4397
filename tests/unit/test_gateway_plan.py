"""The per-request plan (desired/gateway/plan.py): which pods, in which order, and
when the hosted provider answers instead; and queue time from Triton's metrics."""

from __future__ import annotations

from tritonfleet.desired.gateway.plan import PodView, average_queue_ms, plan, queue_counters
from tritonfleet.desired.gateway.routes import Endpoint, Failover, HostedTarget, Route

A = Endpoint("a", "http://a")
B = Endpoint("b", "http://b")
C = Endpoint("c", "http://c")


def route(mode: str | None = "auto", unavailable: bool = True, queue: float | None = None) -> Route:
    failover = (
        None if mode is None else Failover(mode, HostedTarget("https://h", "m"), unavailable, queue)  # type: ignore[arg-type]
    )
    return Route("llm", "generate", "toy", (A, B, C), failover=failover)


def test_plan_least_outstanding_first_and_limited_attempts() -> None:
    p = plan(route(), [PodView(A, 3), PodView(B, 1), PodView(C, 2)])
    assert p.pods == (B, C) and p.hosted and p.reason == "triton" and not p.activation


def test_plan_rotation_spreads_ties() -> None:
    views = [PodView(A), PodView(B), PodView(C)]
    firsts = {plan(route(), views, rotation=i).pods[0] for i in range(3)}
    assert firsts == {A, B, C}


def test_plan_skips_unhealthy_and_open_breakers() -> None:
    p = plan(route(), [PodView(A, healthy=False), PodView(B, admits=False), PodView(C, 9)])
    assert p.pods == (C,)


def test_plan_no_ready_replica_is_an_activation() -> None:
    p = plan(route(), [PodView(A, healthy=False)])
    assert p == plan(route(), []) and p.reason == "no_ready_replica" and p.hosted and p.activation
    assert not plan(route(unavailable=False), []).hosted


def test_plan_breakers_open() -> None:
    p = plan(route(), [PodView(A, admits=False), PodView(B, admits=False)])
    assert p.reason == "breaker_open" and p.pods == () and p.hosted
    assert plan(route(), [PodView(A)], model_admits=False).reason == "breaker_open"


def test_plan_modes() -> None:
    assert plan(route("hosted"), [PodView(A)]).reason == "mode_hosted"
    assert plan(route("hosted"), [PodView(A)]).pods == ()
    p = plan(route("triton"), [])
    assert p.reason == "no_ready_replica" and not p.hosted
    assert not plan(route("triton"), [PodView(A)]).hosted
    assert not plan(route(None), [PodView(A)]).hosted


def test_plan_queue_time_spills_over() -> None:
    views = [PodView(A, queue_ms=300), PodView(B, queue_ms=50), PodView(C, queue_ms=None)]
    assert plan(route(queue=100), views).pods == (B, C)
    p = plan(route(queue=100), [PodView(A, queue_ms=300), PodView(B, queue_ms=101)])
    assert p.reason == "queue_time" and p.hosted and p.pods == ()
    # no hosted provider: queue time never keeps Triton from serving
    assert plan(route(None, queue=100), [PodView(A, queue_ms=900)]).pods == (A,)


METRICS = """# HELP nv_inference_queue_duration_us Cumulative inference queuing duration
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="toy_llm",version="1"} 5000
nv_inference_queue_duration_us{model="toy_llm",version="2"} 1000
nv_inference_queue_duration_us{model="toy_embed",version="1"} 30
nv_inference_request_success{model="toy_llm",version="1"} 10
nv_inference_request_success{model="toy_llm",version="2"} 2
nv_inference_request_failure{model="toy_llm",reason="BACKEND",version="1"} 3
nv_gpu_utilization{gpu_uuid="x"} 0.5
"""


def test_queue_counters_sum_versions() -> None:
    assert queue_counters(METRICS) == {"toy_llm": (6000.0, 12.0), "toy_embed": (30.0, 0.0)}


def test_average_queue_ms() -> None:
    assert average_queue_ms(None, (100.0, 1.0)) == 0.0
    assert average_queue_ms((6000.0, 12.0), (26000.0, 22.0)) == 2.0
    assert average_queue_ms((6000.0, 12.0), (6000.0, 12.0)) == 0.0  # idle: no queue
    assert average_queue_ms((6000.0, 12.0), (0.0, 1.0)) == 0.0  # counters reset (restart)
