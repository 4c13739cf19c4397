"""Queue-time autoscaling inside the operator process: collector, metrics API, scaler.

Why: the HPA of each autoscaled model reads ``tritonfleet_queue_time_seconds`` from the
external metrics API the operator serves; the values come from scraping the Ready
Triton pods of the Deployments the operator manages. This module wires those three
together and keeps it out of the reconciler: the operator's composition root
(``tritonfleet.cli.operator``, above both layers) calls :func:`register` beside
``handlers.operator.register``, so ``handlers`` and ``scaling`` stay independent.

Where it sits: ``tritonfleet.scaling`` (kopf hooks for the operator process).
The operator's one pod watch (``handlers.state.World.triton_pods``, the loader's
index) gives the pod list, the process's shared ``desired.kube.views.OwnerViews``
the owners' parsed specs (once per generation, like the reconcile's); the pure
``desired.kube.loading.scrape_targets`` turns the pods and the owners' Triton model
names into collector targets (only pod IPs inside ``dial_pod_networks``);
``scaling.collector`` scrapes; ``scaling.metrics_api`` answers the aggregator over
TLS when ``metrics_api_port`` is set; ``scaling.zero`` takes idle ``min: 0`` models
to zero and back; ``scaling.rollout_signals`` gathers what canary steps are judged on.
The collector's gauges are on the default Prometheus registry, i.e. the operator's
``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
from aiohttp import web

from tritonfleet.adapters.kube import Endpoint, KubeClient
from tritonfleet.api.settings import OperatorSettings, listen_host
from tritonfleet.desired.kube.loading import scrape_targets
from tritonfleet.desired.kube.objects import METRICS_PORT
from tritonfleet.desired.kube.pool import POOL_KIND, loaded_models, parse_pool
from tritonfleet.desired.kube.views import OwnerViews
from tritonfleet.scaling.collector import QueueMetricsCollector
from tritonfleet.scaling.metrics_api import build_app, reload_certificate, serve, ssl_context
from tritonfleet.scaling.rollout_signals import RolloutSignals
from tritonfleet.scaling.zero import SCALER_FIELD_MANAGER, ScalerView, ZeroScaler

log = logging.getLogger("tritonfleet.scaling")


AUTH_CONFIGMAP = "extension-apiserver-authentication"


class Scaling:
    """The collector and metrics API of one operator process."""

    def __init__(
        self,
        world: ScalerView,
        views: OwnerViews,
        settings: OperatorSettings,
        endpoint: Endpoint | None = None,
    ) -> None:
        self.world = world
        self.views = views
        self.endpoint = endpoint
        self.settings = settings
        self._windows: dict[tuple[str, str], float] = {}
        self._models_of: (
            tuple[int, dict[tuple[str, str, str], list[str]], dict[tuple[str, str], float]] | None
        ) = None
        self.collector = QueueMetricsCollector(
            self._targets, namespace="default", windows=lambda: self._windows
        )
        client = KubeClient(endpoint, field_manager=SCALER_FIELD_MANAGER) if endpoint else None
        self.zero = ZeroScaler(
            world, views, lambda: self.collector.results, settings, client,
            interval=self.collector.interval,
        )  # fmt: skip
        # The canary numbers the reconcile judges steps on (cli.operator hands it
        # rollouts.measure): the gateways' per-revision series, the collector's queue time.
        self.rollouts = RolloutSignals(
            world, views, settings, KubeClient(endpoint) if endpoint else None,
            self.collector.queue_ms_of, interval=self.collector.interval,
        )  # fmt: skip
        self._runner: web.AppRunner | None = None
        self._reloader: asyncio.Task[None] | None = None

    def _models(self) -> dict[tuple[str, str, str], list[str]]:
        """(kind, ns, owner) → Triton models its Deployment loads, for every autoscaled
        owner; on the way, each one's queue-time window (``autoscaling.windowSeconds``).

        Asked every scrape round and on every metrics query; worked out over every owner
        only when an owner came, went or changed its spec since (``World.spec_version``),
        the specs parsed once per generation by the shared views."""
        version = self.world.spec_version
        if self._models_of is None or self._models_of[0] != version:
            self._models_of = (version, *self._owned_models())
        _, owned, owned_windows = self._models_of
        # The pools' models follow their status (placement), not a spec: a few pools,
        # looked at every time.
        out = dict(owned)
        windows = dict(owned_windows)
        for key, (models, window) in self._pools().items():
            out[key] = models
            if window is not None:
                for model in models:
                    windows.setdefault((key[1], model), window)
        self._windows = windows
        return out

    def _owned_models(
        self,
    ) -> tuple[dict[tuple[str, str, str], list[str]], dict[tuple[str, str], float]]:
        """The autoscaled owners' models and windows, over the whole fleet."""
        out: dict[tuple[str, str, str], list[str]] = {}
        windows: dict[tuple[str, str], float] = {}
        for kind, ns, name in list(self.world.owner_keys()):
            body = self.world.owner(kind, ns, name)
            if body is None:
                continue
            view = self.views.of(body)
            if view.parsed is None or view.autoscaling is None:
                # No Deployment to scale (an invalid spec), or no autoscaler reading the
                # queue time: its pods are not scraped (a thousand idle models, a thousand
                # scrapes every round for nobody).
                continue
            windows[(ns, view.triton_name)] = view.autoscaling.window_seconds
            if kind == "TritonModel":
                out[(kind, ns, name)] = [view.triton_name]
                continue
            members = []
            for member in view.member_names:
                member_body = self.world.owner("TritonModel", ns, member)
                if member_body is None:
                    continue
                member_view = self.views.of(member_body)
                if member_view.parsed is None:
                    break  # an invalid member: the ensemble has no Deployment either
                members.append(member_view.triton_name)
            else:
                out[(kind, ns, name)] = [*members, view.triton_name]
        return out, windows

    def _pools(self) -> dict[tuple[str, str, str], tuple[list[str], float | None]]:
        """(TritonServerPool, ns, pool) → the Triton models loaded on its pods (as its
        status places them), and the pool's own queue-time window, if it autoscales."""
        out: dict[tuple[str, str, str], tuple[list[str], float | None]] = {}
        for key in list(self.world.owner_keys((POOL_KIND,))):
            body = self.world.owner(*key)
            if body is None:
                continue
            pool, _ = parse_pool(body)
            auto = pool.spec.autoscaling if pool is not None else None
            out[key] = (loaded_models(body), auto.window_seconds if auto is not None else None)
        return out

    def _targets(self) -> Mapping[Any, Sequence[tuple[str, str]]]:
        pods = self.world.triton_pods()
        return scrape_targets(pods, self._models(), self.settings.may_dial, METRICS_PORT)

    def pools(self) -> dict[tuple[str, str], list[str]]:
        """(ns, pool) → the Triton models it holds loaded, for the metrics API's max."""
        return {(ns, name): models for (_, ns, name), (models, _) in self._pools().items()}

    def ensembles(self) -> dict[tuple[str, str], list[str]]:
        """(ns, ensemble Triton name) → member Triton names, for the metrics API's max."""
        out: dict[tuple[str, str], list[str]] = {}
        for (kind, ns, _), models in self._models().items():
            if kind == "ModelEnsemble" and models:
                out[(ns, models[-1])] = models[:-1]
        return out

    async def start(self) -> None:
        self.collector.start()
        self.zero.start()
        self.rollouts.start()
        port = self.settings.metrics_api_port
        if not port:
            return
        cert_dir = self.settings.metrics_api_cert_dir
        client_ca, allowed = await self._front_proxy_ca()
        cert, key = f"{cert_dir}/tls.crt", f"{cert_dir}/tls.key"
        ctx = ssl_context(cert, key, client_ca)
        app = build_app(
            lambda: self.collector.results, self.ensembles, pools=self.pools, allowed_names=allowed
        )
        self._runner = await serve(app, listen_host(os.environ), port, ctx)
        self._reloader = asyncio.create_task(reload_certificate(ctx, cert, key))
        log.info(
            "external metrics API on :%d (client certificates %s)",
            port,
            "required" if client_ca else "not checked",
        )

    async def _front_proxy_ca(self) -> tuple[str | None, tuple[str, ...]]:
        """The aggregator's client CA and allowed names, from ConfigMap
        kube-system/extension-apiserver-authentication (chart RoleBinding to
        extension-apiserver-authentication-reader). Unreadable: refuse to start serving
        unauthenticated metrics."""
        if self.endpoint is None:
            return None, ()
        async with KubeClient(self.endpoint) as client:
            cm = await client.get("ConfigMap", "kube-system", AUTH_CONFIGMAP)
        data = (cm or {}).get("data") or {}
        ca = data.get("requestheader-client-ca-file")
        if not ca:
            raise RuntimeError(
                f"kube-system/{AUTH_CONFIGMAP} has no requestheader-client-ca-file: the API "
                "server runs without an aggregation-layer front proxy"
            )
        names = tuple(json.loads(data.get("requestheader-allowed-names") or "[]"))
        return ca, names

    async def stop(self) -> None:
        await self.rollouts.stop()
        if self._reloader is not None:
            self._reloader.cancel()
            self._reloader = None
        await self.zero.stop()
        await self.collector.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def register(
    registry: kopf.OperatorRegistry,
    world: ScalerView,
    views: OwnerViews,
    settings: OperatorSettings,
    endpoint: Endpoint,
    *,
    autostart: bool = True,
) -> Scaling:
    """The collector, the metrics API and scale to zero, started and stopped with the
    operator (they read the pod watch the handlers registered). ``autostart=False``:
    started and stopped by the leader election instead (the active replica alone
    scrapes, serves the metrics API and scales to zero)."""
    scaling = Scaling(world, views, settings, endpoint)

    @kopf.on.startup(registry=registry)
    async def start_scaling(**_: Any) -> None:
        if autostart:
            await scaling.start()

    @kopf.on.cleanup(registry=registry)
    async def stop_scaling(**_: Any) -> None:
        await scaling.stop()

    return scaling
