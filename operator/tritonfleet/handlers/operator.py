"""kopf wiring: which watch streams feed the operator's memory and which
events request a reconcile. Everything here is thin on purpose: the decisions
are in ``desired.kube.plan``, the I/O in ``adapters.kube``, the loop in
``handlers.reconcile``. The operator process is composed in one place,
``tritonfleet.cli.operator``, which calls :func:`register` beside the queue-time
scaling's own registration (``scaling.in_operator``).

Why only indexes and ``on.event`` handlers (no ``on.create/update/delete``,
no ``timer``): kopf's change-detecting handlers store their progress and a
"last handled" copy of the spec in annotations, and timers add kopf's own
finalizer - writes on every change, or on every object, that a level-based
reconciler does not need. With indexes and event handlers kopf writes nothing;
the operator's only writes are the ones its plans decide on. The periodic
re-check is the reconciler's own resync loop, and deletion is handled through
the operator's own finalizer (``tritonfleet.io/cleanup``).

The operator's Triton pods are indexed too (read-only, server-side label
selector); their events wake the loader (``handlers.loading``), not the
reconcile.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from tritonfleet.adapters.kube import Endpoint, traced_session
from tritonfleet.desired.kube.loading import TRITON_POD_SELECTOR, owner_of_pod, summarize_pod
from tritonfleet.desired.kube.objects import (
    COMPONENT_SERVER,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    MANAGED_SELECTOR,
)
from tritonfleet.desired.kube.observed import summarize
from tritonfleet.desired.kube.pool import POOL_KIND
from tritonfleet.desired.kube.views import OwnerViews
from tritonfleet.handlers import metrics
from tritonfleet.handlers.reconcile import Reconciler
from tritonfleet.handlers.state import (
    MODEL_KINDS,
    OWNER_INDEXES,
    POD_INDEX,
    World,
    child_index_key,
    compact_owner,
)

log = logging.getLogger("tritonfleet.operator")

GROUP, VERSION = "tritonfleet.io", "v1alpha1"

# (index id, resource selector args) of every child kind the operator creates.
CHILD_RESOURCES: tuple[tuple[str, tuple[str, str] | tuple[str, str, str]], ...] = (
    ("tf_deployments", ("apps", "v1", "deployments")),
    ("tf_jobs", ("batch", "v1", "jobs")),
    ("tf_services", ("v1", "services")),
    ("tf_configmaps", ("v1", "configmaps")),
    ("tf_claims", ("v1", "persistentvolumeclaims")),
    ("tf_hpas", ("autoscaling", "v2", "horizontalpodautoscalers")),
)
# The Triton pods of every Deployment (read-only): the loader dials each one.
POD_RESOURCE = ("v1", "pods")
POD_LABELS = {LABEL_MANAGED_BY: "tritonfleet", LABEL_COMPONENT: COMPONENT_SERVER}
OWNER_RESOURCES = (
    ("TritonModel", "tritonmodels", "tf_models"),
    ("ModelEnsemble", "modelensembles", "tf_ensembles"),
    (POOL_KIND, "tritonserverpools", "tf_pools"),
)


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf settings that keep it from writing on its own when nothing changes."""
    # Events are posted by the reconciler, one per change, with actionable messages;
    # kopf would otherwise post one per handler run.
    settings.posting.enabled = False
    # Watch only what we manage: server-side label selectors, not client-side filters.
    for _, selector in CHILD_RESOURCES:
        settings.watching.label_selectors[selector] = MANAGED_SELECTOR
    settings.watching.label_selectors[POD_RESOURCE] = TRITON_POD_SELECTOR
    # Reconnect watches regularly (the API server may drop them silently).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Many objects: let idle per-object workers go quickly to keep memory flat.
    settings.batching.idle_timeout = 2.0
    settings.networking.request_timeout = 60


def _triggers_for_member(
    world: World, views: OwnerViews, namespace: str, model: str
) -> list[tuple[str, str, str]]:
    """Ensembles in ``namespace`` with a step using TritonModel ``model``."""
    return [
        ("ModelEnsemble", namespace, name)
        for name, body in world.owners_in("ModelEnsemble", namespace).items()
        if model in views.of(body).member_names
    ]


def _pools_in(world: World, namespace: str) -> list[tuple[str, str, str]]:
    """Every pool of ``namespace``: a pooled object's change may move its placement
    (a few pools per namespace; a pool with nothing to do reconciles in memory)."""
    return [(POOL_KIND, namespace, name) for name in world.owners_in(POOL_KIND, namespace)]


def _pool_of_pod(world: World, namespace: str, pod: Any) -> tuple[str, str, str] | None:
    names = [(POOL_KIND, name) for name in world.owners_in(POOL_KIND, namespace)]
    found = owner_of_pod(pod, names)
    return (POOL_KIND, namespace, found[1]) if found is not None else None


