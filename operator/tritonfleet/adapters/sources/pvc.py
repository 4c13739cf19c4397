"""PVC sources: copy a directory from another claim mounted into the sync Job.

The Job mounts ``claimName`` read-only at ``--pvc-root`` (default
``/pvc/<claimName>``) and the model lives at ``path`` inside it. Regular files
and directories are copied (streamed, hashed); a symlink is followed only when
it resolves inside the source directory, so a model dir cannot smuggle in
``/etc/shadow`` or another tenant's files. Unchanged files (same size and
mtime) are hard-linked from the live revision instead of copied again.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tritonfleet.adapters.sources.common import FetchOptions, FetchResult, choose, ensure_space
from tritonfleet.adapters.sources.errors import (
    SourceAccessDenied,
    SourceNotFound,
    SyncError,
    UnsafeSource,
)
from tritonfleet.adapters.sources.staging import CHUNK, Progress, Staging, emit
from tritonfleet.api.model import PvcSource
from tritonfleet.desired.triton.repository import Policy, UnsafeMember, safe_relative_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _File:
    source: Path
    size: int
    mtime_ns: int
    executable: bool


def _read_error(error: OSError, what: str) -> SyncError:
    if error.errno in (errno.EACCES, errno.EPERM):
        return SourceAccessDenied(f"{what}: permission denied")
    if error.errno == errno.ENOENT:
        return SourceNotFound(f"{what}: no such file or directory")
    return SyncError(f"{what}: {error.strerror or error}")


def source_dir(spec: PvcSource, pvc_root: Path | None) -> Path:
    root = pvc_root if pvc_root is not None else Path("/pvc") / spec.claim_name
    inside = spec.path.strip("/")
    if not inside:
        return root
    try:
        return root.joinpath(*safe_relative_path(inside).parts)
    except UnsafeMember as error:
        raise UnsafeSource(f"spec.source.pvc.path: {error}") from None


def _walk(top: Path, claim: str) -> dict[PurePosixPath, _File]:
    real_top = os.path.realpath(top)
    files: dict[PurePosixPath, _File] = {}

    def fail(error: OSError) -> None:
        raise _read_error(error, f"PVC {claim}: listing {error.filename}")

    for dirpath, dirnames, filenames in os.walk(top, onerror=fail, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = here / name
            rel = PurePosixPath(path.relative_to(top).as_posix())
            try:
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    resolved = os.path.realpath(path)
                    if not resolved.startswith(real_top + os.sep):
                        raise UnsafeSource(
                            f"PVC {claim}: {rel} is a symlink to {str(path.readlink())!r}, "
                            "outside the model directory"
                        )
                    st = Path(resolved).stat()
                    if stat.S_ISDIR(st.st_mode):
                        raise UnsafeSource(f"PVC {claim}: {rel} is a symlink to a directory")
            except OSError as error:
                raise _read_error(error, f"PVC {claim}: {rel}") from None
            if stat.S_ISDIR(st.st_mode):
                continue  # os.walk descends into it
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeSource(f"PVC {claim}: {rel} is not a regular file")
            files[rel] = _File(path, st.st_size, st.st_mtime_ns, bool(st.st_mode & 0o111))
    return files


def fetch_pvc(
    spec: PvcSource, policy: Policy, staging: Staging, options: FetchOptions
) -> FetchResult:
    top = source_dir(spec, options.pvc_root)
    where = f"pvc://{spec.claim_name}/{spec.path.strip('/')}"
    if not top.is_dir():
        raise SourceNotFound(
            f"{where}: {top} is not a directory (is the claim mounted there? see --pvc-root)"
        )
    files = _walk(top, spec.claim_name)
    selection = choose(files, policy, where)
    todo = []
    for rel in selection.fetch:
        item = files[rel]
        fingerprint = f"pvc:{spec.claim_name}:{item.size}:{item.mtime_ns}"
        if not staging.reuse(rel, fingerprint):
            todo.append((rel, item, fingerprint))
    if staging.reused_files:
        emit(log, "reused unchanged files from the live revision", files=staging.reused_files)
    total = sum(item.size for _, item, _ in todo)
    ensure_space(staging, total)
    progress = Progress("pvc", total, options.progress_interval, files=len(todo))
    for rel, item, fingerprint in todo:
        try:
            source = item.source.open("rb", buffering=0)
        except OSError as error:
            raise _read_error(error, f"{where}: {rel}") from None
        with (
            source,
            staging.create(
                rel, executable=item.executable, fingerprint=fingerprint, on_bytes=progress.add
            ) as target,
        ):
            while True:
                try:
                    chunk = source.read(CHUNK)
                except OSError as error:
                    raise _read_error(error, f"{where}: {rel}") from None
                if not chunk:
                    break
                target.write(chunk)
    progress.finish()
    return FetchResult(selection, fetched_bytes=progress.done)
