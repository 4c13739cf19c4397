"""One reconcile step, decided purely: from an object and what is observed of
its children, the writes to make (only those needed), the status to report,
and the event that tells a user what happened.

Handlers gather the inputs from memory (watch streams and the shared parsed
views of ``desired.kube.views``) and carry out the :class:`Plan`; everything that
decides lives here and is unit-tested without a cluster. An object whose desired
state is already in place yields an empty plan and the status it already has - the
basis of "no writes when idle".

How a new revision replaces the served one (which Deployments run which revision,
the traffic split, ``status.rollout``) is the rollout state machine's call
(``desired.kube.rollout``); this module feeds it and carries its decision into the
children and the status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from tritonfleet.api.settings import OperatorSettings
from tritonfleet.api.status import (
    AUTOSCALING,
    AVAILABLE,
    LOADED,
    PLACED,
    READY,
    ROLLED_BACK,
    SYNCED,
    VALID,
    Condition,
    ModelStatus,
    RevisionNumbers,
    find_condition,
    set_condition,
)
from tritonfleet.desired.kube.autoscaling import (
    HPA_KIND,
    ZeroMark,
    autoscaling_condition,
    hpa,
    hpa_name,
)
from tritonfleet.desired.kube.drift import applied_paths, describe_path, missing_paths
from tritonfleet.desired.kube.events import Event
from tritonfleet.desired.kube.objects import (
    FINALIZER,
    Obj,
    Target,
    canary_deployment,
    cleanup_job,
    cleanup_target,
    deployment,
    model_configmap,
    object_key,
    parse_serves,
    replicas,
    repository_claim,
    service,
    sync_job,
)
from tritonfleet.desired.kube.observed import ChildState
from tritonfleet.desired.kube.placement import PooledPlacement
from tritonfleet.desired.kube.rollout import (
    COMMAND_ANNOTATION,
    FleetPods,
    RolloutDecision,
    RolloutInput,
    ServerDeployment,
    decide,
)
from tritonfleet.desired.kube.views import Owner, OwnerView, Rendering

Verb = Literal["apply", "create", "delete", "add-finalizer", "release"]
Measurements = Mapping[str, RevisionNumbers]  # revision → its numbers in a canary step
Key = tuple[str, str, str]

# Condition reasons a user must act on: they make the event a Warning.
FAILURE_REASONS = frozenset(
    {
        "InvalidSpec",
        "SyncFailed",
        "ReplicaFailure",
        "CleanupFailed",
        "ApplyFailed",
        "DoesNotFit",
        "PoolNotFound",
    }
)


@dataclass(frozen=True)
class Action:
    """One write: apply/create an object, add an owner to the claim, delete, or release."""

    verb: Verb
    kind: str
    namespace: str
    name: str
    why: str
    body: Obj | None = None
    propagation: Literal["Background", "Foreground"] = "Background"

    def describe(self) -> str:
        return f"{self.verb} {self.kind} {self.name} ({self.why})"


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    status: ModelStatus | None = None  # None: leave status alone
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None  # seconds; when something will change without an event
    consume: str | None = None  # an owner annotation to remove once the status is written


# --- the plan ------------------------------------------------------------------------


def _now_iso(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def apply_reason(desired: Obj, observed: ChildState | None) -> str | None:
    """Why ``desired`` must be applied over ``observed``, or None when it is in place."""
    if observed is None:
        return "missing"
    if observed.deleting:
        return None  # being deleted: re-created once it is gone
    wanted = desired["metadata"].get("annotations", {}).get("tritonfleet.io/spec-hash", "")
    if observed.spec_hash != wanted:
        return "spec changed"
    missing = missing_paths(applied_paths(desired), observed.owned)
    if missing:
        shown = ", ".join(describe_path(p) for p in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return f"changed by another client: {shown}{more}"
    return None


def _apply_if_needed(desired: Obj, observed: Mapping[Key, ChildState], out: list[Action]) -> None:
    kind, namespace, name = object_key(desired)
    why = apply_reason(desired, observed.get((kind, namespace, name)))
    if why:
        out.append(Action("apply", kind, namespace, name, why, desired))


def _children_of(kind: str, observed: Mapping[Key, ChildState]) -> list[ChildState]:
    return sorted((c for c in observed.values() if c.kind == kind), key=lambda c: c.name)


@dataclass
class _Facts:
    """Intermediate observations shared by actions and conditions."""

    synced: bool = False
    sync_job: ChildState | None = None
    waiting_for_old_syncs: list[str] = field(default_factory=list)
    deployment: ChildState | None = None
    canary: ChildState | None = None
    claim_deleting: bool = False
    serving: bool = False  # the stable Deployment runs (or is about to run) a synced revision


def _claim_actions(
    target: Target, settings: OperatorSettings, claim: ChildState | None, out: list[Action]
) -> bool:
    """Create the namespace's claim if missing; True while it is being deleted.

    A claim created in this same reconcile is usable at once: the pods that mount it
    simply wait for it to bind. It is created (not applied) so that concurrent
    reconciles of a namespace's models cannot fight over it: the first wins, the
    others get AlreadyExists and carry on.
    """
    desired = repository_claim(target.namespace, settings)
    if desired is None:
        return False
    if claim is None:
        out.append(
            Action(
                "create",
                "PersistentVolumeClaim",
                target.namespace,
                desired["metadata"]["name"],
                "missing",
                desired,
            )
        )
        return False
    return claim.deleting


def _sync_actions(
    rendering: Rendering,
    target: Target,
    settings: OperatorSettings,
    observed: Mapping[Key, ChildState],
    facts: _Facts,
    out: list[Action],
) -> None:
    jobs = [j for j in _children_of("Job", observed) if j.name != target.cleanup_job_name]
    current = observed.get(("Job", target.namespace, target.sync_job_name()))
    facts.sync_job = current
    facts.deployment = observed.get(("Deployment", target.namespace, target.deployment_name))
    facts.canary = observed.get(("Deployment", target.namespace, target.canary_deployment_name))
    running = {d.revision for d in (facts.deployment, facts.canary) if d is not None}
    own_synced = (current is not None and current.succeeded) or target.revision in running
    facts.synced = own_synced and not rendering.members_pending
    if own_synced:
        return
    # An older revision's sync still running could publish stale files after ours:
    # stop it first (Foreground: the Job goes only once its pods are gone).
    for job in jobs:
        if job.revision != target.revision and not job.succeeded and not job.failed:
            facts.waiting_for_old_syncs.append(job.name)
            if not job.deleting:
                out.append(
                    Action(
                        "delete",
                        "Job",
                        job.namespace,
                        job.name,
                        f"superseded by revision {target.revision}",
                        propagation="Foreground",
                    )
                )
    _apply_if_needed(model_configmap(target), observed, out)
    if not facts.waiting_for_old_syncs and not facts.claim_deleting and current is None:
        # Jobs are immutable once created: only ever created, never re-applied. The
        # revisions pods serve now must survive its garbage collection.
        served = {rendering.owner.status.revision, *running} - {None, "", target.revision}
        out.append(
            Action(
                "apply",
                "Job",
                target.namespace,
                target.sync_job_name(),
                "missing",
                sync_job(target, settings, tuple(sorted(r for r in served if r))),
            )
        )


def _autoscaler_actions(
    target: Target,
    settings: OperatorSettings,
    observed: Mapping[Key, ChildState],
    out: list[Action],
) -> None:
    """The model's HPA (desired.kube.autoscaling) applied, or deleted once autoscaling is off."""
    want = hpa(target, settings.scale_down_stabilization_seconds)
    if want is not None:
        _apply_if_needed(want, observed, out)
        return
    for child in _children_of(HPA_KIND, observed):
        if not child.deleting:
            out.append(
                Action("delete", child.kind, child.namespace, child.name, "autoscaling is off")
            )


