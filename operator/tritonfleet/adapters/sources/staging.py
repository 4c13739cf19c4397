"""The staging directory a sync writes into, and the progress it reports.

Every fetcher writes through :class:`Staging`, never with bare ``open()``, so
each file is checked against the path rules of ``desired.triton.repository``, hashed
(sha256) while it is written, fsynced, and recorded for the manifest; and local
write failures (disk full, permission denied) surface as
:class:`~tritonfleet.adapters.sources.errors.LocalStorageError` naming the file.
The directory is invisible to Triton until ``sync`` renames it into place.

Files identical to the live revision's (same source fingerprint, e.g. S3 ETag)
are hard-linked instead of fetched again: published files are never modified in
place, so sharing them between revisions is safe and makes "a version was added"
cost only the new version.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

from tritonfleet.adapters.sources.errors import LocalStorageError, UnsafeSource
from tritonfleet.desired.triton.repository import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    UnsafeMember,
    format_bytes,
    safe_relative_path,
)

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024


def emit(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event; ``sync``'s formatter prints it as key=value pairs."""
    logger.log(level, event, extra={"fields": fields})


def local_error(error: OSError, what: str, where: Path | None = None) -> LocalStorageError:
    """An OSError from writing the repository, as the user needs to read it."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        free = ""
        if where is not None:
            try:
                st = os.statvfs(where)
                free = f" ({format_bytes(st.f_bavail * st.f_frsize)} free)"
            except OSError:
                pass
        return LocalStorageError(f"disk full while {what}{free}: {reason}")
    if error.errno in (errno.EACCES, errno.EPERM):
        return LocalStorageError(f"permission denied while {what}: {reason}")
    if error.errno == errno.EROFS:
        return LocalStorageError(f"read-only filesystem while {what}")
    return LocalStorageError(f"{what} failed: {reason}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Progress:
    """Bytes moved for one source, logged every ``interval`` seconds.

    Thread-safe: boto3's transfer threads report through :meth:`add`.
    """

    def __init__(
        self, source: str, total: int | None = None, interval: float = 5.0, files: int = 0
    ) -> None:
        self.source = source
        self.total = total
        self.files = files
        self.interval = interval
        self.done = 0
        self.started = time.monotonic()
        self._last_log = self.started
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last_log < self.interval:
                return
            self._last_log = now
        self._log("progress")

    def rate(self) -> float:
        """MB/s (10^6 bytes) since the start: what network dashboards show."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return self.done / elapsed / 1e6

    def _log(self, event: str) -> None:
        fields: dict[str, Any] = {
            "source": self.source,
            "bytes": self.done,
            "mbps": round(self.rate(), 1),
        }
        if self.total:
            fields["total_bytes"] = self.total
            fields["percent"] = round(100 * self.done / self.total, 1)
            rate = self.rate() * 1e6
            if rate > 0 and self.done < self.total:
                fields["eta_s"] = round((self.total - self.done) / rate)
        emit(log, event, **fields)

    def finish(self) -> None:
        fields: dict[str, Any] = {
            "source": self.source,
            "bytes": self.done,
            "seconds": round(time.monotonic() - self.started, 2),
            "mbps": round(self.rate(), 1),
        }
        if self.files:
            fields["files"] = self.files
        emit(log, "fetched", **fields)


@dataclass(frozen=True)
class PreviousRevision:
    """The live revision, whose files can be reused by hard link."""

    path: Path
    manifest: Manifest


