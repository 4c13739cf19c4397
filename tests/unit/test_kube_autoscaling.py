"""Queue-time autoscaling decisions: the HPA object, the metric answer, the words.

Why: these decide whether a GPU fleet grows under load, never shrinks on missing
data, and tells the user what the autoscaler is doing; all pure, checked here.
"""

from __future__ import annotations

from dataclasses import replace

from tritonfleet.api.model import Autoscaling, ReplicaRange, ServingSpec
from tritonfleet.desired.kube.autoscaling import (
    ACTIVATED_AT_ANNOTATION,
    QUEUE_TIME_METRIC,
    SCALED_TO_ZERO_ANNOTATION,
    Activity,
    HpaState,
    MetricValue,
    ScaleChange,
    ZeroMark,
    autoscaling_condition,
    hpa,
    parse_selector,
    quantity,
    select_metric,
    zero_decision,
)
from tritonfleet.desired.kube.objects import Target, cleanup_target
from tritonfleet.desired.kube.observed import summarize
from tritonfleet.desired.triton.metrics import (
    NoData,
    QueueResult,
    QueueSignal,
    parse_gateway_demand,
)

NS = "team-a"


def target(kind: str = "TritonModel", **serving: object) -> Target:
    base = cleanup_target(kind, NS, "toy", "uid-1", "toy")  # type: ignore[arg-type]
    return replace(base, serving=ServingSpec.model_validate(serving))


def sig(model: str, ms: float, requests: float = 10, pending: float = 0) -> QueueSignal:
    return QueueSignal(model, ms, pending, requests, ms * requests * 1000, 1)


def test_no_autoscaling_no_hpa() -> None:
    assert hpa(target()) is None


def test_hpa_targets_queue_time_with_fast_up_slow_down() -> None:
    t = target(replicas={"min": 1, "max": 8}, autoscaling={"queueTimeTargetMs": 50.5})
    obj = hpa(t)
    assert obj is not None
    spec = obj["spec"]
    assert obj["apiVersion"] == "autoscaling/v2"
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": t.deployment_name,
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 8)
    ext = spec["metrics"][0]["external"]
    assert ext["metric"]["name"] == QUEUE_TIME_METRIC
    assert ext["metric"]["selector"]["matchLabels"] == {"model": "toy", "namespace": NS}
    # Seconds, exact to the microsecond; a whole number of milliseconds reads as "250m".
    assert ext["target"] == {"type": "Value", "value": "50500u"}
    whole = hpa(target(autoscaling={"queueTimeTargetMs": 250}))
    assert whole is not None
    assert whole["spec"]["metrics"][0]["external"]["target"]["value"] == "250m"
    up, down = spec["behavior"]["scaleUp"], spec["behavior"]["scaleDown"]
    assert up["stabilizationWindowSeconds"] == 0 and up["selectPolicy"] == "Max"
    assert {(p["type"], p["value"]) for p in up["policies"]} == {("Percent", 100), ("Pods", 4)}
    assert down["stabilizationWindowSeconds"] == 300
    assert (
        hpa(t, scale_down_stabilization_s=20)["spec"]["behavior"]["scaleDown"][  # type: ignore[index]
            "stabilizationWindowSeconds"
        ]
        == 20
    )


def test_scale_to_zero_model_keeps_hpa_min_one() -> None:
    t = target(replicas={"min": 0, "max": 3}, autoscaling={"scaleToZeroAfterSeconds": 60})
    assert hpa(t)["spec"]["minReplicas"] == 1  # type: ignore[index]


def test_ensemble_selects_itself() -> None:
    t = target("ModelEnsemble", replicas={"min": 1, "max": 2}, autoscaling={})
    sel = hpa(t)["spec"]["metrics"][0]["external"]["metric"]["selector"]  # type: ignore[index]
    assert sel["matchLabels"] == {"ensemble": "toy", "namespace": NS}


def test_selector_parsing() -> None:
    assert parse_selector("model=a,namespace==b") == {"model": "a", "namespace": "b"}
    assert parse_selector("") == {}
    assert parse_selector("model!=a") is None
    assert parse_selector("model in (a,b)") is None