def _garbage_actions(
    target: Target,
    observed: Mapping[Key, ChildState],
    decision: RolloutDecision,
    out: list[Action],
) -> None:
    """Once the current revision is rolled out, the ConfigMaps and Jobs of older ones go."""
    if decision.revision != target.revision:
        return
    for child in [*_children_of("ConfigMap", observed), *_children_of("Job", observed)]:
        if child.name == target.cleanup_job_name or child.deleting:
            continue
        if child.revision and child.revision != target.revision:
            out.append(
                Action(
                    "delete",
                    child.kind,
                    child.namespace,
                    child.name,
                    f"revision {child.revision} is no longer served",
                )
            )


def _condition(type_: str, ok: bool | None, reason: str, message: str, gen: int) -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return Condition(
        type=type_, status=status, reason=reason, message=message, observed_generation=gen
    )


def _sync_condition(rendering: Rendering, target: Target, facts: _Facts, gen: int) -> Condition:
    job = facts.sync_job
    if facts.synced:
        return _condition(
            SYNCED, True, "SyncSucceeded", f"revision {target.revision} is in the repository", gen
        )
    if job is not None and job.failed:
        return _condition(
            SYNCED,
            False,
            "SyncFailed",
            f"sync Job {job.name} failed ({job.problem or 'see its logs'}). Check the source, "
            f"then `kubectl logs job/{job.name} -n {target.namespace}`; delete the Job to retry.",
            gen,
        )
    if facts.claim_deleting:
        return _condition(
            SYNCED,
            False,
            "WaitingForRepository",
            "the model-repository claim is being deleted; it is re-created once it is gone",
            gen,
        )
    if facts.waiting_for_old_syncs:
        return _condition(
            SYNCED,
            False,
            "Syncing",
            f"stopping the sync of an older revision ({', '.join(facts.waiting_for_old_syncs)}) "
            f"before syncing revision {target.revision}",
            gen,
        )
    if rendering.members_pending and (job is None or job.succeeded):
        return _condition(
            SYNCED,
            False,
            "WaitingForMembers",
            f"member(s) not synced yet: {', '.join(rendering.members_pending)}",
            gen,
        )
    return _condition(
        SYNCED,
        False,
        "Syncing",
        f"sync Job {target.sync_job_name()} is copying revision {target.revision} "
        "into the model repository",
        gen,
    )


