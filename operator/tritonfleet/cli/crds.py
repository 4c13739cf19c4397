"""``tritonfleet crds``: write (or check) the CRDs generated from the API models.

``make crds`` runs it after a change of ``api/``; ``make lint`` runs it with
``--check``, which fails naming every file that differs from the code. It writes
only into a checkout; ``--stdout`` (or ``-o yaml|json``) prints the CRDs anywhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from tritonfleet.adapters.cli_args import add_output_argument, write_data
from tritonfleet.cli.codes import EXIT_INVALID, EXIT_OK, EXIT_USAGE


def add_parser(subparsers: Any) -> None:
    crds = subparsers.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--check", action="store_true", help="fail if the files differ from the code")
    crds.add_argument("--stdout", action="store_true", help="print the CRDs instead of writing")
    crds.add_argument("--root", help="project checkout to write into (default: found from cwd)")
    add_output_argument(crds, "yaml", "json")
    crds.set_defaults(func=cmd_crds)


def _is_checkout(path: Path) -> bool:
    return (path / "pyproject.toml").is_file() and (path / "operator" / "tritonfleet").is_dir()


def _project_root() -> Path | None:
    """The tritonfleet checkout holding crds/ (for `crds`), found from the working directory."""
    here = Path.cwd().resolve()
    return next((c for c in (here, *here.parents) if _is_checkout(c)), None)


def cmd_crds(args: argparse.Namespace, out: TextIO) -> int:
    import yaml

    from tritonfleet.api.crd import crd_files

    files = crd_files()
    if args.stdout or args.output:
        plain = [t for p, t in files.items() if p.startswith("crds/")]
        if args.output == "json":
            write_data([yaml.safe_load(t) for t in plain], "json", out)
        else:
            out.write("".join(plain))
        return EXIT_OK
    # Writing is for a checkout only (--root names one explicitly): never scatter crds/
    # and charts/ into whatever directory the command runs in.
    root = Path(args.root) if args.root else _project_root()
    if root is None:
        print(
            f"error: {Path.cwd()} is not inside a tritonfleet checkout (pyproject.toml and "
            "operator/tritonfleet/): run it in one, pass --root DIR, or print the CRDs with "
            "--stdout (or -o yaml|json)",
            file=sys.stderr,
        )
        return EXIT_USAGE
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
