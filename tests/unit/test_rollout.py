"""The rollout state machine (desired.kube.rollout), decided purely: every phase of a
Rolling update and of a Canary, every way out of each (next step, promotion, rollback,
abort, promote, retry, revert, scale to zero), and what status and Events say."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tritonfleet.api.rollout import RolloutSpec
from tritonfleet.api.status import PodModelState, RevisionNumbers, RolloutStatus
from tritonfleet.desired.kube.objects import Surge
from tritonfleet.desired.kube.rollout import (
    FleetPods,
    RolloutDecision,
    RolloutInput,
    ServerDeployment,
    canary_size,
    decide,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
S, T = "stable0001", "target0002"

CANARY = RolloutSpec.model_validate(
    {
        "strategy": "Canary",
        "canary": {
            "steps": [
                {"weight": 10, "pauseSeconds": 60},
                {"weight": 50, "pauseSeconds": 60},
                {"weight": 100, "pauseSeconds": 30},
            ],
            "analysis": {"maxErrorRate": 0.05, "maxP99LatencyMs": 500, "minRequests": 20},
        },
    }
)
ROLLING = RolloutSpec()


def dep(revision: str, replicas: int = 2, **kw: Any) -> ServerDeployment:
    """A settled Deployment of ``revision`` unless told otherwise."""
    fields: dict[str, Any] = dict(
        serves=(("m", revision),),
        revision=revision,
        replicas=replicas,
        pods=replicas,
        updated=replicas,
        available=replicas,
    )
    fields.update(kw)
    return ServerDeployment(**fields)


def pods(**serving: int) -> FleetPods:
    return FleetPods({rev.replace("_", ""): n for rev, n in serving.items()})


def given(
    spec: RolloutSpec = CANARY,
    *,
    synced: bool = True,
    revision: str | None = S,
    status: RolloutStatus | None = None,
    stable: ServerDeployment | None = None,
    canary: ServerDeployment | None = None,
    fleet: FleetPods | None = None,
    now: datetime = NOW,
    command: str | None = None,
    numbers: dict[str, RevisionNumbers] | None = None,
) -> RolloutDecision:
    return decide(
        RolloutInput(
            spec=spec,
            target=(("m", T),),
            synced=synced,
            revision=revision,
            status=status,
            stable=stable if stable is not None else dep(S),
            canary=canary,
            pods=fleet if fleet is not None else FleetPods({S: 2}),
            now=now,
            command=command,
            numbers=numbers or {},
        )
    )


def reasons(decision: RolloutDecision) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in decision.events]


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def measured(requests: int, errors: int = 0, p99: float | None = 20.0) -> RevisionNumbers:
    return RevisionNumbers(
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else None,
        p99_latency_ms=p99,
    )


GOOD = {T: measured(100), S: measured(900)}


# --- Rolling ------------------------------------------------------------------------------


def test_while_the_new_revision_syncs_the_old_one_keeps_serving() -> None:
    decision = given(ROLLING, synced=False)
    assert decision.stable_serves == (("m", S),) and decision.canary is None
    assert decision.revision == S
    assert decision.status is not None and decision.status.phase == "Progressing"
    assert decision.status.reason == "Syncing" and f"revision {S} keeps answering" in (
        decision.status.message
    )
    assert reasons(decision) == [("Normal", "RolloutStarted")]


def test_a_first_rollout_starts_from_nothing_quietly() -> None:
    nothing = dep("", replicas=0, serves=())
    syncing = given(ROLLING, synced=False, revision=None, stable=nothing, fleet=FleetPods())
    assert syncing.stable_serves == () and syncing.revision is None
    assert syncing.events == ()  # the conditions say the model is coming up
    starting = given(ROLLING, revision=None, stable=nothing, fleet=FleetPods())
    assert starting.stable_serves == (("m", T),)
    assert starting.status is not None and starting.status.reason == "Starting"
    up = given(ROLLING, revision=None, stable=dep(T), fleet=pods(**{T: 2}))
    assert up.revision == T and up.status is not None and up.status.phase == "Succeeded"
    assert up.events == ()


def test_rolling_moves_the_stable_deployment_and_both_revisions_answer() -> None:
    rolling = dep(T, pods=3, updated=1, available=3)  # one new pod beside two old ones
    decision = given(ROLLING, stable=rolling, fleet=pods(**{S: 2, T: 1}))
    assert decision.stable_serves == (("m", T),)
    assert decision.surge == Surge(1, 0)
    assert decision.revision == S  # not yet what every pod serves
    status = decision.status
    assert status is not None and (status.phase, status.reason) == ("Progressing", "Replacing")
    assert status.weights == {}  # every loaded pod answers, whatever its revision
    assert "1/2 pods updated" in status.message
    assert decision.requeue_after is not None


def test_a_revision_that_does_not_load_never_replaces_the_old_pods() -> None:
    stuck = dep(T, pods=3, updated=1, available=2)
    failing = FleetPods({S: 2}, {T: "tm-m-x: RuntimeError: no weights"})
    decision = given(ROLLING, stable=stuck, fleet=failing)
    assert decision.revision == S
    assert decision.status is not None and decision.status.reason == "LoadFailed"
    assert "RuntimeError: no weights" in decision.status.message
    assert f"revision {S} keeps answering" in decision.status.message


def test_rolling_succeeds_once_no_old_pod_is_left() -> None:
    started = given(ROLLING, stable=dep(T, pods=3, updated=1), fleet=pods(**{S: 2, T: 1}))
    assert started.status is not None
    done = given(ROLLING, status=started.status, stable=dep(T), fleet=pods(**{T: 2}), now=later(42))
    assert done.revision == T
    assert done.status is not None and done.status.phase == "Succeeded"
    assert done.status.finished_at == "2026-03-01T12:00:42Z"
    assert reasons(done) == [("Normal", "RolloutSucceeded")]
    assert "42 s" in done.events[0].message


def test_once_rolled_out_replica_changes_are_no_rollout() -> None:
    done = given(ROLLING, stable=dep(T), fleet=pods(**{T: 2}))
    scaling = dep(T, replicas=4, pods=4, updated=2, available=2)  # an HPA scaling up
    again = given(ROLLING, revision=T, status=done.status, stable=scaling, fleet=pods(**{T: 2}))
    assert again.status == done.status and again.events == () and again.revision == T


def test_a_steady_object_from_before_rollouts_gets_no_rollout_status() -> None:
    steady = given(ROLLING, revision=T, stable=dep(T), fleet=pods(**{T: 2}))
    assert steady.status is None and steady.events == () and steady.revision == T


def test_reverting_mid_rollout_rolls_back_to_the_old_pods_without_a_gap() -> None:
    """The spec goes back to S while pods of T already answer: S is the target again,
    pods of both answer until T's are replaced."""
    back = decide(
        RolloutInput(
            spec=ROLLING,
            target=(("m", S),),
            synced=True,
            revision=S,
            status=None,
            stable=dep(S, pods=3, updated=2),
            canary=None,
            pods=pods(**{S: 2, T: 1}),
            now=NOW,
        )
    )
    assert back.stable_serves == (("m", S),) and back.revision == S
    assert back.status is not None and back.status.phase == "Progressing"


