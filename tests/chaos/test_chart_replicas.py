"""The chart installed with two operator replicas (``operator.replicaCount=2``), and
its leader lost twice: evicted, as a node drain does, then SIGKILLed for good.

``helm install`` the chart on the testbed; the local pod runner runs its operator
and gateway pods (and the sync Jobs) as containers of the image built from this
checkout, with their ServiceAccount's own token, so the chart's RBAC, env and
probes are what is exercised. The models' Triton pods are kwok's (only the
operator's replicas matter here): the operator reports them unreachable, which
is how this suite knows the leader's loader ran (``tests/chaos/cluster.py``).

What a user would notice: both replicas Ready, one holds the Lease, carries the
leader label and alone backs the external metrics API's Service; only it writes
(the standby's API write counter stays at zero, every Event is the leader's);
when it goes, the standby takes the Lease within its duration plus one retry,
the Deployment's replacement stands by, models applied after the failover
converge, and no child is duplicated or orphaned.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from hack.devtools.chart import installed
from hack.devtools.operator import delete_models, parse_metrics
from hack.devtools.pod_runner import PROJECT_IMAGE_PREFIXES, PodRunner
from hack.devtools.testbed import Testbed
from tests.chaos.cluster import apply, children_problems, converged, writes_besides_leadership
from tritonfleet.desired.kube.leadership import LEADER_LABEL

pytestmark = pytest.mark.e2e

OPERATORS = "app.kubernetes.io/component=operator"
METRICS_PORT = 8080  # the chart's metrics.port
# A takeover after a SIGKILL waits out the Lease (nobody released it), noticed at the
# standby's next read (min(2 s, lease/5), cli/operator.py); slack for a loaded 2-core box.
SLACK_S = 6.0


@pytest.fixture
def project_pods(testbed: Testbed, tritonfleet_image: str) -> Iterator[PodRunner]:
    """A pod runner for the project's image only: the chart's pods run for real, the
    models' Triton pods stay kwok's."""
    runner = PodRunner(
        testbed.kubeconfig,
        testbed.state_dir,
        image_prefixes=PROJECT_IMAGE_PREFIXES,
        project_image=tritonfleet_image,
    ).start()
    try:
        yield runner
    finally:
        runner.stop()


class Replicas:
    """The chart's operator pods and their Lease, as the API server shows them."""

    def __init__(self, testbed: Testbed, namespace: str, release: str) -> None:
        self.testbed = testbed
        self.namespace = namespace
        self.fullname = f"{release}-tritonfleet"

    def lease(self) -> dict[str, Any]:
        return self.testbed.get("lease", self.fullname, namespace=self.namespace) or {}

    def holder(self) -> str:
        return str((self.lease().get("spec") or {}).get("holderIdentity") or "")

    def pods(self) -> dict[str, dict[str, Any]]:
        """Operator pods not being deleted, by name."""
        items = self.testbed.get("pods", "-l", OPERATORS, namespace=self.namespace)["items"]
        return {p["metadata"]["name"]: p for p in items
                if not p["metadata"].get("deletionTimestamp")}  # fmt: skip

    def metrics_api_backends(self) -> list[str]:
        """Pods behind the external metrics API's Service (the runner's EndpointSlice)."""
        slice_ = self.testbed.get("endpointslice", f"{self.fullname}-metrics-api-local-runner",
                                  namespace=self.namespace) or {}  # fmt: skip
        return sorted(e["targetRef"]["name"] for e in slice_.get("endpoints") or [])

    def settled(self) -> tuple[str, str] | None:
        """(leader, standby) once two pods are Ready, one holds the Lease, it alone is
        labelled leader and alone backs the metrics API; None until then."""
        pods = self.pods()
        holder = self.holder()
        if len(pods) != 2 or holder not in pods:
            return None
        for pod in pods.values():
            conditions = (pod.get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return None
        labels = {name: pod["metadata"].get("labels") or {} for name, pod in pods.items()}
        labelled = [name for name, values in labels.items() if values.get(LEADER_LABEL) == "true"]
        if labelled != [holder] or self.metrics_api_backends() != [holder]:
            return None
        (standby,) = set(pods) - {holder}
        return holder, standby

    def work_writes(self, pod: str) -> float:
        """API writes of one replica other than leader election's own (the Lease and
        the leader label on its pod), from its /metrics."""
        ip = self.pods()[pod]["status"]["podIP"]
        with urllib.request.urlopen(f"http://{ip}:{METRICS_PORT}/metrics", timeout=5) as resp:
            return writes_besides_leadership(parse_metrics(resp.read().decode()))

    def take_over(self, old: str, within_s: float) -> tuple[str, float]:
        """Wait for another replica than ``old`` to hold the Lease: (it, seconds)."""
        start = time.monotonic()

        def other() -> str | None:
            holder = self.holder()
            return holder if holder not in ("", old) else None

        new = self.testbed.wait_for(
            other, timeout=within_s + 30, interval=0.2, what=f"a replica other than {old} leading"
        )
        return new, time.monotonic() - start


def operator_events(testbed: Testbed, namespace: str) -> list[dict[str, Any]]:
    items = testbed.get("events", namespace=namespace)["items"]
    return [e for e in items if e.get("reportingComponent") == "tritonfleet-operator"]


def reporters(testbed: Testbed, namespace: str) -> Counter[str]:
    """Operator Events in ``namespace`` by the pod that posted them."""
    return Counter(str(e.get("reportingInstance")) for e in operator_events(testbed, namespace))


def evict(testbed: Testbed, namespace: str, pod: str) -> None:
    """What ``kubectl drain`` does to each pod: the Eviction API, which the chart's
    PodDisruptionBudget must allow for one of two replicas."""
    body = json.dumps(
        {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace},
        }
    )
    testbed.kubectl("create", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction",
                    "-f", "-", input=body)  # fmt: skip


