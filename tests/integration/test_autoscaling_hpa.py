"""Autoscaled models on the real API server and the real HPA controller.

Why: the HPA the operator builds must be accepted by the API server as is, be owned
by the model, leave the Deployment's replica count to the HPA, and — with no metrics
API reachable (this testbed has no APIService for external.metrics.k8s.io) — the
controller must hold the replicas, never scale down: "missing data never scales down"
checked against the real kube-controller-manager.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from hack.devtools.testbed import Testbed
from tests.support.models import apply, inline_model, wait_condition

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_autoscaled_model_gets_an_hpa_that_holds_replicas_without_metrics(
    testbed: Testbed,
    ns: str,
) -> None:
    model = inline_model(
        "scaled",
        gpus=0,
        replicas={"min": 2, "max": 5},
        autoscaling={"queueTimeTargetMs": 40},
    )
    apply(testbed, ns, model)
    wait_condition(testbed, ns, "tritonmodel", "scaled", "Synced")

    def hpa_reports() -> dict[str, Any] | None:
        hpa = testbed.get("hpa", "tm-scaled", namespace=ns)
        conds = {c["type"]: c for c in ((hpa or {}).get("status") or {}).get("conditions") or ()}
        return hpa if "ScalingActive" in conds else None

    hpa = testbed.wait_for(hpa_reports, timeout=120, what="the HPA controller's verdict")
    spec = hpa["spec"]
    assert hpa["metadata"]["ownerReferences"][0]["name"] == "scaled"
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 5)
    metric = spec["metrics"][0]["external"]
    assert metric["metric"]["name"] == "tritonfleet_queue_time_seconds"
    assert metric["target"] == {"type": "Value", "value": "40m"}  # 40 ms, in seconds
    conds = {c["type"]: c for c in hpa["status"]["conditions"]}
    assert conds["ScalingActive"]["status"] == "False", conds
    assert conds["ScalingActive"]["reason"] == "FailedGetExternalMetric", conds

    dep = testbed.get("deployment", "tm-scaled", "--show-managed-fields", namespace=ns)
    # the operator does not own spec.replicas: the HPA (or the API default) does
    ours = [m for m in dep["metadata"]["managedFields"] if m["manager"] == "tritonfleet"]
    assert ours and all("f:replicas" not in str(m["fieldsV1"].get("f:spec", {})) for m in ours)
    # held at min (2): the HPA raised it from the default 1, and never lowers it on no data
    testbed.wait_for(
        lambda: (
            (testbed.get("deployment", "tm-scaled", namespace=ns)["spec"]["replicas"] == 2) or None
        ),
        timeout=60,
        what="replicas raised to minReplicas by the HPA",
    )
    # The model's own status says so, in the HPA controller's words.
    obj = wait_condition(
        testbed, ns, "tritonmodel", "scaled", "Autoscaling", status="False",
        reason="FailedGetExternalMetric", timeout=60,
    )  # fmt: skip
    words = next(c for c in obj["status"]["conditions"] if c["type"] == "Autoscaling")
    assert "holding 2 replicas, missing metrics never scale down" in words["message"], words


def test_a_scale_to_zero_model_without_data_is_never_scaled_to_zero(
    testbed: Testbed,
    ns: str,
) -> None:
    # kwok's pods are never dialled here: the model's queue signal is "no data" for good.
    model = inline_model(
        "sleepy",
        gpus=0,
        replicas={"min": 0, "max": 2},
        autoscaling={"scaleToZeroAfterSeconds": 30, "windowSeconds": 10},
    )
    apply(testbed, ns, model)
    wait_condition(testbed, ns, "tritonmodel", "sleepy", "Available", timeout=120)
    started = time.monotonic()
    while time.monotonic() - started < 45:  # past the idle time, plus the window
        dep = testbed.get("deployment", "tm-sleepy", namespace=ns)
        assert dep["spec"]["replicas"] >= 1, "scaled to zero on missing data"
        assert "tritonfleet.io/scaled-to-zero" not in (dep["metadata"].get("annotations") or {})
        time.sleep(3)
    obj = testbed.get("tritonmodel", "sleepy", namespace=ns)
    words = next(c for c in obj["status"]["conditions"] if c["type"] == "Autoscaling")
    assert words["reason"] != "ScaledToZero", words