def test_a_model_at_zero_rolls_on_its_next_activation_without_starting_pods() -> None:
    zero = dep(S, replicas=0, pods=0, updated=0, available=0)
    moved = given(CANARY, stable=zero, fleet=FleetPods())  # a canary needs pods to compare
    assert moved.canary is None and moved.stable_serves == (("m", T),)
    at_target = replace(zero, serves=(("m", T),), revision=T)
    done = given(CANARY, status=moved.status, stable=at_target, fleet=FleetPods())
    assert done.revision == T
    assert done.status is not None and "loads on the next activation" in done.status.message


def test_a_template_from_before_rollouts_is_left_alone_while_the_target_syncs() -> None:
    """An ensemble's old template does not name its members' revisions: re-applying it
    would need them, so it stays as it is until the target can replace it."""
    legacy = dep(S, serves=())
    assert given(ROLLING, synced=False, stable=legacy).stable_serves is None


# --- Canary: steps ------------------------------------------------------------------------


def start() -> RolloutDecision:
    return given()


def test_a_canary_starts_beside_the_stable_pods_with_no_traffic_until_loaded() -> None:
    decision = start()
    assert decision.stable_serves == (("m", S),)  # the stable pods are not touched
    assert decision.canary == 1
    status = decision.status
    assert status is not None
    assert (status.phase, status.step, status.steps) == ("Progressing", 1, 3)
    assert status.weights == {S: 100}
    assert status.stable_revision == S and status.strategy == "Canary"
    assert reasons(decision) == [("Normal", "RolloutStarted")]
    assert "Canary 10 % → 50 % → 100 %" in decision.events[0].message


