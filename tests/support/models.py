"""Helpers for tests that apply models to the testbed and wait on their status.

Used by the operator's integration tests (``tests/integration/test_operator*.py``,
``test_autoscaling_hpa.py``); the ``ns`` fixture they run in is in
``tests/support/fixtures.py``.
"""

from __future__ import annotations

from typing import Any

import yaml

from hack.devtools.operator import condition
from hack.devtools.testbed import Testbed


def inline_model(name: str, **serving: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": name},
        "spec": {
            "source": {"inline": {"files": {"1/model.py": "class TritonPythonModel: pass\n"}}},
            "config": {
                "backend": "python",
                "maxBatchSize": 8,
                "inputs": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
                "outputs": [{"name": "OUTPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
            },
            "serving": serving or {"gpus": 1},
        },
    }


def apply(testbed: Testbed, ns: str, *docs: dict[str, Any]) -> None:
    testbed.apply(yaml.safe_dump_all(list(docs)), namespace=ns)


def wait_condition(
    testbed: Testbed,
    ns: str,
    kind: str,
    name: str,
    type_: str,
    status: str = "True",
    timeout: float = 180,
    reason: str | None = None,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = testbed.get(kind, name, namespace=ns)
        cond = condition(obj, type_)
        if cond.get("status") == status and (reason is None or cond.get("reason") == reason):
            assert obj is not None
            return obj
        return None

    result: dict[str, Any] = testbed.wait_for(
        check, timeout=timeout, what=f"{kind} {ns}/{name} {type_}={status}"
    )
    return result


def wait_settled(
    testbed: Testbed, ns: str, kind: str, name: str, timeout: float = 180
) -> dict[str, Any]:
    """Available, and the loader has reported on the (fake, unreachable) pods."""

    def check() -> dict[str, Any] | None:
        obj = testbed.get(kind, name, namespace=ns)
        if (
            condition(obj, "Available").get("status") == "True"
            and condition(obj, "Loaded").get("reason") == "Unreachable"
        ):
            return obj
        return None

    result: dict[str, Any] = testbed.wait_for(
        check, timeout=timeout, what=f"{kind} {ns}/{name} Available and Loaded reported"
    )
    return result
