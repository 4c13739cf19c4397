"""Placement of pooled models on the replicas of a ``TritonServerPool``, decided purely.

Why: many small models share a few GPU servers only if what is loaded on each server
fits its GPU memory. Triton does not check that (a model that does not fit fails to
load, or pushes another out of memory), so every pooled model declares the memory it
takes (``spec.serving.pool.memory``) and this module decides which replicas of the
pool load it, within each replica's budget (``TritonServerPool.spec.gpuMemory``), or
refuses it with the numbers. Nothing is loaded to find out.

Where it sits: the pool's reconcile gathers the pooled objects of a pool (memory,
replica count, an ensemble's members) and the placement it wrote last time (the
pool's ``status.placement``), calls :func:`place`, and writes the result back; the
loader of each pooled model loads it on the pods of its replicas
(:func:`bind_replicas` says which pod holds which replica). No I/O here.

The rules:

* a replica is an index ``0..replicas-1``, not a pod: a pod that restarts or is
  replaced takes over its index and reloads what it held;
* stable: an item keeps the replicas it has (a model is never moved while its
  replicas exist); items are only added where they are missing, and taken off a
  replica only when the replica goes (the pool scaled down) or no longer fits (a
  bigger ``memory``, a smaller budget);
* new placements are all or nothing: an item is placed on all its wanted replicas or
  on none (``DoesNotFit``, with what it needs and what is free); an item already
  placed keeps what it has when it cannot get more (``FewerReplicas``);
* an ensemble is placed on replicas that hold its members, which go wherever it goes,
  and each Triton model is loaded (and counted) once per replica, however many
  ensembles use it;
* an item that is no longer wanted (moved out of the pool, deleted, scaled to zero)
  keeps its memory where it is still loaded until it is unloaded (``Leaving``), so
  the pool never holds two things in memory that were only budgeted one after the
  other;
* new items go in a deterministic order (ensembles first, then the largest), each to
  the replica it fills best, so the same inputs always give the same placement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from tritonfleet.api.base import format_bytes
from tritonfleet.api.pool import PooledModelStatus, PoolStatus

ItemKey = tuple[str, str]  # (kind, name): ("TritonModel", "toy-llm")
PlacementState = Literal["Placed", "FewerReplicas", "DoesNotFit", "ScaledToZero", "Leaving"]


@dataclass(frozen=True)
class PoolItem:
    """One pooled TritonModel or ModelEnsemble, as placement sees it.

    ``replicas`` None means every replica of the pool. ``wanted`` is False for an
    item that is not to be loaded (at zero, gone, moved out); ``loaded_on`` are the
    replicas it is still loaded on, whose memory it keeps until it is unloaded.
    """

    key: ItemKey
    triton_name: str
    memory: int
    replicas: int | None = None
    members: tuple[ItemKey, ...] = ()
    wanted: bool = True
    at_zero: bool = False
    loaded_on: tuple[int, ...] = ()

    @property
    def is_ensemble(self) -> bool:
        return self.key[0] == "ModelEnsemble"


@dataclass(frozen=True)
class ItemPlacement:
    key: ItemKey
    replicas: tuple[int, ...]
    wanted: int
    state: PlacementState
    message: str = ""

    @property
    def placed(self) -> bool:
        return self.state in ("Placed", "FewerReplicas")


@dataclass(frozen=True)
class Placement:
    """Where every item goes; ``used`` is the memory placed on each replica."""

    budget: int
    replicas: int
    items: Mapping[ItemKey, ItemPlacement]
    used: tuple[int, ...]
    triton_names: Mapping[ItemKey, str] = field(default_factory=dict)

    def free(self) -> tuple[int, ...]:
        return tuple(self.budget - u for u in self.used)

    def on_replica(self, index: int) -> tuple[ItemKey, ...]:
        """The items on replica ``index`` (placed or leaving), in key order."""
        return tuple(sorted(k for k, p in self.items.items() if index in p.replicas))

    def models_on(self, index: int) -> tuple[str, ...]:
        """The Triton models loaded on replica ``index``, each once."""
        return tuple(sorted({self.triton_names.get(k, k[1]) for k in self.on_replica(index)}))


def _free_text(budget: int, used: Sequence[int]) -> str:
    return ", ".join(format_bytes(max(budget - u, 0)) for u in used) or "no replicas"


def _replicas_text(n: int) -> str:
    return f"{n} replica" if n == 1 else f"{n} replicas"


class _Placer:
    """One run of :func:`place` (the mutable working state)."""

    def __init__(self, items: Sequence[PoolItem], replicas: int, budget: int) -> None:
        self.items = {i.key: i for i in items}
        self.replicas = replicas
        self.budget = budget
        self.on: dict[ItemKey, set[int]] = {}
        self.used = [0] * replicas
        self.verdicts: dict[ItemKey, ItemPlacement] = {}

    def want(self, item: PoolItem) -> int:
        if item.replicas is None:
            return self.replicas
        return min(item.replicas, self.replicas)

    def add(self, key: ItemKey, index: int) -> None:
        at = self.on.setdefault(key, set())
        if index not in at:
            at.add(index)
            self.used[index] += self.items[key].memory

    def remove(self, key: ItemKey, index: int) -> None:
        at = self.on.get(key, set())
        if index in at:
            at.discard(index)
            self.used[index] -= self.items[key].memory

    # --- 1. what stays --------------------------------------------------------------------

    def keep(self, previous: Mapping[ItemKey, Sequence[int]]) -> None:
        for key in sorted(self.items):
            item = self.items[key]
            before = sorted(i for i in previous.get(key, ()) if 0 <= i < self.replicas)
            if item.wanted:
                kept = before[: self.want(item)]  # fewer wanted now: the lowest stay
            else:
                # Not wanted: its memory stays counted where it is still loaded.
                kept = sorted(i for i in item.loaded_on if 0 <= i < self.replicas)
            for index in kept:
                self.add(key, index)
        for index in range(self.replicas):
            self._fit(index)

    def _fit(self, index: int) -> None:
        """Take items off an over-budget replica (a bigger memory, a smaller budget):
        the largest wanted ones first; an ensemble goes with any member it loses."""
        while self.used[index] > self.budget:
            movable = [k for k, at in self.on.items() if index in at and self.items[k].wanted]
            if not movable:
                return  # only what is still being unloaded: it goes by itself
            victim = max(movable, key=lambda k: (self.items[k].memory, k))
            self.remove(victim, index)
            for key, at in list(self.on.items()):
                if index in at and victim in self.items[key].members:
                    self.remove(key, index)

    # --- 2. ensembles, with their members -------------------------------------------------

    def place_ensemble(self, ensemble: PoolItem) -> None:
        missing = [
            m[1] for m in ensemble.members if m not in self.items or not self.items[m].wanted
        ]
        if missing:
            for index in sorted(self.on.get(ensemble.key, ())):
                self.remove(ensemble.key, index)
            self.verdicts[ensemble.key] = ItemPlacement(
                ensemble.key,
                (),
                self.want(ensemble),
                "DoesNotFit",
                f"member(s) {', '.join(missing)} are not loaded in the pool",
            )
            return
        members = [self.items[m] for m in ensemble.members]

        def cost(index: int) -> int:
            extra = [m.memory for m in members if index not in self.on.get(m.key, ())]
            own = 0 if index in self.on.get(ensemble.key, ()) else ensemble.memory
            return own + sum(extra)

        for index in sorted(self.on.get(ensemble.key, ())):
            # Kept: its members must be there too (one may have been taken off).
            if self.used[index] + cost(index) > self.budget:
                self.remove(ensemble.key, index)
            else:
                for member in members:
                    self.add(member.key, index)
        have = sorted(self.on.get(ensemble.key, ()))
        wanted = self.want(ensemble)
        fitting = sorted(
            (
                i
                for i in range(self.replicas)
                if i not in have and self.used[i] + cost(i) <= self.budget
            ),
            key=lambda i: (cost(i), self.budget - self.used[i] - cost(i), i),
        )
        need = wanted - len(have)
        if need > 0 and not have and len(fitting) < need:
            whole = ensemble.memory + sum(m.memory for m in members)
            self.verdicts[ensemble.key] = ItemPlacement(
                ensemble.key,
                (),
                wanted,
                "DoesNotFit",
                f"needs {format_bytes(whole)} on {_replicas_text(wanted)} (itself and its "
                f"members, less what is loaded there already); free: "
                f"{_free_text(self.budget, self.used)}",
            )
            return
        for index in fitting[: max(need, 0)]:
            self.add(ensemble.key, index)
            for member in members:
                self.add(member.key, index)

    # --- 3. models on their own -----------------------------------------------------------

    def place_model(self, item: PoolItem) -> None:
        have = sorted(self.on.get(item.key, ()))
        wanted = self.want(item)
        need = wanted - len(have)
        if need <= 0:
            return
        fitting = sorted(
            (
                i
                for i in range(self.replicas)
                if i not in have and self.used[i] + item.memory <= self.budget
            ),
            key=lambda i: (self.budget - self.used[i] - item.memory, i),
        )
        if not have and len(fitting) < need:
            self.verdicts[item.key] = ItemPlacement(
                item.key,
                (),
                wanted,
                "DoesNotFit",
                f"needs {format_bytes(item.memory)} on {_replicas_text(wanted)}; free: "
                f"{_free_text(self.budget, self.used)}",
            )
            return
        for index in fitting[:need]:
            self.add(item.key, index)

    # --- the verdicts ---------------------------------------------------------------------

    def verdict(self, item: PoolItem) -> ItemPlacement:
        known = self.verdicts.get(item.key)
        if known is not None:
            return known
        at = tuple(sorted(self.on.get(item.key, ())))
        # A member is wanted wherever an ensemble using it is, beyond its own count.
        wanted = max(
            [self.want(item)]
            + [
                len(self.on.get(e.key, ()))
                for e in self.items.values()
                if item.key in e.members and e.wanted
            ]
        )
        if not item.wanted:
            state: PlacementState = "ScaledToZero" if item.at_zero else "Leaving"
            message = f"still loaded on replica(s) {', '.join(map(str, at))}" if at else ""
            if item.at_zero and not at:
                message = "scaled to zero: not loaded, its memory is free"
            return ItemPlacement(item.key, at, 0, state, message)
        if len(at) >= wanted:
            return ItemPlacement(item.key, at, wanted, "Placed")
        return ItemPlacement(
            item.key,
            at,
            wanted,
            "FewerReplicas",
            f"on {len(at)} of {_replicas_text(wanted)}: needs {format_bytes(item.memory)} on "
            f"{wanted - len(at)} more; free: {_free_text(self.budget, self.used)}",
        )


def want_count(item: PoolItem, replicas: int) -> int:
    """On how many replicas ``item`` is to be loaded in a pool of ``replicas``."""
    return replicas if item.replicas is None else min(item.replicas, replicas)


def place(
    items: Sequence[PoolItem],
    replicas: int,
    budget: int,
    previous: Mapping[ItemKey, Sequence[int]] | None = None,
) -> Placement:
    """Where each item goes on a pool of ``replicas`` replicas of ``budget`` bytes each,
    given where they were (``previous``, by item). See the module docstring."""
    placer = _Placer(items, max(replicas, 0), budget)
    placer.keep(previous or {})
    wanted = [i for i in placer.items.values() if i.wanted]
    for ensemble in sorted((i for i in wanted if i.is_ensemble), key=lambda i: i.key):
        placer.place_ensemble(ensemble)
    for item in sorted((i for i in wanted if not i.is_ensemble), key=lambda i: (-i.memory, i.key)):
        placer.place_model(item)
    verdicts = {key: placer.verdict(item) for key, item in sorted(placer.items.items())}
    return Placement(
        budget=budget,
        replicas=placer.replicas,
        items=verdicts,
        used=tuple(placer.used),
        triton_names={k: i.triton_name for k, i in placer.items.items()},
    )


# --- which pod holds which replica ----------------------------------------------------------


@dataclass(frozen=True)
class PoolPod:
    """A pod of the pool's Deployment: enough to bind it to a replica."""

    name: str
    created: str = ""
    deleting: bool = False