def test_a_canary_that_waited_for_its_sync_keeps_all_traffic_on_the_stable_pods() -> None:
    """The canary's pods may be loaded before its first step's split is written: the
    gateways must not route to them unsplit meanwhile."""
    syncing = given(synced=False)
    assert syncing.status is not None and syncing.status.reason == "Syncing"
    waiting = given(status=syncing.status, canary=dep(T, replicas=1, available=0))
    assert waiting.status is not None and waiting.status.phase == "Progressing"
    assert waiting.status.weights == {S: 100}


def enter_first_step() -> RolloutDecision:
    waiting = start()
    return given(status=waiting.status, canary=dep(T, replicas=1), fleet=pods(**{S: 2, T: 1}))


def test_the_first_step_begins_once_the_canary_is_loaded() -> None:
    decision = enter_first_step()
    status = decision.status
    assert status is not None
    assert (status.phase, status.step) == ("Analyzing", 1)
    assert status.weights == {S: 90, T: 10}
    assert status.step_started_at == "2026-03-01T12:00:00Z"
    assert reasons(decision) == [("Normal", "CanaryStep")]
    assert decision.requeue_after is not None and decision.requeue_after <= 5


def analyze(
    status: RolloutStatus | None,
    seconds: float,
    numbers: dict[str, RevisionNumbers],
    **kw: Any,
) -> RolloutDecision:
    fields: dict[str, Any] = dict(canary=dep(T, replicas=1), fleet=pods(**{S: 2, T: 1}))
    fields.update(kw)
    return given(status=status, now=later(seconds), numbers=numbers, **fields)


def test_a_step_is_judged_over_its_whole_window_then_the_next_begins() -> None:
    first = enter_first_step()
    halfway = analyze(first.status, 30, GOOD)
    assert halfway.status is not None and halfway.status.phase == "Analyzing"
    assert halfway.status.step == 1 and "30 s so far" in halfway.status.message
    assert halfway.status.analysis is not None and halfway.status.analysis.verdict == "Passed"
    assert halfway.events == ()
    second = analyze(halfway.status, 61, GOOD)
    assert second.status is not None
    assert (second.status.phase, second.status.step) == ("Analyzing", 2)
    assert second.status.weights == {S: 50, T: 50}
    assert second.status.step_started_at == "2026-03-01T12:01:01Z"
    (event,) = second.events
    assert event.reason == "CanaryStep" and "previous step passed: canary: 100 requests" in (
        event.message
    )


def test_a_step_without_enough_canary_requests_waits_for_them() -> None:
    first = enter_first_step()
    few = analyze(first.status, 90, {T: measured(3), S: measured(40)})
    assert few.status is not None and (few.status.phase, few.status.step) == ("Analyzing", 1)
    assert "3 of 20 canary requests so far" in few.status.message


def test_a_step_of_zero_seconds_moves_on_once_the_canary_is_loaded() -> None:
    spec = RolloutSpec.model_validate(
        {"strategy": "Canary", "canary": {"steps": [{"weight": 20, "pauseSeconds": 0}]}}
    )
    waiting = given(spec)
    loaded = given(spec, status=waiting.status, canary=dep(T, 1), fleet=pods(**{S: 2, T: 1}))
    assert loaded.status is not None and loaded.status.phase == "Analyzing"
    on = given(spec, status=loaded.status, canary=dep(T, 1), fleet=pods(**{S: 2, T: 1}))
    assert on.status is not None and on.status.phase == "Promoting"


def test_a_bigger_step_waits_for_more_canary_pods_keeping_the_share_it_had() -> None:
    spec4 = CANARY.model_copy(update={"max_surge": 4})
    big = dep(S, replicas=4)
    one = given(
        spec4,
        stable=big,
        status=start().status,
        canary=dep(T, 1),
        fleet=pods(**{S: 4, T: 1}),
    )
    assert one.status is not None and one.status.phase == "Analyzing"
    grow = given(
        spec4,
        stable=big,
        status=one.status,
        canary=dep(T, 1),
        fleet=pods(**{S: 4, T: 1}),
        now=later(61),
        numbers=GOOD,
    )
    assert grow.canary == 2  # 50 % of 4
    assert grow.status is not None and grow.status.phase == "Progressing"
    assert grow.status.step == 2 and grow.status.weights == {S: 90, T: 10}


@pytest.mark.parametrize(
    ("stable", "weight", "surge", "pods_"),
    [(1, 10, 1, 1), (2, 50, 1, 1), (4, 50, 4, 2), (10, 10, 3, 1), (10, 100, 3, 3), (0, 50, 2, 1)],
)
def test_canary_pods_follow_the_weight_within_max_surge(
    stable: int, weight: int, surge: int, pods_: int
) -> None:
    assert canary_size(stable, weight, surge) == pods_


