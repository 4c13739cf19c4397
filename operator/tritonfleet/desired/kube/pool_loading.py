"""Loading a pooled model, decided purely: which pods are its home (the pool pods of
the replicas its pool placed it on), which pods it may still be loaded on elsewhere
(its own Deployment before it joined the pool, pool replicas it left, a pool it
left), when to unload it there, and what ``Loaded`` says when it is loaded nowhere
on purpose (scaled to zero, not placed).

Where it sits: ``handlers.loading`` runs a pooled model's pass with these, beside
``desired.kube.loading`` (pods, status) and ``desired.triton.loading`` (per-pod
plans). The rule that keeps a move without an outage: a model is unloaded from a
pod it left only once its home serves it (or when it is to be served nowhere), and
until then that pod stays in ``status.pods``, so the gateway keeps routing there.
No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from tritonfleet.api.status import LOADED, Condition
from tritonfleet.desired.kube.loading import TritonPod, pod_key_of
from tritonfleet.desired.kube.objects import Target
from tritonfleet.desired.kube.placement import PooledPlacement
from tritonfleet.desired.kube.pool import POOL_KIND, pool_pod_key
from tritonfleet.desired.triton.loading import LoadPlan, PodObservation, pod_model_state

HELD = ("READY", "LOADING", "UNLOADING")


@dataclass(frozen=True)
class PoolPods:
    """``home``: the pods to load on; ``away``: other pods it may be loaded on."""

    home: tuple[TritonPod, ...]
    away: tuple[TritonPod, ...]


def _ordered(pods: Iterable[TritonPod]) -> tuple[TritonPod, ...]:
    return tuple(sorted(pods, key=lambda p: (p.created, p.name)))


def is_pool_pod(pod: TritonPod) -> bool:
    return pod.owner[1] == POOL_KIND.lower()


def split_pods(
    target: Target,
    pool: PooledPlacement | None,
    pods: Sequence[TritonPod],
    listed: Iterable[str] = (),
) -> PoolPods:
    """Home and away pods of ``target`` among ``pods``.

    A pooled target (``pool``) is at home on the pool pods of its replicas; away are
    the pool's other pods, its own Deployment's pods and any pod its status still
    lists (``listed``). A target on its own Deployment is at home there; away are
    only pool pods its status still lists (it left a pool).
    """
    listed = set(listed)
    own = pod_key_of(target)
    if pool is None:
        home = _ordered(p for p in pods if p.owner == own)
        away = _ordered(p for p in pods if p.name in listed and is_pool_pod(p))
        return PoolPods(home, away)
    shared = pool_pod_key(target.namespace, pool.pool)
    placed = set(pool.pods)
    home = _ordered(p for p in pods if p.owner == shared and p.name in placed)
    homes = {p.name for p in home}
    away = _ordered(
        p for p in pods if p.name not in homes and (p.owner in (shared, own) or p.name in listed)
    )
    return PoolPods(home, away)


def away_names(target: Target) -> tuple[str, ...]:
    """What to unload from a pod it left: the model itself (an ensemble's members
    are pooled objects of their own, placed and unloaded by their own loaders)."""
    return (target.triton_name,)


def holds(observation: PodObservation, names: Sequence[str]) -> bool:
    return any(observation.model(n).state in HELD for n in names)


def may_unload_away(plan: LoadPlan, pool: PooledPlacement | None) -> bool:
    """Unload from away pods once the home serves it, or when it is to be served nowhere."""
    nowhere = pool is not None and not pool.pods
    return plan.loaded or nowhere


def with_away(
    plan: LoadPlan, target: Target, away: Sequence[PodObservation], pool: PooledPlacement | None
) -> LoadPlan:
    """``plan`` with the away pods that still hold the model appended to its
    ``status.pods`` (the gateway keeps routing there until they are unloaded), and
    ``Loaded`` saying why nothing is loaded when that is on purpose."""
    names = away_names(target)
    extra = tuple(pod_model_state(plan.target, o) for o in away if not o.error and holds(o, names))
    condition = _nowhere_condition(pool, plan.condition) or plan.condition
    return replace(plan, states=(*plan.states, *extra), condition=condition)


def _nowhere_condition(pool: PooledPlacement | None, current: Condition) -> Condition | None:
    if pool is None or pool.pods:
        return None
    state = pool.state
    if state == "ScaledToZero":
        reason, message = "ScaledToZero", "unloaded from the pool: scaled to zero"
    elif state == "DoesNotFit":
        message = pool.entry.message if pool.entry is not None else ""
        reason, message = "NotPlaced", f"not placed in pool {pool.pool}: {message}"
    elif not pool.found:
        reason, message = "NotPlaced", f"pool {pool.pool} does not exist"
    else:
        reason, message = "NotPlaced", f"waiting for pool {pool.pool} to place it"
    return Condition(
        type=LOADED,
        status="False",
        reason=reason,
        message=message,
        observed_generation=current.observed_generation,
    )
