"""``tritonfleet render``: print the ``config.pbtxt`` each TritonModel/ModelEnsemble
renders to, like ``helm template``: a preview of what Triton will be given, with
every problem listed when anything is invalid (exit 1). A TritonServerPool given
with its pooled models gets a preview of where they go (or why they do not fit).
``--objects`` prints every Kubernetes object the operator would create for them
instead (``desired.kube.preview``); ``-o json|yaml`` gives the rendered configs as data.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

from tritonfleet.adapters.cli_args import write_data
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


def _print_rendered(results: list[Rendered], out: TextIO) -> None:
    for item in results:
        if not item.ok or not item.pbtxt:
            continue  # invalid, or a pool (previewed after the models)
        out.write(
            f"# --- {item.resource}: {item.triton_name}/config.pbtxt (revision {item.revision})\n"
        )
        out.write(item.pbtxt if item.pbtxt.endswith("\n") else item.pbtxt + "\n")
        out.write("\n")


def _pool_previews(docs: list[dict[str, Any]], results: list[Rendered], out: TextIO) -> None:
    """For each valid TritonServerPool, where the valid pooled models given with it go."""
    from tritonfleet.api.base import quantity_bytes
    from tritonfleet.api.ensemble import ModelEnsemble
    from tritonfleet.api.model import TritonModel
    from tritonfleet.api.pool import TritonServerPool
    from tritonfleet.desired.kube.pool import PooledObject, preview

    valid = [doc for doc, r in zip(docs, results, strict=True) if r.ok]
    for doc in valid:
        if doc.get("kind") != "TritonServerPool":
            continue
        pool = TritonServerPool.from_object(doc)
        namespace = pool.metadata.namespace or "default"
        objects = []
        for other in valid:
            if other.get("kind") not in ("TritonModel", "ModelEnsemble"):
                continue
            obj = (TritonModel if other["kind"] == "TritonModel" else ModelEnsemble).from_object(
                other
            )
            ref = obj.spec.serving.pool
            if ref is None or ref.name != pool.metadata.name:
                continue
            if (obj.metadata.namespace or "default") != namespace:
                continue
            members = obj.member_names if isinstance(obj, ModelEnsemble) else ()
            objects.append(
                PooledObject(
                    obj.kind,
                    obj.metadata.name,
                    obj.triton_name,
                    quantity_bytes(ref.memory),
                    ref.replicas,
                    members,
                )
            )
        out.write("\n".join(preview(pool, objects)) + "\n\n")


def cmd_render(args: argparse.Namespace, out: TextIO) -> int:
    import os

    from tritonfleet.adapters.manifests import ManifestError, read_documents
    from tritonfleet.api.settings import OperatorSettings, SettingsError
    from tritonfleet.desired.kube.preview import preview_objects
    from tritonfleet.desired.triton.render import render_documents

    try:
        docs = [d for d in read_documents(args.filename) if d]
        settings = OperatorSettings.from_env(os.environ)
    except (ManifestError, SettingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.namespace:  # as `kubectl apply -n`: for documents that name none
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("namespace", args.namespace)
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
        _pool_previews(docs, results, out)
    for item in invalid:
        print(f"{item.resource} is invalid:", file=sys.stderr)
        for problem in item.problems:
            print(f"  - {problem}", file=sys.stderr)
    return EXIT_INVALID if invalid else EXIT_OK
