"""Operator replicas and their Lease (handlers/leadership.py, desired/kube/leadership.py):
exactly one replica leads at any moment, a standby takes over when the leader dies
(after the lease) or shuts down (at once), a leader cut off from the API server
stands down before anyone can take over, and a reconciler stopped by a stand-down
writes nothing until it leads again.

In-process, over tests/support/fake_kube.py (conditional writes answer 409 like the
API server), with short leases so a failover takes a fraction of a second;
tests/chaos/test_operator_replicas.py shows the same with two operator processes
on the testbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from tests.support.builders import model_doc
from tests.support.fake_kube import FakeKube, watch
from tests.unit.test_reconcile import Operator
from tritonfleet.adapters.kube import ApiError, Obj
from tritonfleet.desired.kube.leadership import decide, lease_state
from tritonfleet.handlers.leadership import LeaderElection

LEASE_S = 0.6


class Reachable:
    """One replica's way to the fake API server, which a test can cut."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.cut = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.kube, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.cut:
                raise ApiError(0, "ConnectionError", "connection refused", name, "")
            return await method(*args, **kwargs)

        return call


class Replica:
    def __init__(self, kube: FakeKube, name: str, leaders: list[str]) -> None:
        self.name = name
        self.link = Reachable(kube)
        self.started = 0
        self.leaders = leaders

        async def started() -> None:
            self.started += 1
            leaders.append(name)

        async def stopped() -> None:
            leaders.remove(name)

        self.election = LeaderElection(
            self.link,  # type: ignore[arg-type]
            "tritonfleet",
            "tritonfleet-operator",
            name,
            on_started=started,
            on_stopped=stopped,
            lease_s=LEASE_S,
            renew_s=LEASE_S / 3,
            retry_s=0.05,
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.election.run())

    async def crash(self) -> None:
        """SIGKILL: the loop and the work end, nothing is released."""
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.name in self.leaders:
            self.leaders.remove(self.name)
        self.election.leading = False


async def until(condition: Callable[[], bool], what: str, within_s: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def replicas(n: int) -> AsyncIterator[tuple[FakeKube, list[Replica], list[str]]]:
    kube = FakeKube()
    leaders: list[str] = []
    overlap: list[list[str]] = []
    group = [Replica(kube, f"operator-{i}", leaders) for i in range(n)]
    for replica in group:
        replica.start()

    async def watch_overlap() -> None:
        while True:
            if len(leaders) > 1:
                overlap.append(list(leaders))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch_overlap())
    try:
        yield kube, group, leaders
    finally:
        watcher.cancel()
        for replica in group:
            await replica.crash()
    assert not overlap, f"two replicas led at once: {overlap[:3]}"


def run(main: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(main(), 30))


def test_one_replica_of_three_leads() -> None:
    async def main() -> None:
        async with replicas(3) as (kube, group, leaders):
            await until(lambda: len(leaders) == 1, "a leader", 2)
            await asyncio.sleep(LEASE_S * 2)  # several renewals: still that one
            assert len(leaders) == 1 and sum(r.started for r in group) == 1
            lease = lease_state(kube.objects[("Lease", "tritonfleet", "tritonfleet-operator")])
            assert lease.holder == leaders[0] and lease.transitions == 0

    run(main)


def test_a_standby_takes_over_from_a_dead_leader_after_the_lease() -> None:
    async def main() -> None:
        async with replicas(2) as (kube, group, leaders):
            await until(lambda: len(leaders) == 1, "a leader", 2)
            first = next(r for r in group if r.name == leaders[0])
            await first.crash()
            took = await until(lambda: len(leaders) == 1, "the standby leading", 3)
            assert leaders[0] != first.name
            assert LEASE_S * 0.5 < took < LEASE_S * 2.5, f"failover in {took:.2f} s"
            lease = lease_state(kube.objects[("Lease", "tritonfleet", "tritonfleet-operator")])
            assert lease.transitions == 1

    run(main)


