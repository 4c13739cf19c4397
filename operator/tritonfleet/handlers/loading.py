"""The loader loop: every model loaded on every Triton pod of its Deployment,
in the background, one pass at a time per object.

Where it sits: the reconcile tells the loader what each object wants
(:meth:`Loader.track`, in memory only: the ``Target`` of its rendering, from the
process's shared ``desired.kube.views``, so the loader never parses a spec) and
never waits for it; pod events (``handlers.watches``, the operator's one watch of
its Triton pods) wake it too. A pass reads the object's pods from memory, splits
them (``desired.kube.loading.select_pods``: never dial a pod outside
``dialPodNetworks``), observes and converges the reachable ones
(``adapters.triton_repository.PodRepositories``, parallel, bounded retries), and
hands what it found to the reconcile (:meth:`Loader.report`), which writes
``status.pods`` and ``Loaded`` with the rest of the status (one writer of the
status, one write per change). A pass that failed, or found pods it could not
make serve the revision, is retried with backoff.

At rest a pass costs nothing: once every pod serves the wanted revision, the loader
dials nobody until what it read changes - the wanted revision, or a pod (new, gone,
another IP, phase, readiness, pod-template revision or container restart count).
That is how a Triton that lost its models is still noticed: a restarted container
keeps its pod and IP but raises the restart count, and Triton runs with
``--strict-readiness``, so a model it no longer serves makes the pod NotReady.

Each pod is judged against what its own template names (a rollout runs pods of
two revisions side by side), and once the status in memory says what the pass found
(the reconcile wrote it: :meth:`Loader.status_settled`) the pods' readiness gate
``tritonfleet.io/loaded`` follows it (a strategic-merge patch of pods/status): a
Deployment counts a pod available only once the gateways can route to it. A pooled
object's pass also looks at its pool's pods, and at pods it left (unloaded from them
once its new home serves it).

On deletion :meth:`Loader.unloaded` starts one background unload from every
pod (bounded by ``unloadTimeoutSeconds``) and says, from memory, whether the
cleanup Job may remove the files yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tritonfleet.adapters.kube import ApiError, KubeApi
from tritonfleet.adapters.triton_repository import PodEndpoint, PodRepositories
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube.loading import (
    PodKey,
    TritonPod,
    gate_changes,
    in_order,
    load_target,
    loading_status,
    pod_key_of,
    restrict,
    select_pods,
    unload_gate,
    wanted_by,
)
from tritonfleet.desired.kube.objects import LOADED_GATE, Target
from tritonfleet.desired.kube.placement import PooledPlacement
from tritonfleet.desired.kube.pool import pool_pod_key
from tritonfleet.desired.kube.pool_loading import (
    away_names,
    holds,
    is_pool_pod,
    may_unload_away,
    split_pods,
    with_away,
)
from tritonfleet.desired.kube.views import owner_of
from tritonfleet.desired.triton.loading import LoadPlan, LoadTarget, plan_loading, plan_unloading
from tritonfleet.handlers.state import Key, World

log = logging.getLogger("tritonfleet.loading")

MAX_BACKOFF = 300.0


@dataclass(frozen=True)
class Wanted:
    target: Target
    load: LoadTarget
    pool: PooledPlacement | None = None  # a pooled object: where its pool placed it
    synced: bool = True  # a pooled object: its revision's files are in the repository


@dataclass(frozen=True)
class LoadReport:
    """What the last pass found for an object: the plan for ``revision`` as observed
    (``status.pods`` and ``Loaded`` come from it, written by the reconcile)."""

    revision: str
    plan: LoadPlan


def pod_fingerprint(pod: TritonPod) -> tuple[object, ...]:
    """What of a pod a pass depends on (the same fields wake the loader on events): what
    it is started to serve and its readiness gate too, as the pass judges and opens it."""
    return (pod.name, pod.uid, pod.ip, pod.phase, pod.ready, pod.deleting, pod.revision,
            pod.restarts, pod.serves, pod.gated, pod.gate)  # fmt: skip


@dataclass
class _Unload:
    started: float
    uid: str
    pool: PooledPlacement | None = None  # pooled: every pod of its pool may hold it
    listed: tuple[str, ...] = ()  # the pods its status listed
    task: asyncio.Task[None] | None = None
    done: bool | None = None
    waiting: tuple[str, ...] = ()
    reported: bool = False


class Loader:
    """Background loading passes per object (see the module docstring)."""

    def __init__(
        self,
        client: KubeApi,
        world: World,
        settings: OperatorSettings,
        repositories: PodRepositories,
        *,
        request_reconcile: Callable[[Key], None],
        post_event: Callable[[Mapping[str, Any], str, str, str], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.world = world
        self.settings = settings
        self.repositories = repositories
        self.request_reconcile = request_reconcile
        self.post_event = post_event
        self.clock = clock
        self._wanted: dict[Key, Wanted] = {}
        self._by_pods: dict[PodKey, set[Key]] = {}  # pod index key -> the objects on its pods
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = {}
        self._unloads: dict[Key, _Unload] = {}
        self._reports: dict[Key, LoadReport] = {}
        # The inputs of each object's last pass that left nothing to retry: the same
        # inputs again mean the same outcome, without dialling anyone.
        self._settled: dict[Key, tuple[object, ...]] = {}
        # Gates a pass held back until the reconcile writes the status that allows them.
        self._gates_pending: dict[Key, tuple[Collection[TritonPod], LoadPlan]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.passes = 0  # passes that dialled pods (the benchmark reports them at rest)

    # --- what the reconcile and the watches tell us ----------------------------------

    def track(
        self,
        key: Key,
        target: Target | None,
        pool: PooledPlacement | None = None,
        *,
        synced: bool = True,
    ) -> None:
        """The reconcile's view of a live object (memory only, never waits).

        ``pool``: a pooled object's placement (its pool's status); its loads go to the
        pool pods of its replicas once its revision is ``synced``.
        """
        if target is None:
            self.forget(key)
            return
        wanted = Wanted(target, load_target(target), pool, synced)
        if self._wanted.get(key) != wanted:
            self.forget(key, keep_timer=True)
            self._wanted[key] = wanted
            for pod_key in self._pod_keys(wanted):
                self._by_pods.setdefault(pod_key, set()).add(key)
            self.poke(key)
        elif key not in self._tasks and key not in self._timers and key not in self._settled:
            self.poke(key)

    def report(self, key: Key, revision: str) -> LoadPlan | None:
        """What the last pass found on ``key``'s pods for ``revision`` (None: nothing yet)."""
        found = self._reports.get(key)
        return found.plan if found is not None and found.revision == revision else None

    def status_settled(self, key: Key) -> None:
        """The reconcile left ``key``'s status as it wants it (written, or already so):
        the readiness gates its last pass held back may open now."""
        pending = self._gates_pending.get(key)
        if pending is None:
            return
        task = asyncio.create_task(self._settle_gates(key, pending))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _settle_gates(
        self, key: Key, pending: tuple[Collection[TritonPod], LoadPlan]
    ) -> None:
        # Kept until opened: a status written from an older report does not say it yet.
        if await self._open_gates(key, *pending) and self._gates_pending.get(key) is pending:
            del self._gates_pending[key]

    @staticmethod
    def _pod_keys(wanted: Wanted) -> list[PodKey]:
        """Whose pods' events wake this object's loader: its own, and its pool's."""
        keys = [pod_key_of(wanted.target)]
        if wanted.pool is not None:
            keys.append(pool_pod_key(wanted.target.namespace, wanted.pool.pool))
        return keys

    def forget(self, key: Key, keep_timer: bool = False) -> None:
        self._settled.pop(key, None)
        wanted = self._wanted.pop(key, None)
        if wanted is not None:
            for pod_key in self._pod_keys(wanted):
                keys = self._by_pods.get(pod_key)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._by_pods[pod_key]
        timer = None if keep_timer else self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def pod_changed(self, namespace: str, pod: TritonPod) -> None:
        """A Triton pod appeared, changed readiness/IP, or went: re-check the objects on it."""
        for key in list(self._by_pods.get(pod.owner, ())):
            self.poke(key)

    def poke(self, key: Key, delay: float = 0.0) -> None:
        """Run a pass for ``key`` now (or after ``delay``); merged with a running one."""
        if delay > 0:
            loop = asyncio.get_running_loop()
            previous = self._timers.get(key)
            if previous is not None and previous.when() <= loop.time() + delay:
                return
            if previous is not None:
                previous.cancel()
            self._timers[key] = loop.call_later(delay, self._fire, key)
            return
        if key in self._tasks:
            self._dirty.add(key)
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        task = asyncio.create_task(self._run(key))
        self._tasks[key] = task

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        if key in self._wanted:
            self.poke(key)

    async def stop(self) -> None:
        """Cancel every pass and forget what was wanted: a stopped loader stays idle
        until the reconcile tracks objects again (a replica standing by must not
        load or write)."""
        for handle in self._timers.values():
            handle.cancel()
        tasks: list[asyncio.Task[Any]] = [
            *self._tasks.values(),
            *(u.task for u in self._unloads.values() if u.task),
            *self._background,
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for memory in (self._wanted, self._by_pods, self._tasks, self._timers, self._unloads):
            memory.clear()
        self._dirty.clear()
        self._failures.clear()
        await self.repositories.close()

    # --- passes ----------------------------------------------------------------------

    async def _run(self, key: Key) -> None:
        settled = False
        try:
            settled = await self._pass(key)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(2.0**failures, MAX_BACKOFF)
            log.warning("loading pass of %s %s/%s failed: %s; again in %.0fs", *key, error, delay)
        else:
            if settled:
                self._failures.pop(key, None)
            else:
                # Pods that do not serve the revision yet: look again, less and less often.
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(2.0**failures, MAX_BACKOFF)
        finally:
            self._tasks.pop(key, None)
        if key in self._dirty:
            self._dirty.discard(key)
            self.poke(key)
        elif key in self._wanted and not settled:
            self.poke(key, delay)

    def _endpoints(self, pods: Collection[TritonPod]) -> list[PodEndpoint]:
        return [PodEndpoint.from_ip(p.name, p.ip, ready=p.usable) for p in pods]

    def _listed(self, key: Key) -> list[str]:
        """The pods the object's status lists now (it may still be loaded there)."""
        body = self.world.owner(*key)
        return [p.name for p in owner_of(body).status.pods] if body is not None else []

    def _pods(self, wanted: Wanted | None, listed: Collection[str]) -> list[TritonPod]:
        """The pods a pass may look at: the object's own and its pool's (indexed), or
        every Triton pod when its status lists one elsewhere (it left a pool)."""
        if wanted is None:
            return self.world.triton_pods()
        pods = [p for k in self._pod_keys(wanted) for p in self.world.pods_of(k)]
        names = {p.name for p in pods}
        if any(name not in names for name in listed):
            return self.world.triton_pods()
        return pods

    async def _pass(self, key: Key) -> bool:
        """One pass; True when it left nothing to retry (every pod it may dial serves the
        revision, or there is no such pod)."""
        wanted = self._wanted.get(key)
        if wanted is None:
            return True
        listed = self._listed(key)
        split = split_pods(wanted.target, wanted.pool, self._pods(wanted, listed), listed)
        pods = (*split.home, *split.away)
        if not pods and key not in self._reports:
            return True  # no pod yet: nothing to report (Available says why), nobody to dial
        inputs = (wanted, tuple(pod_fingerprint(p) for p in pods), tuple(listed))
        if self._settled.get(key) == inputs:
            return True  # nothing it depends on changed since a pass that left nothing to do
        self._settled.pop(key, None)
        selection = select_pods(
            split.home,
            may_dial=self.settings.may_dial,
            networks=self.settings.dial_pod_networks,
            pooled_synced=None if wanted.pool is None else wanted.synced,
        )
        # A pool's pods are started for no model: each serves the object's revision
        # (an ensemble's members at theirs), loaded from the shared repository.
        per_pod = {
            p.name: wanted_by(p, wanted.target) if wanted.pool is None else wanted.load
            for p in selection.dial
        }
        names = dict.fromkeys(wanted.load.names)
        for load in per_pod.values():
            names.update(dict.fromkeys(load.names))
        endpoints = self._endpoints(selection.dial)
        if endpoints:
            self.passes += 1
        observed = await self.repositories.observe(endpoints, tuple(names))
        body = self.world.owner(*key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return True
        generation = owner_of(body).generation
        decided = restrict(
            plan_loading(
                wanted.load,
                in_order(selection, observed),
                generation=generation,
                wanted=per_pod,
            ),
            selection.act,
        )
        if decided.has_work:
            for pod in decided.pods:
                for action in pod.actions:
                    log.info(
                        "%s %s/%s: %s %s on %s (%s)",
                        *key,
                        action.kind,
                        action.model,
                        pod.pod,
                        action.why,
                    )
            observed = await self.repositories.converge(endpoints, decided)
            decided = plan_loading(
                wanted.load, in_order(selection, observed), generation=generation, wanted=per_pod
            )
        if split.away:
            decided = await self._away(key, wanted, split.away, decided)
        report = LoadReport(wanted.target.revision, decided)
        if self._reports.get(key) != report:
            self._reports[key] = report
            self.request_reconcile(key)  # the reconcile writes it; Ready follows Loaded
        if not await self._open_gates(key, split.home, decided):
            # status.pods does not say it yet: a gate opened now would let the Deployment
            # remove an old pod before any gateway can route to the new one. The
            # reconcile that writes it opens them (status_settled).
            self._gates_pending[key] = (split.home, decided)
        else:
            self._gates_pending.pop(key, None)
        dialled = {p.name for p in selection.dial if p.usable}
        settled = decided.loaded or not any(
            s.state != "Ready" for s in decided.states if s.name in dialled
        )
        if settled:
            self._settled[key] = inputs
        return settled

    async def _open_gates(self, key: Key, pods: Collection[TritonPod], decided: LoadPlan) -> bool:
        """The pods' readiness gates, once the status says what ``decided`` says;
        whether it did."""
        body = self.world.owner(*key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return False
        owner = owner_of(body)
        now = self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if loading_status(owner.status, decided, now, generation=owner.generation) is not None:
            return False
        await self._gates(pods, decided.states)
        return True

    async def _gates(self, pods: Collection[TritonPod], states: Any) -> None:
        """Each pod's readiness gate after status.pods says what it serves: a new pod
        becomes available to its Deployment only once the gateways can know it."""
        now = self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for pod, loaded, why in gate_changes(list(pods), states):
            condition = {
                "type": LOADED_GATE,
                "status": "True" if loaded else "False",
                "reason": "Loaded" if loaded else "NotLoaded",
                "message": why,
                "lastTransitionTime": now,
            }
            try:
                # Strategic merge: conditions merge by type, the kubelet's stay as they are.
                await self.client.patch(
                    "Pod",
                    pod.namespace,
                    pod.name,
                    {"status": {"conditions": [condition]}},
                    patch_type="strategic",
                    sub="status",
                )
            except ApiError as error:
                if not error.not_found:  # a pod that went needs no gate
                    log.warning("readiness gate of pod %s/%s: %s", pod.namespace, pod.name, error)

    async def _away(
        self, key: Key, wanted: Wanted, away: tuple[TritonPod, ...], decided: LoadPlan
    ) -> LoadPlan:
        """Pods the object left (desired.kube.pool_loading): reported while they still
        hold it, unloaded (pool pods only: a Deployment it left goes as a whole) once
        its home serves it, or at once when it is to be served nowhere."""
        reachable = [p for p in away if not p.ip or self.settings.may_dial(p.ip)]
        endpoints = self._endpoints(reachable)
        observed = await self.repositories.observe(endpoints, wanted.load.names)
        names = away_names(wanted.target)
        shared = {p.name for p in reachable if is_pool_pod(p)}
        leaving = [
            e
            for e, o in zip(endpoints, observed, strict=True)
            if e.name in shared and holds(o, names)
        ]
        if leaving and may_unload_away(decided, wanted.pool):
            log.info(
                "%s %s/%s: unloading %s from %s",
                *key,
                ", ".join(names),
                ", ".join(e.name for e in leaving),
            )
            await self.repositories.unload_everywhere(
                leaving, names, wait=float(self.settings.unload_timeout_seconds)
            )
            observed = await self.repositories.observe(endpoints, wanted.load.names)
        return with_away(decided, wanted.target, observed, wanted.pool)

    # --- deletion --------------------------------------------------------------------

    def unloaded(self, key: Key, target: Target | None, body: Mapping[str, Any]) -> bool:
        """Whether a deleted object's files may go: every pod unloaded it, or the
        bounded wait is over. Starts the unload in the background the first time.

        A deleted object may no longer render (an ensemble whose members are being
        deleted with it): what it last wanted loaded is unloaded then."""
        known = self._wanted.get(key)
        self.forget(key)
        if (target is None or not target.load_models) and known is not None:
            target = known.target
        if target is None or not target.load_models:
            return True
        state = self._unloads.get(key)
        if state is None or state.uid != target.uid:  # (a re-created object starts afresh)
            pool = target.serving.pool
            state = _Unload(
                started=time.monotonic(),
                uid=target.uid,
                pool=PooledPlacement(pool.name, found=True) if pool is not None else None,
                listed=tuple(p.name for p in owner_of(body).status.pods),
            )
            self._unloads[key] = state
            state.task = asyncio.create_task(self._unload(key, state, target))
        gate = unload_gate(
            state.done,
            state.waiting,
            time.monotonic() - state.started,
            float(self.settings.unload_timeout_seconds),
        )
        if gate.event is not None and not state.reported:
            state.reported = True
            self.post_event(body, gate.event.type, gate.event.reason, gate.event.message)
        return gate.proceed

    async def _unload(self, key: Key, state: _Unload, target: Target) -> None:
        # From a pool's pods only the object itself goes: they are shared, and an
        # ensemble's members there are pooled objects of their own.
        shared = away_names(target)
        own = shared if target.serving.pool is not None else load_target(target).unload_order
        try:
            split = split_pods(target, state.pool, self._pods(None, ()), state.listed)
            selection = select_pods(
                (*split.home, *split.away),
                may_dial=self.settings.may_dial,
                networks=self.settings.dial_pod_networks,
            )
            endpoints = [e for e in self._endpoints(selection.dial) if e.url]
            pooled = {p.name for p in selection.dial if is_pool_pod(p)}
            wait = float(self.settings.unload_timeout_seconds)
            waiting: list[str] = []
            done = True
            for names, group in (
                (own, [e for e in endpoints if e.name not in pooled]),
                (shared, [e for e in endpoints if e.name in pooled]),
            ):
                if not group:
                    continue
                observed = await self.repositories.unload_everywhere(group, names, wait=wait)
                result = plan_unloading(names, observed)
                waiting.extend(result.waiting)
                done = done and result.done
            blocked = [f"{o.name} ({o.error})" for o in selection.blocked]
            state.waiting = (*waiting, *blocked)
            state.done = done and not blocked
            log.info(
                "%s %s/%s: unloaded %s from %d pod(s)%s",
                *key,
                ", ".join(own),
                len(endpoints),
                "" if state.done else f"; not confirmed: {'; '.join(state.waiting)}",
            )
        except Exception as error:  # never block deletion on the loader itself
            log.warning("unloading %s %s/%s failed: %s", *key, error)
            state.done = False
            state.waiting = (str(error),)
        self.request_reconcile(key)

    def deleted(self, key: Key) -> None:
        """The object is gone: drop its memory."""
        self.forget(key)
        self._gates_pending.pop(key, None)
        self._unloads.pop(key, None)
        self._failures.pop(key, None)
        self._reports.pop(key, None)
