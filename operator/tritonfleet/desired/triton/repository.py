"""The Triton model repository as ``tritonfleet sync`` lays it out: pure planning.

``sync`` (the Job the operator runs, or a person by hand) fetches a model's files
into a staging directory and publishes them with one atomic rename. Everything
that can be decided without touching the disk or the network is decided here, so
it is unit-tested exhaustively and ``adapters/`` and ``sync/`` only execute:

* the on-disk layout (:class:`RepositoryLayout`): where Triton looks, where
  revisions, staging and locks live, and the *relative* symlink that ties a model
  name to its published revision;
* which versions to fetch, keep and drop under the model's version policy
  (:func:`policy_from_config`, :func:`plan_versions`, :func:`select_files`);
* whether an archive member or a source key may be written at all
  (:func:`safe_relative_path`, :func:`check_member`): no absolute paths, no
  ``..``, no links leaving the model directory, no device files;
* the manifest written into every revision (:class:`Manifest`).

Why the state lives *next to* the repository and not inside it: a real
tritonserver 2.51 lists every sub-directory of its repository in
``/v2/repository/index`` as a model, dot-directories included (verified:
``.tritonfleet`` and ``.hidden`` both showed up, and ``.hidden`` even loaded).
Symlinked model directories load and reload fine, and a reload after swapping
the symlink serves the new files. So ``<repo>/<model>`` is a relative symlink
into ``<repo>/../.tritonfleet/<repo-name>/revisions/<model>/<revision>``; Triton
sees model names only, and a half-written revision is never reachable from it.

No I/O here: paths are :class:`~pathlib.PurePosixPath` and JSON is text.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from google.protobuf import text_format

from tritonfleet.desired.triton.proto import mc

CONFIG_NAME = "config.pbtxt"
MANIFEST_NAME = ".tritonfleet-manifest.json"
MANIFEST_FORMAT = 1
STATE_DIRNAME = ".tritonfleet"

DEFAULT_MAX_EXTRACT_BYTES = 200 * 1024**3
DEFAULT_MAX_MEMBERS = 100_000
# An archive may unpack to this many times its own size (model weights barely
# compress; text 5-10x); below the floor any ratio is fine (a few small configs).
DEFAULT_MAX_EXPANSION_RATIO = 100.0
EXPANSION_FLOOR_BYTES = 64 * 1024**2
DEFAULT_MAX_DOWNLOAD_BYTES = 200 * 1024**3
NAME_MAX = 255
PATH_MAX = 4096

# Triton turns version directory names into integers; anything else it skips with
# a warning, so only all-digit names count as versions here too.
_VERSION_RE = re.compile(r"^[0-9]{1,18}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


# --- path safety --------------------------------------------------------------


class UnsafeMember(ValueError):  # noqa: N818 - reads better at call sites than UnsafeMemberError
    """A source entry (archive member, S3 key, file) that must not be written."""

    def __init__(self, member: str, reason: str) -> None:
        self.member = member
        self.reason = reason
        super().__init__(f"unsafe entry {member!r}: {reason}")


def safe_relative_path(name: str) -> PurePosixPath:
    """``name`` as a normalised path strictly inside the model directory.

    Refuses rather than repairs: an archive with ``../x`` or ``/etc/x`` is
    hostile or broken, and silently re-rooting it would hide that from the user.
    ``./a//b`` is a harmless spelling of ``a/b`` and is accepted.
    """
    if not name:
        raise UnsafeMember(name, "empty name")
    if "\0" in name:
        raise UnsafeMember(name, "NUL byte in name")
    if "\\" in name:
        # Windows-made zips use backslashes as separators; "..\\x" would be a
        # traversal on the machine that later unpacks our copy.
        raise UnsafeMember(name, "backslash in name")
    if name.startswith("/") or _DRIVE_RE.match(name):
        raise UnsafeMember(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeMember(name, "'..' component escapes the model directory")
    if not parts:
        raise UnsafeMember(name, "names the model directory itself")
    # Linux's NAME_MAX and PATH_MAX: beyond them no filesystem can hold the entry,
    # which is the source's doing, not a fault of the local disk.
    if any(len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in parts):
        raise UnsafeMember(name, f"a path component is longer than {NAME_MAX} bytes")
    if len(name.encode("utf-8", "surrogateescape")) > PATH_MAX:
        raise UnsafeMember(name, f"the path is longer than {PATH_MAX} bytes")
    return PurePosixPath(*parts)


class MemberKind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    SPECIAL = "special"  # devices, FIFOs, sockets


def symlink_destination(member: PurePosixPath, target: str) -> PurePosixPath:
    """Where a symlink at ``member`` pointing to ``target`` lands, relative to the
    model root; raises if it is absolute or leaves the root.

    Lexical only: the extractor also refuses to write *through* a symlink and
    re-checks every link with ``realpath`` before publishing, which closes the
    ``a -> ..`` then ``a/b -> ..`` chains a lexical check alone would miss.
    """
    if not target:
        raise UnsafeMember(str(member), "symlink with an empty target")
    if target.startswith("/") or "\\" in target or "\0" in target:
        raise UnsafeMember(str(member), f"symlink to absolute path {target!r}")
    parts = list(member.parent.parts)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UnsafeMember(str(member), f"symlink to {target!r} points outside")
            parts.pop()
        else:
            parts.append(part)
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


ROOT = PurePosixPath(".")


def check_member(name: str, kind: MemberKind, link_target: str | None = None) -> PurePosixPath:
    """The safe path of an archive member, or :class:`UnsafeMember` naming it.

    A directory entry for the archive's own root (``./``, as ``tar -C dir .``
    writes) is :data:`ROOT`, for the caller to skip. Hard links must name an
    earlier member (checked by the extractor); here the link's own target must
    at least be a safe path inside the model.
    """
    if kind is MemberKind.SPECIAL:
        raise UnsafeMember(name, "device, FIFO or socket entries are not allowed")
    if kind is MemberKind.DIR and name and all(p in ("", ".") for p in name.split("/")):
        return ROOT
    path = safe_relative_path(name)
    if kind is MemberKind.SYMLINK:
        symlink_destination(path, link_target or "")
    elif kind is MemberKind.HARDLINK:
        try:
            safe_relative_path(link_target or "")
        except UnsafeMember as error:
            raise UnsafeMember(name, f"hard link to {link_target!r}: {error.reason}") from None
    return path


def strip_single_root(paths: Iterable[PurePosixPath]) -> PurePosixPath | None:
    """The one top-level directory every path lies under, if it is not a version.

    ``tar czf m.tgz mymodel/`` wraps the model in ``mymodel/``; unwrapping it is
    what the user means. A lone ``1/`` is a version, never a wrapper.
    """
    roots = set()
    nested = False
    for path in paths:
        roots.add(path.parts[0])
        nested = nested or len(path.parts) > 1
        if len(roots) > 1:
            return None
    if len(roots) != 1 or not nested:
        return None
    root = next(iter(roots))
    if _VERSION_RE.match(root) or root == CONFIG_NAME:
        return None
    return PurePosixPath(root)


@dataclass(frozen=True)
class ExtractionLimits:
    """Caps on what one archive may unpack to; zip bombs trip ``max_bytes``
    because the extractor counts bytes actually written, not header claims."""

    max_bytes: int = DEFAULT_MAX_EXTRACT_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS
    max_ratio: float = DEFAULT_MAX_EXPANSION_RATIO  # 0: no ratio check

    def check(self, members: int, total_bytes: int, archive_bytes: int | None = None) -> str | None:
        """What is over a limit, or None; ``archive_bytes``: the archive's own size,
        for the expansion ratio."""
        if members > self.max_members:
            return f"more than {self.max_members} members (limit --max-members)"
        if total_bytes > self.max_bytes:
            return (
                f"more than {format_bytes(self.max_bytes)} once unpacked "
                "(limit --max-extract-bytes)"
            )
        if (
            archive_bytes
            and self.max_ratio
            and total_bytes > max(EXPANSION_FLOOR_BYTES, self.max_ratio * archive_bytes)
        ):
            return (
                f"unpacks to more than {self.max_ratio:g} times its size of "
                f"{format_bytes(archive_bytes)} (limit --max-expansion-ratio)"
            )
        return None


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# --- version policy -----------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """Triton's ModelVersionPolicy, reduced to what decides which folders to keep."""

    kind: Literal["latest", "all", "specific"]
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        if self.kind == "specific":
            return "specific " + ",".join(str(v) for v in self.versions)
        return "all"


