"""A namespace deleted with its models in it, the operator running.

The operator once fought the namespace controller: every model's reconcile tried to
re-create children and post events in a namespace being deleted (6,773 warnings in
one benchmark run, and once a thousand models not released within 300 s). Each model
carries the operator's finalizer, so the namespace can only go once the operator has
let go of every model. The larger case (20 models, the operator busy in another
namespace meanwhile) is in the chaos suite; this one keeps the behaviour in
``make test``.
"""

from __future__ import annotations

import time
import uuid

import pytest

from hack.devtools.operator import OperatorProcess
from hack.devtools.testbed import Testbed
from tests.support.models import apply, inline_model, wait_settled

pytestmark = pytest.mark.integration

MODELS = 8
GONE_WITHIN_S = 90.0


@pytest.mark.usefixtures("crds")
def test_a_namespace_deleted_with_its_models_in_it_goes_without_a_warnings_storm(
    testbed: Testbed,
) -> None:
    prefix = f"nsdel{uuid.uuid4().hex[:4]}"
    operator = OperatorProcess(testbed, [f"{prefix}-*"]).start()
    try:
        with testbed.namespace(prefix) as doomed:
            names = [f"m{i}" for i in range(MODELS)]
            apply(testbed, doomed, *(inline_model(name, gpus=0) for name in names))
            for name in names:
                wait_settled(testbed, doomed, "tritonmodel", name)
            warnings_before = operator.log_path.read_text().count("level=warning")
            deleted = time.monotonic()
            testbed.kubectl("delete", "namespace", doomed, "--wait=false")
            testbed.wait_for(
                lambda: testbed.kubectl("get", "namespace", doomed, check=False).returncode != 0,
                timeout=GONE_WITHIN_S,
                what=f"namespace {doomed} with {MODELS} models gone",
            )
            gone_s = time.monotonic() - deleted
            log = operator.log_path.read_text()
            warnings = log.count("level=warning") - warnings_before
            print(f"\n[namespace] {MODELS} models: gone in {gone_s:.1f} s, {warnings} warnings")
            assert warnings <= 1, operator.log_tail(40)
            assert "Traceback" not in log, operator.log_tail(60)
            assert operator.proc is not None and operator.proc.poll() is None, "operator exited"
    finally:
        operator.stop()
    testbed.recycle_volumes()