def register(
    registry: kopf.OperatorRegistry,
    world: World,
    views: OwnerViews,
    reconciler: Reconciler,
    endpoint: Endpoint,
    *,
    start_reconciler: bool = True,
) -> None:
    """Register every kopf handler of the operator on ``registry``.

    ``start_reconciler=False``: the watches only, the reconciler is started (and
    stopped) by the leader election (``handlers.leadership``) instead.
    """
    metrics.collect_model_status(world.owner_bodies)  # per-model series on /metrics

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.AiohttpSession:
        # The same credentials as the reconciler's client (one exec plugin run, one token
        # file), and a session whose requests are counted (kopf's watches show in
        # tritonfleet_api_requests_total). kopf logs in again when it expires or on a 401.
        session, expiration = await traced_session(endpoint, "kopf")
        return kopf.AiohttpSession(
            server=endpoint.server,
            aiohttp_session=session,
            default_namespace=endpoint.default_namespace,
            expiration=expiration,
        )

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        if start_reconciler:
            reconciler.start()

    @kopf.index(*POD_RESOURCE, id=POD_INDEX, labels=POD_LABELS, registry=registry)
    async def pod_index(body: kopf.Body, **_: Any) -> dict[tuple[str, str, str], Any]:
        pod = summarize_pod(body)
        return {pod.owner: pod}

    seen_pods: dict[tuple[str, str], Any] = {}

    @kopf.on.event(*POD_RESOURCE, id=f"{POD_INDEX}_event", labels=POD_LABELS, registry=registry)
    async def on_pod_event(type: str | None, body: kopf.Body, **kwargs: Any) -> None:
        world.capture(kwargs)
        pod = summarize_pod(body)
        key = (pod.namespace, pod.name)
        # Only what the loader reads (IP, phase, readiness, revision) wakes it up.
        fingerprint = (pod.uid, pod.ip, pod.phase, pod.ready, pod.deleting, pod.revision)
        if type == "DELETED":
            seen_pods.pop(key, None)
        elif seen_pods.get(key) == fingerprint:
            return
        else:
            seen_pods[key] = fingerprint
        reconciler.loader.pod_changed(pod.namespace, pod)
        pool = _pool_of_pod(world, pod.namespace, pod)
        if pool is not None:
            reconciler.request(pool)  # its replicas are bound to pods

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await reconciler.stop()
        await reconciler.client.close()

    for kind, plural, index_id in OWNER_RESOURCES:

        async def owner_index(body: kopf.Body, **_: Any) -> dict[tuple[str, str], str]:
            meta = body.get("metadata") or {}
            return {(str(meta.get("namespace")), str(meta.get("name"))): compact_owner(body)}

        kopf.index(GROUP, VERSION, plural, id=index_id, registry=registry)(owner_index)

        async def on_owner_event(
            type: str | None, body: kopf.Body, _kind: str = kind, **kwargs: Any
        ) -> None:
            world.capture(kwargs)
            meta = body.get("metadata") or {}
            namespace, name = str(meta.get("namespace")), str(meta.get("name"))
            if _kind == "TritonModel":
                # A member changed (or went away): its ensembles re-check themselves.
                for key in _triggers_for_member(world, views, namespace, name):
                    reconciler.request(key)
            if _kind in MODEL_KINDS:
                for key in _pools_in(world, namespace):
                    reconciler.request(key)
            elif type in ("ADDED", "DELETED"):
                # A pool came or went: the objects of its namespace re-check their placement.
                for key in world.owner_keys():
                    if key[1] == namespace:
                        reconciler.request(key)
            if type == "DELETED":
                world.forget_owner(_kind, namespace, name)
                reconciler.request_claim_check(namespace)
            elif not world.is_own_echo(body):
                # (Our own write coming back needs no reconcile: the one that wrote saw it.)
                reconciler.request((_kind, namespace, name))

        kopf.on.event(GROUP, VERSION, plural, id=f"{index_id}_event", registry=registry)(
            on_owner_event
        )

    for index_id, selector in CHILD_RESOURCES:

        async def child_index(body: kopf.Body, **_: Any) -> dict[tuple[str, ...], Any]:
            state = summarize(body)
            return {child_index_key(state): state}

        kopf.index(
            *selector,
            id=index_id,
            labels={"app.kubernetes.io/managed-by": "tritonfleet"},
            registry=registry,
        )(child_index)

        async def on_child_event(type: str | None, body: kopf.Body, **kwargs: Any) -> None:
            world.capture(kwargs)
            meta = body.get("metadata") or {}
            namespace = str(meta.get("namespace"))
            if not world.child_changed(body, deleted=type == "DELETED"):
                return
            if type == "DELETED":
                world.child_deleted((str(body.get("kind")), namespace, str(meta.get("name"))))
                if body.get("kind") == "PersistentVolumeClaim":
                    # The shared repository claim went away: every model of the
                    # namespace needs it re-created (rare; owners are not listed on it).
                    for key in world.owner_keys(OWNER_INDEXES):
                        if key[1] == namespace:
                            reconciler.request(key)
            # The controller owns a child; the shared claim has every model as a plain owner.
            for ref in meta.get("ownerReferences") or ():
                if ref.get("apiVersion", "").startswith(f"{GROUP}/"):
                    reconciler.request((str(ref.get("kind")), namespace, str(ref.get("name"))))

        kopf.on.event(
            *selector,
            id=f"{index_id}_event",
            labels={"app.kubernetes.io/managed-by": "tritonfleet"},
            registry=registry,
        )(on_child_event)