def test_metric_selection_idle_is_zero_no_data_is_not() -> None:
    results: dict[tuple[str, str], QueueResult] = {
        (NS, "a"): sig("a", 0, requests=0),
        (NS, "b"): sig("b", 80, pending=3),
        (NS, "c"): NoData("c", "no pod scraped"),
    }
    ens = {(NS, "e"): ["a", "b"], (NS, "bad"): ["a", "c"]}
    assert select_metric(QUEUE_TIME_METRIC, NS, {"model": "a"}, results, ens) == MetricValue(
        0, ("a",)
    )
    assert select_metric(QUEUE_TIME_METRIC, NS, {"ensemble": "e"}, results, ens) == MetricValue(
        0.08, ("a", "b")
    )
    # The milliseconds name is still answered, in milliseconds, for one release.
    legacy = select_metric("tritonfleet_queue_time_ms", NS, {"ensemble": "e"}, results, ens)
    assert legacy == MetricValue(80, ("a", "b"))
    assert quantity(0.0123) == "12300u"
    pend = select_metric("tritonfleet_pending_requests", NS, {"ensemble": "e"}, results, ens)
    assert pend == MetricValue(3, ("a", "b"))
    for sel in ({"model": "c"}, {"ensemble": "bad"}, {"model": "unknown"}, {"ensemble": "x"}, {}):
        assert isinstance(select_metric(QUEUE_TIME_METRIC, NS, sel, results, ens), NoData), sel
    other = select_metric(QUEUE_TIME_METRIC, NS, {"model": "a", "namespace": "x"}, results, ens)
    assert isinstance(other, NoData)


def hpa_state(body: dict[str, object]) -> HpaState:
    """The HPA summary the reconciler reads, from a raw HPA object."""
    state = summarize({"kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"}, **body})
    assert state.hpa is not None
    return state.hpa


def test_condition_words_follow_the_hpa_status() -> None:
    t = target(replicas={"min": 1, "max": 4}, autoscaling={"queueTimeTargetMs": 50})
    assert autoscaling_condition(target(), None, 1) is None
    assert autoscaling_condition(t, None, 1)[:2] == ("Unknown", "Pending")  # type: ignore[index]
    waiting = autoscaling_condition(t, None, 0)
    assert waiting is not None and waiting[1] == "WaitingForReplicas"
    up = hpa_state(
        {
            "status": {
                "currentReplicas": 1,
                "desiredReplicas": 3,
                "currentMetrics": [
                    {
                        "type": "External",
                        "external": {
                            "metric": {"name": QUEUE_TIME_METRIC},
                            "current": {"value": "120500u"},
                        },
                    }
                ],
                "conditions": [{"type": "ScalingActive", "status": "True"}],
            }
        }
    )
    assert autoscaling_condition(t, up, 1) == (
        "True",
        "ScalingUp",
        "scaling up from 1 to 3 replicas: queue time 120.5 ms, target 50 ms",
    )
    down = replace(up, current_replicas=3, desired_replicas=1, queue_time="0")
    assert autoscaling_condition(t, down, 3)[1] == "ScalingDown"  # type: ignore[index]
    steady = replace(up, current_replicas=2, desired_replicas=2, queue_time="0")
    assert autoscaling_condition(t, steady, 2) == ("True", "Steady", "steady at 2 replicas: idle")
    busy = replace(steady, queue_time="30")
    busy_words = autoscaling_condition(t, busy, 2)
    assert busy_words is not None and "within the 50 ms target" in busy_words[2]
    # A steady model's words do not change with every number the HPA reports.
    assert autoscaling_condition(t, replace(busy, queue_time="31"), 2) == busy_words
    at_max = replace(steady, limited_reason="TooManyReplicas", limited_message="more than max")
    status, reason, msg = autoscaling_condition(t, at_max, 2)  # type: ignore[misc]
    assert reason == "ScalingLimited" and "held at the maximum of 2 replicas" in msg
    # Idle at replicas.min is the HPA "limited" by the minimum: for a user, steady.
    at_min = replace(
        steady, current_replicas=1, desired_replicas=1, limited_reason="TooFewReplicas"
    )
    assert autoscaling_condition(t, at_min, 1) == (
        "True",
        "Steady",
        "steady at the minimum of 1 replica: idle",
    )
    rate_limited = replace(steady, limited_message="the desired count is limited by a policy")
    assert autoscaling_condition(t, rate_limited, 2)[1] == "ScalingLimited"  # type: ignore[index]
    held = hpa_state(
        {
            "status": {
                "currentReplicas": 2,
                "desiredReplicas": 2,
                "conditions": [
                    {
                        "type": "ScalingActive",
                        "status": "False",
                        "reason": "FailedGetExternalMetric",
                        "message": "unable to get external metric",
                    }
                ],
            }
        }
    )
    status, reason, msg = autoscaling_condition(t, held, 2)  # type: ignore[misc]
    assert status == "False" and reason == "FailedGetExternalMetric"
    assert "holding 2 replicas" in msg and "never scale down" in msg
    mark = ZeroMark(at=1_700_000_000, why="no request for 60 s").encode()
    status, reason, msg = autoscaling_condition(t, held, 0, mark)  # type: ignore[misc]
    assert (status, reason) == ("True", "ScaledToZero")
    assert "2023-11-14T22:13:20Z" in msg and "no request for 60 s" in msg