def policy_from_config(pbtxt: str) -> Policy:
    """The version policy of a rendered ``config.pbtxt``.

    Read from the rendered text rather than the typed spec so a policy set in
    ``spec.config.extra`` counts too. Unset means Triton's default, latest 1.
    """
    config = text_format.Parse(pbtxt, mc.ModelConfig())
    which = config.version_policy.WhichOneof("policy_choice")
    if which == "all":
        return Policy("all")
    if which == "specific":
        return Policy(
            "specific", versions=tuple(sorted(set(config.version_policy.specific.versions)))
        )
    if which == "latest":
        return Policy("latest", num_versions=max(1, config.version_policy.latest.num_versions))
    return Policy("latest", num_versions=1)


@dataclass(frozen=True)
class VersionPlan:
    keep: tuple[int, ...]
    drop: tuple[int, ...]
    missing: tuple[int, ...]  # asked for by a specific policy, absent from the source


def plan_versions(policy: Policy, available: Iterable[int]) -> VersionPlan:
    """Which source versions to publish; the rest are neither fetched nor kept."""
    have = sorted(set(available))
    if policy.kind == "all":
        keep = have
    elif policy.kind == "latest":
        keep = have[-policy.num_versions :] if have else []
    else:
        keep = [v for v in have if v in policy.versions]
    missing = (
        tuple(v for v in policy.versions if v not in have) if policy.kind == "specific" else ()
    )
    return VersionPlan(
        keep=tuple(keep), drop=tuple(v for v in have if v not in keep), missing=missing
    )


