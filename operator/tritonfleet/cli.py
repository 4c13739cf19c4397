"""The ``tritonfleet`` command: one entry point for every process and tool of
the project: ``crds``, ``render``, ``import``, ``sync``, ``operator`` and ``gateway``.

This is the outermost layer: it reads files and arguments, calls the pure
layers, prints, and turns problems into exit codes.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tritonfleet import __version__
from tritonfleet.adapters.cli_args import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    add_cluster_arguments,
    add_output_argument,
    namespaces_of,
    write_data,
)
from tritonfleet.handlers.cli import add_parser as add_operator_parser

if TYPE_CHECKING:
    from tritonfleet.desired.triton.render import Rendered

# Nothing heavy is imported at the top: each subcommand imports what it needs when it
# runs, so `tritonfleet crds` does not pay for kopf and the operator does not pay for
# the gateway. tests/unit/test_render_cli.py checks the operator's footprint.


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
    # Writing is for a checkout only: never scatter crds/ and charts/ into any directory.
    # (--root names the directory explicitly.)
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
    import os

    from tritonfleet.adapters.manifests import ManifestError, read_documents
    from tritonfleet.api.settings import OperatorSettings, SettingsError
    from tritonfleet.desired.kube.preview import preview_objects
    from tritonfleet.desired.triton.render import render_documents

    try:
        docs = read_documents(args.filename)
        settings = OperatorSettings.from_env(os.environ)
        if args.namespace:  # as `kubectl apply -n`: for documents that name none
            for doc in docs:
                doc.setdefault("metadata", {}).setdefault("namespace", args.namespace)
    except (ManifestError, SettingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    results = render_documents(docs)
    if not results:
        print("error: no TritonModel or ModelEnsemble found in the input", file=sys.stderr)
        return EXIT_USAGE
    invalid = [r for r in results if not r.ok]
    if invalid and not args.partial:
        pass  # nothing printed: the problems below say what to fix
    elif args.objects:
        objects = preview_objects(docs, settings)
        if args.output == "json":
            write_data({"apiVersion": "v1", "kind": "List", "items": objects}, "json", out)
        else:
            write_data(objects, "yaml", out)
    elif args.output:
        rendered = [
            {
                "kind": r.kind,
                "namespace": r.namespace,
                "name": r.name,
                "tritonName": r.triton_name,
                "revision": r.revision,
                "configPbtxt": r.pbtxt,
            }
            for r in results
            if r.ok
        ]
        write_data(rendered, args.output, out)
    else:
        _print_rendered(results, out)
    for item in invalid:
        print(f"{item.resource} is invalid:", file=sys.stderr)
        for problem in item.problems:
            print(f"  - {problem}", file=sys.stderr)
    return EXIT_INVALID if invalid else EXIT_OK


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


def cmd_probe(args: argparse.Namespace, out: TextIO) -> int:
    import time
    import urllib.error
    import urllib.request

    expected: dict[str, str] = {}
    for pair in args.expect:
        url, sep, text = pair.partition("=")
        if not sep:
            print(f"error: --expect {pair!r} is not URL=TEXT", file=sys.stderr)
            return EXIT_USAGE
        expected[url] = text
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + args.timeout
    for url in args.urls:
        while True:
            try:
                with opener.open(url, timeout=5) as response:
                    body = response.read().decode(errors="replace")
                want = expected.get(url, "")
                if want in body:
                    print(f"ok {url}", file=out)
                    break
                problem = f"answered without {want!r}"
            except (urllib.error.URLError, OSError) as error:
                problem = str(error)
            if time.monotonic() > deadline:
                print(f"error: {url}: {problem}", file=sys.stderr)
                return EXIT_INVALID
            time.sleep(1)
    return EXIT_OK


def cmd_get(args: argparse.Namespace, out: TextIO) -> int:
    import asyncio

    from tritonfleet.adapters.fleet_view import observe_fleet
    from tritonfleet.adapters.kube import (
        ApiError,
        CredentialError,
        KubeClient,
        KubeconfigError,
        discover_endpoint,
    )
    from tritonfleet.desired.kube.fleet import fleet_rows, fleet_table, gateway_counts

    async def observe() -> Any:
        endpoint = discover_endpoint(args.kubeconfig, args.context)
        async with KubeClient(endpoint, field_manager="tritonfleet-cli") as client:
            return await observe_fleet(client, namespaces_of(args.namespaces))

    try:
        seen = asyncio.run(observe())
    except (KubeconfigError, CredentialError, ApiError, OSError) as error:
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
    add_output_argument(crds, "yaml", "json")
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
    render.add_argument(
        "-n", "--namespace", help="namespace of documents that name none (default: default)"
    )
    render.add_argument(
        "--objects",
        action="store_true",
        help="print every Kubernetes object the operator would create for them (repository "
        "claim, ConfigMap, sync Job, Deployment, Service, HPA), as YAML, or -o json; "
        "installation settings from TRITONFLEET_* variables",
    )
    render.add_argument(
        "-o", "--output", choices=["yaml", "json"], help="data instead of config.pbtxt text"
    )
    render.set_defaults(func=cmd_render)

    importer = sub.add_parser(
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

    from tritonfleet.gateway.cli import add_parser as add_gateway_parser
    from tritonfleet.handlers.uninstall import add_parsers as add_uninstall_parsers
    from tritonfleet.sync.cli import add_parser as add_sync_parser

    add_sync_parser(sub)
    add_operator_parser(sub)
    add_gateway_parser(sub)
    add_uninstall_parsers(sub)

    get = sub.add_parser(
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

    probe = sub.add_parser(
        "probe",
        help="GET each URL and fail unless it answers 200 (what `helm test` runs)",
        description="GET each URL; exit 1 naming the first that does not answer 200 (or lacks "
        "--expect TEXT) within --timeout. The chart's test pod checks the operator and the "
        "gateway with it; it works from any debug pod with the tritonfleet image too.",
    )
    probe.add_argument("urls", nargs="+", metavar="URL")
    probe.add_argument("--expect", action="append", default=[], metavar="URL=TEXT",
                       help="the answer of URL must contain TEXT (repeatable)")  # fmt: skip
    probe.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    probe.set_defaults(func=cmd_probe)
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
