"""Two operator replicas: one active, the other standing by, and the hand-over when
the active one is SIGKILLed.

Both processes run ``tritonfleet operator --leader-election`` against the testbed
with a short Lease. What a user would notice: only the Lease holder writes (no
double actions, no duplicate children), the standby takes over within the Lease's
duration plus its retry period after the holder dies, models applied and edited
after the kill converge, and a replica that comes back stands by.
"""

from __future__ import annotations

import time
import uuid

import pytest

from hack.devtools.operator import OperatorProcess
from hack.devtools.testbed import Testbed
from tests.chaos.cluster import apply, children_problems, converged, work_writes

pytestmark = pytest.mark.integration

LEASE_S = 6.0
RETRY_S = min(2.0, LEASE_S / 5)  # as cli/operator.py derives it
# A standby takes over once the Lease went unrenewed LEASE_S, noticed at its next
# read (RETRY_S); the slack is for a loaded 2-core machine.
TAKEOVER_WITHIN_S = LEASE_S + RETRY_S + 4


def replica(testbed: Testbed, prefix: str, ns: str, name: str) -> OperatorProcess:
    env = {
        "TRITONFLEET_LEADER_ELECTION": "true",
        "TRITONFLEET_LEASE_NAMESPACE": ns,
        "TRITONFLEET_LEASE_DURATION_SECONDS": str(LEASE_S),
        "TRITONFLEET_POD_NAME": name,
    }
    return OperatorProcess(testbed, [f"{prefix}-*"], env=env)


def holder(testbed: Testbed, ns: str) -> str:
    lease = testbed.get("lease", "tritonfleet-operator", namespace=ns) or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


@pytest.mark.usefixtures("crds")
def test_two_replicas_one_writes_and_the_standby_takes_over_when_it_is_killed(
    testbed: Testbed,
) -> None:
    prefix = f"lr{uuid.uuid4().hex[:4]}"
    with testbed.namespace(prefix) as ns:
        first = replica(testbed, prefix, ns, "replica-a").start()
        second = None
        try:
            testbed.wait_for(lambda: holder(testbed, ns) == "replica-a", timeout=30,
                             what="replica-a holding the Lease")  # fmt: skip
            second = replica(testbed, prefix, ns, "replica-b").start()
            versions = {f"m{i:02d}": 1 for i in range(8)}
            apply(testbed, ns, versions)
            testbed.wait_for(lambda: converged(testbed, ns, set(versions)), timeout=180,
                             what="the models converged under replica-a")  # fmt: skip
            # Exactly one replica acts.
            assert work_writes(first) > 0
            assert work_writes(second) == 0, second.requests_by_verb()
            assert holder(testbed, ns) == "replica-a"

            killed = time.monotonic()
            first.kill()
            testbed.wait_for(lambda: holder(testbed, ns) == "replica-b", timeout=60,
                             interval=0.1, what="replica-b taking over the Lease")  # fmt: skip
            takeover_s = time.monotonic() - killed
            edited = {"m00": 2, "m01": 2} | {f"n{i:02d}": 1 for i in range(4)}
            versions.update(edited)
            apply(testbed, ns, edited)
            testbed.wait_for(lambda: converged(testbed, ns, set(versions)), timeout=180,
                             what="the models converged under replica-b")  # fmt: skip
            converge_s = time.monotonic() - killed
            assert children_problems(testbed, ns, set(versions)) == []

            # The killed replica comes back and stands by: it writes nothing.
            back = replica(testbed, prefix, ns, "replica-a").start()
            try:
                time.sleep(LEASE_S + RETRY_S)  # long enough for a wrongful take-over
                assert holder(testbed, ns) == "replica-b"
                assert work_writes(back) == 0, back.requests_by_verb()
            finally:
                back.stop()
            print(
                f"\n[chaos] two replicas: replica-b took the Lease {takeover_s:.1f} s after "
                f"replica-a was SIGKILLed (Lease {LEASE_S:g} s); {len(versions)} models "
                f"converged {converge_s:.1f} s after the kill; the standby wrote nothing"
            )
            testbed.kubectl("delete", "tritonmodels", "--all", "-n", ns, "--timeout=120s",
                            timeout=150)  # fmt: skip
            assert takeover_s <= TAKEOVER_WITHIN_S
        finally:
            first.kill()
            if second is not None:
                second.stop()
    testbed.recycle_volumes()