def version_of(path: PurePosixPath) -> int | None:
    """The version a path belongs to (its first component, if numeric)."""
    if len(path.parts) > 1 and _VERSION_RE.match(path.parts[0]):
        return int(path.parts[0])
    return None


@dataclass(frozen=True)
class FileSelection:
    """What to fetch from a source listing, and what was left out and why."""

    fetch: tuple[PurePosixPath, ...]
    plan: VersionPlan
    source_config: bool  # the source had its own config.pbtxt (the rendered one wins)
    ignored: tuple[PurePosixPath, ...] = ()  # reserved names we never take from a source


def wanted(path: PurePosixPath, plan: VersionPlan) -> bool:
    """Whether an entry (file or directory) belongs in the published model."""
    if path in (PurePosixPath(CONFIG_NAME), PurePosixPath(MANIFEST_NAME)):
        return False
    head = path.parts[0] if path.parts else ""
    return not _VERSION_RE.match(head) or int(head) in plan.keep


def select_files(paths: Iterable[PurePosixPath], policy: Policy) -> FileSelection:
    """Apply the version policy to a source listing.

    Files outside version folders (label files, tokenizers) are kept as they
    are; the source's own ``config.pbtxt`` is left out because the spec is the
    source of truth and the rendered config is written instead.
    """
    listed = list(dict.fromkeys(paths))
    versions = {v for p in listed if (v := version_of(p)) is not None}
    plan = plan_versions(policy, versions)
    fetch, ignored = [], []
    source_config = False
    for path in listed:
        if path == PurePosixPath(CONFIG_NAME):
            source_config = True
            continue
        if path == PurePosixPath(MANIFEST_NAME):
            ignored.append(path)
            continue
        if wanted(path, plan):
            fetch.append(path)
    return FileSelection(tuple(fetch), plan, source_config, tuple(ignored))


# --- layout -------------------------------------------------------------------


