"""The operator killed in the middle of a burst, restarted, and restarted again.

Reconciles are level-based and child names are deterministic, so a SIGKILL at
any point (between a child's apply and the status write, half-way through a
burst) must converge after a restart with exactly one of each child, and a
restart with nothing to do must write nothing (the watch caches are complete
before the first reconcile).
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
import yaml

from hack.devtools.operator import OperatorProcess
from hack.devtools.testbed import Testbed

pytestmark = pytest.mark.integration

MODELS = 30


def model(i: int) -> dict[str, object]:
    return {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": f"burst-{i:02d}"},
        "spec": {
            "source": {"inline": {"files": {"1/model.py": f"# {i}\n"}}},
            "config": {
                "backend": "python",
                "inputs": [{"name": "IN", "dataType": "TYPE_FP32", "dims": [1]}],
                "outputs": [{"name": "OUT", "dataType": "TYPE_FP32", "dims": [1]}],
            },
            "serving": {"gpus": 0},
        },
    }


def _settled(model: dict[str, Any]) -> bool:
    """Available, and the loader has reported on its pod (a kwok pod nothing answers on)."""
    conditions = {c["type"]: c for c in (model.get("status") or {}).get("conditions", [])}
    available = conditions.get("Available", {}).get("status") == "True"
    return available and conditions.get("Loaded", {}).get("reason") == "Unreachable"


def all_ready(testbed: Testbed, ns: str) -> bool:
    items = testbed.get("tritonmodels", namespace=ns)["items"]
    return len([m for m in items if _settled(m)]) == MODELS


@pytest.mark.usefixtures("crds")
def test_sigkill_mid_burst_then_restart_converges_without_duplicates(
    testbed: Testbed,
) -> None:
    prefix = f"rs{uuid.uuid4().hex[:4]}"
    with testbed.namespace(prefix) as ns:
        first = OperatorProcess(testbed, [f"{prefix}-*"]).start()
        try:
            testbed.apply(yaml.safe_dump_all([model(i) for i in range(MODELS)]), namespace=ns)
            # Kill it while it is busy writing: some children exist, most statuses do not.
            testbed.wait_for(
                lambda: first.writes() >= 15,
                timeout=60,
                interval=0.05,
                what="the operator to be half-way through the burst",
            )
        finally:
            first.kill()
        assert not all_ready(testbed, ns)

        second = OperatorProcess(testbed, [f"{prefix}-*"]).start()
        try:
            testbed.wait_for(
                lambda: all_ready(testbed, ns),
                timeout=180,
                what=f"all {MODELS} models settled after the restart",
            )
            for kind in ("deployments", "services", "configmaps", "jobs"):
                items = testbed.get(
                    kind, "-l", "app.kubernetes.io/managed-by=tritonfleet", namespace=ns
                )["items"]
                owners = Counter(i["metadata"]["ownerReferences"][0]["name"] for i in items)
                assert len(owners) == MODELS, kind
                assert set(owners.values()) == {1}, f"duplicate {kind}: {owners}"
            claims = testbed.get("pvc", namespace=ns)["items"]
            assert [c["metadata"]["name"] for c in claims] == ["tritonfleet-models"]
        finally:
            second.stop()

        # A restart with nothing to do writes nothing at all: by the time it is Ready
        # (memory complete, every model looked at once) it has written nothing.
        third = OperatorProcess(testbed, [f"{prefix}-*"]).start()
        try:
            testbed.wait_for(third.ready, timeout=60, what="/readyz after the restart")
            assert third.writes() == 0, third.requests_by_verb()
            testbed.kubectl(
                "delete", "tritonmodels", "--all", "-n", ns, "--timeout=120s", timeout=150
            )
        finally:
            third.stop()
    testbed.recycle_volumes()
