"""Control-plane faults under the operator and the in-cluster gateway.

* The operator SIGKILLed ten times, every few seconds, during a burst of applies,
  edits and deletes: every object converges (status at the latest generation,
  deleted models released), one child of each kind per model, none orphaned.
* The API server crash-restarted, then etcd, while the operator reconciles and the
  gateway polls: both recover without a restart of their own, models applied
  across the outages converge, and once converged nothing is written again.

The models run on the testbed's kwok nodes (no Triton answers there: the loader
reports them Unreachable at once), which keeps each case about the control plane.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.devtools.gateway import start_gateway
from hack.devtools.operator import OperatorProcess
from hack.devtools.testbed import Testbed, WaitTimeoutError
from tests.chaos.cluster import apply, children_problems, converged

pytestmark = pytest.mark.integration

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.mark.usefixtures("crds")
def test_operator_sigkilled_ten_times_in_a_burst_converges_without_duplicates_or_orphans(
    testbed: Testbed,
) -> None:
    prefix = f"ck{uuid.uuid4().hex[:4]}"
    versions = {f"m{i:02d}": 1 for i in range(16)}
    live = set(versions)
    kills = 0
    with testbed.namespace(prefix) as ns:
        began = time.monotonic()
        apply(testbed, ns, versions)
        for cycle in range(10):
            operator = OperatorProcess(testbed, [f"{prefix}-*"]).start()
            try:
                # Work for it while it runs: edits, a delete, a new model.
                edited = {n: versions[n] + 1 for n in sorted(live)[cycle % 3 :: 5]}
                versions.update(edited)
                apply(testbed, ns, edited)
                if cycle % 2 == 1:
                    gone = sorted(live)[0]
                    testbed.kubectl("delete", "tritonmodel", gone, "-n", ns, "--wait=false")
                    live.discard(gone)
                    new = f"n{cycle:02d}"
                    versions[new] = 1
                    live.add(new)
                    apply(testbed, ns, {new: 1})
                # Killed mid-work: after a few writes, or after 3 s at most.
                deadline = time.monotonic() + 3
                testbed.wait_for(
                    lambda: operator.writes() >= 5 or time.monotonic() > deadline,  # noqa: B023
                    timeout=30,
                    interval=0.05,
                    what="the operator at work",
                )
            finally:
                operator.kill()
                kills += 1
        last_kill = time.monotonic()
        final = OperatorProcess(testbed, [f"{prefix}-*"]).start()
        try:
            testbed.wait_for(
                lambda: converged(testbed, ns, live),
                timeout=240,
                what=f"{len(live)} models converged after {kills} kills",
            )
            converge_s = time.monotonic() - last_kill
            # Let the garbage collector see deleted owners before counting orphans.
            problems: list[str] = []

            def no_problems() -> bool:
                problems[:] = children_problems(testbed, ns, live)
                return not problems

            try:
                testbed.wait_for(no_problems, timeout=60, what="one child of each kind per model")
            except WaitTimeoutError as err:
                raise AssertionError(f"duplicates or orphans: {problems}") from err
            print(
                f"\n[chaos] operator SIGKILLed {kills} times over {last_kill - began:.0f} s; "
                f"{len(live)} models converged {converge_s:.1f} s after the last kill; "
                "0 duplicates, 0 orphans"
            )
            testbed.kubectl("delete", "tritonmodels", "--all", "-n", ns, "--timeout=120s",
                            timeout=150)  # fmt: skip
        finally:
            final.stop()
    testbed.recycle_volumes()


@pytest.fixture
def cluster_gateway(testbed: Testbed, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A namespace and the in-cluster gateway polling it: (namespace, gateway URL)."""
    prefix = f"cp{uuid.uuid4().hex[:4]}"
    with testbed.namespace(prefix) as ns:
        args = ["--kubeconfig", str(testbed.kubeconfig), "--namespace", ns]
        args += ["--poll-interval", "0.3", "--probe-interval", "0.2"]
        gw = start_gateway(args, tmp_path / "gateway.log")
        try:
            yield ns, gw.url
            assert gw.proc.poll() is None, f"the gateway exited:\n{gw.log_text()[-3000:]}"
        finally:
            gw.stop()
    testbed.recycle_volumes()


def served_models(url: str) -> set[str]:
    with _opener.open(url + "/v1/models", timeout=5) as resp:
        return {m["id"] for m in json.loads(resp.read())["data"]}


