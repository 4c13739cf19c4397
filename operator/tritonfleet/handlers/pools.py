"""The reconcile of a ``TritonServerPool``: its Deployment, Service and HPA, and where
its pooled models go.

Where it sits: ``handlers.reconcile`` runs one reconcile per object and hands a
pool's key here. Like a model's reconcile it reads only memory (``state.World``):
the pool, the TritonModels and ModelEnsembles of its namespace (their parsed specs
from the shared ``desired.kube.views``, their status for where they are still
loaded, the scale-to-zero record on them) and the pool's pods from the loader's pod
index. ``desired.kube.pool.plan_pool`` decides; this carries it out (child writes,
the status, events) and asks the pooled objects whose placement changed to
reconcile, so their ``Placed`` condition and their loader follow.

What wakes a pool: its own events, its children's (the Deployment's replica count),
any pooled object's event in its namespace and its pods' (``handlers.operator``),
and the periodic resync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from tritonfleet.adapters.kube import ApiError, KubeApi
from tritonfleet.api.base import quantity_bytes
from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import TritonModel
from tritonfleet.api.pool import PooledModelStatus
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.kube.plan import Action, synced_in_status
from tritonfleet.desired.kube.pool import (
    POOL_KIND,
    PooledObject,
    PoolPlan,
    plan_pool,
    pool_owner_of,
    pool_pod_key,
)
from tritonfleet.desired.kube.views import OwnerViews, owner_of
from tritonfleet.handlers import metrics
from tritonfleet.handlers.state import MODEL_KINDS, Key, World

log = logging.getLogger("tritonfleet.pools")

PostEvent = Callable[[Mapping[str, Any], str, str, str], None]


class PoolReconciler:
    """One reconcile of one pool (see the module docstring)."""

    def __init__(
        self,
        client: KubeApi,
        world: World,
        views: OwnerViews,
        settings: OperatorSettings,
        *,
        request: Callable[[Key], None],
        post_event: PostEvent,
        clock: Callable[[], datetime],
    ) -> None:
        self.client = client
        self.world = world
        self.views = views
        self.settings = settings
        self.request = request
        self.post_event = post_event
        self.clock = clock

    def pooled_objects(
        self, namespace: str, pool: str, body: Mapping[str, Any]
    ) -> list[PooledObject]:
        """The objects of ``namespace`` in ``pool``, or still loaded on its pods."""
        shared = pool_pod_key(namespace, pool)
        pod_names = {p.name for p in self.world.triton_pods() if p.owner == shared}
        previous: dict[tuple[str, str], PooledModelStatus] = {
            (m.kind, m.name): m for m in pool_owner_of(body).status.models
        }
        out = []
        for kind in MODEL_KINDS:
            for name, owner_body in self.world.owners_in(kind, namespace).items():
                found = self._pooled(kind, name, owner_body, pool, pod_names, previous)
                if found is not None:
                    out.append(found)
        return out

    def _pooled(
        self,
        kind: str,
        name: str,
        body: Mapping[str, Any],
        pool: str,
        pod_names: set[str],
        previous: Mapping[tuple[str, str], PooledModelStatus],
    ) -> PooledObject | None:
        owner = owner_of(body)
        view = self.views.of(body)
        loaded_on = tuple(p.name for p in owner.status.pods if p.name in pod_names)
        parsed = view.parsed
        ref = parsed.spec.serving.pool if isinstance(parsed, TritonModel | ModelEnsemble) else None
        mine = ref is not None and ref.name == pool
        if not mine and not loaded_on:
            return None
        before = previous.get((kind, name))
        memory = quantity_bytes(ref.memory) if mine and ref is not None else 0
        if not mine and before is not None:
            memory = quantity_bytes(before.memory)  # leaving: what it was placed with
        members = view.member_names if kind == "ModelEnsemble" else ()
        at_zero = mine and bool(owner.zero_mark)
        return PooledObject(
            kind=kind,  # type: ignore[arg-type]
            name=name,
            triton_name=view.triton_name,
            memory=memory,
            replicas=ref.replicas if mine and ref is not None else None,
            members=members,
            wanted=mine and not owner.deletion_timestamp and not at_zero,
            at_zero=at_zero,
            loaded_on=loaded_on,
            synced=synced_in_status(owner.status, owner.status.revision or ""),
        )

    async def reconcile(self, key: Key) -> str:
        _, namespace, name = key
        body = self.world.owner(POOL_KIND, namespace, name)
        if body is None:
            return "gone"
        uid = str((body.get("metadata") or {}).get("uid") or "")
        claim = None
        if self.settings.creates_repository_claim:
            claim = self.world.claim(namespace, self.settings.repository_claim_name)
        decided = plan_pool(
            body,
            self.pooled_objects(namespace, name, body),
            self.world.triton_pods(),
            self.world.children(uid),
            claim,
            self.settings,
            self.clock(),
        )
        if not decided.actions and decided.status is None and not decided.events:
            return "noop"
        await self._execute(key, body, decided)
        for kind, pooled in decided.moved:
            self.request((kind, namespace, pooled))
        return "changed"

    async def _execute(self, key: Key, body: dict[str, Any], decided: PoolPlan) -> None:
        writes = await asyncio.gather(*(self._write(key, a) for a in decided.actions))
        failures = [f for f in writes if f]
        if failures:
            message = "; ".join(failures)
            self.post_event(body, "Warning", "ApplyFailed", message)
            raise ApiError(0, "ApplyFailed", message, "reconcile", "/".join(key))
        if decided.status is not None:
            old = pool_owner_of(body).status.to_wire()
            new = decided.status.to_wire()
            patch = {
                "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                "status": {**new, **{k: None for k in old if k not in new}},
            }
            try:
                body = await self.client.patch_status(*key, patch)
            except ApiError as error:
                if error.conflict or error.not_found:
                    self.request(key)  # changed under us: plan again on the newer object
                    return
                raise
            self.world.remember_owner(body)
        for event in decided.events:
            self.post_event(body, event.type, event.reason, event.message)

    async def _write(self, key: Key, action: Action) -> str | None:
        metrics.WRITES.labels(action.verb, action.kind).inc()
        try:
            if action.verb == "apply" and action.body is not None:
                self.world.remember_child(await self.client.apply(action.body))
            elif action.verb == "create" and action.body is not None:
                self.world.remember_child(await self.client.create(action.body))
            elif action.verb == "delete":
                await self.client.delete(action.kind, action.namespace, action.name)
                self.world.forget_child((action.kind, action.namespace, action.name), "")
        except ApiError as error:
            if action.verb == "create" and error.conflict:
                return None  # a model of the namespace created the claim first
            return f"{action.verb} {action.kind} {action.name}: {error.message}"
        log.info("%s %s/%s: %s", *key, action.describe())
        return None