def relative_path(target: PurePosixPath, start: PurePosixPath) -> PurePosixPath:
    """``target`` relative to directory ``start`` (both absolute), without the
    filesystem (``os.path.relpath`` may consult the working directory)."""
    if not (target.is_absolute() and start.is_absolute()):
        raise ValueError("relative_path needs absolute paths")
    t, s = target.parts, start.parts
    common = 0
    while common < min(len(t), len(s)) and t[common] == s[common]:
        common += 1
    return PurePosixPath(*([".."] * (len(s) - common)), *t[common:])


@dataclass(frozen=True)
class RepositoryLayout:
    """Every path ``sync`` touches, derived from Triton's repository directory.

    ::

        <parent>/
          <repo>/                                 Triton's --model-repository
            <model> -> ../.tritonfleet/<repo>/revisions/<model>/<revision>
          .tritonfleet/<repo>/                    sync state, never scanned by Triton
            revisions/<model>/<revision>/         published: config.pbtxt, 1/, manifest
            staging/<model>/<revision>.<id>/      being written; never linked
            tmp/                                  symlinks before their rename into <repo>
            locks/<model>.lock                    one sync per model at a time
            pins/<model>/<revision>/<model> -> ../../../revisions/<model>/<dirname>

    The links are relative so they resolve wherever the volume is mounted, as long
    as the mount holds both ``<repo>`` and the state directory (the volume root,
    not a subPath into ``<repo>``).

    A *pin* is a one-model repository fixed at one revision: Triton pods run with
    ``--model-repository=<pins>/<model>/<revision>`` (one per model they host), so a
    pod loads exactly the revision its Deployment names, whatever ``<repo>/<model>``
    points at by then. That is what lets two revisions serve side by side (a rollout,
    a canary) and a restarted or added pod of the old revision still load the old
    files after the new ones were published.
    """

    repository: PurePosixPath
    state: PurePosixPath

    @classmethod
    def for_repository(
        cls, repository: PurePosixPath, state: PurePosixPath | None = None
    ) -> RepositoryLayout:
        if not repository.is_absolute() or (state is not None and not state.is_absolute()):
            raise ValueError("repository and state directories must be absolute paths")
        if state is None:
            state = default_state_dir(repository)
        return cls(repository, state)

    @property
    def state_inside_repository(self) -> bool:
        """True when Triton would list the state directory as a model."""
        return self.state == self.repository or self.repository in self.state.parents

    def model_path(self, model: str) -> PurePosixPath:
        return self.repository / model

    def revisions_dir(self, model: str) -> PurePosixPath:
        return self.state / "revisions" / model

    def revision_dir(self, model: str, dirname: str) -> PurePosixPath:
        return self.revisions_dir(model) / dirname

    def staging_dir(self, model: str) -> PurePosixPath:
        return self.state / "staging" / model

    @property
    def tmp_dir(self) -> PurePosixPath:
        return self.state / "tmp"

    def lock_path(self, model: str) -> PurePosixPath:
        return self.state / "locks" / f"{model}.lock"

    def pins_dir(self, model: str) -> PurePosixPath:
        return self.state / "pins" / model

    def pin_repository(self, model: str, revision: str) -> PurePosixPath:
        """The one-model repository Triton reads ``model`` at ``revision`` from."""
        return self.pins_dir(model) / revision

    def pin_target(self, model: str, revision: str, dirname: str) -> PurePosixPath:
        """What ``pins/<model>/<revision>/<model>`` points at: relative to its directory."""
        return relative_path(
            self.revision_dir(model, dirname), self.pin_repository(model, revision)
        )

    def link_target(self, model: str, dirname: str) -> PurePosixPath:
        """What ``<repo>/<model>`` points at: relative to the repository."""
        return relative_path(self.revision_dir(model, dirname), self.repository)

    def revision_from_link(self, model: str, link: str) -> str | None:
        """The revision directory name a link text points at, if it is one of ours."""
        expected_parent = relative_path(self.revisions_dir(model), self.repository)
        path = PurePosixPath(link)
        if path.parent == expected_parent and path.name:
            return path.name
        return None


