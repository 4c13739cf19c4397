"""``tritonfleet get``: the fleet at a glance, what a user reaches for before
``kubectl describe``: one line per TritonModel and ModelEnsemble with the Ready
condition (and why not), pods serving the current revision, replicas, the live queue
time, what the gateways spent on the hosted provider for it and who serves it now.

The reading is ``adapters.fleet_view`` (the live numbers best effort), the rows and the
table ``desired.kube.fleet``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from tritonfleet.adapters.cli_args import (
    add_cluster_arguments,
    add_output_argument,
    namespaces_of,
    write_data,
)
from tritonfleet.cli.codes import EXIT_OK, EXIT_USAGE


def add_parser(subparsers: Any) -> None:
    get = subparsers.add_parser(
        "get",
        help="the fleet at a glance: per model Ready, pods loaded, replicas, queue time, "
        "hosted spend, served-by",
        description="One line per TritonModel and ModelEnsemble: the Ready condition (and "
        "why not), pods serving the current revision, replicas, the live queue time (from "
        "the external metrics API, for autoscaled models), what the gateways spent on the "
        "hosted provider for it and who serves it now. Numbers that cannot be read (no "
        "RBAC for them, no data yet) show as -. Exit 2 when the cluster cannot be reached.",
    )
    add_cluster_arguments(get, namespaces_help="only this namespace (default: all)")
    add_output_argument(get, "wide", "json", "yaml")
    get.set_defaults(func=cmd_get)


def cmd_get(args: argparse.Namespace, out: TextIO) -> int:
    from tritonfleet.adapters.fleet_view import observe_fleet
    from tritonfleet.cli.cluster import CLUSTER_ERRORS, on_cluster
    from tritonfleet.desired.kube.fleet import fleet_rows, fleet_table, gateway_counts

    try:
        seen = on_cluster(
            args, lambda client: observe_fleet(client, namespaces_of(args.namespaces))
        )
    except CLUSTER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    counts = gateway_counts(seen.gateway_metrics) if seen.gateway_metrics is not None else None
    rows = fleet_rows(seen.bodies, seen.queue_seconds, counts)
    if args.output in ("json", "yaml"):
        write_data([r.as_dict() for r in rows], args.output, out)
    elif rows:
        print(fleet_table(rows, wide=args.output == "wide"), file=out)
    else:
        print("No TritonModel or ModelEnsemble found.", file=out)
    return EXIT_OK