@contextlib.contextmanager
def models_namespace(testbed: Testbed) -> Iterator[str]:
    """A namespace for the models, emptied while an operator still runs (finalizers)."""
    with testbed.namespace("ha") as ns:
        try:
            yield ns
        finally:
            delete_models(testbed, ns)


def converge(testbed: Testbed, ns: str, versions: dict[str, int], leader: str) -> None:
    testbed.wait_for(lambda: converged(testbed, ns, set(versions)), timeout=240,
                     what=f"{len(versions)} models converged under {leader}")  # fmt: skip


@pytest.mark.usefixtures("crds")
def test_chart_with_two_operator_replicas_one_leads_and_a_standby_takes_over(
    testbed: Testbed, project_pods: PodRunner
) -> None:
    system = f"tf-ha-{uuid.uuid4().hex[:5]}"
    # kwok's fake pods (127.244.x.x) are never dialled: only the runner's pod network.
    dial = f"operator.podNetworks={{{testbed.runner_pod_cidr}}}"
    started = time.monotonic()
    with (
        installed(testbed, system, "operator.replicaCount=2", dial) as release,
        models_namespace(testbed) as ns,
    ):
        replicas = Replicas(testbed, system, release)
        project_pods.wait_ready(system, OPERATORS, 2, timeout=240)
        first, standby = testbed.wait_for(replicas.settled, timeout=60,
                                          what="one leader and one standby")  # fmt: skip
        ready_s = time.monotonic() - started
        lease_s = float(replicas.lease()["spec"]["leaseDurationSeconds"])
        takeover_bound_s = lease_s + min(2.0, lease_s / 5) + SLACK_S

        # 1. Both up: the leader alone writes, and posts every Event.
        versions = {f"m{i}": 1 for i in range(3)}
        apply(testbed, ns, versions)
        converge(testbed, ns, versions, first)
        # API writes besides the Lease's, of each replica while leading and while standing by.
        writes = {first: replicas.work_writes(first)}
        standing_by = {standby: replicas.work_writes(standby)}
        assert writes[first] > 0
        assert standing_by[standby] == 0
        assert set(reporters(testbed, ns)) <= {first}, reporters(testbed, ns)

        # 2. The leader evicted (a drain): it releases the Lease on SIGTERM.
        was_standby = standby
        evict(testbed, system, first)
        # The warm standby or the drained pod's replacement, whichever campaigns first
        # once its memory is complete (with three models, the replacement lists them
        # in well under the standby's retry period).
        second, drain_takeover_s = replicas.take_over(first, takeover_bound_s)
        assert second in (standby, *replicas.pods()), second
        leader, standby = testbed.wait_for(replicas.settled, timeout=240,
                                           what="the replacement standing by")  # fmt: skip
        assert leader == second and standby != first
        edited = {"m0": 2} | {f"n{i}": 1 for i in range(2)}
        versions.update(edited)
        apply(testbed, ns, edited)
        converge(testbed, ns, versions, second)
        writes[second] = replicas.work_writes(second)
        standing_by[standby] = replicas.work_writes(standby)
        assert writes[second] > 0
        assert standing_by[standby] == 0

        # 3. The new leader SIGKILLed, its pod left behind (a node gone dark): nobody
        # releases the Lease, the standby waits it out.
        project_pods.kill(system, second, restart=False)
        third, kill_takeover_s = replicas.take_over(second, takeover_bound_s)
        assert third == standby
        added = {f"k{i}": 1 for i in range(2)}
        versions.update(added)
        apply(testbed, ns, added)
        converge(testbed, ns, versions, third)
        writes[third] = replicas.work_writes(third)
        # The dead pod removed (as the node's pods are): replaced, and the new one stands by.
        testbed.kubectl("delete", "pod", second, "-n", system, "--grace-period=0", "--force",
                        "--wait=false")  # fmt: skip
        leader, standby = testbed.wait_for(replicas.settled, timeout=240,
                                           what="the second replacement standing by")  # fmt: skip
        assert leader == third and standby not in (first, second)
        standing_by[standby] = replicas.work_writes(standby)
        assert standing_by[standby] == 0
        assert children_problems(testbed, ns, set(versions)) == []

        events = operator_events(testbed, ns)
        by_pod = reporters(testbed, ns)
        assert set(by_pod) <= {first, second, third}, by_pod
        # One object's Event with the same reason and message twice: an action done twice.
        posted = Counter(
            (e["involvedObject"].get("uid"), e.get("reason"), e.get("message")) for e in events
        )
        assert [key for key, n in posted.items() if n > 1] == []
        taker = "the standby" if second == was_standby else "its replacement"
        print(
            f"\n[chaos] chart replicaCount=2: both operator pods Ready, one leading, "
            f"{ready_s:.1f} s after helm install (Lease {lease_s:g} s)"
            f"\n[chaos] API writes (Lease aside) by each leader: "
            + ", ".join(f"{pod} {n:.0f}" for pod, n in writes.items())
            + "; by each standby: "
            + ", ".join(f"{pod} {n:.0f}" for pod, n in standing_by.items())
            + f"\n[chaos] leader evicted: {taker} held the Lease {drain_takeover_s:.1f} s "
            f"later; leader SIGKILLed: {kill_takeover_s:.1f} s later (bound "
            f"{takeover_bound_s:.0f} s)"
            f"\n[chaos] {len(versions)} models converged, no duplicate or orphaned child; "
            f"{len(events)} operator Events, by {dict(by_pod)}, none twice"
        )
        assert drain_takeover_s <= takeover_bound_s
        assert kill_takeover_s <= takeover_bound_s
        # Nor too early: the killed holder renewed at most a renew period (lease/3) before
        # it died; a standby taking over sooner could have run beside a live holder.
        assert kill_takeover_s >= lease_s * 2 / 3
    testbed.recycle_volumes()
