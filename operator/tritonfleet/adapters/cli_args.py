"""The flags every ``tritonfleet`` command shares, spelled and parsed one way.

Commands that talk to the cluster take ``--kubeconfig``/``--context`` (kubectl's
meaning) and ``-n/--namespace`` (repeatable, and each value may list several names
separated by commas); long-running ones take ``--log-format``/``--log-level``; the ones
that print data take ``-o/--output``. Exit codes are the same everywhere:
0 done, 1 invalid input or a check that failed, 2 usage (bad flags, a file that
cannot be read, a cluster that cannot be reached); ``sync`` adds its own (3-10).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

import yaml

from tritonfleet.adapters.logs import LOG_FORMATS

EXIT_OK = 0
EXIT_INVALID = 1  # the input is invalid (every problem is listed), a refusal, a failed check
EXIT_USAGE = 2  # bad arguments, unreadable files, or the cluster cannot be reached
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class Arguments(Protocol):
    """An argparse parser or argument group."""

    def add_argument(self, *names: str, **options: Any) -> Any: ...


def add_cluster_arguments(parser: Arguments, *, namespaces_help: str) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NAMESPACE",
        help=f"{namespaces_help}; repeatable, or comma-separated",
    )
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: every file of $KUBECONFIG, in-cluster, ~/.kube/config)",
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def namespaces_of(values: Sequence[str] | None) -> tuple[str, ...]:
    """``-n a -n b,c`` → ``("a", "b", "c")``."""
    return tuple(n.strip() for v in values or () for n in v.split(",") if n.strip())


def add_log_arguments(parser: Arguments, *, default_format: str | None) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default_format,
        help="text (logfmt) or json, one object per line"
        + (f" (default {default_format})" if default_format else ""),
    )
    parser.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, help="DEBUG, INFO, WARNING or ERROR"
    )


def add_output_argument(parser: Arguments, *choices: str) -> None:
    parser.add_argument("-o", "--output", choices=choices, help=f"one of {', '.join(choices)}")


def write_data(data: Any, output: str, out: TextIO) -> None:
    """``-o json|yaml``: a list prints as a YAML stream, or as a JSON array."""
    if output == "json":
        out.write(json.dumps(data, indent=2) + "\n")
    elif isinstance(data, list):
        out.write(yaml.safe_dump_all(data, sort_keys=False))
    else:
        out.write(yaml.safe_dump(data, sort_keys=False))
