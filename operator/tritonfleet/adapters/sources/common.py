"""What every fetcher shares: its options, its result, the version-policy step
and the secret redaction the log formatter applies.

A fetcher lists its source, lets :func:`choose` apply the version policy (a pure
plan from ``desired.triton.repository``), then writes the chosen files into a
:class:`~tritonfleet.adapters.sources.staging.Staging`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tritonfleet.adapters.sources.errors import LocalStorageError, SourceNotFound, UnsafeSource
from tritonfleet.adapters.sources.staging import Staging, emit
from tritonfleet.desired.triton.repository import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    ExtractionLimits,
    FileSelection,
    Policy,
    format_bytes,
    select_files,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchOptions:
    """Knobs from the command line that fetchers need."""

    credentials_dir: Path | None = None
    pvc_root: Path | None = None  # where the claim is mounted; default /pvc/<claimName>
    limits: ExtractionLimits = field(default_factory=ExtractionLimits)
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES  # one model's download, in all
    concurrency: int = 8
    multipart_chunk_bytes: int = 16 * 1024 * 1024
    timeout: float = 60.0
    progress_interval: float = 5.0


@dataclass(frozen=True)
class FetchResult:
    selection: FileSelection
    source_fingerprint: str | None = None
    fetched_bytes: int = 0


def check_download_size(size: int, options: FetchOptions, where: str) -> None:
    """Refuse a download over ``--max-download-bytes`` (declared or counted so far)."""
    if size > options.max_download_bytes:
        raise UnsafeSource(
            f"{where}: more than {format_bytes(options.max_download_bytes)} to download "
            "(limit --max-download-bytes)"
        )


def choose(paths: Iterable[PurePosixPath], policy: Policy, where: str) -> FileSelection:
    """Apply the version policy to a listing, log the outcome, refuse a source
    that cannot satisfy it (Triton would refuse to load it later anyway)."""
    selection = select_files(paths, policy)
    plan = selection.plan
    if plan.missing:
        have = ", ".join(str(v) for v in (*plan.keep, *plan.drop)) or "none"
        raise SourceNotFound(
            f"{where}: versionPolicy {policy.describe()} asks for version(s) "
            f"{', '.join(str(v) for v in plan.missing)}, which the source does not have "
            f"(it has: {have})"
        )
    if not plan.keep:
        raise SourceNotFound(
            f"{where}: no model version directories (1/, 2/, ...) in the source; "
            "Triton needs at least one"
        )
    if selection.source_config:
        emit(
            log,
            "source config.pbtxt ignored: the config rendered from the spec wins",
            source=where,
        )
    for path in selection.ignored:
        emit(log, "source entry ignored (reserved name)", level=logging.WARNING, entry=str(path))
    emit(
        log,
        "versions planned",
        policy=policy.describe(),
        keep=",".join(map(str, plan.keep)),
        drop=",".join(map(str, plan.drop)) or "-",
        files=len(selection.fetch),
    )
    return selection


def ensure_space(staging: Staging, needed: int) -> None:
    """Fail before downloading what cannot fit, rather than at 99%."""
    try:
        st = os.statvfs(staging.root)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if needed > free:
        raise LocalStorageError(
            f"disk full: the model needs {format_bytes(needed)}, "
            f"the repository volume has {format_bytes(free)} free"
        )


# --- secrets ------------------------------------------------------------------

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a credential so :func:`redact` removes it from any log line."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
