"""A ``TritonServerPool``'s children and status, decided purely: its Deployment of
Triton replicas (started empty, explicit model control), its headless Service and
HPA, and where each pooled model goes (``desired.kube.placement``).

Where it sits: the pool's reconcile (``handlers``) gathers the pool, the pooled
TritonModels and ModelEnsembles of its namespace (:class:`PooledObject`), the pool's
pods (the loader's pod index) and its children, calls :func:`plan_pool`, and carries
out the :class:`PoolPlan`: the writes, the pool's status (per replica the models
placed and the memory used and free; per model its replicas and pods), and the
pooled models whose placement changed (their reconcile and loader follow it). The
pooled models read their placement back from the pool's status
(:func:`placement_of`). No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from tritonfleet.api.base import format_bytes
from tritonfleet.api.model import Autoscaling, ServingSpec, TritonServing
from tritonfleet.api.pool import (
    PooledModelStatus,
    PoolReplicaStatus,
    PoolStatus,
    TritonServerPool,
    gpu_memory_budget,
)
from tritonfleet.api.problems import Problem, problems_from_validation_error
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.api.status import (
    AVAILABLE,
    PLACED,
    READY,
    VALID,
    Condition,
    find_condition,
    set_condition,
)
from tritonfleet.desired.kube.autoscaling import HPA_KIND, hpa
from tritonfleet.desired.kube.events import Event
from tritonfleet.desired.kube.loading import TritonPod, pods_of
from tritonfleet.desired.kube.objects import (
    REVISION_ANNOTATION,
    Obj,
    Target,
    deployment,
    label_value,
    object_key,
    replicas,
    repository_claim,
    service,
    with_spec_hash,
)
from tritonfleet.desired.kube.observed import ChildState
from tritonfleet.desired.kube.placement import (
    ItemKey,
    Placement,
    PoolItem,
    PoolPod,
    bind_replicas,
    place,
)
from tritonfleet.desired.kube.plan import Action, apply_reason

POOL_KIND: Literal["TritonServerPool"] = "TritonServerPool"
PooledKind = Literal["TritonModel", "ModelEnsemble"]
Key = tuple[str, str, str]


# --- the pool as its children see it ----------------------------------------------------


def pool_serving(pool: TritonServerPool) -> ServingSpec:
    """The pool's Deployment fields in the shape a model's own ``spec.serving`` has
    them, so the pool's Deployment, Service and HPA are built like a model's."""
    fields = {name: getattr(pool.spec, name) for name in TritonServing.model_fields}
    auto = pool.spec.autoscaling
    fields["autoscaling"] = Autoscaling(**auto.model_dump()) if auto is not None else None
    return ServingSpec(**fields)


def pool_target(pool: TritonServerPool) -> Target:
    return Target(
        kind=POOL_KIND,
        name=pool.metadata.name,
        namespace=pool.metadata.namespace or "default",
        uid=pool.metadata.uid or "",
        triton_name="",
        revision="",
        serving=pool_serving(pool),
        load_models=(),
        documents=(),
    )


def pool_deployment(target: Target, settings: OperatorSettings, started: bool = True) -> Obj:
    """The pool's Triton Deployment: a model's, minus what ties it to one model.

    Its servers start with no model (no ``--load-model``, not strict about readiness:
    the loader loads each replica's placed models). ``started``: some pooled model's
    files are in the repository (Triton refuses to start on a repository directory
    that does not exist yet, which a namespace's first sync creates); until then it
    has no replica. From there the replicas are the spec's, or the HPA's.
    """
    out = deployment(target, settings, ())
    spec = out["spec"]
    if not started:
        spec["replicas"] = 0
    elif target.serving.autoscaling is None:
        spec["replicas"] = replicas(target.serving)
    else:
        spec.pop("replicas", None)
    annotations = spec["template"]["metadata"].get("annotations", {})
    annotations.pop(REVISION_ANNOTATION, None)
    if not annotations:
        spec["template"]["metadata"].pop("annotations", None)
    return with_spec_hash(out)


# --- what the pool's reconcile works from ------------------------------------------------


@dataclass(frozen=True)
class PooledObject:
    """One TritonModel or ModelEnsemble as its pool sees it.

    ``wanted``: it names this pool, is live and not at zero. ``loaded_on``: the pool's
    pods its own ``status.pods`` lists it on (its memory stays counted there until it
    is unloaded, also once it no longer names the pool).
    """

    kind: PooledKind
    name: str
    triton_name: str
    memory: int
    replicas: int | None = None
    members: tuple[str, ...] = ()
    wanted: bool = True
    at_zero: bool = False
    loaded_on: tuple[str, ...] = ()
    synced: bool = True  # its files are in the namespace's repository

    @property
    def key(self) -> ItemKey:
        return (self.kind, self.name)


@dataclass(frozen=True)
class PoolOwner:
    namespace: str
    name: str
    uid: str
    generation: int
    status: PoolStatus


def pool_owner_of(body: Mapping[str, Any]) -> PoolOwner:
    meta = body.get("metadata") or {}
    try:
        status = PoolStatus.model_validate(body.get("status") or {})
    except ValidationError:
        status = PoolStatus()  # unreadable: rewritten from scratch
    return PoolOwner(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta["name"]),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        status=status,
    )


def parse_pool(body: Mapping[str, Any]) -> tuple[TritonServerPool | None, tuple[Problem, ...]]:
    try:
        return TritonServerPool.from_object(body), ()
    except ValidationError as error:
        return None, tuple(problems_from_validation_error(error))


@dataclass(frozen=True)
class PoolPlan:
    actions: tuple[Action, ...] = ()
    status: PoolStatus | None = None  # None: unchanged
    events: tuple[Event, ...] = ()
    # Pooled objects whose placement (replicas or pods) changed: they re-check.
    moved: tuple[ItemKey, ...] = ()


# --- the plan ---------------------------------------------------------------------------


def _now_iso(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, ok: bool, reason: str, message: str, gen: int) -> Condition:
    return Condition(
        type=type_,
        status="True" if ok else "False",
        reason=reason,
        message=message,
        observed_generation=gen,
    )


def _apply(desired: Obj, observed: Mapping[Key, ChildState], out: list[Action]) -> None:
    kind, namespace, name = object_key(desired)
    why = apply_reason(desired, observed.get((kind, namespace, name)))
    if why:
        out.append(Action("apply", kind, namespace, name, why, desired))


def _children_actions(
    target: Target,
    settings: OperatorSettings,
    observed: Mapping[Key, ChildState],
    claim: ChildState | None,
    started: bool,
    out: list[Action],
) -> None:
    wanted_claim = repository_claim(target.namespace, settings)
    if wanted_claim is not None and claim is None:
        # Created, never applied: the namespace's models create it too (first wins).
        name = wanted_claim["metadata"]["name"]
        out.append(
            Action(
                "create", "PersistentVolumeClaim", target.namespace, name, "missing", wanted_claim
            )
        )
    _apply(service(target), observed, out)
    _apply(pool_deployment(target, settings, started), observed, out)
    autoscaler = hpa(target, settings.scale_down_stabilization_seconds)
    if autoscaler is not None:
        _apply(autoscaler, observed, out)
        return
    for child in observed.values():
        if child.kind == HPA_KIND and not child.deleting:
            out.append(
                Action("delete", child.kind, child.namespace, child.name, "autoscaling is off")
            )


def _items(objects: Sequence[PooledObject], bound: Sequence[str | None]) -> list[PoolItem]:
    index_of = {pod: i for i, pod in enumerate(bound) if pod is not None}
    return [
        PoolItem(
            key=o.key,
            triton_name=o.triton_name,
            memory=o.memory,
            replicas=o.replicas,
            members=tuple(("TritonModel", m) for m in o.members),
            wanted=o.wanted,
            at_zero=o.at_zero,
            loaded_on=tuple(sorted(index_of[p] for p in o.loaded_on if p in index_of)),
        )
        for o in objects
    ]


def _model_statuses(
    objects: Sequence[PooledObject], placement: Placement, bound: Sequence[str | None]
) -> list[PooledModelStatus]:
    out = []
    for o in sorted(objects, key=lambda o: (o.kind, o.name)):
        verdict = placement.items[o.key]
        if not o.wanted and not verdict.replicas and not o.at_zero:
            continue  # gone from the pool for good
        pods = [p for i in verdict.replicas if i < len(bound) and (p := bound[i]) is not None]
        out.append(
            PooledModelStatus(
                kind=o.kind,
                name=o.name,
                triton_name=o.triton_name,
                memory=format_bytes(o.memory),
                state=verdict.state,
                replicas=list(verdict.replicas),
                pods=pods,
                message=verdict.message,
            )
        )
    return out


def _placed_condition(models: Sequence[PooledModelStatus], gen: int) -> Condition:
    refused = [m for m in models if m.state == "DoesNotFit"]
    short = [m for m in models if m.state == "FewerReplicas"]
    placed = [m for m in models if m.state in ("Placed", "FewerReplicas")]
    if refused:
        listing = "; ".join(f"{m.name}: {m.message}" for m in refused)
        return _condition(
            PLACED,
            False,
            "DoesNotFit",
            f"{len(refused)} of {len(refused) + len(placed)} pooled models do not fit: {listing}",
            gen,
        )
    if short:
        listing = "; ".join(f"{m.name}: {m.message}" for m in short)
        return _condition(
            PLACED, True, "FewerReplicas", f"placed, some on fewer replicas: {listing}", gen
        )
    return _condition(PLACED, True, "Placed", f"{len(placed)} pooled models placed", gen)


def _available_condition(
    target: Target, dep: ChildState | None, ready: int, want: int, gen: int
) -> Condition:
    if ready > 0:
        return _condition(
            AVAILABLE,
            True,
            "MinimumReplicasAvailable",
            f"{ready}/{want} Triton replicas ready",
            gen,
        )
    hint = (
        f"{ready}/{want} Triton replicas ready; see `kubectl describe pods -n {target.namespace} "
        f"-l tritonfleet.io/model={target.name},tritonfleet.io/kind=tritonserverpool`"
    )
    if dep is not None and dep.problem:
        return _condition(AVAILABLE, False, "ReplicaFailure", f"{dep.problem}. {hint}", gen)
    return _condition(AVAILABLE, False, "NoReplicasReady", hint, gen)


def _events(old: PoolStatus, new: PoolStatus, actions: Sequence[Action]) -> tuple[Event, ...]:
    """One event per reconcile that changed something: each condition that flipped
    (or, for Placed, says something new: another model refused), and what was done."""
    changes = []
    warning = None
    for cond in new.conditions:
        before = find_condition(old.conditions, cond.type)
        flipped = before is None or before.status != cond.status
        news = cond.type == PLACED and before is not None and before.message != cond.message
        if not (flipped or news):
            continue
        changes.append(f"{cond.type}={cond.status} ({cond.reason}): {cond.message}")
        if cond.status == "False" and cond.reason in _WARNINGS and warning is None:
            warning = cond.reason
    done = [a.describe() for a in actions]
    if not changes and not done:
        return ()
    message = "; ".join([*changes, *(["did: " + ", ".join(done)] if done else [])])[:1024]
    if warning is not None:
        return (Event("Warning", warning, message),)
    return (Event("Normal", "Updated" if changes else "Applied", message),)


_WARNINGS = frozenset({"DoesNotFit", "ReplicaFailure", "InvalidSpec"})


def _with(old: PoolStatus, conditions: Sequence[Condition], now: str, **fields: Any) -> PoolStatus:
    merged: tuple[Condition, ...] = tuple(old.conditions)
    for cond in conditions:
        merged = set_condition(merged, cond, now)
    return old.model_copy(update={"conditions": list(merged), **fields})


def _moved(old: PoolStatus, new: PoolStatus) -> tuple[ItemKey, ...]:
    before = {(m.kind, m.name): (m.state, m.replicas, m.pods, m.message) for m in old.models}
    after = {(m.kind, m.name): (m.state, m.replicas, m.pods, m.message) for m in new.models}
    return tuple(sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k)))


def plan_pool(
    body: Mapping[str, Any],
    objects: Sequence[PooledObject],
    pods: Sequence[TritonPod],
    observed: Mapping[Key, ChildState],
    claim: ChildState | None,
    settings: OperatorSettings,
    now: datetime,
) -> PoolPlan:
    """The writes, status and events of one reconcile of a pool (see the module docstring).

    ``pods`` are the pool's own Triton pods; ``observed`` its children.
    """
    owner = pool_owner_of(body)
    stamp = _now_iso(now)
    gen = owner.generation
    pool, problems = parse_pool(body)
    if pool is None:
        listing = "\n".join(f"- {p}" for p in problems)
        status = _with(
            owner.status,
            [
                _condition(
                    VALID, False, "InvalidSpec", f"{len(problems)} problem(s):\n{listing}", gen
                ),
                _condition(READY, False, "InvalidSpec", "the spec is invalid (see Valid)", gen),
            ],
            stamp,
            observed_generation=gen,
        )
        return _finish(owner.status, status, ())
    target = pool_target(pool)
    actions: list[Action] = []
    started = any(o.synced for o in objects)
    _children_actions(target, settings, observed, claim, started, actions)
    dep = observed.get(("Deployment", target.namespace, target.deployment_name))
    want = dep.replicas if dep is not None and not dep.deleting else replicas(target.serving)
    if not started:
        want = replicas(target.serving)  # placed ahead, on the replicas it will start with
    mine = pods_of(target, pods)
    previous_pods = {r.index: r.pod for r in owner.status.placement if r.pod}
    bound = bind_replicas(
        previous_pods, [PoolPod(p.name, p.created, p.deleting) for p in mine], want
    )
    budget_told = gpu_memory_budget(pool.spec)
    assert budget_told is not None  # the spec validated
    budget, source = budget_told
    previous: dict[ItemKey, tuple[int, ...]] = {
        (m.kind, m.name): tuple(m.replicas) for m in owner.status.models
    }
    placement = place(_items(objects, bound), want, budget, previous)
    ready_pods = {p.name for p in mine if p.ready and not p.deleting}
    replicas_status = [
        PoolReplicaStatus(
            index=i,
            pod=bound[i],
            ready=bound[i] in ready_pods,
            models=list(placement.models_on(i)),
            memory_used=format_bytes(placement.used[i]),
            memory_free=format_bytes(placement.budget - placement.used[i]),
        )
        for i in range(want)
    ]
    models = _model_statuses(objects, placement, bound)
    ready = sum(1 for r in replicas_status if r.ready)
    wanted = [m for m in models if m.state not in ("Leaving", "ScaledToZero")]
    placed = [m for m in wanted if m.state in ("Placed", "FewerReplicas")]
    conditions = [
        _condition(
            VALID,
            True,
            "SpecValid",
            f"GPU memory per replica {format_bytes(budget)} ({source})",
            gen,
        ),
        _available_condition(target, dep, ready, want, gen),
        _placed_condition(models, gen),
    ]
    available = conditions[1]
    conditions.append(
        _condition(
            READY,
            available.status == "True",
            "Ready" if available.status == "True" else available.reason,
            f"{len(placed)} models on {ready} ready replica(s)"
            if available.status == "True"
            else f"{AVAILABLE}: {available.message}",
            gen,
        )
    )
    status = _with(
        owner.status,
        conditions,
        stamp,
        observed_generation=gen,
        replicas=want,
        ready_replicas=ready,
        replica_summary=f"{ready}/{want}",
        gpu_memory=format_bytes(budget),
        memory_summary=f"{format_bytes(sum(placement.used))}/{format_bytes(budget * want)}",
        model_summary=f"{len(placed)}/{len(wanted)}",
        deployment=target.deployment_name,
        placement=replicas_status,
        models=models,
    )
    return _finish(owner.status, status, tuple(actions))


def _finish(old: PoolStatus, new: PoolStatus, actions: tuple[Action, ...]) -> PoolPlan:
    changed = new.to_wire() != old.to_wire()
    events = _events(old, new, actions) if (changed or actions) else ()
    return PoolPlan(
        actions=actions,
        status=new if changed else None,
        events=events,
        moved=_moved(old, new) if changed else (),
    )


def loaded_models(body: Mapping[str, Any]) -> list[str]:
    """The Triton models a pool's status places on its pods (or still has there): what
    its queue time is the worst of (the collector scrapes them on the pool's pods)."""
    held = ("Placed", "FewerReplicas", "Leaving")
    models = pool_owner_of(body).status.models
    return sorted({m.triton_name for m in models if m.state in held and m.pods})


def pool_pod_key(namespace: str, pool_name: str) -> tuple[str, str, str]:
    """The pod index key of a pool's Triton pods (``desired.kube.loading.pod_key_of``)."""
    return (namespace, POOL_KIND.lower(), label_value(pool_name))


def preview(pool: TritonServerPool, objects: Sequence[PooledObject]) -> list[str]:
    """Where ``objects`` would go on a fresh ``pool`` at its starting replica count, as
    lines for ``tritonfleet render`` (what the operator will say in Placed)."""
    budget_told = gpu_memory_budget(pool.spec)
    assert budget_told is not None  # the spec validated
    budget, source = budget_told
    count = replicas(pool_serving(pool))
    placement = place(_items(objects, [None] * count), count, budget)
    namespace = pool.metadata.namespace or "default"
    lines = [
        f"# --- TritonServerPool {namespace}/{pool.metadata.name}: {count} replica(s) x "
        f"{format_bytes(budget)} of GPU memory ({source})"
    ]
    for index in range(count):
        models = ", ".join(placement.models_on(index)) or "nothing"
        lines.append(
            f"#   replica {index}: {format_bytes(placement.used[index])} used, "
            f"{format_bytes(budget - placement.used[index])} free: {models}"
        )
    for o in sorted(objects, key=lambda o: o.key):
        verdict = placement.items[o.key]
        if verdict.state != "Placed":
            lines.append(f"#   {o.kind} {o.name}: {verdict.state}: {verdict.message}")
    return lines