def test_a_leader_shutting_down_hands_over_at_once() -> None:
    async def main() -> None:
        async with replicas(2) as (_, group, leaders):
            await until(lambda: len(leaders) == 1, "a leader", 2)
            first = next(r for r in group if r.name == leaders[0])
            await first.crash()  # the loop ends ...
            await first.election.release()  # ... and the lease is handed over, as on SIGTERM
            took = await until(lambda: len(leaders) == 1, "the standby leading", 3)
            assert took < LEASE_S / 2, f"hand-over took {took:.2f} s"

    run(main)


def test_a_released_lease_goes_to_the_warm_standby_not_to_a_replica_still_listing() -> None:
    """A drain: the leader hands over on SIGTERM while its replacement pod starts. The
    replacement, whose memory is not complete yet, must not campaign; the standby,
    whose watches are warm, takes the Lease; the replacement stands by once listed."""

    async def main() -> None:
        async with replicas(2) as (kube, group, leaders):
            await until(lambda: len(leaders) == 1, "a leader", 2)
            first = next(r for r in group if r.name == leaders[0])
            standby = next(r for r in group if r is not first)
            listed = [False]
            replacement = Replica(kube, "operator-new", leaders)
            replacement.election.ready_to_lead = lambda: listed[0]
            replacement.start()
            group.append(replacement)
            await first.crash()
            await first.election.release()
            await until(lambda: leaders == [standby.name], "the warm standby leading", 3)
            # Now the standby goes too: the free Lease waits for the replacement's list.
            await standby.crash()
            await standby.election.release()
            await asyncio.sleep(LEASE_S * 2)  # time enough to take a free Lease many times
            assert leaders == [] and replacement.started == 0
            listed[0] = True
            await until(lambda: leaders == ["operator-new"], "the listed replacement leading", 3)

    run(main)


def test_a_leader_cut_off_from_the_api_stands_down_before_anyone_takes_over() -> None:
    """Renew deadline (2/3 of the lease) < lease: the overlap check of the fixture
    fails if the standby leads while the cut-off leader still works."""

    async def main() -> None:
        async with replicas(2) as (_, group, leaders):
            await until(lambda: len(leaders) == 1, "a leader", 2)
            first = next(r for r in group if r.name == leaders[0])
            first.link.cut = True
            await until(lambda: not first.election.leading, "the cut-off leader standing down", 2)
            await until(lambda: len(leaders) == 1, "the other leading", 3)
            first.link.cut = False
            await asyncio.sleep(LEASE_S)
            assert leaders != [first.name]  # back on the network: a standby now

    run(main)


def test_decisions_follow_the_lease_record() -> None:
    held: Obj = {
        "metadata": {"resourceVersion": "7"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    state = lease_state(held)
    assert decide(None, "b", 0) == "acquire"
    assert decide(state, "a", 100) == "renew"
    assert decide(state, "b", 14) == "wait"
    assert decide(state, "b", 16) == "acquire"
    released = lease_state({"metadata": {"resourceVersion": "8"}, "spec": {}})
    assert decide(released, "b", 0) == "acquire"


def test_a_stopped_reconciler_writes_nothing_until_started_again() -> None:
    """A replica standing down stops its reconciler: the watches still request
    reconciles (their memory stays warm), but nothing is written; started again, it
    re-checks every object it knows at once."""

    async def main() -> None:
        op = Operator()
        key = op.apply(model_doc("m"))
        op.reconciler.start()
        await until(lambda: bool(op.kube.of_kind("Deployment")), "the first reconcile", 5)
        await op.reconciler.stop()
        mark = len(op.kube.calls)
        deployment = op.kube.of_kind("Deployment")[0]["metadata"]["name"]
        watch(op.world, op.kube)  # the watches saw it created
        op.kube.objects.pop(("Deployment", "ml", deployment))  # drift a leader would repair
        watch(op.world, op.kube)  # and see it gone
        op.reconciler.request(key)
        op.reconciler.request(key, 0.01)
        await asyncio.sleep(0.2)
        assert op.kube.writes_since(mark) == []
        op.reconciler.start()
        await until(lambda: bool(op.kube.of_kind("Deployment")), "the repair after start", 5)
        await op.reconciler.stop()

    run(main)
