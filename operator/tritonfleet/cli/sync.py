"""``tritonfleet sync``: the command the operator's sync Job runs (and people
run by hand): put one TritonModel's files into a Triton model repository.

    tritonfleet sync -f model.yaml --repository /models/repository
    tritonfleet sync --remove --model-name NAME --repository /models/repository

This module only parses arguments, reads the YAML, renders and validates the
config, and turns outcomes into exit codes (see ``EXIT_CODES``); the work is in
:mod:`tritonfleet.sync.run`.

The revision is computed once, by the operator, and passed with ``--revision``: the
sync publishes under it, stamped into ``config.pbtxt``, which is what the loader
checks on every Triton pod. If this command's own computation from the spec
differs (a sync image that renders differently from the operator's), the given
revision still wins: the sync says so in a warning line (``given=`` and
``computed=``) and exits 0, so ``Loaded`` can turn true; the files are this image's
rendering. Without ``--revision`` (by hand) the computed revision is used.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from tritonfleet.adapters.cli_args import add_log_arguments
from tritonfleet.adapters.manifests import ManifestError, read_documents
from tritonfleet.adapters.sources import FetchOptions, SyncError, emit, local_error
from tritonfleet.api.base import MODEL_NAME_RE
from tritonfleet.api.model import InlineSource, ModelSource, TritonModel
from tritonfleet.cli.codes import EXIT_INVALID, EXIT_OK, EXIT_USAGE
from tritonfleet.desired.triton.render import Rendered, render_documents
from tritonfleet.desired.triton.repository import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_MAX_EXPANSION_RATIO,
    DEFAULT_MAX_EXTRACT_BYTES,
    DEFAULT_MAX_MEMBERS,
    EXPANSION_FLOOR_BYTES,
    ExtractionLimits,
    RepositoryLayout,
    format_bytes,
)
from tritonfleet.desired.triton.revision import stamp_revision
from tritonfleet.sync import logfmt
from tritonfleet.sync.publish import layout_for
from tritonfleet.sync.run import SyncRequest, remove_model, sync_model

log = logging.getLogger("tritonfleet.sync")

EXIT_CODES = {
    0: "synced, or already at the revision (also when --revision differs from the "
    "revision this command computes: published under --revision, with a warning)",
    1: "invalid TritonModel (every problem is listed) or unusable source spec",
    2: "usage: bad arguments, unreadable YAML, no/several TritonModels",
    3: "source not found: bucket, object, prefix, URL (404), PVC path, or a version "
    "the policy asks for",
    4: "source access denied: missing/wrong credentials, S3 403, HTTP 401/403, PVC EACCES",
    5: "integrity: sha256 mismatch (both digests shown), truncated transfer, S3 MD5",
    6: "unsafe source: archive member or key with an absolute path, '..', a link "
    "outside the model, a device file, a name too long for any filesystem; archive over "
    "--max-extract-bytes/--max-members/--max-expansion-ratio; download over "
    "--max-download-bytes",
    7: "local storage: disk full (ENOSPC), permission denied, read-only, state dir on "
    "another filesystem",
    8: "source unavailable (retry): connection refused, timeout, HTTP 5xx/429",
    9: "busy: another sync of the same model held the lock past --lock-timeout",
    10: "other sync failure",
    130: "interrupted by SIGINT (143: SIGTERM); the previous revision stays published",
}

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?)(i?)b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``200GiB``, ``200Gi``, ``1.5G``, ``1048576`` → bytes."""
    match = _SIZE_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 200GiB, 512Mi, 1000000)")
    number, unit, binary = match.groups()
    base = 1024 if binary or not unit else 1000
    power = " kmgtp".index(unit.lower()) if unit else 0
    return int(float(number) * base**power)


_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _revision(text: str) -> str:
    # It becomes a directory name: no separators, no dots (used for ".1" suffixes).
    if not _REVISION_RE.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a revision is 1-64 letters, digits, '-' or '_'"
        )
    return text


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _epilog() -> str:
    lines = ["exit codes:"]
    lines += [f"  {code:>3}  {text}" for code, text in EXIT_CODES.items()]
    lines += [
        "",
        "layout: <repository>/<model> is a relative symlink to",
        "  <state-dir>/revisions/<model>/<revision>/ (config.pbtxt, version folders,",
        "  .tritonfleet-manifest.json); <state-dir>/pins/<model>/<revision>/ is a",
        "  one-model repository fixed at that revision (what the operator's Triton",
        "  pods load with --model-repository); <state-dir> defaults to",
        "  <repository>/../.tritonfleet/<repository name>, outside the directory Triton scans",
        "  (Triton lists every sub-directory, dot-directories too, as a model). When the",
        "  repository is the root of its volume it falls back to <repository>/.tritonfleet.",
    ]
    return "\n".join(lines)