def bind_replicas(
    previous: Mapping[int, str], pods: Sequence[PoolPod], replicas: int
) -> tuple[str | None, ...]:
    """The pod holding each replica ``0..replicas-1`` (None: no pod for it yet).

    A pod keeps its replica as long as it exists and is not terminating, so a restart
    reloads the same models; a pod without a replica takes the lowest free one, oldest
    pod first. Extra pods (a rolling update's surge, a scale-down in progress) hold none.
    """
    alive = {p.name: p for p in pods if not p.deleting}
    out: list[str | None] = [None] * max(replicas, 0)
    taken: set[str] = set()
    for index, pod in sorted(previous.items()):
        if 0 <= index < len(out) and pod in alive and pod not in taken:
            out[index] = pod
            taken.add(pod)
    waiting = sorted(
        (p for p in alive.values() if p.name not in taken), key=lambda p: (p.created, p.name)
    )
    for index in range(len(out)):
        if out[index] is None and waiting:
            out[index] = waiting.pop(0).name
    return tuple(out)


# --- what a pooled model reads back ---------------------------------------------------------


@dataclass(frozen=True)
class PooledPlacement:
    """A pooled object's entry in its pool's status (``entry`` None: not placed yet)."""

    pool: str
    found: bool  # the pool exists
    entry: PooledModelStatus | None = None
    pods: tuple[str, ...] = ()  # the pool pods of its replicas
    ready_pods: tuple[str, ...] = ()  # those of them that are Ready (Kubernetes)
    deployment: str | None = None

    @property
    def state(self) -> str:
        return self.entry.state if self.entry is not None else ""


def placement_of(
    pool_name: str, pool_body: Mapping[str, Any] | None, kind: str, name: str
) -> PooledPlacement:
    """Where the pool's status (written by the pool's reconcile) says ``kind``/``name`` is."""
    if pool_body is None:
        return PooledPlacement(pool_name, found=False)
    try:
        status = PoolStatus.model_validate(pool_body.get("status") or {})
    except ValidationError:
        status = PoolStatus()
    entry = next((m for m in status.models if m.kind == kind and m.name == name), None)
    ready = {r.pod for r in status.placement if r.ready and r.pod}
    # Only a placed object's replicas are its home; the pods of one leaving or at zero
    # are where it is still loaded (to unload), not where to load it.
    placed = entry is not None and entry.state in ("Placed", "FewerReplicas")
    pods = tuple(entry.pods) if entry is not None and placed else ()
    return PooledPlacement(
        pool_name, True, entry, pods, tuple(p for p in pods if p in ready), status.deployment
    )