def _available_condition(target: Target, facts: _Facts, gen: int) -> Condition:
    dep = facts.deployment
    if dep is None or not facts.serving:
        return _condition(
            AVAILABLE,
            False,
            "WaitingForSync",
            "Triton replicas start once a revision is synced (the Deployment has 0 until then)",
            gen,
        )
    mark = ZeroMark.parse(dep.scaled_to_zero) if dep.scaled_to_zero else None
    if mark is not None and dep.replicas == 0:
        return _condition(AVAILABLE, False, "ScaledToZero", mark.describe(), gen)
    canary = facts.canary if facts.canary is not None and not facts.canary.deleting else None
    if dep.ready_replicas > 0 or (canary is not None and canary.ready_replicas > 0):
        extra = f" (+{canary.ready_replicas} canary)" if canary is not None else ""
        return _condition(
            AVAILABLE,
            True,
            "MinimumReplicasAvailable",
            f"{dep.ready_replicas}/{dep.replicas} Triton replicas ready{extra}",
            gen,
        )
    hint = (
        f"{dep.ready_replicas}/{dep.replicas} Triton replicas ready; see "
        f"`kubectl describe pods -n {target.namespace} -l tritonfleet.io/model={target.name}`"
        f" (GPU capacity, image pull, model load errors)"
    )
    if dep.problem:
        return _condition(AVAILABLE, False, "ReplicaFailure", f"{dep.problem}. {hint}", gen)
    return _condition(AVAILABLE, False, "NoReplicasReady", hint, gen)


def _autoscaling_condition(
    target: Target, observed: Mapping[Key, ChildState], facts: _Facts, gen: int
) -> Condition | None:
    dep = facts.deployment
    hpa_child = observed.get((HPA_KIND, target.namespace, hpa_name(target)))
    decided = autoscaling_condition(
        target,
        hpa_child.hpa if hpa_child is not None else None,
        dep.replicas if dep is not None and facts.serving else 0,
        dep.scaled_to_zero if dep is not None else "",
    )
    if decided is None:
        return None
    status, reason, message = decided
    ok = {"True": True, "False": False}.get(status)
    return _condition(AUTOSCALING, ok, reason, message, gen)


def _not_ready(
    conditions: Sequence[Condition], types: Sequence[str], waiting: str, gen: int
) -> Condition | None:
    """Ready=False from the first of ``types`` not True, or while the loader has not
    confirmed Loaded for this generation of the spec (``waiting`` says for what)."""
    for type_ in types:
        cond = find_condition(conditions, type_)
        if cond is not None and cond.status != "True":
            return _condition(READY, False, cond.reason, f"{type_}: {cond.message}", gen)
    loaded = find_condition(conditions, LOADED)
    if loaded is None or (loaded.observed_generation or 0) < gen:
        return _condition(READY, False, "Loading", waiting, gen)
    return None


