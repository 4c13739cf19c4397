"""Queue-time autoscaling decisions: the HPA object, the metric answer, the words.

Why: these decide whether a GPU fleet grows under load, never shrinks on missing
data, and tells the user what the autoscaler is doing; all pure, checked here.
"""

from __future__ import annotations

from dataclasses import replace

from tritonfleet.api.model import Autoscaling, ReplicaRange, ServingSpec
from tritonfleet.desired.kube_autoscaling import (
    QUEUE_TIME_METRIC,
    MetricValue,
    autoscaling_condition,
    hpa,
    parse_selector,
    select_metric,
    should_scale_to_zero,
)
from tritonfleet.desired.kube_objects import Target, cleanup_target
from tritonfleet.desired.queue_metrics import NoData, QueueResult, QueueSignal

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
    assert ext["target"] == {"type": "Value", "value": "50500m"}
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
        80, ("a", "b")
    )
    pend = select_metric("tritonfleet_pending_requests", NS, {"ensemble": "e"}, results, ens)
    assert pend == MetricValue(3, ("a", "b"))
    for sel in ({"model": "c"}, {"ensemble": "bad"}, {"model": "unknown"}, {"ensemble": "x"}, {}):
        assert isinstance(select_metric(QUEUE_TIME_METRIC, NS, sel, results, ens), NoData), sel
    other = select_metric(QUEUE_TIME_METRIC, NS, {"model": "a", "namespace": "x"}, results, ens)
    assert isinstance(other, NoData)


def test_condition_words() -> None:
    t = target(replicas={"min": 1, "max": 4}, autoscaling={"queueTimeTargetMs": 50})
    assert autoscaling_condition(target(), None) is None
    assert autoscaling_condition(t, None)[0] == "Unknown"  # type: ignore[index]
    up = {
        "currentReplicas": 1,
        "desiredReplicas": 3,
        "currentMetrics": [
            {
                "type": "External",
                "external": {
                    "metric": {"name": QUEUE_TIME_METRIC},
                    "current": {"value": "120500m"},
                },
            }
        ],
        "conditions": [{"type": "ScalingActive", "status": "True"}],
    }
    status, reason, msg = autoscaling_condition(t, up)  # type: ignore[misc]
    assert (status, reason) == ("True", "Active")
    assert msg == "scaling up from 1 to 3 replicas: queue time 120.5 ms vs target 50 ms"
    held = {
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
    status, reason, msg = autoscaling_condition(t, held)  # type: ignore[misc]
    assert status == "False" and reason == "FailedGetExternalMetric"
    assert "holding 2 replicas" in msg and "never scale down" in msg
    assert autoscaling_condition(t, up, "idle for 60s")[1] == "ScaledToZero"  # type: ignore[index]


def test_scale_to_zero_only_on_real_idle() -> None:
    t = target(replicas={"min": 0, "max": 2}, autoscaling={"scaleToZeroAfterSeconds": 60})
    idle = sig("toy", 0, requests=0)
    assert should_scale_to_zero(t, idle, idle_since=0, now=61)
    assert not should_scale_to_zero(t, idle, idle_since=0, now=30)
    assert not should_scale_to_zero(t, NoData("toy", "down"), idle_since=0, now=600)
    assert not should_scale_to_zero(t, sig("toy", 5), idle_since=0, now=600)
    keep = target(replicas={"min": 1, "max": 2}, autoscaling={})
    assert not should_scale_to_zero(keep, idle, idle_since=0, now=600)


def test_models_used_by_tests_are_valid() -> None:
    assert ReplicaRange(min=0, max=2).min == 0 and Autoscaling().queue_time_target_ms == 50


def test_scrape_targets_ready_pods_inside_allowed_networks_only() -> None:
    from tritonfleet.api.settings import OperatorSettings
    from tritonfleet.desired.kube_autoscaling import TritonPod, scrape_targets

    loopback_only = OperatorSettings(dial_pod_networks=("127.0.0.0/8",)).may_dial
    anywhere = OperatorSettings().may_dial

    pods = [
        TritonPod(NS, "p1", "TritonModel", "toy", "127.1.0.5", True),
        TritonPod(NS, "p2", "TritonModel", "toy", "127.1.0.6", False),  # not ready
        TritonPod(NS, "p3", "TritonModel", "toy", "10.0.0.7", True),  # outside the networks
        TritonPod(NS, "e1", "ModelEnsemble", "pipe", "127.1.0.9", True),
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
