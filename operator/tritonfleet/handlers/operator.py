"""kopf wiring: what kopf still does for the operator process - start and stop it,
log in, answer its liveness probe and, with several replicas, peering.

Everything here is thin on purpose: the decisions are in ``desired.kube.plan``, the
I/O in ``adapters``, the loop in ``handlers.reconcile``, the watch streams in
``handlers.watches``. The operator process is composed in one place,
``tritonfleet.cli.operator``, which calls :func:`register` beside the queue-time
scaling's own registration (``scaling.in_operator``).

Why kopf watches nothing of the operator's own: its change handlers and timers
store progress and a "last handled" copy of the spec in annotations and add a
finalizer of their own (writes on every change that a level-based reconciler does
not need), and even its indexes and event handlers run every event through its
per-object machinery (a deep copy of the body, memories, a diff base), which was
about a third of the operator's CPU and much of its memory at a thousand models.
The operator's streams (``adapters.kube_watch``) hand each event straight to the
memory instead; the periodic re-check is the reconciler's own, and deletion goes
through the operator's own finalizer (``tritonfleet.io/cleanup``).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from tritonfleet.adapters.health import serve_probes
from tritonfleet.adapters.kube import Endpoint, traced_session
from tritonfleet.handlers import metrics
from tritonfleet.handlers.reconcile import Reconciler
from tritonfleet.handlers.watches import Watches

log = logging.getLogger("tritonfleet.operator")


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf settings that keep it from writing on its own when nothing changes."""
    # Events are posted by the reconciler, one per change, with actionable messages.
    settings.posting.enabled = False
    # kopf's own watches (CRDs, namespaces, peering): reconnect regularly (the API
    # server may drop them silently).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60


def register(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    watches: Watches,
    endpoint: Endpoint,
    probes: tuple[str, int] | None = None,
    *,
    start_reconciler: bool = True,
) -> None:
    """Register the operator's start, stop and login on kopf's ``registry``;
    ``probes``: (host, port) of ``/healthz`` and ``/readyz`` (None: not served).

    ``start_reconciler=False``: the watches only; the reconciler is started (and
    stopped) by the leader election (``handlers.leadership``) instead.
    """
    runners: list[Any] = []
    metrics.collect_model_status(watches.world.owner_bodies)  # per-model series on /metrics

    def not_ready() -> str | None:
        # A standby replica is ready once its memory is complete: it has nothing to
        # look at until it holds the Lease.
        working = reconciler.not_ready() if reconciler.running else None
        return watches.not_ready() or working

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.AiohttpSession:
        # The same credentials as the reconciler's client (one exec plugin run, one token
        # file), and a session whose requests are counted (kopf's own show in
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
        watches.start()
        if probes is not None:
            runners.append(await serve_probes(*probes, not_ready))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for runner in runners:
            await runner.stop()
        await watches.stop()
        await watches.client.close()
        await reconciler.stop()
        await reconciler.client.close()
