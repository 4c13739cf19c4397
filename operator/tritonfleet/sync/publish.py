"""The filesystem side of publishing: locks, the live symlink, revisions, GC.

``desired.triton.repository.RepositoryLayout`` says where things go; this module makes
the moves, each chosen so that a crash between any two of them leaves Triton
with a complete model:

1. staging is written and fsynced under the state directory (never linked);
2. ``rename(staging, revisions/<model>/<rev>)`` — complete or absent;
3. the revision's *pin* (``pins/<model>/<revision>/<model>``, the one-model
   repository Triton pods of that revision read) is made or re-pointed: a link
   made in ``tmp/`` and renamed over the old one;
4. a new relative symlink is made in ``tmp/`` and ``rename(2)``-d over
   ``<repo>/<model>`` — Triton sees the old revision or the new one, never a
   mix, never nothing; the repository directory is fsynced. Last of the steps
   that can fail for want of space (3 needs inodes), so a sync that fails on a
   full volume leaves the live revision as it was;
5. revisions other than the live one, the one it replaced and those still served
   (``keep``: their pins) are deleted, and pins left pointing at nothing go too.

A crash after 2 leaves a complete unpublished revision, which the next sync of
the same revision publishes without fetching again. Stale staging directories
(a ``kill -9`` mid-download) are removed by the next sync of that model, under
its lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import glob
import hashlib
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tritonfleet.adapters.sources import LocalStorageError, SyncError, emit, fsync_dir, local_error
from tritonfleet.desired.triton.repository import (
    MANIFEST_NAME,
    Manifest,
    RepositoryLayout,
    default_state_dir,
    fallback_state_dir,
    revisions_to_collect,
)

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class LockBusy(SyncError):  # noqa: N818 - named for what happened
    """Another sync of the same model held the lock for longer than allowed."""

    exit_code = 9
    kind = "busy"


@dataclass(frozen=True)
class Live:
    """What ``<repo>/<model>`` is right now."""

    kind: str  # "ours" | "missing" | "directory" | "foreign-link"
    dirname: str | None = None  # our revision directory name, when kind == "ours"


def layout_for(repository: Path, state: Path | None = None) -> RepositoryLayout:
    """The layout for ``repository``: ``state`` if given, else beside the
    repository when that is on the same filesystem, else inside it.

    The operator's Jobs mount the volume at the repository itself (``/models``),
    where "beside" is the container's (read-only) root filesystem; falling back
    keeps those working, with a warning from ``sync`` about the index.
    """
    repo = PurePosixPath(repository.absolute())
    if state is not None:
        return RepositoryLayout.for_repository(repo, PurePosixPath(state.absolute()))
    beside = default_state_dir(repo)
    existing = repository if repository.exists() else None
    parent = repository.absolute().parent
    if existing is not None and parent.exists() and existing.stat().st_dev != parent.stat().st_dev:
        return RepositoryLayout.for_repository(repo, fallback_state_dir(repo))
    return RepositoryLayout.for_repository(repo, beside)


class Repository:
    """One repository and its state directory, as real paths."""

    def __init__(self, layout: RepositoryLayout) -> None:
        self.layout = layout
        self.repository = Path(layout.repository)
        self.state = Path(layout.state)

    # -- set-up and locking ---------------------------------------------------------

    def ensure_dirs(self) -> None:
        try:
            self.repository.mkdir(parents=True, exist_ok=True)
            for sub in ("revisions", "staging", "tmp", "locks", "pins"):
                (self.state / sub).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise local_error(error, f"creating {error.filename}", self.repository) from None
        if self.repository.stat().st_dev != self.state.stat().st_dev:
            raise LocalStorageError(
                f"the state directory {self.state} is on another filesystem than the "
                f"repository {self.repository}: publishing needs rename(2) between them. "
                "Mount the volume above the repository directory, or pass --state-dir on the "
                "same volume"
            )

    @contextmanager
    def lock(self, model: str, timeout: float) -> Iterator[None]:
        """Hold ``locks/<model>.lock`` (flock) for the duration.

        ``--remove`` deletes the lock file while holding it, and another sync may
        be waiting on that very file: after getting the lock, check that the path
        still names the file locked (same inode), else start over on the new one.
        Without that check, a waiter and a newcomer would each lock a different
        file and publish at once.
        """
        path = Path(self.layout.lock_path(model))
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as error:
                raise local_error(error, f"opening lock {path}", self.state) from None
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise LockBusy(
                                f"another sync of model {model!r} still holds {path} after "
                                f"{timeout:.0f}s"
                            ) from None
                        if not waited:
                            emit(log, "waiting for another sync of this model", lock=str(path))
                            waited = True
                        time.sleep(0.2)
                if _same_file(fd, path):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the file was removed (and maybe re-created) meanwhile
        try:
            yield
        finally:
            os.close(fd)  # releases the flock

    # -- reading the current state ------------------------------------------------

    def live(self, model: str) -> Live:
        path = self.repository / model
        try:
            st = path.lstat()
        except FileNotFoundError:
            return Live("missing")
        if stat.S_ISLNK(st.st_mode):
            dirname = self.layout.revision_from_link(model, _link_text(path))
            return Live("ours", dirname) if dirname else Live("foreign-link")
        return Live("directory")

    def revision_path(self, model: str, dirname: str) -> Path:
        return Path(self.layout.revision_dir(model, dirname))

    def revision_names(self, model: str) -> list[str]:
        try:
            return sorted(p.name for p in Path(self.layout.revisions_dir(model)).iterdir())
        except FileNotFoundError:
            return []

    def manifest(self, directory: Path) -> Manifest | None:
        try:
            return Manifest.from_json((directory / MANIFEST_NAME).read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def problems(self, directory: Path, manifest: Manifest, deep: bool) -> dict[str, str]:
        """How a published revision differs from its manifest, per file (cheap:
        presence, type and size; ``deep``: sha256 of every file too)."""
        found = {}
        for name, entry in manifest.files.items():
            path = directory / name
            try:
                st = path.lstat()
            except OSError:
                found[name] = "missing"
                continue
            if entry.kind == "symlink":
                if not stat.S_ISLNK(st.st_mode) or _link_text(path) != entry.target:
                    found[name] = "symlink changed"
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                found[name] = f"size {st.st_size}, manifest says {entry.size}"
                continue
            if deep:
                digest = _sha256(path)
                if digest != entry.sha256:
                    found[name] = f"sha256 {digest}, manifest says {entry.sha256}"
        return found

    # -- staging ---------------------------------------------------------------------

    def new_staging_path(self, model: str, revision: str) -> Path:
        return (
            Path(self.layout.staging_dir(model))
            / f"{revision}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        )

    def clean_staging(self, model: str) -> int:
        """Remove what interrupted syncs of ``model`` left (we hold its lock)."""
        directory = Path(self.layout.staging_dir(model))
        removed = 0
        if directory.is_dir():
            for leftover in directory.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)
                removed += 1
        # a symlink made for the switch, if a signal landed just before its rename
        for link in Path(self.layout.tmp_dir).glob(f"{glob.escape(model)}.*"):
            link.unlink(missing_ok=True)
            removed += 1
        if removed:
            emit(log, "removed leftovers of an interrupted sync", model=model, entries=removed)
        return removed

    def promote(self, staging: Path, model: str, dirname: str) -> Path:
        target = self.revision_path(model, dirname)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(target)
            fsync_dir(target.parent)
            fsync_dir(staging.parent)
        except OSError as error:
            raise local_error(
                error, f"moving the staged revision to {target}", self.state
            ) from None
        return target

    # -- publishing ------------------------------------------------------------------

    def switch(self, model: str, dirname: str) -> str | None:
        """Point ``<repo>/<model>`` at revision ``dirname`` atomically; returns
        the revision directory it replaced (None if there was none of ours)."""
        before = self.live(model)
        replaced = before.dirname
        link_text = str(self.layout.link_target(model, dirname))
        tmp = Path(self.layout.tmp_dir) / f"{model}.{uuid.uuid4().hex[:8]}"
        target = self.repository / model
        try:
            tmp.symlink_to(link_text)
            if before.kind == "directory":
                replaced = self._replace_directory(tmp, target, model)
            else:
                if before.kind == "foreign-link":
                    emit(
                        log,
                        "replacing a symlink tritonfleet did not make",
                        level=logging.WARNING,
                        path=str(target),
                        target=_link_text(target),
                    )
                tmp.rename(target)
            fsync_dir(self.repository)
        except OSError as error:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise local_error(error, f"publishing {target}", self.repository) from None
        return replaced

    def _replace_directory(self, link: Path, target: Path, model: str) -> str:
        """``<repo>/<model>`` is a plain directory (made by hand, or by another
        tool): swap it for the link in one step, and keep it as a revision."""
        keep_as = self.revision_path(model, f"unmanaged-{time.strftime('%Y%m%dT%H%M%S')}")
        keep_as.parent.mkdir(parents=True, exist_ok=True)
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = getattr(libc, "renameat2", None)
        exchanged = False
        if renameat2 is not None:
            result = renameat2(
                _AT_FDCWD, os.fsencode(link), _AT_FDCWD, os.fsencode(target), _RENAME_EXCHANGE
            )
            exchanged = result == 0
            if not exchanged and ctypes.get_errno() not in (errno.ENOSYS, errno.EINVAL):
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code), str(target))
        if exchanged:
            link.rename(keep_as)  # `link` now names the old directory
        else:
            # No RENAME_EXCHANGE (old kernel, some network filesystems): two
            # renames, with the model briefly absent rather than half-written.
            target.rename(keep_as)
            link.rename(target)
        emit(
            log,
            "moved a directory tritonfleet did not make out of the repository",
            level=logging.WARNING,
            kept_at=str(keep_as),
        )
        return keep_as.name

    def pin(self, model: str, revision: str, dirname: str) -> None:
        """Make ``pins/<model>/<revision>/<model>`` point at revision directory ``dirname``
        (atomically replacing an older pin of that revision, e.g. a damaged copy's)."""
        repository = Path(self.layout.pin_repository(model, revision))
        link = repository / model
        text = str(self.layout.pin_target(model, revision, dirname))
        with contextlib.suppress(OSError):
            if _link_text(link) == text:
                return
        tmp = Path(self.layout.tmp_dir) / f"pin-{model}.{uuid.uuid4().hex[:8]}"
        try:
            repository.mkdir(parents=True, exist_ok=True)
            tmp.symlink_to(text)
            tmp.rename(link)
            fsync_dir(repository)
        except OSError as error:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise local_error(error, f"pinning {link}", self.state) from None

    def pinned_dirname(self, model: str, revision: str) -> str | None:
        """The revision directory the pin of ``revision`` points at, if it has one."""
        link = Path(self.layout.pin_repository(model, revision)) / model
        try:
            target = PurePosixPath(_link_text(link))
        except OSError:
            return None
        return target.name if target.parent.name == model else None

    def collect(
        self, model: str, live: str, previous: str | None, keep: tuple[str, ...] = ()
    ) -> list[str]:
        """Delete the revision directories nothing needs any more, then the pins that
        pointed at them. ``keep``: revisions still served (their pins' directories stay)."""
        kept_dirs = [d for r in keep if (d := self.pinned_dirname(model, r)) is not None]
        removed = []
        for name in revisions_to_collect(self.revision_names(model), live, previous, kept_dirs):
            shutil.rmtree(self.revision_path(model, name), ignore_errors=True)
            removed.append(name)
        pins = Path(self.layout.pins_dir(model))
        with contextlib.suppress(FileNotFoundError):
            for pinned in pins.iterdir():
                if not (pinned / model).exists():  # a dangling link: its revision went
                    shutil.rmtree(pinned, ignore_errors=True)
        return removed

    # -- removal -----------------------------------------------------------------------

    def remove(self, model: str) -> bool:
        """Unpublish ``model`` and delete its revisions; False if nothing was ours."""
        now = self.live(model)
        target = self.repository / model
        if now.kind == "directory":
            emit(
                log,
                "model directory not made by tritonfleet: left in place",
                level=logging.WARNING,
                path=str(target),
            )
        elif now.kind != "missing":
            try:
                target.unlink()
                fsync_dir(self.repository)
            except OSError as error:
                raise local_error(error, f"removing {target}", self.repository) from None
        found = now.kind in ("ours", "foreign-link")
        for path in (
            Path(self.layout.revisions_dir(model)),
            Path(self.layout.pins_dir(model)),
            Path(self.layout.staging_dir(model)),
            Path(self.layout.lock_path(model)),
        ):
            if path.is_dir():
                shutil.rmtree(path)
                found = True
            elif path.exists():
                path.unlink()
        return found


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _link_text(path: Path) -> str:
    # Path.readlink() would normalise the text ("a//b" -> "a/b"); compare it raw.
    return os.readlink(path)  # noqa: PTH115


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
