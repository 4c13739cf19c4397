"""``tritonfleet operator``: start the operator process, composed here and only here.

Settings come from ``TRITONFLEET_*`` environment variables (what the Helm chart
sets from its values); a few flags override them for local runs. This is where the
process environment is read, logging is set up, the metrics server is started, and
kopf is run with the registry :func:`compose` builds.

The composition: one memory of the cluster (``handlers.state.World``, filled by the
operator's watch streams, ``handlers.watches``), one parsed view of every object
(``desired.kube.views.OwnerViews``), the reconciler and its loader (``handlers``), and
the queue-time collector, external metrics API, scale to zero and canary measurements
(``scaling.in_operator``). ``handlers`` and ``scaling`` are sibling layers that never
import each other; both are handed the same World and views here, and the reconciler
the scaling side's ``measure`` (what canary steps are judged on).

With ``leader_election`` (several replicas), the watches run on every replica
but the work only on the holder of the Lease (``handlers.leadership``):
:func:`register_leadership` starts and stops the reconciler and the scaling
parts on each change, and labels the pod of the active replica for the external
metrics API's Service.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from tritonfleet.adapters.cli_args import (
    EXIT_OK,
    EXIT_USAGE,
    add_cluster_arguments,
    add_log_arguments,
    namespaces_of,
)
from tritonfleet.api.settings import OperatorSettings, SettingsError, listen_host, unknown_env

if TYPE_CHECKING:
    import kopf

    from tritonfleet.adapters.kube import Endpoint
    from tritonfleet.desired.kube.views import OwnerViews
    from tritonfleet.handlers.leadership import LeaderElection
    from tritonfleet.handlers.reconcile import Reconciler
    from tritonfleet.handlers.state import World
    from tritonfleet.handlers.watches import Watches
    from tritonfleet.scaling.in_operator import Scaling

log = logging.getLogger("tritonfleet.operator")


def add_parser(subparsers: Any) -> None:
    """Register the ``operator`` subcommand on the ``tritonfleet`` CLI."""
    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator (TritonModel, ModelEnsemble)",
        description="Reconcile TritonModels and ModelEnsembles into Triton Deployments. "
        "Configured by TRITONFLEET_* environment variables (see the chart's values.yaml); "
        "the flags below override them.",
    )
    add_cluster_arguments(
        parser,
        namespaces_help="watch this namespace (or glob, e.g. 'team-*'); default: "
        "TRITONFLEET_NAMESPACES, or all namespaces",
    )
    parser.add_argument(
        "--leader-election",
        action="store_true",
        default=None,
        help="several replicas, one active (a Lease); default: TRITONFLEET_LEADER_ELECTION",
    )
    parser.add_argument("--metrics-port", type=int, help="port of /metrics (0: off)")
    parser.add_argument("--health-port", type=int, help="port of /healthz and /readyz (0: off)")
    add_log_arguments(parser, default_format=None)  # default: TRITONFLEET_LOG_FORMAT
    parser.add_argument("-v", "--verbose", action="store_true", help="--log-level DEBUG")
    parser.set_defaults(func=cmd_operator)


def settings_from(args: argparse.Namespace, env: dict[str, str]) -> OperatorSettings:
    settings = OperatorSettings.from_env(env)
    overrides: dict[str, Any] = {
        "namespaces": namespaces_of(args.namespaces) or None,
        "leader_election": args.leader_election,
        "metrics_port": args.metrics_port,
        "health_port": args.health_port,
        "log_format": args.log_format,
        "log_level": args.log_level,
    }
    values = settings.model_dump()
    values.update({k: v for k, v in overrides.items() if v is not None})
    return OperatorSettings.model_validate(values)


@dataclass(frozen=True)
class Operator:
    """One operator process, composed: what kopf runs and what its parts share."""

    registry: kopf.OperatorRegistry
    world: World
    views: OwnerViews
    reconciler: Reconciler
    watches: Watches
    scaling: Scaling
    election: LeaderElection | None = None


def compose(
    settings: OperatorSettings, endpoint: Endpoint, probes: tuple[str, int] | None = None
) -> Operator:
    """Every part of the operator process, wired to one World and one OwnerViews.

    Nothing is started here (kopf's startup handlers do that) and nothing is dialled.
    """
    import kopf

    from tritonfleet.adapters.kube import KubeClient
    from tritonfleet.adapters.triton_repository import PodRepositories
    from tritonfleet.desired.kube.views import OwnerViews
    from tritonfleet.handlers import operator as handlers
    from tritonfleet.handlers.reconcile import Reconciler
    from tritonfleet.handlers.state import World
    from tritonfleet.handlers.watches import Watches
    from tritonfleet.scaling import in_operator as scaling

    world = World()
    views = OwnerViews()
    registry = kopf.OperatorRegistry()
    alone = not settings.leader_election
    queue_scaling = scaling.register(registry, world, views, settings, endpoint, autostart=alone)
    # Canary steps are judged on what the scaling side measured (memory only).
    reconciler = Reconciler(
        KubeClient(endpoint),
        world,
        views,
        settings,
        PodRepositories(),
        measure=queue_scaling.rollouts.measure,
    )
    watches = Watches(
        KubeClient(endpoint, label="watch"), world, views, reconciler, settings.namespaces
    )
    handlers.register(registry, reconciler, watches, endpoint, probes, start_reconciler=alone)
    operator = Operator(registry, world, views, reconciler, watches, queue_scaling)
    if alone:
        return operator
    election = register_leadership(registry, operator, settings, endpoint)
    return Operator(registry, world, views, reconciler, watches, queue_scaling, election)


def register_leadership(
    registry: kopf.OperatorRegistry,
    operator: Operator,
    settings: OperatorSettings,
    endpoint: Endpoint,
) -> LeaderElection:
    """The Lease loop, started with kopf, starting and stopping the work it gates."""
    import socket

    import kopf

    from tritonfleet.adapters.kube import ApiError, KubeClient
    from tritonfleet.desired.kube.leadership import LEADER_LABEL
    from tritonfleet.handlers.leadership import LeaderElection

    namespace = settings.lease_namespace or endpoint.default_namespace or "default"
    identity = settings.pod_name or socket.gethostname()
    client = KubeClient(endpoint, field_manager="tritonfleet-leader", timeout=10)

    async def label(leading: bool) -> None:
        """The metrics API's Service selects the leader's pod by this label."""
        if not settings.pod_name:
            return
        patch = {"metadata": {"labels": {LEADER_LABEL: "true" if leading else "false"}}}
        try:
            await client.patch("Pod", namespace, settings.pod_name, patch)
        except (ApiError, OSError) as error:
            log.warning("could not label pod %s/%s: %s", namespace, settings.pod_name, error)

    async def started() -> None:
        operator.reconciler.start()
        await operator.scaling.start()
        await label(True)

    async def stopped() -> None:
        await label(False)
        await operator.reconciler.stop()
        await operator.scaling.stop()

    lease_s = settings.lease_duration_seconds
    election = LeaderElection(
        client,
        namespace,
        settings.lease_name,
        identity,
        on_started=started,
        on_stopped=stopped,
        lease_s=lease_s,
        renew_s=lease_s / 3,
        retry_s=min(2.0, lease_s / 5),
        ready_to_lead=lambda: operator.watches.not_ready() is None,
    )
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start_election(**_: Any) -> None:
        await label(False)  # a restarted process is a standby until it holds the Lease
        tasks.append(asyncio.create_task(election.run(), name="leader-election"))

    @kopf.on.cleanup(registry=registry)
    async def stop_election(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        await election.release()
        await client.close()

    return election


def cmd_operator(args: argparse.Namespace, out: TextIO | None = None) -> int:
    import kopf

    from tritonfleet.adapters.kube import CredentialError, check_access, discover_endpoint
    from tritonfleet.adapters.logs import setup_process_logging
    from tritonfleet.handlers import metrics
    from tritonfleet.handlers.operator import configure_kopf

    env = dict(os.environ)
    try:
        settings = settings_from(args, env)
    except (SettingsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    # Our formatter for kopf's records too: one format for every component of the
    # installation (adapters.logs); kopf's per-object reference becomes "object".
    setup_process_logging(settings.log_format, "DEBUG" if args.verbose else settings.log_level)
    if not args.verbose:
        # kopf logs every handler run at INFO: thousands of lines per minute at scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    for name in unknown_env(env):
        log.warning("ignoring %s: no such operator setting", name)
    try:
        endpoint = discover_endpoint(args.kubeconfig, args.context)
        identity = asyncio.run(check_access(endpoint))
    except (OSError, ValueError, CredentialError) as error:
        print(f"error: cannot reach the cluster: {error}", file=sys.stderr)
        return EXIT_USAGE
    log.info(
        "API server %s as %s (%s, %s)",
        endpoint.server,
        identity or "an unknown user",
        endpoint.auth_kind,
        endpoint.source,
    )
    host = listen_host(env)
    probes = (host, settings.health_port) if settings.health_port else None
    operator = compose(settings, endpoint, probes)
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(kopf_settings)
    metrics.serve(settings.metrics_port, host)
    namespaces = list(settings.namespaces)
    log.info(
        "starting: %s, %s, triton image %s",
        f"namespaces {namespaces}" if namespaces else "all namespaces",
        f"leader election (lease {settings.lease_name})" if settings.leader_election else "alone",
        settings.triton_image,
    )
    asyncio.run(
        kopf.operator(
            registry=operator.registry,
            settings=kopf_settings,
            # Replicas never use kopf's peering: every one watches, the Lease decides
            # which one works (see register_leadership).
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
        )
    )
    return EXIT_OK
