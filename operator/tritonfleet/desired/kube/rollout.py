"""The rollout state machine, decided purely: from the spec's revision, what is served and
what was measured, the Deployments to run, the traffic split, ``status.rollout`` and the
Events of the step.

Why: a model update must never fail a request, and a bad revision must not reach
everyone. ``status.revision`` is what every pod serves (fully rolled out);
``status.rollout`` is the move towards the spec's revision (the *target*):

* **Rolling** (``spec.rollout.strategy``, default): the stable Deployment's pod template
  moves to the target; the Deployment replaces pods ``maxSurge`` at a time and, with
  ``maxUnavailable: 0`` and the pods' readiness gate, removes an old pod only after a
  new one is loaded and published to the gateways. Pods of both revisions answer
  meanwhile (``weights`` empty: every loaded pod takes requests). A revision that does
  not load never becomes available, so the old pods stay; the message quotes Triton.
* **Canary**: the target runs in a Deployment of its own (``canary_deployment``) beside
  the stable one. Once its pods are loaded, each step gives it ``weight`` % of the
  requests (``weights``) for ``pauseSeconds`` and judges it on the gateway's numbers
  (``desired.kube.analysis.judge``); it then moves on, and after the last step the
  stable Deployment is rolled to the target (*promotion*, the canary's pods standing in
  for the stable pods being replaced) and the canary removed. A crossed limit, or
  ``kubectl annotate ... tritonfleet.io/rollout=abort``, rolls it back: the canary goes,
  the stable revision takes all requests, and the target is not tried again until the
  spec's revision changes (or ``tritonfleet.io/rollout=retry``). ``promote`` skips the
  remaining steps. A canary needs a stable revision with pods: a first rollout, or a
  model scaled to zero, rolls instead (no pods are started just to judge a revision).

Where it sits: ``desired.kube.plan`` gathers a :class:`RolloutInput` from the owner's
status and its Deployments' watch, asks :func:`decide`, applies/deletes the
Deployments it names and writes the status. The gateways read ``status.pods`` and
``status.rollout.weights`` (``desired.gateway.cluster``). No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from tritonfleet.api.rollout import CanaryStep, RolloutSpec
from tritonfleet.api.status import (
    PodModelState,
    RevisionNumbers,
    RolloutAnalysis,
    RolloutStatus,
)
from tritonfleet.desired.kube.analysis import Verdict, judge
from tritonfleet.desired.kube.events import Event
from tritonfleet.desired.kube.objects import Serves, Surge

#: Annotation a user sets to steer a canary: promote, abort, or retry (after a rollback).
COMMAND_ANNOTATION = "tritonfleet.io/rollout"
COMMANDS = ("promote", "abort", "retry")
#: How often a canary step is re-judged while its window runs (seconds).
ANALYSIS_RECHECK_SECONDS = 5.0
#: How often a rollout that waits on pods looks again without being woken (seconds).
PROGRESS_RECHECK_SECONDS = 10.0

Phase = Literal["Progressing", "Analyzing", "Promoting", "Succeeded", "RolledBack"]


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerDeployment:
    """What the rollout needs of one Triton Deployment (from the reconciler's watch)."""

    serves: Serves  # () when unknown (a template from before rollouts)
    revision: str  # the template's revision
    replicas: int = 1  # spec.replicas
    pods: int = 0  # status.replicas: every pod, old template included
    updated: int = 0
    available: int = 0
    current: bool = True  # the controller has seen the latest spec
    deleting: bool = False

    @property
    def settled(self) -> bool:
        """No pod of an older template is left, and the current template's are all there
        and available (zero pods of a Deployment at zero count as settled)."""
        return (
            self.current
            and self.pods == self.updated
            and self.updated >= self.replicas
            and self.available >= self.replicas
        )


@dataclass(frozen=True)
class FleetPods:
    """The loader's view of the object's pods (``status.pods``), by revision."""

    serving: Mapping[str, int] = field(default_factory=dict)  # revision → pods Ready at it
    failures: Mapping[str, str] = field(default_factory=dict)  # wanted revision → Triton's words

    @classmethod
    def of(cls, pods: Sequence[PodModelState]) -> FleetPods:
        serving: dict[str, int] = {}
        failures: dict[str, str] = {}
        for pod in pods:
            if pod.state == "Ready" and pod.revision:
                serving[pod.revision] = serving.get(pod.revision, 0) + 1
            elif pod.state == "Failed" and pod.wanted:
                failures.setdefault(pod.wanted, f"{pod.name}: {pod.message}")
        return cls(serving, failures)


@dataclass(frozen=True)
class RolloutInput:
    spec: RolloutSpec
    target: Serves  # what a pod of the spec's revision loads (its revision last)
    synced: bool  # the target's files (and an ensemble's members') are published
    revision: str | None  # status.revision: fully rolled out
    status: RolloutStatus | None  # status.rollout
    stable: ServerDeployment | None
    canary: ServerDeployment | None
    pods: FleetPods
    now: datetime
    command: str | None = None  # the tritonfleet.io/rollout annotation
    numbers: Mapping[str, RevisionNumbers] = field(default_factory=dict)  # this step's window

    @property
    def target_revision(self) -> str:
        return self.target[-1][1]


@dataclass(frozen=True)
class RolloutDecision:
    """``stable_serves``: the stable Deployment's pods load this (None: leave it as it
    is). ``canary``: pods of the canary Deployment (None: it must not exist)."""

    stable_serves: Serves | None
    surge: Surge
    canary: int | None
    status: RolloutStatus | None
    revision: str | None
    rolled_back: tuple[str, str] | None = None  # (reason, message) of RolledBack=True
    events: tuple[Event, ...] = ()
    command_done: bool = False
    requeue_after: float | None = None


# --- helpers -----------------------------------------------------------------------------------


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _since(stamp: str | None, now: datetime) -> float:
    if not stamp:
        return 0.0
    try:
        then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return max(0.0, (now - then).total_seconds())


def canary_size(stable_replicas: int, weight: int, max_surge: int) -> int:
    """Canary pods for a step: its share of the stable replicas, at least 1, at most
    ``maxSurge`` (the capacity a rollout may add)."""
    return max(1, min(max_surge, math.ceil(stable_replicas * weight / 100)))


def split(stable: str, target: str, weight: int) -> dict[str, int]:
    return {stable: 100 - weight, target: weight}


def describe(numbers: RevisionNumbers | None) -> str:
    if numbers is None:
        return "no requests"
    rate = "n/a" if numbers.error_rate is None else f"{numbers.error_rate * 100:.1f} %"
    out = f"{numbers.requests} requests, {numbers.errors} errors ({rate})"
    if numbers.p99_latency_ms is not None:
        out += f", p99 {numbers.p99_latency_ms:g} ms"
    if numbers.queue_time_ms is not None:
        out += f", queue {numbers.queue_time_ms:g} ms"
    return out


def _numbers_text(analysis: RolloutAnalysis | None) -> str:
    if analysis is None or analysis.canary is None:
        return ""
    return (
        f"canary: {describe(analysis.canary)}; stable: {describe(analysis.stable)} "
        f"(over {analysis.window_seconds} s)"
    )


def _with(status: RolloutStatus, **changes: object) -> RolloutStatus:
    return status.model_copy(update=changes)


def parse_command(raw: str | None) -> str | None:
    return raw.strip().lower() if raw and raw.strip() else None


def _kept(inp: RolloutInput) -> Serves | None:
    """What the stable Deployment serves now (None: unknown - a template from before
    rollouts that names no member revisions - so leave it alone)."""
    if inp.stable is None or not inp.stable.revision:
        return ()
    return inp.stable.serves or None


def _default_surge(inp: RolloutInput) -> Surge:
    return Surge(inp.spec.max_surge, 0)


# --- the decision ------------------------------------------------------------------------------


def decide(inp: RolloutInput) -> RolloutDecision:
    """The whole step (see the module docstring)."""
    target = inp.target_revision
    prev = inp.status if inp.status is not None and inp.status.target_revision == target else None
    command = parse_command(inp.command)
    if not inp.synced:
        decision = _waiting_for_sync(inp, prev)
    elif _canary_applies(inp, prev):
        decision = _canary(inp, prev, command)
    else:
        decision = _rolling(inp, prev)
    if command is not None and not decision.command_done:
        # Not a canary in a state the command applies to: say so once, and let it go.
        decision = replace(
            decision,
            command_done=True,
            events=(*decision.events, _ignored(command, decision.status)),
        )
    return decision


def _ignored(command: str, status: RolloutStatus | None) -> Event:
    if command not in COMMANDS:
        return Event(
            "Warning",
            "UnknownRolloutCommand",
            f"annotation {COMMAND_ANNOTATION}={command!r} is none of {', '.join(COMMANDS)}; "
            "ignored",
        )
    phase = status.phase if status is not None else "none"
    hint = (
        "; to go back from a Rolling update, revert the spec"
        if status is None or status.strategy == "Rolling" or status.phase == "Promoting"
        else ""
    )
    return Event(
        "Warning",
        "RolloutCommandIgnored",
        f"{COMMAND_ANNOTATION}={command} does not apply to the rollout's phase ({phase}){hint}",
    )


def _canary_applies(inp: RolloutInput, prev: RolloutStatus | None) -> bool:
    """A canary needs the strategy, pods of a stable revision to compare with, and the
    stable Deployment still serving it (or a promotion of this target under way)."""
    if inp.spec.strategy != "Canary" or inp.spec.canary is None:
        return False
    stable = inp.stable
    if stable is None or stable.replicas == 0 or not inp.revision:
        return False  # nothing to compare with: roll (a scaled-to-zero model rolls on waking)
    if prev is not None and prev.strategy == "Canary" and prev.phase != "Succeeded":
        return True
    return inp.revision != inp.target_revision and stable.revision == inp.revision


def _waiting_for_sync(inp: RolloutInput, prev: RolloutStatus | None) -> RolloutDecision:
    """The target's files are being copied: what serves keeps serving, nothing else runs."""
    target = inp.target_revision
    surge = _default_surge(inp)
    if prev is not None and prev.phase == "RolledBack":
        return RolloutDecision(_kept(inp), surge, None, prev, inp.revision, _rolled(prev))
    if inp.revision == target and prev is None:
        return RolloutDecision(_kept(inp), surge, None, inp.status, inp.revision)
    serving = f"; revision {inp.revision} keeps answering" if inp.revision else ""
    status = RolloutStatus(
        target_revision=target,
        stable_revision=inp.revision,
        strategy=inp.spec.strategy,
        phase="Progressing",
        started_at=prev.started_at if prev is not None else _stamp(inp.now),
        reason="Syncing",
        message=f"copying revision {target} into the model repository{serving}",
    )
    events = () if prev is not None or not inp.revision else (_started(inp),)
    return RolloutDecision(_kept(inp), surge, None, status, inp.revision, events=events)


def _started(inp: RolloutInput) -> Event:
    target = inp.target_revision
    how = "Rolling update"
    canary = inp.spec.canary
    if inp.spec.strategy == "Canary" and canary is not None:
        how = "Canary " + " → ".join(f"{s.weight} %" for s in canary.steps)
    since = f" (from {inp.revision})" if inp.revision else ""
    return Event("Normal", "RolloutStarted", f"rolling out revision {target}{since}: {how}")


def _rolled(status: RolloutStatus) -> tuple[str, str]:
    return (status.reason or "RolledBack", status.message)


# --- Rolling ------------------------------------------------------------------------------


def _rolling(inp: RolloutInput, prev: RolloutStatus | None) -> RolloutDecision:
    target = inp.target_revision
    stable = inp.stable
    surge = _default_surge(inp)
    at_target = stable is not None and stable.revision == target
    if at_target and prev is not None and prev.phase == "Succeeded":
        # Rolled out: replicas coming and going (an HPA, scale to zero) are no rollout.
        return RolloutDecision(inp.target, surge, None, prev, target)
    others = {rev for rev, n in inp.pods.serving.items() if n and rev != target}
    steady = prev is None and inp.revision == target and inp.canary is None and not others
    if at_target and steady:
        return RolloutDecision(inp.target, surge, None, inp.status, target)
    done = (
        stable is not None
        and stable.revision == target
        and stable.settled
        and not others
        and (inp.canary is None or inp.canary.deleting)
    )
    if done:
        assert stable is not None
        started = prev.started_at if prev is not None else _stamp(inp.now)
        took = _since(started, inp.now)
        where = (
            f"every pod serves revision {target}"
            if stable.replicas
            else f"scaled to zero: revision {target} loads on the next activation"
        )
        status = RolloutStatus(
            target_revision=target,
            stable_revision=prev.stable_revision if prev is not None else inp.revision,
            strategy="Rolling",
            phase="Succeeded",
            started_at=started,
            finished_at=_stamp(inp.now),
            reason="RolledOut",
            message=where,
        )
        # A first rollout is the model coming up: the Ready transition says so already.
        event = Event("Normal", "RolloutSucceeded", f"{where} (rolled out in {took:.0f} s)")
        events = (event,) if status.stable_revision else ()
        return RolloutDecision(inp.target, surge, None, status, target, events=events)
    fresh = prev is None or prev.phase in ("Succeeded", "RolledBack") or prev.strategy != "Rolling"
    serving_target = inp.pods.serving.get(target, 0)
    failure = inp.pods.failures.get(target)
    if failure:
        still = f"; revision {inp.revision} keeps answering" if inp.revision and others else ""
        reason, message = "LoadFailed", f"revision {target} does not load: {failure}{still}"
    elif stable is None or not inp.revision:
        reason = "Starting"
        message = f"starting revision {target}: {serving_target} pod(s) loaded"
    else:
        reason = "Replacing"
        message = (
            f"rolling out revision {target}: {stable.updated}/{stable.replicas} pods updated, "
            f"{serving_target} serve it; the old pods answer until the new ones are loaded"
        )
    status = RolloutStatus(
        target_revision=target,
        stable_revision=inp.revision,
        strategy="Rolling",
        phase="Progressing",
        started_at=prev.started_at if prev is not None and not fresh else _stamp(inp.now),
        reason=reason,
        message=message,
    )
    new = fresh and (prev is None or prev.phase != "Progressing") and bool(inp.revision)
    events = (_started(inp),) if new else ()
    return RolloutDecision(
        inp.target,
        surge,
        None,
        status,
        inp.revision,
        events=events,
        requeue_after=PROGRESS_RECHECK_SECONDS,
    )


# --- Canary -------------------------------------------------------------------------------


def _canary(inp: RolloutInput, prev: RolloutStatus | None, command: str | None) -> RolloutDecision:
    canary = inp.spec.canary
    assert canary is not None and inp.revision is not None
    steps = canary.steps
    if prev is None or prev.strategy != "Canary" or prev.phase == "Succeeded":
        return _enter_step(inp, _fresh(inp, len(steps)), 1, events=(_started(inp),))
    if prev.phase == "RolledBack":
        if command == "retry":
            retried = Event(
                "Normal", "RolloutRetried", f"retrying revision {inp.target_revision} by hand"
            )
            decision = _enter_step(inp, _fresh(inp, len(steps)), 1, events=(retried,))
            return replace(decision, command_done=True)
        return RolloutDecision(
            _kept(inp),
            _default_surge(inp),
            None,
            prev,
            inp.revision,
            _rolled(prev),
            command_done=command == "abort",
        )
    if prev.phase == "Promoting":
        return _promoting(inp, prev, command == "promote")
    if command == "abort":
        why = "aborted by hand (annotation tritonfleet.io/rollout=abort)"
        return replace(_rollback(inp, prev, "Aborted", why), command_done=True)
    if command == "promote":
        event = Event(
            "Normal",
            "Promoting",
            f"promoting revision {inp.target_revision} by hand, skipping the remaining steps",
        )
        decision = _promoting(inp, _with(prev, reason="PromotedByHand"), False)
        return replace(decision, command_done=True, events=(event, *decision.events))
    step = min(max(prev.step or 1, 1), len(steps))
    if prev.phase == "Progressing":
        return _enter_step(inp, prev, step)
    return _analyzing(inp, prev, step, steps[step - 1])


def _fresh(inp: RolloutInput, steps: int) -> RolloutStatus:
    return RolloutStatus(
        target_revision=inp.target_revision,
        stable_revision=inp.revision,
        strategy="Canary",
        phase="Progressing",
        step=1,
        steps=steps,
        weights={inp.revision or "": 100},
        started_at=_stamp(inp.now),
    )


def _canary_pods(inp: RolloutInput, weight: int) -> int:
    stable = inp.stable
    return canary_size(stable.replicas if stable is not None else 1, weight, inp.spec.max_surge)


def _enter_step(
    inp: RolloutInput, status: RolloutStatus, step: int, events: tuple[Event, ...] = ()
) -> RolloutDecision:
    """Step ``step`` begins once the canary has its pods loaded; until then the canary
    keeps the share it had (none before the first step)."""
    canary = inp.spec.canary
    assert canary is not None and inp.revision is not None
    target = inp.target_revision
    weight = canary.steps[step - 1].weight
    want = _canary_pods(inp, weight)
    loaded = inp.pods.serving.get(target, 0)
    surge = _default_surge(inp)
    if loaded >= want:
        weights = split(inp.revision, target, weight)
        pause = canary.steps[step - 1].pause_seconds
        entered = _with(
            status,
            phase="Analyzing",
            step=step,
            weights=weights,
            step_started_at=_stamp(inp.now),
            reason="StepStarted",
            message=f"step {step}/{len(canary.steps)}: {weight} % of requests on revision "
            f"{target}, judged over {pause} s",
            analysis=None,
        )
        passed = _numbers_text(status.analysis)
        note = Event(
            "Normal",
            "CanaryStep",
            f"step {step}/{len(canary.steps)}: {weight} % of the requests go to revision "
            f"{target} for {pause} s" + (f" (previous step passed: {passed})" if passed else ""),
        )
        return RolloutDecision(
            _kept(inp),
            surge,
            want,
            entered,
            inp.revision,
            events=(*events, note),
            requeue_after=min(max(float(pause), 1.0), ANALYSIS_RECHECK_SECONDS),
        )
    failure = inp.pods.failures.get(target)
    if failure:
        reason = "LoadFailed"
        message = (
            f"the canary (revision {target}) does not load: {failure}. It gets no traffic; "
            f"revision {inp.revision} answers. Fix the spec, or abort: kubectl annotate "
            f"<object> {COMMAND_ANNOTATION}=abort"
        )
    else:
        reason = "StartingCanary"
        message = (
            f"step {step}/{len(canary.steps)}: waiting for the canary, {loaded}/{want} pod(s) "
            f"of revision {target} loaded"
        )
    # A canary pod may be loaded (and in status.pods) before the step's split is written:
    # until then the stable revision takes every request, never an unsplit half.
    weights = dict(status.weights) or {inp.revision: 100}
    waiting = _with(
        status, phase="Progressing", step=step, weights=weights, reason=reason, message=message
    )
    return RolloutDecision(
        _kept(inp),
        surge,
        want,
        waiting,
        inp.revision,
        events=events,
        requeue_after=PROGRESS_RECHECK_SECONDS,
    )


def _analyzing(
    inp: RolloutInput, prev: RolloutStatus, step: int, current: CanaryStep
) -> RolloutDecision:
    canary = inp.spec.canary
    assert canary is not None and inp.revision is not None
    target = inp.target_revision
    elapsed = _since(prev.step_started_at, inp.now)
    mine, theirs = inp.numbers.get(target), inp.numbers.get(inp.revision)
    verdict: Verdict = judge(canary.analysis, mine, theirs)
    analysis = RolloutAnalysis(
        window_seconds=int(elapsed),
        canary=mine,
        stable=theirs,
        verdict=verdict.status,
        reason=verdict.why,
    )
    judged = _with(prev, analysis=analysis)
    if verdict.status == "Failed":
        why = f"step {step}/{len(canary.steps)} at {current.weight} %: {verdict.why}"
        return _rollback(inp, judged, "AnalysisFailed", why)
    over = elapsed >= current.pause_seconds
    if over and (verdict.status == "Passed" or current.pause_seconds == 0):
        if step < len(canary.steps):
            return _enter_step(inp, _with(judged, phase="Progressing"), step + 1)
        event = Event(
            "Normal",
            "Promoting",
            f"revision {target} passed every step ({_numbers_text(analysis)}); replacing the "
            "stable pods",
        )
        decision = _promoting(inp, _with(judged, reason="StepsPassed"), False)
        return replace(decision, events=(event, *decision.events))
    left = current.pause_seconds - elapsed
    message = (
        f"step {step}/{len(canary.steps)}: {current.weight} % of requests on revision "
        f"{target}, judged over {current.pause_seconds} s ({int(elapsed)} s so far): "
        f"{verdict.why}"
    )
    waiting = _with(judged, reason="Judging", message=message)
    return RolloutDecision(
        _kept(inp),
        _default_surge(inp),
        _canary_pods(inp, current.weight),
        waiting,
        inp.revision,
        requeue_after=min(max(left, 1.0), ANALYSIS_RECHECK_SECONDS),
    )


def _promoting(inp: RolloutInput, prev: RolloutStatus, again: bool) -> RolloutDecision:
    """The stable Deployment rolls to the target; the canary's pods stand in for the
    stable pods being replaced (``maxSurge: 0``, ``maxUnavailable``: the canary's loaded
    pods), so the rollout needs no capacity beyond the canary's."""
    target = inp.target_revision
    stable, canary_dep = inp.stable, inp.canary
    standing_in = canary_dep.available if canary_dep is not None and not canary_dep.deleting else 0
    surge = Surge(0, standing_in) if standing_in else _default_surge(inp)
    others = {rev for rev, n in inp.pods.serving.items() if n and rev != target}
    if stable is not None and stable.revision == target and stable.settled and not others:
        took = _since(prev.started_at, inp.now)
        status = _with(
            prev,
            phase="Succeeded",
            step=None,
            weights={},
            finished_at=_stamp(inp.now),
            reason="Promoted",
            message=f"every pod serves revision {target}; the canary was removed",
        )
        event = Event(
            "Normal",
            "RolloutSucceeded",
            f"revision {target} promoted: every pod serves it (rolled out in {took:.0f} s)",
        )
        return RolloutDecision(
            inp.target, _default_surge(inp), None, status, target, events=(event,)
        )
    replaced = stable.updated if stable is not None else 0
    wanted = stable.replicas if stable is not None else 0
    status = _with(
        prev,
        phase="Promoting",
        weights={},
        reason=prev.reason if prev.phase == "Promoting" else (prev.reason or "StepsPassed"),
        message=f"promoting revision {target}: {replaced}/{wanted} stable pods replaced; "
        "every loaded pod answers meanwhile",
    )
    keep = canary_dep.replicas if canary_dep is not None and not canary_dep.deleting else None
    return RolloutDecision(
        inp.target,
        surge,
        keep,
        status,
        inp.revision,
        command_done=again,
        requeue_after=PROGRESS_RECHECK_SECONDS,
    )


def _rollback(inp: RolloutInput, prev: RolloutStatus, reason: str, why: str) -> RolloutDecision:
    assert inp.revision is not None
    target = inp.target_revision
    numbers = _numbers_text(prev.analysis)
    message = (
        f"revision {target} rolled back: {why}"
        + (f" [{numbers}]" if numbers and numbers not in why else "")
        + f". Revision {inp.revision} answers every request; {target} is not tried again "
        f"until the spec changes (or kubectl annotate <object> {COMMAND_ANNOTATION}=retry)"
    )
    status = _with(
        prev,
        phase="RolledBack",
        weights={inp.revision: 100},
        finished_at=_stamp(inp.now),
        reason=reason,
        message=message,
    )
    event = Event("Warning", "RolledBack", message[:1024])
    return RolloutDecision(
        _kept(inp),
        _default_surge(inp),
        None,
        status,
        inp.revision,
        (reason, message),
        events=(event,),
    )
