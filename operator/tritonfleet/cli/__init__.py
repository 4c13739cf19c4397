"""The ``tritonfleet`` command, the project's one entry point (also ``python -m
tritonfleet``): ``get``, ``render``, ``import``, ``sync``, ``operator``, ``gateway``,
``pre-uninstall``, ``release-finalizers``, ``crds`` and ``probe`` (docs/cli.md).

This is the outermost layer: it reads files, arguments and the environment, calls
the layers below, prints, and turns problems into exit codes. One module per
subcommand: :mod:`.fleet` (``get``), :mod:`.crds`, :mod:`.render`, :mod:`.importing`
(``import``), :mod:`.sync` (the command the sync Job runs), :mod:`.uninstall`,
:mod:`.probe`, :mod:`.gateway` (the gateway process) and :mod:`.operator`, which
is also where the operator process is composed (the handlers and the queue-time
scaling, sharing one memory and one parsed view of every object).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from tritonfleet import __version__
from tritonfleet.cli import crds, fleet, importing, operator, probe, render, uninstall
from tritonfleet.cli.codes import EXIT_INVALID, EXIT_OK, EXIT_USAGE

# Nothing heavy is imported at the top: each subcommand imports what it needs when it
# runs, so `tritonfleet crds` does not pay for kopf and the operator does not pay for
# the gateway. tests/unit/test_render_cli.py checks the operator's footprint.

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritonfleet",
        description="Kubernetes operator and OpenAI-compatible gateway for NVIDIA Triton fleets.",
    )
    parser.add_argument("--version", action="version", version=f"tritonfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fleet.add_parser(sub)
    crds.add_parser(sub)
    render.add_parser(sub)
    importing.add_parser(sub)

    from tritonfleet.cli import sync
    from tritonfleet.cli.gateway import add_parser as add_gateway_parser

    sync.add_parser(sub)
    operator.add_parser(sub)
    add_gateway_parser(sub)
    uninstall.add_parsers(sub)
    probe.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand: the program's own arguments (``argv`` None), or ``argv`` when
    called in-process (tests, benchmarks)."""
    if argv is None:
        # As a program, behave like other Unix tools piped into `head`: stop quietly. Not
        # in-process: a host process (pytest, its test servers) must keep EPIPE errors.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(words)
    result: int = args.func(args, sys.stdout)
    return result
