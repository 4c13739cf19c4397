"""``tritonfleet gateway``: command-line entry of the gateway process.

:func:`add_parser` registers the subcommand on the ``tritonfleet`` CLI, the
one entry point of every process. Reads the arguments, sets up logging with key
redaction, loads the routing table once (so a bad file fails at start with
every problem listed) and runs the aiohttp server until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tritonfleet.adapters.cli_args import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    add_cluster_arguments,
    add_log_arguments,
    namespaces_of,
)
from tritonfleet.adapters.logs import LogFormat, setup_process_logging
from tritonfleet.api.settings import LISTEN_HOST_ENV, listen_host

if TYPE_CHECKING:
    from tritonfleet.desired.gateway.routes import RouteTable
    from tritonfleet.gateway.sources import ClusterRouteSource, StaticRouteSource

log = logging.getLogger("tritonfleet.gateway")


def add_parser(subparsers: Any) -> None:
    """Register ``gateway`` on the ``tritonfleet`` CLI's subparsers."""
    parser = subparsers.add_parser(
        "gateway",
        help="run the OpenAI-compatible gateway (Triton routing, hosted failover)",
        description="OpenAI-compatible gateway: routes each model to the Triton pods holding "
        "it and fails over to a hosted OpenAI-compatible API. See docs/gateway.md.",
    )
    _arguments(parser)
    parser.set_defaults(func=cmd_gateway)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--routes",
        metavar="FILE",
        help="static routes file (YAML); without it the gateway routes from the "
        "TritonModel/ModelEnsemble objects of the cluster (in-cluster mode)",
    )
    parser.add_argument("--prices", metavar="FILE", help="price table overriding the defaults")
    parser.add_argument(
        "--host",
        default=listen_host(os.environ),
        help=f"listen address (default ${LISTEN_HOST_ENV} or 0.0.0.0)",
    )
    parser.add_argument("--port", type=int, default=8080, help="listen port (default 8080)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve /metrics on this port only, not on --port (default 0: on --port)",
    )
    parser.add_argument(
        "--auth-tokens-file",
        metavar="FILE",
        help="require a bearer token from this file (one per line; a mounted Secret)",
    )
    parser.add_argument(
        "--auth-tokens-env",
        metavar="VAR",
        help="require a bearer token from this environment variable (comma-separated)",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=4 * 1024 * 1024,
        help="largest request body accepted (default 4 MiB)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a request body must arrive within this (else 408; default 30)",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=float,
        default=75.0,
        metavar="SECONDS",
        help="close a client connection idle (or slow to send its request head) this long "
        "(default 75)",
    )
    parser.add_argument(
        "--max-inflight-per-pod",
        type=int,
        default=128,
        metavar="N",
        help="requests in flight to one Triton pod; more wait for a slot or spill over "
        "(default 128, 0: no limit)",
    )
    parser.add_argument(
        "--probe-interval",
        type=float,
        default=1.0,
        help="seconds between health probes of each (model, pod) (default 1)",
    )
    parser.add_argument(
        "--queue-interval",
        type=float,
        default=1.0,
        help="seconds between Triton /metrics scrapes for queueTimeAboveMs (default 1)",
    )
    cluster = parser.add_argument_group("in-cluster mode (without --routes)")
    add_cluster_arguments(cluster, namespaces_help="route this namespace's models (default: all)")
    cluster.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        help="seconds between listings of TritonModel/ModelEnsemble (default 2)",
    )
    cluster.add_argument(
        "--triton-http-port", type=int, default=8000, help="Triton HTTP port on pod IPs"
    )
    cluster.add_argument(
        "--triton-metrics-port", type=int, default=8002, help="Triton metrics port on pod IPs"
    )
    cluster.add_argument(
        "--secret-refresh",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="re-read each hosted API-key Secret from the API server this often, so a "
        "rotated key takes effect (default 30)",
    )
    parser.add_argument(
        "--secrets-dir",
        metavar="DIR",
        help="in-cluster fallback: API-key Secrets projected as DIR/<namespace>/<name>/<key>, "
        "used only for keys the API server does not give",
    )
    add_log_arguments(parser, default_format="text")
    parser.add_argument("--access-log", action="store_true", help="log every request (slower)")


def setup_logging(level: str | None, log_format: LogFormat = "text") -> None:
    """The installation's log format, every line passed through the key redactor."""
    from tritonfleet.gateway.secrets import REDACTOR

    setup_process_logging(log_format, level or "INFO", redact=REDACTOR)