class StagedFile:
    """A new file in staging: hashed as it is written, fsynced on close.

    Past the first few MiB, writes go to a writer thread through a short queue,
    so hashing and receiving the next chunk overlap the disk write (hashlib and
    os.write both release the GIL); measured on the 2-core machine this is most
    of the gap to a plain unhashed copy. Small files never start the thread.
    """

    PIPELINE_AFTER = 8 * CHUNK
    QUEUE_CHUNKS = 8

    def __init__(
        self,
        staging: Staging,
        rel: PurePosixPath,
        fd: int,
        fingerprint: str | None,
        on_bytes: Callable[[int], None] | None,
    ) -> None:
        self._staging = staging
        self.rel = rel
        self._fd = fd
        self._hash = hashlib.sha256()
        self._fingerprint = fingerprint
        self._on_bytes = on_bytes
        self.size = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._writer: threading.Thread | None = None
        self._error: OSError | None = None

    def _write_all(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _drain(self) -> None:
        assert self._queue is not None
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write_all(item)
                except OSError as error:
                    self._error = error  # reported by the next write() or close()

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise local_error(self._error, f"writing {self.rel}", self._staging.root)

    def write(self, data: bytes | memoryview) -> None:
        self._raise_pending()
        self._hash.update(data)
        if self._queue is None and self.size + len(data) > self.PIPELINE_AFTER:
            self._queue = queue.Queue(maxsize=self.QUEUE_CHUNKS)
            self._writer = threading.Thread(target=self._drain, name="staged-write", daemon=True)
            self._writer.start()
        if self._queue is not None:
            # the caller may reuse its buffer: the queue must own the bytes
            self._queue.put(data if isinstance(data, bytes) else bytes(data))
        else:
            try:
                self._write_all(data)
            except OSError as error:
                raise local_error(error, f"writing {self.rel}", self._staging.root) from None
        self.size += len(data)
        if self._on_bytes is not None:
            self._on_bytes(len(data))

    def _stop_writer(self) -> None:
        if self._queue is not None and self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._queue = None

    def sha256(self) -> str:
        """Digest of what has been written so far."""
        return self._hash.hexdigest()

    def close(self) -> FileEntry:
        try:
            self._stop_writer()
            self._raise_pending()
            os.fsync(self._fd)
        except OSError as error:
            raise local_error(error, f"flushing {self.rel}", self._staging.root) from None
        finally:
            os.close(self._fd)
        entry = FileEntry(self.size, self._hash.hexdigest(), fingerprint=self._fingerprint)
        self._staging.record(self.rel, entry)
        return entry

    def abort(self) -> None:
        try:
            self._stop_writer()
        finally:
            os.close(self._fd)

    def __enter__(self) -> StagedFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class Staging:
    """A model directory being assembled, plus a scratch directory beside it
    for whole downloads (archives) that are not part of the model."""

    def __init__(self, root: Path, previous: PreviousRevision | None = None) -> None:
        self.root = root
        self.scratch = root.with_name(root.name + ".scratch")
        self.previous = previous
        self.entries: dict[str, FileEntry] = {}
        self.reused_files = 0
        self.reused_bytes = 0
        self._dirs: set[Path] = set()
        self._symlinks: set[PurePosixPath] = set()
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=False)
        self._dirs.add(root)

    # -- paths -----------------------------------------------------------------

    def check(self, name: str) -> PurePosixPath:
        try:
            return safe_relative_path(name)
        except UnsafeMember as error:
            raise UnsafeSource(str(error)) from None

    def path(self, rel: PurePosixPath) -> Path:
        return self.root.joinpath(*rel.parts)

    def prepare(self, rel: PurePosixPath) -> Path:
        """The absolute path for a new entry ``rel``, parents created.

        Refuses to write through a symlink made earlier in this staging: link
        targets are checked lexically, and writing through one could land
        outside the model directory even when every link looks fine alone.
        """
        if str(rel) == MANIFEST_NAME:
            raise UnsafeSource(f"{rel}: reserved for the tritonfleet manifest")
        with self._lock:
            if str(rel) in self.entries:
                raise UnsafeSource(f"{rel}: duplicate entry")
            for parent in reversed(rel.parents[:-1]):
                if parent in self._symlinks:
                    raise UnsafeSource(f"{rel}: would be written through symlink {parent}")
                if str(parent) in self.entries:
                    raise UnsafeSource(f"{rel}: {parent} is already a file")
            target = self.path(rel)
            parent_dir = target.parent
            try:
                parent_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise local_error(error, f"creating {parent_dir}", self.root) from None
            for directory in (parent_dir, *parent_dir.parents):
                if directory == self.root or self.root not in directory.parents:
                    break
                self._dirs.add(directory)
            return target

    def mkdir(self, rel: PurePosixPath) -> None:
        """An explicit (possibly empty) directory, e.g. an archive's ``2/``."""
        path = self.prepare(rel)
        try:
            path.mkdir(exist_ok=True)
        except FileExistsError:
            raise UnsafeSource(f"{rel}: directory over an earlier entry") from None
        except OSError as error:
            raise local_error(error, f"creating {rel}", self.root) from None
        if path.is_symlink() or not path.is_dir():
            raise UnsafeSource(f"{rel}: directory over an earlier entry")
        with self._lock:
            self._dirs.add(path)

    def record(self, rel: PurePosixPath, entry: FileEntry) -> None:
        with self._lock:
            self.entries[str(rel)] = entry

    # -- writing ---------------------------------------------------------------

    def create(
        self,
        rel: PurePosixPath,
        *,
        executable: bool = False,
        fingerprint: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> StagedFile:
        target = self.prepare(rel)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(target, flags, 0o755 if executable else 0o644)
        except FileExistsError:
            raise UnsafeSource(f"{rel}: duplicate entry") from None
        except OSError as error:
            raise local_error(error, f"creating {rel}", self.root) from None
        return StagedFile(self, rel, fd, fingerprint, on_bytes)

    def write_bytes(self, rel: PurePosixPath, data: bytes) -> FileEntry:
        with self.create(rel) as staged:
            staged.write(data)
        return self.entries[str(rel)]

    def seal(
        self,
        rel: PurePosixPath,
        *,
        fingerprint: str | None = None,
        md5: str | None = None,
    ) -> tuple[FileEntry, str | None]:
        """Hash and fsync a file another writer (boto3) put at ``prepare(rel)``.

        Returns the entry and, when asked, the MD5 (S3's ETag of a single-part
        upload) computed in the same pass.
        """
        path = self.path(rel)
        sha = hashlib.sha256()
        md5_hash = hashlib.md5(usedforsecurity=False) if md5 else None
        size = 0
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                with os.fdopen(os.dup(fd), "rb", buffering=0) as reader:
                    while chunk := reader.read(CHUNK):
                        sha.update(chunk)
                        if md5_hash is not None:
                            md5_hash.update(chunk)
                        size += len(chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            raise local_error(error, f"checksumming {rel}", self.root) from None
        entry = FileEntry(size, sha.hexdigest(), fingerprint=fingerprint)
        self.record(rel, entry)
        return entry, (md5_hash.hexdigest() if md5_hash is not None else None)

    def symlink(self, rel: PurePosixPath, target: str) -> None:
        path = self.prepare(rel)
        try:
            path.symlink_to(target)
        except FileExistsError:
            raise UnsafeSource(f"{rel}: duplicate entry") from None
        except OSError as error:
            raise local_error(error, f"creating symlink {rel}", self.root) from None
        with self._lock:
            self._symlinks.add(rel)
        self.record(rel, FileEntry(0, "", kind="symlink", target=target))

    def hardlink(self, rel: PurePosixPath, existing: PurePosixPath) -> None:
        """A second name for a file already in this staging (tar hard links)."""
        entry = self.entries.get(str(existing))
        if entry is None or entry.kind != "file":
            raise UnsafeSource(f"{rel}: hard link to {existing}, which is not an earlier file")
        path = self.prepare(rel)
        try:
            os.link(self.path(existing), path)
        except OSError as error:
            raise local_error(error, f"linking {rel}", self.root) from None
        self.record(rel, entry)

    def reuse(self, rel: PurePosixPath, fingerprint: str | None) -> bool:
        """Hard-link ``rel`` from the live revision if it came from the same
        source object; False (fetch it) when anything differs or fails."""
        if self.previous is None or not fingerprint:
            return False
        entry = self.previous.manifest.files.get(str(rel))
        if entry is None or entry.kind != "file" or entry.fingerprint != fingerprint:
            return False
        source = self.previous.path.joinpath(*rel.parts)
        try:
            if source.lstat().st_size != entry.size:
                return False
            path = self.prepare(rel)
            os.link(source, path)
        except OSError:
            return False  # e.g. a filesystem without hard links: fetch instead
        self.record(rel, entry)
        with self._lock:
            self.reused_files += 1
            self.reused_bytes += entry.size
        return True

    # -- finishing ---------------------------------------------------------------

    def verify_symlinks(self) -> None:
        """Every symlink must resolve inside the model directory, judged with
        ``realpath`` on the finished tree (which no later write can change)."""
        root = os.path.realpath(self.root)
        for rel in sorted(self._symlinks):
            resolved = os.path.realpath(self.path(rel))
            if resolved != root and not resolved.startswith(root + os.sep):
                raise UnsafeSource(
                    f"symlink {rel} -> {self.entries[str(rel)].target} resolves outside "
                    "the model directory"
                )

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries.values() if e.kind == "file")

    def finish(self, manifest: Manifest) -> None:
        """Write the manifest and fsync every directory, deepest first, so the
        rename that publishes this tree publishes all of it."""
        self.verify_symlinks()
        with self.create(PurePosixPath("._manifest")) as staged:
            staged.write(manifest.to_json().encode())
        del self.entries["._manifest"]
        try:
            (self.root / "._manifest").rename(self.root / MANIFEST_NAME)
            for directory in sorted(self._dirs, key=lambda p: len(p.parts), reverse=True):
                fsync_dir(directory)
        except OSError as error:
            raise local_error(error, "flushing the staging directory", self.root) from None

    def discard(self) -> None:
        for path in (self.root, self.scratch):
            shutil.rmtree(path, ignore_errors=True)