# --- Canary: promotion ---------------------------------------------------------------------


def through_all_steps() -> RolloutDecision:
    status = enter_first_step().status
    moment = 0.0
    decision: RolloutDecision | None = None
    for _ in range(3):
        moment += 61
        decision = analyze(status, moment, GOOD)
        status = decision.status
    assert decision is not None
    return decision


def test_after_the_last_step_the_stable_pods_are_replaced_the_canary_standing_in() -> None:
    promoting = through_all_steps()
    status = promoting.status
    assert status is not None and status.phase == "Promoting"
    assert status.weights == {}  # every loaded pod answers while the stable pods go
    assert promoting.stable_serves == (("m", T),)
    assert promoting.canary == 1  # kept until the stable pods serve the target
    # No capacity beyond the canary: a stable pod goes only while a canary pod stands in.
    assert promoting.surge == Surge(0, 1)
    assert [e.reason for e in promoting.events] == ["Promoting"]
    assert promoting.revision == S


def test_promotion_ends_with_every_pod_on_the_target_and_the_canary_gone() -> None:
    promoting = through_all_steps()
    done = given(
        status=promoting.status,
        stable=dep(T),
        canary=dep(T, 1),
        fleet=pods(**{T: 3}),
        now=later(400),
    )
    assert done.revision == T and done.canary is None
    assert done.stable_serves == (("m", T),) and done.surge == Surge(1, 0)
    assert done.status is not None and (done.status.phase, done.status.reason) == (
        "Succeeded",
        "Promoted",
    )
    assert reasons(done) == [("Normal", "RolloutSucceeded")]


def test_promotion_waits_while_a_stable_pod_of_the_old_revision_answers() -> None:
    promoting = through_all_steps()
    half = given(
        status=promoting.status,
        stable=dep(T, pods=2, updated=1),
        canary=dep(T, 1),
        fleet=pods(**{S: 1, T: 2}),
        now=later(300),
    )
    assert half.status is not None and half.status.phase == "Promoting"
    assert half.canary == 1 and half.revision == S


# --- Canary: rollback ----------------------------------------------------------------------


def test_a_canary_failing_its_analysis_is_rolled_back_at_once_with_the_numbers() -> None:
    first = enter_first_step()
    bad = {T: measured(50, errors=10), S: measured(450)}
    decision = analyze(first.status, 12, bad)  # well within the 60 s window
    assert decision.canary is None and decision.stable_serves == (("m", S),)
    assert decision.revision == S
    status = decision.status
    assert status is not None and (status.phase, status.reason) == ("RolledBack", "AnalysisFailed")
    assert status.weights == {S: 100}
    assert status.analysis is not None and status.analysis.canary == bad[T]
    assert decision.rolled_back is not None and decision.rolled_back[0] == "AnalysisFailed"
    for text in (status.message, decision.events[0].message):
        assert "error rate 20.0 % (10/50)" in text and "0.0 % on the stable" in text
        assert "step 1/3 at 10 %" in text
    assert reasons(decision) == [("Warning", "RolledBack")]


def test_a_slow_canary_is_rolled_back_only_when_slower_than_the_stable_too() -> None:
    first = enter_first_step()
    both_slow = {T: measured(100, p99=800), S: measured(900, p99=900)}
    busy = analyze(first.status, 10, both_slow)
    assert busy.status is not None and busy.status.phase == "Analyzing"
    only_canary = {T: measured(100, p99=800), S: measured(900, p99=100)}
    slow = analyze(first.status, 10, only_canary)
    assert slow.status is not None and slow.status.phase == "RolledBack"
    assert "p99 latency 800 ms over the limit of 500 ms" in slow.status.message


def test_a_rolled_back_revision_is_not_tried_again_until_the_spec_changes() -> None:
    first = enter_first_step()
    back = analyze(first.status, 12, {T: measured(50, errors=10), S: measured(450)})
    again = given(status=back.status, now=later(600))
    assert again.status == back.status and again.canary is None and again.events == ()
    assert again.rolled_back == back.rolled_back
    syncing_again = given(status=back.status, synced=False)
    assert syncing_again.status == back.status
    # A new revision in the spec is a new rollout.
    new = decide(
        RolloutInput(
            spec=CANARY,
            target=(("m", "newer0003"),),
            synced=True,
            revision=S,
            status=back.status,
            stable=dep(S),
            canary=None,
            pods=FleetPods({S: 2}),
            now=later(700),
        )
    )
    assert new.status is not None and new.status.target_revision == "newer0003"
    assert new.status.phase == "Progressing" and new.rolled_back is None


