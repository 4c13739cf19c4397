"""Safe unpacking of downloaded model archives (tar, tgz, zip) into staging.

An archive is untrusted input that decides file names, so nothing is written
until every member has passed ``desired.triton.repository.check_member``: no absolute
paths, no ``..``, no device files, symlinks only to places inside the model,
hard links only to earlier members. Member count, *unpacked* bytes and the
expansion ratio (unpacked over archive size) are capped (``--max-members``,
``--max-extract-bytes``, ``--max-expansion-ratio``); bytes are counted as they
are written, so a zip bomb whose headers lie still trips the cap. A zip's member
count is read from its end record before its central directory is parsed, so a
zip of a million members is refused without holding a million entries in
memory. The first offending member is named in the error, and nothing of the
archive is published.
"""

from __future__ import annotations

import logging
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from tritonfleet.adapters.sources.common import choose, ensure_space
from tritonfleet.adapters.sources.errors import UnsafeSource
from tritonfleet.adapters.sources.staging import CHUNK, Progress, Staging, emit
from tritonfleet.desired.triton.repository import (
    ROOT,
    ExtractionLimits,
    FileSelection,
    MemberKind,
    Policy,
    UnsafeMember,
    check_member,
    safe_relative_path,
    strip_single_root,
    wanted,
)

log = logging.getLogger(__name__)

ArchiveKind = Literal["tar", "tgz", "zip"]


@dataclass
class Member:
    """One archive entry after its safety check, in archive order."""

    name: str  # as written in the archive, for error messages
    path: PurePosixPath
    kind: MemberKind
    size: int
    executable: bool
    link: str | None
    open: Callable[[], IO[bytes]]


def _tar_kind(info: tarfile.TarInfo) -> MemberKind:
    if info.isreg():
        return MemberKind.FILE
    if info.isdir():
        return MemberKind.DIR
    if info.issym():
        return MemberKind.SYMLINK
    if info.islnk():
        return MemberKind.HARDLINK
    return MemberKind.SPECIAL


_ZIP_UNIX = 3  # create_system of zips whose external_attr carries a Unix st_mode


def _zip_kind(info: zipfile.ZipInfo) -> MemberKind:
    mode = info.external_attr >> 16 if info.create_system == _ZIP_UNIX else 0
    # Many writers set permission bits without a file type: only an explicit
    # type other than "regular file" makes an entry special.
    file_type = stat.S_IFMT(mode)
    if file_type == stat.S_IFLNK:
        return MemberKind.SYMLINK
    if info.is_dir() or file_type == stat.S_IFDIR:
        return MemberKind.DIR
    if file_type not in (0, stat.S_IFREG):
        return MemberKind.SPECIAL
    return MemberKind.FILE


def _checked(name: str, kind: MemberKind, link: str | None) -> PurePosixPath:
    try:
        return check_member(name, kind, link)
    except UnsafeMember as error:
        raise UnsafeSource(f"archive refused: member {name!r}: {error.reason}") from None


def _check_limits(
    limits: ExtractionLimits, count: int, total: int, name: str, archive_bytes: int
) -> None:
    problem = limits.check(count, total, archive_bytes)
    if problem:
        raise UnsafeSource(f"archive refused at member {name!r}: {problem}")


_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"


