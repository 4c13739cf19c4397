"""The ``tritonfleet`` command: one entry point for every process and tool of
the project: ``crds``, ``render``, ``sync``, ``operator`` and ``gateway``.

This is the outermost layer: it reads files and arguments, calls the pure
layers, prints, and turns problems into exit codes.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tritonfleet import __version__
from tritonfleet.handlers.cli import add_parser as add_operator_parser

if TYPE_CHECKING:
    from tritonfleet.desired.triton.render import Rendered

# Nothing heavy is imported at the top: each subcommand imports what it needs when it
# runs, so `tritonfleet crds` does not pay for kopf and the operator does not pay for
# the gateway. tests/unit/test_render_cli.py checks the operator's footprint.

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def _project_root() -> Path:
    """The checkout holding crds/ (for `crds`), found from the working directory."""
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").exists() and (candidate / "operator").is_dir():
            return candidate
    return here


def cmd_crds(args: argparse.Namespace, out: TextIO) -> int:
    from tritonfleet.api.crd import crd_files

    root = Path(args.root) if args.root else _project_root()
    files = crd_files()
    if args.stdout:
        for text in (t for p, t in files.items() if p.startswith("crds/")):
            out.write(text)
        return EXIT_OK
    drifted = []
    for relative, text in files.items():
        path = root / relative
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        drifted.append(relative)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check:
        if drifted:
            print(
                "CRDs differ from the code: " + ", ".join(drifted) + "\n"
                "Run `tritonfleet crds` to regenerate them and commit the result.",
                file=sys.stderr,
            )
            return EXIT_INVALID
        print(f"CRDs match the code ({len(files)} files).", file=out)
        return EXIT_OK
    print(f"wrote {len(drifted)} of {len(files)} CRD files under {root}", file=out)
    return EXIT_OK


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritonfleet",
        description="Kubernetes operator and OpenAI-compatible gateway for NVIDIA Triton fleets.",
    )
    parser.add_argument("--version", action="version", version=f"tritonfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crds = sub.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--check", action="store_true", help="fail if the files differ from the code")
    crds.add_argument("--stdout", action="store_true", help="print the CRDs instead of writing")
    crds.add_argument("--root", help="project checkout to write into (default: found from cwd)")
    crds.set_defaults(func=cmd_crds)

    render = sub.add_parser(
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

    from tritonfleet.gateway.cli import add_parser as add_gateway_parser
    from tritonfleet.sync.cli import add_parser as add_sync_parser

    add_sync_parser(sub)
    add_operator_parser(sub)
    add_gateway_parser(sub)
    return parser


def register_operator_extensions() -> None:
    """The operator process also scrapes Triton, serves the external metrics API and
    scales to zero (``scaling.in_operator``); ``handlers`` must not import it."""
    from tritonfleet.handlers.operator import EXTENSIONS
    from tritonfleet.scaling.in_operator import register as register_scaling

    if register_scaling not in EXTENSIONS:
        EXTENSIONS.append(register_scaling)


def main(argv: Sequence[str] | None = None) -> int:
    # Behave like other Unix tools when piped into `head`: stop quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["operator"]:
        register_operator_extensions()
    args = build_parser().parse_args(words)
    result: int = args.func(args, sys.stdout)
    return result


if __name__ == "__main__":
    sys.exit(main())