def add_parser(subparsers: Any) -> None:
    """Register ``sync`` on the ``tritonfleet`` command's sub-parsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sync",
        help="fetch a TritonModel's files into a Triton model repository (atomic publish)",
        description="Render a TritonModel's config.pbtxt, fetch its files from S3, HTTP(S), a "
        "mounted PVC or inline, check and checksum them, and publish them atomically into "
        "the Triton model repository. Re-running an unchanged revision does nothing.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        help="TritonModel/ModelEnsemble YAML file, directory, or - for stdin (repeatable)",
    )
    parser.add_argument(
        "--repository", required=True, type=Path, help="Triton's --model-repository directory"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="revisions/staging/locks; same filesystem as the repository, outside it "
        "(default: <repository>/../.tritonfleet/<repository name>)",
    )
    parser.add_argument(
        "--model-name",
        help="with --remove: the Triton model name; with -f: pick this model (TritonModel or "
        "ModelEnsemble, by metadata.name or modelName) from the file",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="with -f: publish every model in the file, members before ensembles",
    )
    parser.add_argument(
        "--remove", action="store_true", help="unpublish the model and delete its revisions"
    )
    parser.add_argument(
        "--revision",
        type=_revision,
        help="publish under this revision: the one the operator computed (its sync Jobs "
        "pass it) or a name of your own; a warning shows when it differs from the "
        "revision computed here (default: that digest of the spec)",
    )
    parser.add_argument(
        "--keep-revision",
        action="append",
        type=_revision,
        default=[],
        metavar="REVISION",
        help="a revision still served (e.g. the stable one during a canary): its files are "
        "not garbage-collected (repeatable)",
    )
    parser.add_argument(
        "--force", action="store_true", help="fetch again even if already at the revision"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="re-hash published files against the manifest before trusting them",
    )
    parser.add_argument(
        "--credentials-dir",
        type=Path,
        help="directory with files AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY[, AWS_SESSION_TOKEN] "
        "(a mounted Secret); default: the same names from the environment",
    )
    parser.add_argument(
        "--pvc-root", type=Path, help="where the source claim is mounted (default /pvc/<claimName>)"
    )
    parser.add_argument(
        "--max-extract-bytes",
        type=parse_size,
        default=DEFAULT_MAX_EXTRACT_BYTES,
        help="refuse archives that unpack to more than this (default 200GiB)",
    )
    parser.add_argument(
        "--max-members",
        type=int,
        default=DEFAULT_MAX_MEMBERS,
        help=f"refuse archives with more members (default {DEFAULT_MAX_MEMBERS})",
    )
    parser.add_argument(
        "--max-expansion-ratio",
        type=float,
        default=DEFAULT_MAX_EXPANSION_RATIO,
        help="refuse archives that unpack to more than this many times their size, past "
        f"{format_bytes(EXPANSION_FLOOR_BYTES)} unpacked (default "
        f"{DEFAULT_MAX_EXPANSION_RATIO:g}; 0: no ratio check)",
    )
    parser.add_argument(
        "--max-download-bytes",
        type=parse_size,
        default=DEFAULT_MAX_DOWNLOAD_BYTES,
        help="refuse a model whose download (HTTP body, or S3 objects together) is larger "
        "(default 200GiB)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="parallel S3 transfers (default 8)"
    )
    parser.add_argument(
        "--multipart-chunk-size",
        type=parse_size,
        default=16 * 1024 * 1024,
        help="S3 ranged-GET part size and multipart threshold (default 16MiB)",
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=60.0, help="network timeout, seconds (60)"
    )
    parser.add_argument(
        "--lock-timeout",
        type=_positive_float,
        default=3600.0,
        help="wait this long for another sync of the same model (default 3600s)",
    )
    parser.add_argument(
        "--progress-interval",
        type=_positive_float,
        default=5.0,
        help="seconds between progress lines (default 5)",
    )
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    add_log_arguments(parser, default_format="text")
    parser.set_defaults(func=cmd_sync)


class Interrupted(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT so staging is cleaned up."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@contextmanager
def _signals() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# Triton wants a version directory even for an ensemble, which has no files.
ENSEMBLE_SOURCE = ModelSource(inline=InlineSource(files={"1/.keep": ""}))


@dataclass(frozen=True)
class Target:
    """One model to publish: its rendered config and where its files come from."""

    rendered: Rendered
    source: ModelSource


def _documents(filenames: Sequence[str]) -> list[dict[str, Any]] | int:
    try:
        docs = read_documents(filenames)
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return [d for d in docs if d.get("kind") in ("TritonModel", "ModelEnsemble")]


def _names(doc: dict[str, Any]) -> set[str]:
    names = ((doc.get("spec") or {}).get("modelName"), (doc.get("metadata") or {}).get("name"))
    return {str(n) for n in names if n}


def _load_targets(
    filenames: Sequence[str], model_name: str | None, everything: bool
) -> list[Target] | int:
    """The models to publish from ``filename``, rendered together so an ensemble is
    checked against the members in the same file (members first, ensembles last)."""
    docs = _documents(filenames)
    where = ", ".join(filenames)
    if isinstance(docs, int):
        return docs
    if model_name is not None:
        chosen = [d for d in docs if model_name in _names(d)]
    else:
        chosen = docs if everything or len(docs) == 1 else []
    if not chosen:
        found = ", ".join(sorted(str((d.get("metadata") or {}).get("name")) for d in docs))
        print(
            f"error: {where}: "
            + (
                f"no TritonModel or ModelEnsemble named {model_name!r}"
                if model_name
                else f"{len(docs)} models found ({found}); pick one with --model-name or use --all"
            ),
            file=sys.stderr,
        )
        return EXIT_USAGE
    results = render_documents(docs)
    by_doc = {id(doc): result for doc, result in zip(docs, results, strict=True)}
    targets = []
    invalid = False
    for doc in sorted(chosen, key=lambda d: d["kind"] == "ModelEnsemble"):
        rendered = by_doc[id(doc)]
        if not rendered.ok:
            invalid = True
            print(f"{rendered.resource} is invalid, not syncing:", file=sys.stderr)
            for problem in rendered.problems:
                print(f"  - {problem}", file=sys.stderr)
            continue
        source = (
            TritonModel.from_object(doc).spec.source
            if doc["kind"] == "TritonModel"
            else ENSEMBLE_SOURCE
        )
        targets.append(Target(rendered, source))
    return EXIT_INVALID if invalid else targets


def _layout(args: argparse.Namespace) -> RepositoryLayout:
    return layout_for(args.repository, args.state_dir)


def _request(args: argparse.Namespace, layout: RepositoryLayout, target: Target) -> SyncRequest:
    revision = args.revision or target.rendered.revision
    return SyncRequest(
        name=target.rendered.triton_name,
        source=target.source,
        # The revision travels inside the config, so each Triton pod can be asked
        # which revision it really loaded (see desired/triton/loading.py).
        pbtxt=stamp_revision(target.rendered.pbtxt, revision),
        revision=revision,
        layout=layout,
        options=FetchOptions(
            credentials_dir=args.credentials_dir,
            pvc_root=args.pvc_root,
            limits=ExtractionLimits(
                args.max_extract_bytes, args.max_members, max(0.0, args.max_expansion_ratio)
            ),
            max_download_bytes=args.max_download_bytes,
            concurrency=max(1, args.concurrency),
            multipart_chunk_bytes=max(5 * 1024 * 1024, args.multipart_chunk_size),
            timeout=args.timeout,
            progress_interval=args.progress_interval,
        ),
        force=args.force,
        keep=tuple(args.keep_revision),
        verify=args.verify,
        lock_timeout=args.lock_timeout,
    )


def cmd_sync(args: argparse.Namespace, out: TextIO) -> int:
    """The ``sync`` subcommand (``func`` of its parser). Logs go to stderr."""
    if args.remove == bool(args.filename):
        print("error: give either -f MODEL.yaml or --remove --model-name NAME", file=sys.stderr)
        return EXIT_USAGE
    if args.remove and not (args.model_name and MODEL_NAME_RE.match(args.model_name)):
        print("error: --remove needs --model-name with a valid Triton model name", file=sys.stderr)
        return EXIT_USAGE
    try:
        layout = _layout(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    level = args.log_level or ("WARNING" if args.quiet else "INFO")
    logging_setup = logfmt.configure(sys.stderr, logging.getLevelName(level), args.log_format)
    try:
        with _signals():
            if args.remove:
                remove_model(layout, args.model_name, args.lock_timeout)
                return EXIT_OK
            targets = _load_targets(args.filename, args.model_name, args.all)
            if isinstance(targets, int):
                return targets
            for target in targets:
                request = _request(args, layout, target)
                if request.revision != target.rendered.revision:
                    emit(
                        log,
                        "revision differs from this sync's own computation: publishing "
                        "under the given revision, with this image's rendering of the config",
                        level=logging.WARNING,
                        model=request.name,
                        given=request.revision,
                        computed=target.rendered.revision,
                    )
                outcome = sync_model(request)
                print(
                    f"{outcome.model}: revision {outcome.revision} "
                    + ("published" if outcome.changed else "already published"),
                    file=out,
                )
            return EXIT_OK
    except (SyncError, OSError) as raised:
        # Sources wrap their own I/O errors; an OSError left over is a local write.
        failure = raised if isinstance(raised, SyncError) else local_error(raised, "syncing")
        log.error("sync failed", extra={"fields": {"error": failure.kind, "detail": str(failure)}})
        return failure.exit_code
    except Interrupted as signal_raised:
        log.error(
            "sync interrupted: previous revision left in place",
            extra={"fields": {"signal": str(signal_raised)}},
        )
        return 128 + signal_raised.signum
    finally:
        logfmt.unconfigure(logging_setup)
