"""``tritonfleet crds``: write (or check) the CRDs generated from the API models.

``make crds`` runs it after a change of ``api/``; ``make lint`` runs it with
``--check``, which fails naming every file that differs from the code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from tritonfleet.cli.codes import EXIT_INVALID, EXIT_OK


def add_parser(subparsers: Any) -> None:
    crds = subparsers.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--check", action="store_true", help="fail if the files differ from the code")
    crds.add_argument("--stdout", action="store_true", help="print the CRDs instead of writing")
    crds.add_argument("--root", help="project checkout to write into (default: found from cwd)")
    crds.set_defaults(func=cmd_crds)


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
