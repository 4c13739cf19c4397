"""``tritonfleet operator``: start the operator process.

Settings come from ``TRITONFLEET_*`` environment variables (what the Helm
chart sets from its values); a few flags override them for local runs. This
is where the process environment is read, logging is set up, the metrics
server is started, and kopf is run with the handlers of ``handlers.operator``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any, TextIO

from tritonfleet.adapters.cli_args import (
    EXIT_OK,
    EXIT_USAGE,
    add_cluster_arguments,
    add_log_arguments,
    namespaces_of,
)
from tritonfleet.api.settings import OperatorSettings, SettingsError, listen_host, unknown_env

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
        "--peering", help="kopf peering name: several replicas, one active (default: standalone)"
    )
    parser.add_argument("--metrics-port", type=int, help="port of /metrics (0: off)")
    parser.add_argument("--health-port", type=int, help="port of /healthz (0: off)")
    add_log_arguments(parser, default_format=None)  # default: TRITONFLEET_LOG_FORMAT
    parser.add_argument("-v", "--verbose", action="store_true", help="--log-level DEBUG")
    parser.set_defaults(func=cmd_operator)


def settings_from(args: argparse.Namespace, env: dict[str, str]) -> OperatorSettings:
    settings = OperatorSettings.from_env(env)
    overrides: dict[str, Any] = {
        "namespaces": namespaces_of(args.namespaces) or None,
        "peering": args.peering,
        "metrics_port": args.metrics_port,
        "health_port": args.health_port,
        "log_format": args.log_format,
        "log_level": args.log_level,
    }
    values = settings.model_dump()
    values.update({k: v for k, v in overrides.items() if v is not None})
    return OperatorSettings.model_validate(values)


def cmd_operator(args: argparse.Namespace, out: TextIO | None = None) -> int:
    import kopf

    from tritonfleet.adapters.kube import CredentialError, check_access, discover_endpoint
    from tritonfleet.adapters.logs import setup_process_logging
    from tritonfleet.handlers import metrics
    from tritonfleet.handlers.operator import build, configure_kopf

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
    registry, _world, _reconciler = build(settings, endpoint)
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(kopf_settings)
    host = listen_host(env)
    metrics.serve(settings.metrics_port, host)
    namespaces = list(settings.namespaces)
    log.info(
        "starting: %s, %s, triton image %s",
        f"namespaces {namespaces}" if namespaces else "all namespaces",
        f"peering {settings.peering}" if settings.peering else "standalone",
        settings.triton_image,
    )
    asyncio.run(
        kopf.operator(
            registry=registry,
            settings=kopf_settings,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=(
                f"http://{host}:{settings.health_port}/healthz" if settings.health_port else None
            ),
        )
    )
    return EXIT_OK