def _ready_condition(
    conditions: Sequence[Condition],
    target: Target,
    facts: _Facts,
    decision: RolloutDecision,
    gen: int,
) -> Condition:
    waiting = f"waiting for every Triton pod to confirm it serves revision {target.revision}"
    not_ready = _not_ready(conditions, (VALID, SYNCED, AVAILABLE, LOADED), waiting, gen)
    if not_ready is not None:
        return not_ready
    dep = facts.deployment
    assert dep is not None  # Available is True
    rollout = decision.status
    if decision.revision != target.revision:
        phase = rollout.phase if rollout is not None else "Progressing"
        reason = "RolledBack" if phase == "RolledBack" else "RollingOut"
        message = rollout.message if rollout is not None else f"rolling out {target.revision}"
        return _condition(READY, False, reason, message, gen)
    return _condition(
        READY,
        True,
        "Ready",
        f"revision {target.revision} served by {dep.ready_replicas} Triton replica(s)",
        gen,
    )


def _served_by(view: OwnerView, available: bool) -> str:
    if view.failover_mode == "hosted":
        return "hosted"
    if available:
        return "triton"
    if view.failover_mode == "auto":
        return "hosted"
    return "none"


def _with_conditions(
    old: ModelStatus, new: Sequence[Condition], now: str, **fields: Any
) -> ModelStatus:
    conditions: tuple[Condition, ...] = tuple(old.conditions)
    for cond in new:
        conditions = set_condition(conditions, cond, now)
    return old.model_copy(update={"conditions": list(conditions), **fields})


def _transition_event(
    old: ModelStatus, new: ModelStatus, actions: Sequence[Action]
) -> Event | None:
    """One event per reconcile that changed something: what changed and what was done."""
    changes = []
    failing = None
    for cond in new.conditions:
        before = find_condition(old.conditions, cond.type)
        # A transition is a status flip (or a new failure); progress within False
        # (Syncing → WaitingForSync) shows in the status, without an event each.
        flipped = before is None or before.status != cond.status
        new_failure = cond.reason in FAILURE_REASONS and (
            before is None or before.reason != cond.reason
        )
        if not (flipped or new_failure):
            continue
        changes.append(f"{cond.type}={cond.status} ({cond.reason}): {cond.message}")
        if cond.reason in FAILURE_REASONS and failing is None:
            failing = cond
    done = [a.describe() for a in actions]
    if not changes and not done:
        return None
    message = "; ".join([*changes, *(["did: " + ", ".join(done)] if done else [])])
    if failing is not None:
        return Event("Warning", failing.reason, message[:1024])
    # A child missing once the object was up (Ready, or Available while Ready waits
    # for Loaded) was removed by someone: re-creating it is a repair.
    was_up = any(
        c is not None and c.status == "True"
        for c in (find_condition(old.conditions, READY), find_condition(old.conditions, AVAILABLE))
    )
    repaired = [
        a
        for a in actions
        if a.why.startswith("changed by another client") or (a.why == "missing" and was_up)
    ]
    ready = find_condition(new.conditions, READY)
    if repaired:
        reason = "Repaired"
    elif changes and ready is not None:
        reason = ready.reason
    else:
        reason = "Applied"
    return Event("Normal", reason, message[:1024])


def _add_finalizer(owner: Owner, out: list[Action]) -> None:
    if FINALIZER not in owner.finalizers:
        out.append(
            Action(
                "add-finalizer",
                owner.kind,
                owner.namespace,
                owner.name,
                "removes the model's files from the repository on deletion",
            )
        )


def _server(child: ChildState | None, target: Target) -> ServerDeployment | None:
    """A Triton Deployment as the rollout sees it. A template from before rollouts names
    no ``serves``: a TritonModel's is its one model at the template's revision."""
    if child is None:
        return None
    serves = parse_serves(child.serves)
    if not serves and child.revision and target.kind == "TritonModel":
        serves = ((target.triton_name, child.revision),)
    return ServerDeployment(
        serves=serves,
        revision=child.revision,
        replicas=child.replicas,
        pods=child.status_replicas,
        updated=child.updated_replicas,
        available=child.available_replicas,
        current=child.observed_generation >= child.generation,
        deleting=child.deleting,
    )


def _rollout(
    rendering: Rendering,
    target: Target,
    facts: _Facts,
    now: datetime,
    measured: Measurements,
) -> RolloutDecision:
    owner = rendering.owner
    return decide(
        RolloutInput(
            spec=rendering.view.rollout,
            target=target.serves,
            synced=facts.synced,
            revision=owner.status.revision,
            status=owner.status.rollout,
            stable=_server(facts.deployment, target),
            canary=_server(facts.canary, target),
            pods=FleetPods.of(owner.status.pods),
            now=now,
            command=owner.rollout_command,
            numbers=measured,
        )
    )