ZERO = target(replicas={"min": 0, "max": 2}, autoscaling={"scaleToZeroAfterSeconds": 60})
IDLE = sig("toy", 0, requests=0)


def test_scale_to_zero_after_the_idle_time_only_on_real_idle() -> None:
    def decide(activity: Activity, now: float, replicas: int = 1) -> ScaleChange | None:
        return zero_decision(ZERO, replicas, "", "", activity, now)

    assert decide(Activity(IDLE, since=0), now=59) is None
    change = decide(Activity(IDLE, since=0), now=61)
    assert change is not None and change.replicas == 0 and change.reason == "ScaledToZero"
    mark = ZeroMark.parse(change.annotations[SCALED_TO_ZERO_ANNOTATION] or "")
    assert mark is not None and mark.at == 61 and "no request for 60 s" in mark.why
    assert change.patch()["spec"] == {"replicas": 0}
    # No data (pods unreachable) or traffic never scales down, however long.
    assert decide(Activity(NoData("toy", "down"), since=0), now=6000) is None
    assert decide(Activity(None, since=0), now=6000) is None
    assert decide(Activity(sig("toy", 5), since=0), now=6000) is None
    # Any recent activity restarts the idle time: Triton busy, a gateway request, an
    # activation, this process starting.
    assert decide(Activity(IDLE, busy_at=100, since=0), now=150) is None
    assert decide(Activity(IDLE, demand_at=100, since=0), now=150) is None
    assert decide(Activity(IDLE, since=100), now=150) is None
    activated = zero_decision(ZERO, 1, "", "1970-01-01T00:01:40Z", Activity(IDLE), now=150)
    assert activated is None
    assert decide(Activity(IDLE, demand_at=100, since=0), now=161) is not None
    # Not a scale-to-zero model, or already at zero (e.g. before the first sync).
    keep = target(replicas={"min": 1, "max": 2}, autoscaling={})
    assert zero_decision(keep, 1, "", "", Activity(IDLE), now=6000) is None
    assert decide(Activity(IDLE), now=6000, replicas=0) is None


