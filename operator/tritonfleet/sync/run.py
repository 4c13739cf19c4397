"""One model sync, start to finish: the sequence behind ``tritonfleet sync``.

check → lock → already there? → fetch into staging (adapters) → config.pbtxt +
manifest → fsync → promote → pin → atomic switch → garbage-collect. The decisions
(layout, versions, revision names) come from ``desired.triton.repository``; the I/O
from ``adapters.sources`` (fetching) and :mod:`tritonfleet.sync.publish`
(moving into place). Errors are ``SyncError`` subclasses carrying exit codes;
on any failure, including a signal, the staging directory is removed and the
live revision is untouched.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import PurePosixPath

from tritonfleet import __version__
from tritonfleet.adapters.sources import (
    FetchOptions,
    PreviousRevision,
    Staging,
    SyncError,
    describe,
    emit,
    fetch,
)
from tritonfleet.api.model import ModelSource
from tritonfleet.desired.triton.repository import (
    CONFIG_NAME,
    Manifest,
    RepositoryLayout,
    format_bytes,
    policy_from_config,
    revision_dirname,
)
from tritonfleet.sync.publish import Repository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncRequest:
    name: str  # the Triton model name: the directory published in the repository
    source: ModelSource  # an ensemble's is an inline placeholder version directory
    pbtxt: str  # rendered and validated by the caller
    revision: str
    layout: RepositoryLayout
    options: FetchOptions = field(default_factory=FetchOptions)
    force: bool = False  # fetch again even if already at the revision
    keep: tuple[str, ...] = ()  # revisions still served elsewhere: never collected
    verify: bool = False  # re-hash the published files before trusting them
    lock_timeout: float = 3600.0


@dataclass(frozen=True)
class SyncOutcome:
    model: str
    revision: str
    changed: bool
    directory: str | None = None
    files: int = 0
    bytes: int = 0
    fetched_bytes: int = 0
    seconds: float = 0.0
    previous: str | None = None
    collected: tuple[str, ...] = ()


def sync_model(request: SyncRequest) -> SyncOutcome:
    started = time.monotonic()
    name = request.name
    repo = Repository(request.layout)
    repo.ensure_dirs()
    if request.layout.state_inside_repository:
        emit(
            log,
            "state directory is inside the repository: Triton's index will list it as a "
            "model it cannot load. To avoid that, mount the volume one level up and pass "
            "--repository <mount>/repository (to Triton too), or --state-dir on the same volume",
            level=logging.WARNING,
            state=str(request.layout.state),
        )
    policy = policy_from_config(request.pbtxt)
    emit(
        log,
        "sync start",
        model=name,
        revision=request.revision,
        source=describe(request.source),
        repository=str(request.layout.repository),
        version_policy=policy.describe(),
    )
    with repo.lock(name, request.lock_timeout):
        live = repo.live(name)
        live_path = repo.revision_path(name, live.dirname) if live.dirname else None
        live_manifest = repo.manifest(live_path) if live_path else None
        damaged: dict[str, str] = {}
        if live_path and live_manifest and live_manifest.revision == request.revision:
            damaged = repo.problems(live_path, live_manifest, deep=request.verify)
            if not damaged and not request.force:
                emit(log, f"already at revision {request.revision}", model=name)
                assert live.dirname is not None  # live_path is set
                repo.pin(name, request.revision, live.dirname)
                return SyncOutcome(name, request.revision, changed=False, directory=live.dirname)
            for file, problem in list(damaged.items())[:20]:
                emit(
                    log,
                    "published revision damaged",
                    level=logging.WARNING,
                    file=file,
                    problem=problem,
                )
        repo.clean_staging(name)

        ready = _complete_unpublished(repo, name, request, live.dirname)
        if ready is not None:
            directory, manifest, fetched = ready, repo.manifest(repo.revision_path(name, ready)), 0
            emit(log, "revision already staged by an earlier sync: publishing it", dir=ready)
        else:
            previous = None
            if live_path and live_manifest:
                # Damaged files must be fetched again, never hard-linked forward.
                healthy = {f: e for f, e in live_manifest.files.items() if f not in damaged}
                previous = PreviousRevision(live_path, replace(live_manifest, files=healthy))
            directory, manifest, fetched = _stage(repo, name, request, previous)
        if manifest is None:
            raise SyncError(f"revision directory {directory} lost its manifest while publishing")
        _check_complete(repo, name, directory, manifest)

        # Pin before the switch: the pin needs an inode or two, and a full volume must
        # fail the sync with the live revision as it was, not after it moved.
        repo.pin(name, request.revision, directory)
        before = repo.switch(name, directory)
        removed_versions = (
            sorted(set(live_manifest.versions) - set(manifest.versions)) if live_manifest else []
        )
        collected = repo.collect(name, directory, before, request.keep)
        seconds = time.monotonic() - started
        emit(
            log,
            "published",
            model=name,
            revision=request.revision,
            dir=directory,
            versions=",".join(map(str, manifest.versions)),
            removed_versions=",".join(map(str, removed_versions)) or None,
            previous=before,
            collected=",".join(collected) or None,
            files=len(manifest.files),
            bytes=manifest.total_bytes,
            size=format_bytes(manifest.total_bytes),
            fetched_bytes=fetched,
            seconds=round(seconds, 2),
            mbps=round(fetched / max(seconds, 1e-6) / 1e6, 1),
        )
        return SyncOutcome(
            name,
            request.revision,
            changed=True,
            directory=directory,
            files=len(manifest.files),
            bytes=manifest.total_bytes,
            fetched_bytes=fetched,
            seconds=seconds,
            previous=before,
            collected=tuple(collected),
        )


def _check_complete(repo: Repository, name: str, directory: str, manifest: Manifest) -> None:
    """Refuse to publish a revision that does not hold every file of its manifest
    (something removed files under the sync: a person, or a process ignoring the
    lock). The directory is dropped, so no later sync takes it as complete."""
    path = repo.revision_path(name, directory)
    problems = repo.problems(path, manifest, deep=False)
    if not problems:
        return
    shutil.rmtree(path, ignore_errors=True)
    shown = ", ".join(f"{f} ({p})" for f, p in sorted(problems.items())[:5])
    raise SyncError(
        f"revision {manifest.revision} of {name} is incomplete ({len(problems)} of "
        f"{len(manifest.files)} files differ from its manifest: {shown}): not published, "
        "the live revision is unchanged"
    )


def _complete_unpublished(
    repo: Repository, name: str, request: SyncRequest, live: str | None
) -> str | None:
    """A complete revision directory for this revision that is not live: the
    one a rollback returns to, or one whose switch a crash interrupted."""
    if request.force:
        return None
    for dirname in repo.revision_names(name):
        if dirname == live:
            continue
        path = repo.revision_path(name, dirname)
        manifest = repo.manifest(path)
        if manifest is None or manifest.revision != request.revision:
            continue
        if not repo.problems(path, manifest, deep=request.verify):
            return dirname
    return None


def _stage(
    repo: Repository, name: str, request: SyncRequest, previous: PreviousRevision | None
) -> tuple[str, Manifest, int]:
    staging = Staging(repo.new_staging_path(name, request.revision), previous)
    try:
        policy = policy_from_config(request.pbtxt)
        result = fetch(request.source, policy, staging, request.options)
        staging.write_bytes(PurePosixPath(CONFIG_NAME), request.pbtxt.encode())
        manifest = Manifest(
            model=name,
            revision=request.revision,
            source=request.source.kind,
            files=dict(staging.entries),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            versions=result.selection.plan.keep,
            dropped_versions=result.selection.plan.drop,
            source_fingerprint=result.source_fingerprint,
            extra={"tritonfleet": __version__},
        )
        staging.finish(manifest)
        directory = revision_dirname(request.revision, repo.revision_names(name))
        repo.promote(staging.root, name, directory)
        return directory, manifest, result.fetched_bytes
    finally:
        # Success or not, nothing of staging stays behind: on success its
        # root has been renamed away and only the scratch space remains.
        staging.discard()


def remove_model(layout: RepositoryLayout, name: str, lock_timeout: float = 3600.0) -> bool:
    repo = Repository(layout)
    repo.ensure_dirs()
    with repo.lock(name, lock_timeout):
        removed = repo.remove(name)
    emit(log, "removed" if removed else "nothing to remove", model=name)
    return removed