def _deployment_actions(
    target: Target,
    settings: OperatorSettings,
    decision: RolloutDecision,
    facts: _Facts,
    observed: Mapping[Key, ChildState],
    out: list[Action],
) -> None:
    """The stable Deployment at the revision the rollout names, and the canary Deployment
    while the rollout wants one (deleted once it does not)."""
    if decision.stable_serves is not None:
        stable = deployment(target, settings, decision.stable_serves, decision.surge)
        _apply_if_needed(stable, observed, out)
    canary = facts.canary
    if decision.canary is not None:
        _apply_if_needed(canary_deployment(target, settings, decision.canary), observed, out)
    elif canary is not None and not canary.deleting:
        why = "the canary is over" if decision.status is not None else "no canary is wanted"
        out.append(Action("delete", "Deployment", canary.namespace, canary.name, why))


def _rolled_back_condition(decision: RolloutDecision, gen: int) -> Condition | None:
    if decision.rolled_back is None:
        return None
    reason, message = decision.rolled_back
    return _condition(ROLLED_BACK, True, reason, message, gen)


def plan(
    rendering: Rendering,
    observed: Mapping[Key, ChildState],
    claim: ChildState | None,
    settings: OperatorSettings,
    now: datetime,
    measured: Measurements | None = None,
    *,
    pool: PooledPlacement | None = None,
) -> Plan:
    """The writes, status and event of one reconcile of a live (not deleting) object.

    ``measured``: the gateways' numbers of each revision over the current canary step
    (only while one is judged; ``scaling.rollout_signals`` through the reconcile).
    ``pool``: for a pooled object, what its pool's status says of it (:func:`plan_pooled`).
    """
    owner = rendering.owner
    stamp = _now_iso(now)
    gen = owner.generation
    actions: list[Action] = []
    if rendering.target is None:
        listing = "\n".join(f"- {p}" for p in rendering.problems)
        valid = _condition(
            VALID,
            False,
            "InvalidSpec",
            f"{len(rendering.problems)} problem(s); fix them and re-apply:\n{listing}",
            gen,
        )
        unknown = [
            _condition(t, None, "InvalidSpec", "the spec is invalid", gen)
            for t in (SYNCED, AVAILABLE)
        ]
        ready = _condition(READY, False, "InvalidSpec", "the spec is invalid (see Valid)", gen)
        status = _with_conditions(
            owner.status,
            [valid, *unknown, ready],
            stamp,
            observed_generation=gen,
            served_by=_served_by(rendering.view, False),
        )
        return _finish(owner, status, actions)
    target = rendering.target
    if target.serving.pool is not None:
        name = target.serving.pool.name
        found = pool if pool is not None else PooledPlacement(name, found=False)
        return plan_pooled(rendering, target, observed, claim, settings, now, found)
    _add_finalizer(owner, actions)
    facts = _Facts()
    facts.claim_deleting = _claim_actions(target, settings, claim, actions)
    _sync_actions(rendering, target, settings, observed, facts, actions)
    _apply_if_needed(service(target), observed, actions)
    decision = _rollout(rendering, target, facts, now, measured or {})
    facts.serving = bool(decision.stable_serves) or (
        decision.stable_serves is None and facts.deployment is not None
    )
    if not facts.claim_deleting:
        _deployment_actions(target, settings, decision, facts, observed, actions)
        _autoscaler_actions(target, settings, observed, actions)
    _garbage_actions(target, observed, decision, actions)
    conditions = [
        _condition(VALID, True, "SpecValid", "the spec renders a valid Triton config", gen),
        _sync_condition(rendering, target, facts, gen),
        _available_condition(target, facts, gen),
    ]
    autoscaling = _autoscaling_condition(target, observed, facts, gen)
    if autoscaling is not None:
        conditions.append(autoscaling)
    rolled_back = _rolled_back_condition(decision, gen)
    if rolled_back is not None:
        conditions.append(rolled_back)
    merged = _with_conditions(owner.status, conditions, stamp)
    conditions.append(_ready_condition(merged.conditions, target, facts, decision, gen))
    dep = facts.deployment
    canary = facts.canary if facts.canary is not None and not facts.canary.deleting else None
    want = dep.replicas if dep is not None and facts.serving else replicas(target.serving)
    ready_count = dep.ready_replicas if dep is not None else 0
    summary = f"{ready_count}/{want}"
    if canary is not None:
        summary += f" +{canary.ready_replicas}/{canary.replicas} canary"
        ready_count += canary.ready_replicas
    status = _with_conditions(
        owner.status,
        conditions,
        stamp,
        observed_generation=gen,
        revision=decision.revision,
        rollout=decision.status,
        replicas=want,
        ready_replicas=ready_count,
        replica_summary=summary,
        served_by=_served_by(rendering.view, ready_count > 0),
        deployment=target.deployment_name if dep is not None else None,
    )
    dropped = {AUTOSCALING} if autoscaling is None else set()
    if rolled_back is None:
        dropped.add(ROLLED_BACK)  # a new rollout: the last one's verdict no longer holds
    if any(c.type in dropped for c in status.conditions):
        kept = [c for c in status.conditions if c.type not in dropped]
        status = status.model_copy(update={"conditions": kept})
    consume = COMMAND_ANNOTATION if decision.command_done else None
    return _finish(owner, status, actions, decision.events, decision.requeue_after, consume)


