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

from tritonfleet.adapters.kube import KubeApi
from tritonfleet.adapters.triton_repository import PodEndpoint, PodRepositories
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube.loading import (
    PodKey,
    TritonPod,
    in_order,
    load_target,
    pod_key_of,
    pods_of,
    restrict,
    select_pods,
    unload_gate,
)
from tritonfleet.desired.kube.objects import Target
from tritonfleet.desired.kube.views import owner_of
from tritonfleet.desired.triton.loading import LoadPlan, LoadTarget, plan_loading, plan_unloading
from tritonfleet.handlers.state import Key, World

log = logging.getLogger("tritonfleet.loading")

MAX_BACKOFF = 300.0


@dataclass(frozen=True)
class Wanted:
    target: Target
    load: LoadTarget
    deployed: str | None  # the revision the Deployment's pod template serves


@dataclass(frozen=True)
class LoadReport:
    """What the last pass found for an object: the plan for ``revision`` as observed
    (``status.pods`` and ``Loaded`` come from it, written by the reconcile)."""

    revision: str
    plan: LoadPlan


def pod_fingerprint(pod: TritonPod) -> tuple[object, ...]:
    """What of a pod a pass depends on (the same fields wake the loader on events)."""
    return (pod.name, pod.uid, pod.ip, pod.phase, pod.ready, pod.deleting, pod.revision,
            pod.restarts)  # fmt: skip


@dataclass
class _Unload:
    started: float
    uid: str
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
        self._by_pods: dict[PodKey, Key] = {}  # pod index key -> the object its pods serve
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = {}
        self._unloads: dict[Key, _Unload] = {}
        self._reports: dict[Key, LoadReport] = {}
        # The inputs of each object's last pass that left nothing to retry: the same
        # inputs again mean the same outcome, without dialling anyone.
        self._settled: dict[Key, tuple[object, ...]] = {}
        self.passes = 0  # passes that dialled pods (the benchmark reports them at rest)

    # --- what the reconcile and the watches tell us ----------------------------------

    def track(self, key: Key, target: Target | None, deployed: str | None) -> None:
        """The reconcile's view of a live object (memory only, never waits)."""
        if target is None:
            self.forget(key)
            return
        wanted = Wanted(target, load_target(target), deployed or None)
        if self._wanted.get(key) != wanted:
            self._wanted[key] = wanted
            self._by_pods[pod_key_of(target)] = key
            self.poke(key)
        elif key not in self._tasks and key not in self._timers and key not in self._settled:
            self.poke(key)

    def report(self, key: Key, revision: str) -> LoadPlan | None:
        """What the last pass found on ``key``'s pods for ``revision`` (None: nothing yet)."""
        found = self._reports.get(key)
        return found.plan if found is not None and found.revision == revision else None

    def forget(self, key: Key) -> None:
        self._settled.pop(key, None)
        wanted = self._wanted.pop(key, None)
        if wanted is not None:
            self._by_pods.pop(pod_key_of(wanted.target), None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def pod_changed(self, namespace: str, pod: TritonPod) -> None:
        """A Triton pod appeared, changed readiness/IP, or went: re-check its owner."""
        key = self._by_pods.get(pod.owner)
        if key is not None:
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
        for handle in self._timers.values():
            handle.cancel()
        tasks = [*self._tasks.values(), *(u.task for u in self._unloads.values() if u.task)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
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

    async def _pass(self, key: Key) -> bool:
        """One pass; True when it left nothing to retry (every pod it may dial serves the
        revision, or there is no such pod)."""
        wanted = self._wanted.get(key)
        if wanted is None:
            return True
        pods = pods_of(wanted.target, self.world.pods_of(pod_key_of(wanted.target)))
        if not pods and key not in self._reports:
            return True  # no pod yet: nothing to report (Available says why), nobody to dial
        inputs = (wanted, tuple(pod_fingerprint(p) for p in pods))
        if self._settled.get(key) == inputs:
            return True  # nothing it depends on changed since a pass that left nothing to do
        self._settled.pop(key, None)
        selection = select_pods(
            pods,
            revision=wanted.target.revision,
            deployed_revision=wanted.deployed,
            may_dial=self.settings.may_dial,
            networks=self.settings.dial_pod_networks,
        )
        endpoints = self._endpoints(selection.dial)
        if endpoints:
            self.passes += 1
        observed = await self.repositories.observe(endpoints, wanted.load.names)
        body = self.world.owner(*key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return True
        generation = owner_of(body).generation
        decided = restrict(
            plan_loading(wanted.load, in_order(selection, observed), generation=generation),
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
                wanted.load, in_order(selection, observed), generation=generation
            )
        report = LoadReport(wanted.target.revision, decided)
        if self._reports.get(key) != report:
            self._reports[key] = report
            self.request_reconcile(key)  # the reconcile writes it; Ready follows Loaded
        dialled = {p.name for p in selection.dial if p.usable}
        settled = decided.loaded or not any(
            s.state != "Ready" for s in decided.states if s.name in dialled
        )
        if settled:
            self._settled[key] = inputs
        return settled

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
            state = _Unload(started=time.monotonic(), uid=target.uid)
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
        names = load_target(target).unload_order
        try:
            pods = pods_of(target, self.world.pods_of(pod_key_of(target)))
            selection = select_pods(
                pods,
                revision=target.revision,
                deployed_revision=None,
                may_dial=self.settings.may_dial,
                networks=self.settings.dial_pod_networks,
            )
            endpoints = [e for e in self._endpoints(selection.dial) if e.url]
            observed = await self.repositories.unload_everywhere(
                endpoints, names, wait=float(self.settings.unload_timeout_seconds)
            )
            result = plan_unloading(names, observed)
            blocked = [f"{o.name} ({o.error})" for o in selection.blocked]
            state.waiting = (*result.waiting, *blocked)
            state.done = result.done and not blocked
            log.info(
                "%s %s/%s: unloaded %s from %d pod(s)%s",
                *key,
                ", ".join(names),
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
        self._unloads.pop(key, None)
        self._failures.pop(key, None)
        self._reports.pop(key, None)
