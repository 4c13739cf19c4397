"""``tritonfleet import``: existing ``config.pbtxt`` files (one, a model directory or a
whole model repository) → the TritonModel/ModelEnsemble YAML that renders back to
the same configs, typed fields wherever Triton's config has them, ``extra`` for the
rest. Every result is rendered back and compared before it is printed; exit 1 lists
every config that cannot be imported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from tritonfleet.cli.codes import EXIT_INVALID, EXIT_OK, EXIT_USAGE


def add_parser(subparsers: Any) -> None:
    importer = subparsers.add_parser(
        "import",
        help="turn existing config.pbtxt files into TritonModel/ModelEnsemble YAML",
        description="Read config.pbtxt files (a file, a model directory, or a whole model "
        "repository) and print the TritonModels and ModelEnsembles that render to the same "
        "configs: typed fields wherever Triton's config has them, `extra` for the rest. Each "
        "result is rendered back and compared with the original before it is printed. Exits "
        "1 listing every config that cannot be imported.",
    )
    importer.add_argument(
        "paths", nargs="+", metavar="PATH", help="config.pbtxt, model dir or repository"
    )
    importer.add_argument(
        "--source-prefix",
        required=True,
        metavar="URI",
        help="where the model directories are: s3://BUCKET/PATH gives s3://BUCKET/PATH/<model>, "
        "pvc://CLAIM/PATH gives claim CLAIM, path /PATH/<model>",
    )
    importer.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint (MinIO...)")
    importer.add_argument("--s3-region", metavar="REGION")
    importer.add_argument(
        "--s3-credentials-secret", metavar="NAME", help="Secret with the AWS_* keys"
    )
    importer.add_argument("-n", "--namespace", help="metadata.namespace of every document")
    importer.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fill a ${NAME} template placeholder (TensorRT-LLM's fill_template.py values); "
        "repeatable",
    )
    importer.add_argument("-o", "--output", metavar="FILE", help="write the YAML here, not stdout")
    importer.add_argument(
        "--partial", action="store_true", help="print what imported even if some configs did not"
    )
    importer.set_defaults(func=cmd_import)


def _template_values(pairs: Sequence[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--set {pair!r}: expected NAME=VALUE")
        values[name] = value
    return values


def cmd_import(args: argparse.Namespace, out: TextIO) -> int:
    from tritonfleet.adapters.manifests import ManifestError, dump_documents, write_text
    from tritonfleet.adapters.model_repository import RepositoryError, find_configs
    from tritonfleet.desired.triton.importing import import_configs, source_for_prefix

    try:
        values = _template_values(args.set)
        source_for = source_for_prefix(
            args.source_prefix,
            s3_endpoint=args.s3_endpoint,
            s3_region=args.s3_region,
            s3_credentials_secret=args.s3_credentials_secret,
        )
        files = find_configs(args.paths)
    except (ValueError, RepositoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    result = import_configs(files, source_for, namespace=args.namespace, values=values)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for problem in result.errors:
        print(f"error: {problem}", file=sys.stderr)
    if result.errors:
        outcome = "printing those" if args.partial else "nothing printed (--partial prints them)"
        print(
            f"{len(result.documents)} of {len(files)} model(s) imported; {outcome}", file=sys.stderr
        )
    if result.documents and (args.partial or not result.errors):
        header = (
            f"Imported by `tritonfleet import` from {', '.join(args.paths)}.\n"
            "Review spec.serving (GPUs, replicas) before applying; the config is Triton's own."
        )
        text = dump_documents(result.documents, header)
        try:
            if args.output:
                write_text(args.output, text)
            else:
                out.write(text)
        except ManifestError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
    return EXIT_INVALID if result.errors else EXIT_OK