# --- pooled objects ------------------------------------------------------------------------


def synced_in_status(status: ModelStatus, revision: str) -> bool:
    """The object's own status says ``revision`` was synced (its sync Job may be gone:
    finished Jobs are deleted after ``syncTtlSeconds``, and a pooled object has no
    Deployment whose pod template would say it)."""
    synced = find_condition(status.conditions, SYNCED)
    return status.revision == revision and synced is not None and synced.status == "True"


def _placed_condition(target: Target, owner: Owner, pool: PooledPlacement, gen: int) -> Condition:
    where = f"TritonServerPool {pool.pool}"
    entry = pool.entry
    if not pool.found:
        return _condition(
            PLACED,
            False,
            "PoolNotFound",
            f"{where} does not exist in namespace {target.namespace} "
            f"(`kubectl get tsp -n {target.namespace}`)",
            gen,
        )
    if owner.zero_mark:
        mark = ZeroMark.parse(owner.zero_mark)
        text = mark.describe() if mark is not None else owner.zero_mark
        return _condition(PLACED, False, "ScaledToZero", f"unloaded from {where}: {text}", gen)
    if entry is None:
        return _condition(PLACED, False, "WaitingForPool", f"{where} has not placed it yet", gen)
    if entry.state == "DoesNotFit":
        return _condition(
            PLACED, False, "DoesNotFit", f"{where}: {entry.message}; not loaded anywhere", gen
        )
    if entry.state in ("ScaledToZero", "Leaving"):
        return _condition(PLACED, False, entry.state, f"{where}: {entry.message}", gen)
    pods = f" (pods {', '.join(entry.pods)})" if entry.pods else " (no pods yet)"
    on = ", ".join(str(r) for r in entry.replicas)
    message = f"{entry.memory} on replica(s) {on} of {where}{pods}"
    if entry.state == "FewerReplicas":
        return _condition(PLACED, True, "FewerReplicas", f"{message}; {entry.message}", gen)
    return _condition(PLACED, True, "Placed", message, gen)


def _pooled_available(
    placed: Condition, pool: PooledPlacement, own: ChildState | None, gen: int
) -> Condition:
    ready = len(pool.ready_pods)
    if placed.status == "True" and ready:
        return _condition(
            AVAILABLE,
            True,
            "MinimumReplicasAvailable",
            f"{ready}/{len(pool.pods)} pool pods of its replicas are ready",
            gen,
        )
    if own is not None and own.ready_replicas > 0:
        # Moving into the pool: its own Deployment serves until the pool's pods do.
        return _condition(
            AVAILABLE,
            True,
            "MovingToPool",
            f"its own Deployment serves ({own.ready_replicas} ready) until the pool's pods do",
            gen,
        )
    if placed.status != "True":
        return _condition(AVAILABLE, False, placed.reason, placed.message, gen)
    return _condition(
        AVAILABLE,
        False,
        "NoReplicasReady",
        f"no ready pod holds its replicas in TritonServerPool {pool.pool} yet",
        gen,
    )


def _pooled_ready(conditions: Sequence[Condition], target: Target, gen: int) -> Condition:
    waiting = f"waiting for the pool's pods to confirm they serve revision {target.revision}"
    types = (VALID, SYNCED, PLACED, AVAILABLE, LOADED)
    not_ready = _not_ready(conditions, types, waiting, gen)
    if not_ready is not None:
        return not_ready
    return _condition(READY, True, "Ready", f"revision {target.revision} served", gen)