def cmd_gateway(args: argparse.Namespace, out: TextIO) -> int:
    # Imported here, not at the top: `tritonfleet crds` and friends should not
    # pay for aiohttp, prometheus and the gateway at start.
    from tritonfleet.adapters.kube import (
        CredentialError,
        KubeClient,
        check_access,
        discover_endpoint,
    )
    from tritonfleet.desired.gateway.prices import PriceTable
    from tritonfleet.desired.gateway.routes import RoutesError
    from tritonfleet.gateway.app import Gateway, GatewaySettings, serve
    from tritonfleet.gateway.secrets import ClientTokens, KeyStore, MissingKeyError
    from tritonfleet.gateway.sources import (
        ClusterKeyStore,
        ClusterRouteSource,
        StaticRouteSource,
        read_prices,
    )

    setup_logging(args.log_level, args.log_format)
    secrets_dir = Path(args.secrets_dir) if args.secrets_dir else None
    keys: KeyStore
    source: StaticRouteSource | ClusterRouteSource
    table: RouteTable | None = None
    where: str
    if args.routes:
        if not Path(args.routes).is_file():
            print(f"error: {args.routes}: no such file", file=sys.stderr)
            return EXIT_USAGE
        static = StaticRouteSource(Path(args.routes), Path(args.prices) if args.prices else None)
        try:
            table = static.load()
        except RoutesError as err:
            print(f"error: {args.routes}: {err}", file=sys.stderr)
            return EXIT_INVALID
        source, where = static, args.routes
        keys = KeyStore(secrets_dir)
    else:
        try:
            endpoint = discover_endpoint(args.kubeconfig, args.context)
            identity = asyncio.run(check_access(endpoint))
            prices = read_prices(Path(args.prices)) if args.prices else PriceTable()
        except (ValueError, OSError, RoutesError, CredentialError) as err:
            print(f"error: in-cluster mode: {err} (or run with --routes FILE)", file=sys.stderr)
            return EXIT_USAGE
        log.info(
            "API server %s as %s (%s)",
            endpoint.server,
            identity or "an unknown user",
            endpoint.auth_kind,
        )
        # Hosted API keys come from the referenced Secrets, read by the source.
        keys = cluster_keys = ClusterKeyStore(secrets_dir)
        source = ClusterRouteSource(
            # A short timeout: a hung list must not freeze the table for long.
            KubeClient(
                endpoint,
                field_manager="tritonfleet-gateway",
                timeout=max(5.0, 3 * args.poll_interval),
            ),
            list(namespaces_of(args.namespaces)) or None,
            prices=prices,
            poll_s=args.poll_interval,
            http_port=args.triton_http_port,
            metrics_port=args.triton_metrics_port,
            keys=cluster_keys,
            secret_refresh_s=args.secret_refresh,
        )
        watched = ", ".join(namespaces_of(args.namespaces)) or "all namespaces"
        where = f"TritonModel/ModelEnsemble in {watched}"
    for route in table.routes.values() if table is not None else ():
        hosted = route.hosted
        if hosted is not None and hosted.api_key is not None:
            try:
                keys.get(hosted.api_key)  # registers it for redaction; warns early
            except MissingKeyError as err:
                log.warning("model %s: hosted API key: %s", route.name, err)
    try:
        tokens = ClientTokens(args.auth_tokens_file, args.auth_tokens_env)
    except MissingKeyError as err:
        print(f"error: client tokens: {err}", file=sys.stderr)
        return EXIT_USAGE
    settings = GatewaySettings(
        max_request_bytes=args.max_request_bytes,
        probe_interval_s=args.probe_interval,
        queue_interval_s=args.queue_interval,
        body_timeout_s=args.body_timeout,
        keepalive_timeout_s=args.keepalive_timeout,
        max_inflight_per_pod=max(0, args.max_inflight_per_pod),
        metrics_port=args.metrics_port,
    )
    gateway = Gateway(table, source, settings=settings, tokens=tokens, keys=keys)
    log.info(
        "gateway listening on %s:%d, routes from %s%s",
        args.host,
        args.port,
        where,
        " (client auth on)" if tokens.enabled else "",
    )
    serve(
        gateway,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        access_log=bool(args.access_log),
    )
    return EXIT_OK
