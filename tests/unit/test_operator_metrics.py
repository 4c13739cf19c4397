"""The operator's per-model series: what the chart's alerts and dashboard read, from the
status the reconciler wrote, gone with the model."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from tritonfleet.handlers.metrics import ModelStatusCollector


def model(name: str, **status: Any) -> dict[str, Any]:
    return {
        "kind": "TritonModel",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"modelName": f"{name}_v1", "serving": {"autoscaling": {"queueTimeTargetMs": 250}}},
        "status": status,
    }


def test_conditions_replicas_and_target_per_model() -> None:
    owners = [
        model(
            "llm",
            conditions=[
                {"type": "Ready", "status": "True"},
                {"type": "Synced", "status": "False", "reason": "SyncFailed"},
                {"type": "Loaded", "status": "Unknown"},
            ],
            replicas=3,
            readyReplicas=2,
        )
    ]
    registry = CollectorRegistry()
    registry.register(ModelStatusCollector(lambda: owners))
    text = generate_latest(registry).decode()
    base = 'kind="TritonModel",model="llm_v1",name="llm",namespace="ml"'
    assert f'tritonfleet_model_condition{{condition="Ready",{base},reason=""}} 1.0' in text
    synced = f'tritonfleet_model_condition{{condition="Synced",{base},reason="SyncFailed"}} 0.0'
    assert synced in text
    assert f'tritonfleet_model_condition{{condition="Loaded",{base},reason=""}} -1.0' in text
    assert f'tritonfleet_model_replicas{{{base},state="ready"}} 2.0' in text
    assert f"tritonfleet_model_queue_time_target_seconds{{{base}}} 0.25" in text
    owners.clear()  # the model is deleted: its series go with it
    assert 'name="llm"' not in generate_latest(registry).decode()