def _leave_own_deployment(
    target: Target, observed: Mapping[Key, ChildState], loaded: bool, out: list[Action]
) -> None:
    """A model that moved into a pool keeps its own Deployment, Service and HPA until
    the pool's pods serve it (no outage in between), then they go; so do ConfigMaps
    and Jobs of revisions no longer served."""
    if not loaded:
        return
    for child in observed.values():
        if child.deleting or child.name == target.cleanup_job_name:
            continue
        if child.kind in ("Deployment", "Service", HPA_KIND):
            why = "served by its pool now"
        elif child.kind in ("ConfigMap", "Job") and child.revision != target.revision:
            why = f"revision {child.revision} is no longer served"
        else:
            continue
        out.append(Action("delete", child.kind, child.namespace, child.name, why))


def plan_pooled(
    rendering: Rendering,
    target: Target,
    observed: Mapping[Key, ChildState],
    claim: ChildState | None,
    settings: OperatorSettings,
    now: datetime,
    pool: PooledPlacement,
) -> Plan:
    """One reconcile of a pooled object (``spec.serving.pool``): its files are synced as
    any model's, its pool's pods load it where the pool placed it (the loader), and it
    has no Deployment of its own. Placed says where (or why not, with the numbers)."""
    owner = rendering.owner
    gen = owner.generation
    actions: list[Action] = []
    _add_finalizer(owner, actions)
    facts = _Facts()
    facts.claim_deleting = _claim_actions(target, settings, claim, actions)
    if synced_in_status(owner.status, target.revision) and not rendering.members_pending:
        facts.synced = True
        facts.deployment = observed.get(("Deployment", target.namespace, target.deployment_name))
    else:
        _sync_actions(rendering, target, settings, observed, facts, actions)
    loaded = find_condition(owner.status.conditions, LOADED)
    at_home = (
        loaded is not None
        and loaded.status == "True"
        and (loaded.observed_generation or 0) >= gen
        and owner.status.revision == target.revision
    )
    _leave_own_deployment(target, observed, at_home, actions)
    placed = _placed_condition(target, owner, pool, gen)
    conditions = [
        _condition(VALID, True, "SpecValid", "the spec renders a valid Triton config", gen),
        _sync_condition(rendering, target, facts, gen),
        placed,
        _pooled_available(placed, pool, facts.deployment, gen),
    ]
    merged = _with_conditions(owner.status, conditions, _now_iso(now))
    conditions.append(_pooled_ready(merged.conditions, target, gen))
    ready = len(pool.ready_pods)
    status = _with_conditions(
        owner.status,
        conditions,
        _now_iso(now),
        observed_generation=gen,
        revision=target.revision,
        replicas=len(pool.pods),
        ready_replicas=ready,
        replica_summary=f"{ready}/{len(pool.pods)}",
        served_by=_served_by(rendering.view, ready > 0),
        deployment=pool.deployment,
    )
    kept = [c for c in status.conditions if c.type != AUTOSCALING]  # the pool autoscales
    status = status.model_copy(update={"conditions": kept})
    return _finish(owner, status, actions)


def _finish(
    owner: Owner,
    status: ModelStatus,
    actions: list[Action],
    more: Sequence[Event] = (),
    requeue_after: float | None = None,
    consume: str | None = None,
) -> Plan:
    changed = status.to_wire() != owner.status.to_wire()
    event = _transition_event(owner.status, status, actions) if (changed or actions) else None
    return Plan(
        actions=tuple(actions),
        status=status if changed else None,
        events=(*((event,) if event else ()), *more),
        requeue_after=requeue_after,
        consume=consume,
    )


# --- deletion ------------------------------------------------------------------------------


def _seconds_since(timestamp: str | None, now: datetime) -> float:
    if not timestamp:
        return 0.0
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return (now - then).total_seconds()


def _release(owner: Owner, why: str) -> Action:
    return Action("release", owner.kind, owner.namespace, owner.name, why)