def zip_entry_count(path: Path) -> int | None:
    """The member count a zip's end-of-central-directory record declares (zip64
    included), read from its last 64 KiB; None when there is no such record."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        start = max(0, size - (65535 + 22))
        handle.seek(start)
        tail = handle.read()
        at = tail.rfind(_EOCD)
        if at < 0 or len(tail) < at + 22:
            return None
        (count,) = struct.unpack_from("<H", tail, at + 10)
        locator = at - 20
        if count != 0xFFFF or locator < 0 or tail[locator : locator + 4] != _ZIP64_LOCATOR:
            return int(count)
        (offset,) = struct.unpack_from("<Q", tail, locator + 8)
        handle.seek(offset)
        record = handle.read(56)
        if len(record) < 40 or not record.startswith(b"PK\x06\x06"):
            return None
        (total,) = struct.unpack_from("<Q", record, 32)
        return int(total)


@contextmanager
def _members(path: Path, kind: ArchiveKind, limits: ExtractionLimits) -> Iterator[list[Member]]:
    """Every member, checked, with a way to read it; refuses the whole archive
    on the first bad member before anything is extracted."""
    archive_bytes = path.stat().st_size
    try:
        if kind == "zip":
            declared = zip_entry_count(path)
            if declared is not None and declared > limits.max_members:
                raise UnsafeSource(
                    f"archive refused: it declares {declared} members, more than "
                    f"{limits.max_members} (limit --max-members)"
                )
            with zipfile.ZipFile(path) as archive:
                yield _zip_members(archive, limits, archive_bytes)
        else:
            with tarfile.open(path, mode="r:gz" if kind == "tgz" else "r:") as tar:
                yield _tar_members(tar, limits, archive_bytes)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise UnsafeSource(f"not a valid {kind} archive: {error}") from None


def _zip_members(
    archive: zipfile.ZipFile, limits: ExtractionLimits, archive_bytes: int
) -> list[Member]:
    members = []
    declared = 0
    for count, info in enumerate(archive.infolist(), start=1):
        mkind = _zip_kind(info)
        if info.flag_bits & 0x1:
            raise UnsafeSource(f"archive refused: member {info.filename!r} is encrypted")
        link = None
        if mkind is MemberKind.SYMLINK:
            if info.file_size > 4096:
                raise UnsafeSource(f"archive refused: member {info.filename!r}: oversized symlink")
            link = archive.read(info).decode("utf-8", "replace")
        declared += info.file_size
        _check_limits(limits, count, declared, info.filename, archive_bytes)
        members.append(
            Member(
                info.filename,
                _checked(info.filename, mkind, link),
                mkind,
                info.file_size,
                info.create_system == _ZIP_UNIX and bool((info.external_attr >> 16) & 0o111),
                link,
                partial(archive.open, info),
            )
        )
    return members


def _tar_members(
    tar: tarfile.TarFile, limits: ExtractionLimits, archive_bytes: int
) -> list[Member]:
    members = []
    declared = 0
    for count, info in enumerate(tar, start=1):
        mkind = _tar_kind(info)
        link = info.linkname if mkind in (MemberKind.SYMLINK, MemberKind.HARDLINK) else None
        declared += info.size if mkind is MemberKind.FILE else 0
        _check_limits(limits, count, declared, info.name, archive_bytes)
        members.append(
            Member(
                info.name,
                _checked(info.name, mkind, link),
                mkind,
                info.size,
                bool(info.mode & 0o111),
                link,
                partial(_tar_open, tar, info),
            )
        )
    return members


def _tar_open(tar: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    handle = tar.extractfile(info)
    if handle is None:
        raise UnsafeSource(f"archive member {info.name!r} has no data")
    return handle


def extract_archive(
    path: Path,
    kind: ArchiveKind,
    staging: Staging,
    policy: Policy,
    limits: ExtractionLimits,
    *,
    where: str,
    fingerprint: str | None = None,
    progress_interval: float = 5.0,
) -> FileSelection:
    with _members(path, kind, limits) as members:
        members = [m for m in members if m.path != ROOT]
        root = strip_single_root(m.path for m in members)
        if root is not None:
            emit(log, "archive has one top-level directory; unpacking its contents", root=str(root))
            members = [_unwrap(m, root) for m in members if m.path != root]
        listing = [m.path for m in members if m.kind is not MemberKind.DIR]
        selection = choose(listing, policy, where)
        plan = selection.plan
        ensure_space(
            staging,
            sum(m.size for m in members if m.kind is MemberKind.FILE and wanted(m.path, plan)),
        )
        total = 0
        count = 0
        progress = Progress(f"{kind}-extract", None, progress_interval)
        archive_bytes = path.stat().st_size

        def count_bytes(n: int) -> None:
            nonlocal total
            total += n
            progress.add(n)
            problem = limits.check(0, total, archive_bytes)
            if problem:
                raise UnsafeSource(f"archive refused at member {current.name!r}: {problem}")

        for current in members:
            if not wanted(current.path, plan):
                continue
            count += 1
            if current.kind is MemberKind.DIR:
                staging.mkdir(current.path)
            elif current.kind is MemberKind.SYMLINK:
                staging.symlink(current.path, current.link or "")
            elif current.kind is MemberKind.HARDLINK:
                staging.hardlink(current.path, _link_path(current, root))
            else:
                with (
                    current.open() as source,
                    staging.create(
                        current.path,
                        executable=current.executable,
                        fingerprint=fingerprint and f"{fingerprint}:{current.name}",
                        on_bytes=count_bytes,
                    ) as target,
                ):
                    while chunk := source.read(CHUNK):
                        target.write(chunk)
        progress.files = count
        progress.finish()
        return selection


def _unwrap(member: Member, root: PurePosixPath) -> Member:
    member.path = member.path.relative_to(root)
    return member


def _link_path(member: Member, root: PurePosixPath | None) -> PurePosixPath:
    """A tar hard link names another member by its archive path."""
    try:
        target = safe_relative_path(member.link or "")
        return target.relative_to(root) if root is not None else target
    except (UnsafeMember, ValueError):
        raise UnsafeSource(
            f"archive refused: member {member.name!r}: hard link to {member.link!r} "
            "outside the model directory"
        ) from None