def default_state_dir(repository: PurePosixPath) -> PurePosixPath:
    """``<parent>/.tritonfleet/<repo-name>``: beside the repository (same volume,
    so rename(2) works) and outside it (so Triton never lists it)."""
    if repository.parent == repository:
        raise ValueError("the repository cannot be the filesystem root")
    return repository.parent / STATE_DIRNAME / repository.name


def fallback_state_dir(repository: PurePosixPath) -> PurePosixPath:
    """``<repo>/.tritonfleet``: for a repository at the root of its volume, where
    beside it is another filesystem. Works (rename stays on one volume), but
    Triton's index then lists ``.tritonfleet`` as a model it cannot load."""
    return repository / STATE_DIRNAME


def revision_dirname(revision: str, taken: Iterable[str]) -> str:
    """A fresh directory name for ``revision``: the revision itself, or
    ``<revision>.<n>`` when a damaged copy still holds that name (it may be live
    and cannot be replaced in place)."""
    used = set(taken)
    if revision not in used:
        return revision
    n = 1
    while f"{revision}.{n}" in used:
        n += 1
    return f"{revision}.{n}"


def revisions_to_collect(
    names: Iterable[str], live: str | None, previous: str | None, keep: Iterable[str] = ()
) -> list[str]:
    """Revision directories to delete after a publish: all but the live one, the
    one it replaced (kept so a rollback is a symlink swap, and so a replica still
    reading the old files is not cut off) and ``keep``, the directories of revisions
    still served (a canary's stable revision: its pods must be able to restart)."""
    kept = {live, previous, *keep}
    return sorted(n for n in names if n not in kept)


# --- manifest -----------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One published file (or symlink) and what it was made from."""

    size: int
    sha256: str
    kind: Literal["file", "symlink"] = "file"
    target: str | None = None  # symlinks only
    fingerprint: str | None = None  # source identity (S3 ETag, PVC mtime): reuse key

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size": self.size, "sha256": self.sha256}
        if self.kind != "file":
            out["kind"] = self.kind
            out["target"] = self.target
        if self.fingerprint:
            out["fingerprint"] = self.fingerprint
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileEntry:
        kind = data.get("kind", "file")
        if kind not in ("file", "symlink"):
            raise ValueError(f"unknown manifest entry kind {kind!r}")
        return cls(
            size=int(data["size"]),
            sha256=str(data["sha256"]),
            kind=kind,
            target=data.get("target"),
            fingerprint=data.get("fingerprint"),
        )


@dataclass(frozen=True)
class Manifest:
    """``.tritonfleet-manifest.json``: what a revision directory must contain.

    Written last into staging, so a revision with a manifest is complete; it is
    what "already at revision X" and ``--verify`` check against.
    """

    model: str
    revision: str
    source: str  # s3 | http | pvc | inline
    files: Mapping[str, FileEntry]
    created: str = ""  # RFC 3339, for people reading the file
    versions: tuple[int, ...] = ()
    dropped_versions: tuple[int, ...] = ()
    source_fingerprint: str | None = None  # whole-source identity (HTTP sha256)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files.values() if e.kind == "file")

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "model": self.model,
            "revision": self.revision,
            "source": self.source,
            "created": self.created,
            "versions": list(self.versions),
            "droppedVersions": list(self.dropped_versions),
            "totalBytes": self.total_bytes,
            "files": {path: self.files[path].to_json() for path in sorted(self.files)},
        }
        if self.source_fingerprint:
            doc["sourceFingerprint"] = self.source_fingerprint
        doc.update(self.extra)
        return json.dumps(doc, indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise ValueError("not a tritonfleet manifest (format 1)")
        return cls(
            model=str(doc["model"]),
            revision=str(doc["revision"]),
            source=str(doc["source"]),
            created=str(doc.get("created", "")),
            versions=tuple(int(v) for v in doc.get("versions", [])),
            dropped_versions=tuple(int(v) for v in doc.get("droppedVersions", [])),
            source_fingerprint=doc.get("sourceFingerprint"),
            files={str(p): FileEntry.from_json(e) for p, e in doc["files"].items()},
        )
