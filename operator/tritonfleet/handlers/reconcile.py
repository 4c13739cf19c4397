"""The reconcile loop: one ``reconcile()`` per object, whatever woke it up.

Watch events (``handlers.watches``: an object changed, a child changed, a member
changed), the loader's reports and the periodic resync only *request* a reconcile
here; a small pool of workers runs them, never two at once for the same object,
coalescing bursts (a thousand child events for one object make one or two
reconciles, not a thousand).

A reconcile reads the object and its children from memory (``state.World``), its
parsed spec from the process's shared ``desired.kube.views.OwnerViews`` (parsed
once per generation), asks ``desired.kube.plan`` what to do, and carries the plan out: writes only
the children that are missing or differ, the status only when it changed,
and one Event when anything changed. Failures are reported (Warning Event,
metrics) and retried with backoff; the periodic resync is the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from tritonfleet.adapters.kube import ApiError, KubeApi
from tritonfleet.adapters.triton_repository import PodRepositories
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.gateway.cluster import OPENAI_NAME_ANNOTATION
from tritonfleet.desired.kube.analysis import Measure, MeasureQuery
from tritonfleet.desired.kube.loading import loading_events, loading_status, pods_of
from tritonfleet.desired.kube.objects import FINALIZER, Target
from tritonfleet.desired.kube.observed import ChildState
from tritonfleet.desired.kube.placement import PooledPlacement, placement_of
from tritonfleet.desired.kube.plan import (
    Action,
    Plan,
    finalizers_with,
    plan,
    plan_claim,
    plan_deletion,
    status_patch,
    synced_in_status,
)
from tritonfleet.desired.kube.pool import POOL_KIND
from tritonfleet.desired.kube.views import OwnerViews, Rendering, owner_of
from tritonfleet.handlers import metrics
from tritonfleet.handlers.loading import Loader
from tritonfleet.handlers.pools import PoolReconciler
from tritonfleet.handlers.state import OWNER_KINDS, Key, World

log = logging.getLogger("tritonfleet.reconcile")

MAX_BACKOFF = 300.0
NAMESPACE_TERMINATING_RECHECK = 15.0  # s; the owner's own deletion event comes sooner
CLAIM = "RepositoryClaim"  # pseudo-kind of the per-namespace claim check
MOUNTED_KINDS = ("ConfigMap", "PersistentVolumeClaim")  # written before what mounts them


class Reconciler:
    """Work queue + workers + the reconcile itself (see the module docstring)."""

    def __init__(
        self,
        client: KubeApi,
        world: World,
        views: OwnerViews,
        settings: OperatorSettings,
        repositories: PodRepositories,
        *,
        workers: int = 32,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        measure: Measure | None = None,
    ) -> None:
        self.client = client
        self.world = world
        self.views = views
        self.settings = settings
        self.workers = workers
        self.clock = clock
        # Canary numbers per revision (the gateways' and Triton's, kept by the scaling
        # side of the process; composed in cli.operator). None: steps are never judged.
        self.measure = measure
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        # Held until their namespace is fully listed (handlers.watches): a reconcile
        # must never mistake "not listed yet" for "missing".
        self._parked: dict[str, set[Key]] = {}
        # What each object's last reconcile read and left as it was: the periodic
        # re-check skips an object whose inputs are still exactly those.
        self._settled: dict[Key, tuple[object, ...]] = {}
        self._claim_locks: dict[str, asyncio.Lock] = {}
        self._caught_up = False  # every object looked at once since start (readiness)
        self._looked: set[Key] = set()  # objects reconciled since start, until caught up
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        # Loading runs beside the reconcile, never inside it (handlers.loading).
        self.loader = Loader(
            client,
            world,
            settings,
            repositories,
            request_reconcile=self.request,
            post_event=self._post,
            clock=clock,
        )
        self.pools = PoolReconciler(
            client,
            world,
            views,
            settings,
            request=self.request,
            post_event=self._post,
            clock=clock,
        )

    # --- scheduling -------------------------------------------------------------------

    def request(self, key: Key, delay: float = 0.0) -> None:
        """Ask for a reconcile of ``key`` (now, or after ``delay`` seconds)."""
        if delay > 0:
            loop = asyncio.get_running_loop()
            previous = self._timers.get(key)
            due = loop.time() + delay
            if previous is not None and previous.when() <= due:
                return  # an earlier reconcile is already planned
            if previous is not None:
                previous.cancel()
            self._timers[key] = loop.call_later(delay, self._fire, key)
            return
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)
            metrics.QUEUE_DEPTH.set(len(self._queued))

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.request(key)

    def not_ready(self) -> str | None:
        """Why the operator has not looked at every object once yet (None: it has).

        Every object known once the memory is complete must have been reconciled once
        (whatever the outcome); an empty queue is not asked for, since a fleet that is
        still converging keeps it busy. Once caught up it stays ready: a burst of work
        later is not unreadiness."""
        if self._caught_up:
            return None
        if not self.world.ready:
            return "memory not complete"
        waiting = sum(1 for key in self.world.owner_keys(OWNER_KINDS) if key not in self._looked)
        if waiting:
            return f"{waiting} object(s) not looked at yet"
        self._caught_up = True
        self._looked.clear()
        return None

    def unpark(self, namespace: str | None) -> None:
        """``namespace`` (None: every namespace) is fully listed: run what waited for it."""
        for parked in [n for n in self._parked if namespace is None or n == namespace]:
            for key in self._parked.pop(parked):
                self.request(key)

    @property
    def running(self) -> bool:
        """Started and not stopped (a standby replica's reconciler is not)."""
        return bool(self._tasks)

    def start(self) -> None:
        """Start the workers, and re-check every object already known (the
        watches of a standby replica taking over have filled the memory)."""
        for _ in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker()))
        self._tasks.append(asyncio.create_task(self._resync()))
        self._request_everything()

    async def stop(self) -> None:
        """Stop every worker, timer and loading pass (a replica standing by: it
        must not write); :meth:`start` again picks up from the memory."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._failures.clear()
        await self.loader.stop()

    def _request_everything(self) -> None:
        for key in list(self.world.owner_keys(OWNER_KINDS)):
            self.request(key)
        for namespace in self.world.claim_namespaces():
            self.request_claim_check(namespace)

    async def _resync(self) -> None:
        """Level-based safety net: every interval, every object whose inputs moved since
        its last reconcile without waking it is reconciled (at rest: none; the check is a
        few dictionary lookups per object)."""
        while True:
            await asyncio.sleep(self.settings.reconcile_interval_seconds)
            for key in list(self.world.owner_keys(OWNER_KINDS)):
                if self._settled.get(key) != self._inputs(key):
                    self.request(key)
            for namespace in self.world.claim_namespaces():
                self.request_claim_check(namespace)
            for kind, count in self.world.counts().items():
                metrics.MANAGED.labels(kind).set(count)

    def _inputs(self, key: Key) -> tuple[object, ...]:
        """What a reconcile of ``key`` reads, as versions: the owner, its children, the
        namespace's claim. (An ensemble also reads its members: never considered settled.)"""
        kind, namespace, name = key
        stamp = self.world.owner_stamp(kind, namespace, name)
        if stamp is None or kind != "TritonModel":
            return (object(),)
        children = self.world.children(stamp[1])
        claim = self.world.claim(namespace, self.settings.repository_claim_name)
        return (
            stamp,
            tuple(sorted((k, c.resource_version, c.deleting) for k, c in children.items())),
            claim.resource_version if claim is not None else None,
        )

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            metrics.QUEUE_DEPTH.set(len(self._queued))
            if not self.world.is_synced(key[1]):
                self._parked.setdefault(key[1], set()).add(key)
                continue
            self._running.add(key)
            try:
                await self._reconcile_safely(key)
            finally:
                self._running.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.request(key)

    async def _reconcile_safely(self, key: Key) -> None:
        kind = key[0]
        started = time.perf_counter()
        try:
            outcome = await self.reconcile(key)
        except ApiError as error:
            outcome = "error"
            metrics.RECONCILE_ERRORS.labels(kind, error.reason or str(error.status)).inc()
            self._retry(key, error)
        except Exception as error:
            outcome = "error"
            metrics.RECONCILE_ERRORS.labels(kind, type(error).__name__).inc()
            log.exception("reconcile of %s %s/%s failed", *key)
            self._retry(key, error)
        else:
            self._failures.pop(key, None)
        metrics.RECONCILES.labels(kind, outcome).inc()
        metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
        if not self._caught_up:
            self._looked.add(key)

    def _retry(self, key: Key, error: Exception) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(2.0**failures, MAX_BACKOFF)
        log.warning("reconcile of %s %s/%s: %s; retrying in %.0fs", *key, error, delay)
        self.request(key, delay)

    # --- the reconcile -----------------------------------------------------------------

    async def reconcile(self, key: Key) -> str:
        """Bring one object's children and status to their desired state; the outcome."""
        kind, namespace, name = key
        if kind == CLAIM:
            return await self._reconcile_claim(namespace, name)
        if kind == POOL_KIND:
            return await self.pools.reconcile(key)
        inputs = self._inputs(key)
        body = self.world.owner(kind, namespace, name)
        if body is None:
            self.loader.deleted(key)
            self._settled.pop(key, None)
            self._failures.pop(key, None)
            return "gone"
        # An ensemble is checked against its members, found in the same namespace.
        rendering = self.views.rendering(body, partial(self.world.owner, "TritonModel", namespace))
        owner = rendering.owner
        children = self.world.children(owner.uid)
        now = self.clock()
        target = rendering.target
        pool = None
        if owner.deletion_timestamp:
            unloaded = True
            if FINALIZER in owner.finalizers:
                unloaded = self.loader.unloaded(key, target, body)
            decided = plan_deletion(rendering, children, self.settings, now, unloaded=unloaded)
        else:
            pool = self._placement(rendering)
            if target is not None and pool is not None:
                synced = synced_in_status(owner.status, target.revision)
                self.loader.track(key, target, pool, synced=synced)
            else:
                self.loader.track(key, target)
            claim = None
            if self.settings.creates_repository_claim:
                claim = self.world.claim(namespace, self.settings.repository_claim_name)
            measured = self._measured(rendering, target) if target is not None else {}
            decided = self._plan_with_loading(key, rendering, children, claim, now, measured, pool)
        if not decided.actions and decided.status is None and not decided.events:
            if decided.requeue_after:
                self.request(key, decided.requeue_after)
            if not owner.deletion_timestamp:
                self.loader.status_settled(key)
            if target is not None and target.serving.pool is None and not owner.status.rollout:
                # (A pooled object also reads its pool, a rollout the gateways' numbers:
                # neither is in the inputs, so those are re-checked every interval.)
                self._settled[key] = inputs
            return "noop"
        self._settled.pop(key, None)
        await self._execute(key, body, decided)
        if target is not None and pool is not None and decided.status is not None:
            before = synced_in_status(owner.status, target.revision)
            if synced_in_status(decided.status, target.revision) != before:
                # The revision's files are synced now: the next reconcile tells the loader
                # so, and the pool's pods load it (our own write coming back wakes nobody).
                self.request(key)
        return "changed"

    def _plan_with_loading(
        self,
        key: Key,
        rendering: Rendering,
        children: Mapping[Key, ChildState],
        claim: ChildState | None,
        now: datetime,
        measured: Mapping[str, Any],
        pool: PooledPlacement | None,
    ) -> Plan:
        """The plan, with what the loader last found on the pods (``status.pods``,
        ``Loaded``) in the same status write: one writer of the status, so no write
        races another and a change shows in one write."""
        owner, target = rendering.owner, rendering.target
        found = self.loader.report(key, target.revision) if target is not None else None
        stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        loaded = None
        if found is not None:
            loaded = loading_status(owner.status, found, stamp, generation=owner.generation)
        if loaded is None or found is None:
            return plan(rendering, children, claim, self.settings, now, measured, pool=pool)
        decided = plan(
            replace(rendering, owner=replace(owner, status=loaded)),
            children,
            claim,
            self.settings,
            now,
            measured,
            pool=pool,
        )
        return replace(
            decided,
            status=decided.status or loaded,
            events=(*loading_events(owner.status, loaded, found), *decided.events),
        )

    def _placement(self, rendering: Rendering) -> PooledPlacement | None:
        """A pooled object's placement, as its pool's status says (None: not pooled)."""
        target = rendering.target
        if target is None or target.serving.pool is None:
            return None
        name = target.serving.pool.name
        body = self.world.owner(POOL_KIND, target.namespace, name)
        return placement_of(name, body, target.kind, target.name)

    def _measured(self, rendering: Rendering, target: Target) -> Mapping[str, Any]:
        """The revisions' numbers over the canary step being judged (memory only)."""
        rollout = rendering.owner.status.rollout
        if self.measure is None or rollout is None or rollout.phase != "Analyzing":
            return {}
        started = rollout.step_started_at
        if not started:
            return {}
        since = datetime.strptime(started, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        pods: dict[str, list[str]] = {}
        for pod in pods_of(target, self.world.triton_pods()):
            if pod.revision and not pod.deleting:
                pods.setdefault(pod.revision, []).append(pod.name)
        body = self.world.owner(target.kind, target.namespace, target.name) or {}
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        query = MeasureQuery(
            namespace=target.namespace,
            route=str(annotations.get(OPENAI_NAME_ANNOTATION) or target.triton_name),
            model=target.triton_name,
            pods={revision: tuple(names) for revision, names in pods.items()},
            since=since.timestamp(),
        )
        try:
            return self.measure(query)
        except Exception:  # numbers missing make the step wait, never fail it
            log.exception(
                "measuring the canary of %s %s/%s", target.kind, target.namespace, target.name
            )
            return {}

    async def _reconcile_claim(self, namespace: str, name: str) -> str:
        owners_left = self.world.owner_count(namespace)
        decided = plan_claim(
            namespace, owners_left, self.world.claim(namespace, name), self.settings
        )
        for action in decided.actions:
            metrics.WRITES.labels(action.verb, action.kind).inc()
            await self.client.delete(action.kind, action.namespace, action.name)
            self.world.forget_child((action.kind, action.namespace, action.name), "")
            log.info("%s: %s", namespace, action.describe())
        return "changed" if decided.actions else "noop"

    def request_claim_check(self, namespace: str) -> None:
        """After an owner is gone: does the namespace still need its repository claim?"""
        if self.settings.creates_repository_claim:
            self.request((CLAIM, namespace, self.settings.repository_claim_name), delay=1.0)

    async def _try_all(self, key: Key, body: dict[str, Any], actions: list[Action]) -> list[str]:
        """Carry out ``actions`` concurrently; what failed, one message each."""
        outcomes = await asyncio.gather(*(self._try(key, body, a) for a in actions))
        return [f for f in outcomes if f]

    async def _execute(self, key: Key, body: dict[str, Any], decided: Plan) -> None:
        """Carry out a plan: owner metadata first, then the children concurrently, then status."""
        for action in decided.actions:
            metrics.WRITES.labels(action.verb, action.kind).inc()
        owner_first = [a for a in decided.actions if a.verb == "add-finalizer"]
        owner_last = [a for a in decided.actions if a.verb == "release"]
        children = [a for a in decided.actions if a not in owner_first and a not in owner_last]
        try:
            # The finalizer lands before anything that needs cleaning up is created.
            for action in owner_first:
                body = await self._act(key, body, action)
            # What pods mount (a revision's ConfigMap, the shared claim) is written before
            # the Jobs and Deployments that mount it: a kill or a failure in between must
            # never leave a sync Job whose ConfigMap was not written.
            mounted = [a for a in children if a.kind in MOUNTED_KINDS and a.verb != "delete"]
            failures = await self._try_all(key, body, mounted)
            if not failures:
                rest = [a for a in children if a not in mounted]
                failures = await self._try_all(key, body, rest)
            if not failures:
                for action in owner_last:
                    body = await self._act(key, body, action)
        except ApiError as error:
            if error.conflict or error.not_found:
                self.request(key, 0.5)  # our copy of the object is stale: use the watched one
                return
            raise
        if failures:
            message = "; ".join(failures)
            self._post(body, "Warning", "ApplyFailed", message)
            raise ApiError(0, "ApplyFailed", message, "reconcile", "/".join(key))
        if decided.status is not None:
            old = owner_of(body).status
            patch = {
                "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                "status": status_patch(old, decided.status),
            }
            try:
                updated = await self.client.patch_status(key[0], key[1], key[2], patch)
            except ApiError as error:
                if error.conflict or error.not_found:
                    self.request(key, 0.5)  # changed under us: recompute from the newer object
                    return
                raise
            self.world.remember_owner(updated)
            body = updated
        if not body["metadata"].get("deletionTimestamp"):
            self.loader.status_settled(key)  # the readiness gates it allows may open now
        for event in decided.events:
            self._post(body, event.type, event.reason, event.message)
        if decided.consume:
            # A one-shot command (tritonfleet.io/rollout) was acted on and recorded in the
            # status: remove it so it does not act again on the next rollout.
            patch = {"metadata": {"annotations": {decided.consume: None}}}
            self.world.remember_owner(await self.client.patch(key[0], key[1], key[2], patch))
        if decided.requeue_after:
            self.request(key, decided.requeue_after)

    async def _try(self, key: Key, body: dict[str, Any], action: Action) -> str | None:
        """One child write; a failure message instead of an exception."""
        try:
            await self._act(key, body, action)
        except ApiError as error:
            if action.verb == "create" and error.conflict:
                self.request(key, 0.2)  # someone created it first: re-read and go on
                return None
            if self._namespace_terminating(error):
                if action.kind == "Job" and action.name.endswith("-cleanup"):
                    # No cleanup Job can run: the namespace (and its claim) goes anyway.
                    release = Action("release", *key, "namespace is being deleted")
                    await self._act(key, body, release)
                else:
                    # The namespace controller removes children before it marks the
                    # owners deleted; re-creating them is refused. Not a failure to
                    # retry and warn about every few seconds: look again later.
                    self.request(key, NAMESPACE_TERMINATING_RECHECK)
                return None
            return f"{action.verb} {action.kind} {action.name}: {error.message}"
        return None

    @staticmethod
    def _namespace_terminating(error: ApiError) -> bool:
        return error.status == 403 and "being terminated" in error.message

    async def _act(self, key: Key, body: dict[str, Any], action: Action) -> dict[str, Any]:
        client, world = self.client, self.world
        if action.verb in ("add-finalizer", "release"):
            finalizers = finalizers_with(
                body["metadata"].get("finalizers") or (), add=action.verb == "add-finalizer"
            )
            patch = {
                "metadata": {
                    "finalizers": finalizers,
                    "resourceVersion": body["metadata"]["resourceVersion"],
                }
            }
            updated = await client.patch(key[0], key[1], key[2], patch)
            if action.verb == "release" and updated["metadata"].get("deletionTimestamp"):
                world.forget_owner(*key)  # released: it may be gone any moment
            else:
                world.remember_owner(updated)
            log.info("%s %s/%s: %s", key[0], key[1], key[2], action.describe())
            return updated
        if action.verb == "apply":
            assert action.body is not None
            world.remember_child(await client.apply(action.body))
        elif action.verb == "create":
            assert action.body is not None
            # The namespace's shared claim: the first reconcile creates it, the ones
            # that planned it meanwhile find it made (no AlreadyExists storm).
            lock = self._claim_locks.setdefault(action.namespace, asyncio.Lock())
            async with lock:
                if world.claim(action.namespace, action.name) is None:
                    world.remember_child(await client.create(action.body))
        elif action.verb == "delete":
            observed = world.children(body["metadata"].get("uid", "")).get(
                (action.kind, action.namespace, action.name)
            )
            await client.delete(
                action.kind, action.namespace, action.name, propagation=action.propagation
            )
            world.forget_child(
                (action.kind, action.namespace, action.name), observed.uid if observed else ""
            )
        log.info("%s %s/%s: %s", key[0], key[1], key[2], action.describe())
        return body

    def _post(self, body: Mapping[str, Any], type_: Any, reason: str, message: str) -> None:
        """Post an Event in the background: the reconcile does not wait for it."""
        task = asyncio.create_task(self._event(body, type_, reason, message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _event(self, body: Mapping[str, Any], type_: Any, reason: str, message: str) -> None:
        try:
            await self.client.post_event(body, type_=type_, reason=reason, message=message)
        except (TimeoutError, ApiError, OSError) as error:
            # An event is not worth failing (or retrying) the reconcile for, nor one
            # refused because its namespace is going a warning per model.
            name = body["metadata"]["name"]
            expected = isinstance(error, ApiError) and self._namespace_terminating(error)
            log.log(
                logging.DEBUG if expected else logging.WARNING,
                "could not post event %s on %s: %s",
                reason,
                name,
                error,
            )
