"""``tritonfleet pre-uninstall`` (the chart's pre-delete hook) and
``tritonfleet release-finalizers`` (the way out for a namespace stuck Terminating):
the commands over ``handlers.uninstall``.
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
from tritonfleet.adapters.kube import KubeClient
from tritonfleet.cli.cluster import CLUSTER_ERRORS, on_cluster
from tritonfleet.cli.codes import EXIT_INVALID, EXIT_OK, EXIT_USAGE
from tritonfleet.desired.kube.objects import FINALIZER
from tritonfleet.handlers.uninstall import Found, before_uninstall, release_finalizers


def add_parsers(subparsers: Any) -> None:
    """``pre-uninstall`` (the chart's pre-delete hook) and ``release-finalizers``."""
    pre = subparsers.add_parser(
        "pre-uninstall",
        help="before the operator goes: refuse while models exist, or delete them and wait",
        description="What the chart's pre-delete hook runs. Exits 1 (the uninstall stops) "
        "while TritonModels or ModelEnsembles exist with --when-models-exist=refuse, or when "
        "deleting them did not finish within --timeout.",
    )
    pre.add_argument("--when-models-exist", choices=["refuse", "delete"], default="refuse")
    pre.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    release = subparsers.add_parser(
        "release-finalizers",
        help="let models being deleted go when the operator is gone (frees their namespace)",
        description=f"Remove {FINALIZER} from TritonModels and ModelEnsembles that are being "
        "deleted, so their namespace can finish terminating when the operator is gone. "
        "Their model files stay on the repository volume.",
    )
    release.add_argument("--dry-run", action="store_true", help="list them, change nothing")
    add_output_argument(release, "json", "yaml")
    for parser in (pre, release):
        add_cluster_arguments(parser, namespaces_help="only this namespace (default: all)")
    pre.set_defaults(func=cmd_pre_uninstall)
    release.set_defaults(func=cmd_release_finalizers)


def cmd_pre_uninstall(args: argparse.Namespace, out: TextIO) -> int:
    async def work(client: KubeClient) -> tuple[bool, str]:
        return await before_uninstall(
            client,
            args.when_models_exist,
            namespaces=namespaces_of(args.namespaces),
            timeout_s=args.timeout,
        )

    try:
        ok, message = on_cluster(args, work, field_manager="tritonfleet")
    except CLUSTER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(message, file=out if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_INVALID


def cmd_release_finalizers(args: argparse.Namespace, out: TextIO) -> int:
    async def work(client: KubeClient) -> list[Found]:
        return await release_finalizers(
            client, namespaces_of(args.namespaces), dry_run=args.dry_run
        )

    try:
        released = on_cluster(args, work, field_manager="tritonfleet")
    except CLUSTER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.output:
        rows = [
            {"kind": m.kind, "namespace": m.namespace, "name": m.name, "released": not args.dry_run}
            for m in released
        ]
        write_data(rows, args.output, out)
        return EXIT_OK
    verb = "would release" if args.dry_run else "released"
    for model in released:
        print(f"{verb} {model}", file=out)
    if not released:
        print("no model is stuck being deleted", file=out)
    return EXIT_OK