@pytest.mark.usefixtures("crds")
def test_api_server_and_etcd_restarts_are_survived_by_the_operator_and_the_gateway(
    testbed: Testbed, cluster_gateway: tuple[str, str]
) -> None:
    ns, gateway_url = cluster_gateway
    prefix = ns.rsplit("-", 1)[0]
    operator = OperatorProcess(testbed, [f"{prefix}-*"]).start()
    pid = operator.pid
    try:
        first = {f"a{i:02d}": 1 for i in range(10)}
        apply(testbed, ns, first)
        testbed.wait_for(lambda: operator.writes() >= 10, timeout=60, interval=0.05,
                         what="the operator reconciling")  # fmt: skip
        api_down = testbed.restart_component("kube-apiserver")
        second = {f"b{i:02d}": 1 for i in range(5)} | {"a00": 2, "a01": 2}
        apply(testbed, ns, second)
        testbed.wait_for(lambda: operator.writes() >= 20, timeout=60, interval=0.05,
                         what="the operator reconciling again")  # fmt: skip
        etcd_down = testbed.restart_component("etcd", down_s=2)
        etcd_back = time.monotonic()
        third = {f"c{i:02d}": 1 for i in range(5)}
        apply(testbed, ns, third)
        live = set(first) | set(second) | set(third)
        testbed.wait_for(lambda: converged(testbed, ns, live), timeout=180,
                         what="every model converged after the restarts")  # fmt: skip
        converge_s = time.monotonic() - etcd_back
        testbed.wait_for(lambda: served_models(gateway_url) >= live, timeout=60,
                         what="the gateway routing every model")  # fmt: skip
        gateway_s = time.monotonic() - etcd_back
        assert children_problems(testbed, ns, live) == []
        # The same processes throughout: recovered, not restarted.
        assert operator.proc is not None and operator.proc.poll() is None
        assert operator.pid == pid
        # Converged means quiet: nothing is written again and again.
        before = operator.writes()
        time.sleep(10)  # the quiet period being measured
        rewrites = operator.writes() - before
        print(
            f"\n[chaos] API server down {api_down:.1f} s, etcd down {etcd_down:.1f} s; "
            f"{len(live)} models converged {converge_s:.1f} s after etcd was back, the "
            f"gateway routed them all after {gateway_s:.1f} s; {rewrites:.0f} writes in 10 s "
            "once converged"
        )
        assert rewrites == 0, operator.requests_by_verb()
        testbed.kubectl("delete", "tritonmodels", "--all", "-n", ns, "--timeout=120s",
                        timeout=150)  # fmt: skip
    finally:
        operator.stop()


@pytest.mark.usefixtures("crds")
def test_api_server_throttling_and_failing_for_a_window_is_ridden_out(
    testbed: Testbed, tmp_path: Path
) -> None:
    """429 with Retry-After and 500s for 15 s, every watch cut at its start, while
    models are applied: all converge after the window, none twice."""
    from hack.devtools.faulty_apiserver import FaultyApiServer

    proxy = FaultyApiServer(testbed.kubeconfig).start()
    prefix = f"fa{uuid.uuid4().hex[:4]}"
    try:
        with testbed.namespace(prefix) as ns:
            env = {"KUBECONFIG": str(proxy.kubeconfig(tmp_path / "faulty.kubeconfig"))}
            operator = OperatorProcess(testbed, [f"{prefix}-*"], env=env).start()
            try:
                first = {f"a{i:02d}": 1 for i in range(8)}
                apply(testbed, ns, first)
                testbed.wait_for(lambda: operator.writes() >= 5, timeout=60, interval=0.05,
                                 what="the operator reconciling")  # fmt: skip
                proxy.fail_for(15)
                window_end = time.monotonic() + 15
                second = {f"b{i:02d}": 1 for i in range(6)} | {"a00": 2}
                apply(testbed, ns, second)  # through the real API server, not the proxy
                live = set(first) | set(second)
                testbed.wait_for(lambda: converged(testbed, ns, live), timeout=180,
                                 what="every model converged after the window")  # fmt: skip
                converge_s = time.monotonic() - window_end
                assert children_problems(testbed, ns, live) == []
                assert operator.proc is not None and operator.proc.poll() is None
                before = operator.writes()
                time.sleep(10)  # the quiet period being measured
                rewrites = operator.writes() - before
                print(
                    f"\n[chaos] API server 429/500 for 15 s ({proxy.counts['429']} x 429, "
                    f"{proxy.counts['500']} x 500, {proxy.counts['watches cut']} watches cut): "
                    f"{len(live)} models converged {converge_s:.1f} s after the window; "
                    f"{rewrites:.0f} writes in 10 s once converged"
                )
                assert proxy.counts["429"] > 0 and proxy.counts["500"] > 0
                assert rewrites == 0, operator.requests_by_verb()
                testbed.kubectl("delete", "tritonmodels", "--all", "-n", ns, "--timeout=120s",
                                timeout=150)  # fmt: skip
            finally:
                operator.stop()
        testbed.recycle_volumes()
    finally:
        proxy.stop()


@pytest.mark.usefixtures("crds")
def test_a_namespace_deleted_with_its_models_goes_quietly_while_another_churns(
    testbed: Testbed,
) -> None:
    """20 converged models in a namespace that is deleted while the same operator is
    busy in another: the namespace is gone within two minutes, without a storm of
    warnings (the operator once fought the namespace controller: thousands)."""
    prefix = f"nd{uuid.uuid4().hex[:4]}"
    operator = OperatorProcess(testbed, [f"{prefix}-*"]).start()
    try:
        with testbed.namespace(prefix) as busy, testbed.namespace(prefix) as doomed:
            models = {f"m{i:02d}": 1 for i in range(20)}
            apply(testbed, doomed, models)
            testbed.wait_for(lambda: converged(testbed, doomed, set(models)), timeout=240,
                             what="20 models converged")  # fmt: skip
            warnings_before = operator.log_path.read_text().count("level=warning")
            deleted = time.monotonic()
            testbed.kubectl("delete", "namespace", doomed, "--wait=false")
            apply(testbed, busy, {f"b{i:02d}": 1 for i in range(8)})  # the load meanwhile
            testbed.wait_for(
                lambda: testbed.kubectl("get", "namespace", doomed, check=False).returncode != 0,
                timeout=120,
                what=f"namespace {doomed} gone",
            )
            gone_s = time.monotonic() - deleted
            warnings = operator.log_path.read_text().count("level=warning") - warnings_before
            print(
                f"\n[chaos] namespace with 20 models deleted under load: gone in "
                f"{gone_s:.1f} s, {warnings} operator warnings meanwhile"
            )
            assert warnings <= 2, operator.log_tail(40)
            testbed.kubectl("delete", "tritonmodels", "--all", "-n", busy, "--timeout=120s",
                            timeout=150)  # fmt: skip
    finally:
        operator.stop()
    testbed.recycle_volumes()