def test_activation_by_a_gateway_request_newer_than_the_zero_mark() -> None:
    mark = ZeroMark(at=1000, why="idle").encode()

    def decide(activity: Activity, replicas: int = 0, t: Target = ZERO) -> ScaleChange | None:
        return zero_decision(t, replicas, mark, "", activity, now=2000)

    assert decide(Activity(None)) is None
    assert decide(Activity(None, demand_at=999)) is None  # that request was before the zero
    change = decide(Activity(None, demand_at=1500))
    assert change is not None and change.replicas == 1 and change.reason == "Activated"
    assert change.annotations == {
        SCALED_TO_ZERO_ANNOTATION: None,
        ACTIVATED_AT_ANNOTATION: "1970-01-01T00:33:20Z",
    }
    assert change.patch() == {
        "metadata": {"annotations": change.annotations},
        "spec": {"replicas": 1},
    }
    # Scaled up by hand: only the mark goes; scale to zero turned off: one replica back.
    by_hand = decide(Activity(None), replicas=2)
    assert by_hand is not None and by_hand.replicas is None and "someone else" in by_hand.message
    off = target(replicas={"min": 0, "max": 2}, autoscaling={})
    restored = decide(Activity(None), t=off)
    assert restored is not None and restored.replicas == 1


def test_gateway_demand_is_the_newest_request_per_route() -> None:
    text = """# HELP tritonfleet_gateway_last_request_timestamp_seconds newest request
# TYPE tritonfleet_gateway_last_request_timestamp_seconds gauge
tritonfleet_gateway_last_request_timestamp_seconds{model="toy-llm"} 1.7e+09
tritonfleet_gateway_last_request_timestamp_seconds{model="emb"} 0.0
tritonfleet_gateway_activation_requests_total{model="toy-llm"} 3.0
"""
    assert parse_gateway_demand(text) == {"toy-llm": 1.7e9}


def test_models_used_by_tests_are_valid() -> None:
    assert ReplicaRange(min=0, max=2).min == 0 and Autoscaling().queue_time_target_ms == 50


def test_scrape_targets_ready_pods_inside_allowed_networks_only() -> None:
    from tritonfleet.api.settings import OperatorSettings
    from tritonfleet.desired.kube.loading import TritonPod, scrape_targets

    loopback_only = OperatorSettings(dial_pod_networks=("127.0.0.0/8",)).may_dial
    anywhere = OperatorSettings().may_dial

    def pod(name: str, kind: str, owner: str, ip: str, **kw: object) -> TritonPod:
        return TritonPod(NS, name, f"uid-{name}", (NS, kind, owner), ip, "Running", **kw)  # type: ignore[arg-type]

    pods = [
        pod("p1", "tritonmodel", "toy", "127.1.0.5", ready=True),
        pod("p2", "tritonmodel", "toy", "127.1.0.6", ready=False),  # not ready
        pod("p3", "tritonmodel", "toy", "10.0.0.7", ready=True),  # outside the networks
        pod("p4", "tritonmodel", "toy", "127.1.0.8", ready=True, deleting=True),  # going
        pod("e1", "modelensemble", "pipe", "127.1.0.9", ready=True),
    ]
    models = {
        ("TritonModel", NS, "toy"): ["toy"],
        ("ModelEnsemble", NS, "pipe"): ["toy", "pipe"],
        ("TritonModel", NS, "cold"): ["cold"],
    }
    got = scrape_targets(pods, models, loopback_only, 8002)
    assert got[(NS, "toy")] == [("p1", "http://127.1.0.5:8002"), ("e1", "http://127.1.0.9:8002")]
    assert got[(NS, "pipe")] == [("e1", "http://127.1.0.9:8002")]
    assert got[(NS, "cold")] == []  # known, no ready pod: no data
    everywhere = scrape_targets(pods, models, anywhere, 8002)
    assert ("p3", "http://10.0.0.7:8002") in everywhere[(NS, "toy")]


def test_dial_pod_networks_setting() -> None:
    from tritonfleet.api.settings import OperatorSettings, SettingsError

    s = OperatorSettings.from_env({"TRITONFLEET_DIAL_POD_NETWORKS": "127.0.0.0/8, ::1/128"})
    assert s.dial_pod_networks == ("127.0.0.0/8", "::1/128")
    try:
        OperatorSettings.from_env({"TRITONFLEET_DIAL_POD_NETWORKS": "nonsense"})
    except SettingsError as error:
        assert "DIAL_POD_NETWORKS" in str(error)
    else:
        raise AssertionError("a bad CIDR must be refused")