def plan_deletion(
    rendering: Rendering,
    observed: Mapping[Key, ChildState],
    settings: OperatorSettings,
    now: datetime,
    *,
    unloaded: bool = True,
) -> Plan:
    """Deleting: stop syncs, run the cleanup Job, then release the finalizer.

    Children themselves go with their owner through the garbage collector.
    Deletion never blocks for ever: after ``cleanup_timeout_seconds``, or when
    the cleanup cannot run, the finalizer is released with a Warning saying
    which files may be left behind. (The namespace's repository claim goes once
    no model is left at all: :func:`plan_claim`.)

    ``unloaded``: every Triton pod has let go of the model (or the bounded wait
    for that is over, ``desired.kube.loading.unload_gate``); until then the
    cleanup Job is not created, so no pod loses files it still serves.
    """
    return _deletion_steps(rendering, observed, settings, now, unloaded)


def plan_claim(
    namespace: str, owners_left: int, claim: ChildState | None, settings: OperatorSettings
) -> Plan:
    """The repository claim the operator created goes with the last model of its namespace."""
    if not settings.creates_repository_claim or owners_left or claim is None or claim.deleting:
        return Plan()
    return Plan(
        actions=(
            Action(
                "delete",
                "PersistentVolumeClaim",
                namespace,
                claim.name,
                "no TritonModel or ModelEnsemble is left in the namespace",
            ),
        )
    )


def _deletion_steps(
    rendering: Rendering,
    observed: Mapping[Key, ChildState],
    settings: OperatorSettings,
    now: datetime,
    unloaded: bool = True,
) -> Plan:
    owner = rendering.owner
    if FINALIZER not in owner.finalizers:
        return Plan()
    target = rendering.target
    if target is None:
        # Invalid now (e.g. an ensemble whose member is gone); it may have synced before.
        target = cleanup_target(
            owner.kind, owner.namespace, owner.name, owner.uid, rendering.view.triton_name
        )
    cleanup = observed.get(("Job", target.namespace, target.cleanup_job_name))
    ever_synced = any(
        c.kind in ("Job", "Deployment") and c.name != target.cleanup_job_name
        for c in observed.values()
    ) or synced_in_status(owner.status, owner.status.revision or "")
    if not ever_synced and cleanup is None:
        return Plan(actions=(_release(owner, "nothing was synced"),))
    waited = _seconds_since(owner.deletion_timestamp, now)
    where = f"model directory {target.triton_name!r} in claim {settings.repository_claim_in_use}"
    if cleanup is not None and cleanup.succeeded:
        return Plan(
            actions=(_release(owner, "cleanup done"),),
            events=(Event("Normal", "CleanedUp", f"removed the {where}"),),
        )
    if (cleanup is not None and cleanup.failed) or waited > settings.cleanup_timeout_seconds:
        problem = cleanup.problem if cleanup is not None and cleanup.failed else "timed out"
        return Plan(
            actions=(_release(owner, "cleanup failed"),),
            events=(
                Event(
                    "Warning",
                    "CleanupFailed",
                    f"cleanup Job {target.cleanup_job_name} did not finish ({problem}) after "
                    f"{int(waited)}s; the {where} may remain: remove it by hand",
                ),
            ),
        )
    actions: list[Action] = []
    running_syncs = [
        c
        for c in observed.values()
        if c.kind == "Job" and c.name != target.cleanup_job_name and not (c.succeeded or c.failed)
    ]
    for job in running_syncs:
        if not job.deleting:
            actions.append(
                Action(
                    "delete", "Job", job.namespace, job.name, "model deleted", None, "Foreground"
                )
            )
    if not running_syncs and cleanup is None and unloaded:
        actions.append(
            Action(
                "apply",
                "Job",
                target.namespace,
                target.cleanup_job_name,
                "model deleted",
                cleanup_job(target, settings),
            )
        )
    return Plan(
        actions=tuple(actions),
        requeue_after=max(settings.cleanup_timeout_seconds - waited, 1.0),
    )


def status_patch(old: ModelStatus, new: ModelStatus) -> Obj:
    """Merge-patch body turning ``old`` into ``new``: fields that disappear become null,
    at every depth (a merge patch merges nested objects: ``rollout.weights`` going from
    a split to ``{}`` must name each revision that goes)."""
    return _merge_patch(old.to_wire(), new.to_wire())


def _merge_patch(old: Obj, new: Obj) -> Obj:
    patch: Obj = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            patch[key] = _merge_patch(before, value)
        else:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


def finalizers_with(finalizers: Sequence[str], add: bool) -> list[str]:
    """The owner's finalizer list with ours added or removed (order of the others kept)."""
    kept = [f for f in finalizers if f != FINALIZER]
    return [*kept, FINALIZER] if add else kept
