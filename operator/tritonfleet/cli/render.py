"""``tritonfleet render``: print the ``config.pbtxt`` each TritonModel/ModelEnsemble
renders to, like ``helm template``: a preview of what Triton will be given, with
every problem listed when anything is invalid (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

from tritonfleet.cli.codes import EXIT_INVALID, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from tritonfleet.desired.triton.render import Rendered


def add_parser(subparsers: Any) -> None:
    render = subparsers.add_parser(
        "render",
        help="print the config.pbtxt each TritonModel/ModelEnsemble renders to",
        description="Validate and render TritonModel and ModelEnsemble documents, like "
        "`helm template`: a preview of what Triton will be given. Exits 1 listing every "
        "problem when anything is invalid.",
    )
    render.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="YAML file, directory of YAML files, or - for stdin (repeatable)",
    )
    render.add_argument(
        "--partial", action="store_true", help="print the valid documents even if some are not"
    )
    render.set_defaults(func=cmd_render)


def _print_rendered(results: list[Rendered], out: TextIO) -> None:
    for item in results:
        if not item.ok:
            continue
        out.write(
            f"# --- {item.resource}: {item.triton_name}/config.pbtxt (revision {item.revision})\n"
        )
        out.write(item.pbtxt if item.pbtxt.endswith("\n") else item.pbtxt + "\n")
        out.write("\n")


def cmd_render(args: argparse.Namespace, out: TextIO) -> int:
    from tritonfleet.adapters.manifests import ManifestError, read_documents
    from tritonfleet.desired.triton.render import render_documents

    try:
        results = render_documents(read_documents(args.filename))
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not results:
        print("error: no TritonModel or ModelEnsemble found in the input", file=sys.stderr)
        return EXIT_USAGE
    invalid = [r for r in results if not r.ok]
    if not invalid or args.partial:
        _print_rendered(results, out)
    for item in invalid:
        print(f"{item.resource} is invalid:", file=sys.stderr)
        for problem in item.problems:
            print(f"  - {problem}", file=sys.stderr)
    return EXIT_INVALID if invalid else EXIT_OK