def test_retry_by_annotation_starts_a_rolled_back_revision_afresh() -> None:
    back = analyze(enter_first_step().status, 12, {T: measured(50, 10), S: measured(450)})
    retried = given(status=back.status, command="retry", now=later(900))
    assert retried.command_done and retried.canary == 1 and retried.rolled_back is None
    assert retried.status is not None and (retried.status.phase, retried.status.step) == (
        "Progressing",
        1,
    )
    assert reasons(retried) == [("Normal", "RolloutRetried")]


def test_abort_by_annotation_rolls_back_at_once() -> None:
    aborted = given(status=enter_first_step().status, command=" Abort ", now=later(5))
    assert aborted.command_done and aborted.canary is None
    assert aborted.status is not None and aborted.status.reason == "Aborted"
    assert aborted.rolled_back is not None and "aborted by hand" in aborted.rolled_back[1]


def test_promote_by_annotation_skips_the_remaining_steps() -> None:
    promoted = given(status=enter_first_step().status, command="promote", now=later(5))
    assert promoted.command_done
    assert promoted.status is not None and promoted.status.phase == "Promoting"
    assert promoted.status.reason == "PromotedByHand"
    assert promoted.stable_serves == (("m", T),)
    assert reasons(promoted)[0] == ("Normal", "Promoting")


@pytest.mark.parametrize(
    ("spec", "command", "reason"),
    [
        (CANARY, "rewind", "UnknownRolloutCommand"),
        (ROLLING, "abort", "RolloutCommandIgnored"),  # revert the spec instead
        (CANARY, "retry", "RolloutCommandIgnored"),  # nothing was rolled back
    ],
)
def test_a_command_that_does_not_apply_is_said_so_and_consumed(
    spec: RolloutSpec, command: str, reason: str
) -> None:
    decision = given(spec, command=command)
    assert decision.command_done
    assert ("Warning", reason) in reasons(decision)


def test_a_canary_that_does_not_load_never_gets_traffic_and_says_why() -> None:
    waiting = start()
    failing = FleetPods({S: 2}, {T: "tmc-m-x: boom: no such file"})
    decision = given(status=waiting.status, canary=dep(T, 1, available=0), fleet=failing)
    status = decision.status
    assert status is not None and (status.phase, status.reason) == ("Progressing", "LoadFailed")
    assert status.weights == {S: 100}
    assert "boom: no such file" in status.message and "tritonfleet.io/rollout=abort" in (
        status.message
    )
    assert decision.canary == 1  # left in place for the logs; abort removes it
    assert decision.revision == S


def test_reverting_the_spec_during_a_canary_returns_to_the_stable_pods() -> None:
    first = enter_first_step()
    reverted = decide(
        RolloutInput(
            spec=CANARY,
            target=(("m", S),),
            synced=True,
            revision=S,
            status=first.status,
            stable=dep(S),
            canary=dep(T, 1),
            pods=pods(**{S: 2, T: 1}),
            now=later(20),
        )
    )
    assert reverted.canary is None and reverted.stable_serves == (("m", S),)
    assert reverted.revision == S
    settled = decide(
        RolloutInput(
            spec=CANARY,
            target=(("m", S),),
            synced=True,
            revision=S,
            status=reverted.status,
            stable=dep(S),
            canary=replace(dep(T, 1), deleting=True),
            pods=pods(**{S: 2}),
            now=later(30),
        )
    )
    assert settled.status is not None and settled.status.phase == "Succeeded"


def test_a_canary_that_goes_to_zero_rolls_instead() -> None:
    first = enter_first_step()
    zero = dep(S, replicas=0, pods=0, updated=0, available=0)
    idle = given(status=first.status, stable=zero, canary=dep(T, 1), fleet=pods(**{T: 1}))
    assert idle.canary is None and idle.stable_serves == (("m", T),)


def test_fleet_pods_count_serving_pods_by_revision_and_keep_a_failure_per_revision() -> None:
    fleet = FleetPods.of(
        [
            PodModelState(name="a", state="Ready", revision=S, wanted=S),
            PodModelState(name="b", state="Ready", revision=T, wanted=T),
            PodModelState(name="c", state="Terminating", revision=S, wanted=S),
            PodModelState(name="d", state="Failed", wanted=T, message="boom"),
            PodModelState(name="e", state="Loading", wanted=T),
        ]
    )
    assert fleet.serving == {S: 1, T: 1}
    assert fleet.failures == {T: "d: boom"}
