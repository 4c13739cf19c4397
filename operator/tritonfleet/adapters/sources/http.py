"""HTTP(S) sources: one download, streamed in chunks, checked, maybe unpacked.

The body is hashed as it streams; the byte count is compared with
``Content-Length`` (a truncated transfer is an error, not a short model) and the
digest with ``sha256`` when the spec gives one — the error shows both digests.
A plain file goes to ``path`` (default ``1/<name from the URL>``) directly in
staging; an archive goes to the scratch directory first and is unpacked by
:mod:`tritonfleet.adapters.sources.archive`.

Only the standard library is used (``urllib.request``, which honours the usual
proxy variables), so the sync image needs nothing beyond the operator's own
dependencies. URLs are logged without query string or user info: presigned
URLs carry signatures there.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import PurePosixPath

from tritonfleet import __version__
from tritonfleet.adapters.sources.archive import extract_archive
from tritonfleet.adapters.sources.common import FetchOptions, FetchResult, choose
from tritonfleet.adapters.sources.errors import (
    IntegrityError,
    InvalidSource,
    LocalStorageError,
    SourceAccessDenied,
    SourceNotFound,
    SourceUnavailable,
    SyncError,
    UnsafeSource,
)
from tritonfleet.adapters.sources.staging import CHUNK, Progress, Staging, emit, local_error
from tritonfleet.api.model import HttpSource
from tritonfleet.desired.triton.repository import (
    FileSelection,
    Policy,
    UnsafeMember,
    format_bytes,
    safe_relative_path,
)

log = logging.getLogger(__name__)


def display_url(url: str) -> str:
    """``url`` without credentials or query: safe to log."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    suffix = "?…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) + suffix


def default_path(url: str) -> PurePosixPath:
    """``1/<last path segment>``: where a single downloaded file goes by default."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    try:
        if "/" in name:
            raise UnsafeMember(name, "slash in name")
        return PurePosixPath("1") / safe_relative_path(name)
    except UnsafeMember:
        raise InvalidSource(
            f"cannot name the file downloaded from {display_url(url)}; set spec.source.http.path"
        ) from None


def _status_error(status: int, url: str, reason: str) -> SyncError:
    what = f"GET {display_url(url)}: HTTP {status} {reason}".rstrip()
    if status in (404, 410):
        return SourceNotFound(what)
    if status in (401, 403):
        return SourceAccessDenied(what)
    if status >= 500 or status in (408, 429):
        return SourceUnavailable(what)
    return SyncError(what)


def download(
    url: str,
    sink: Callable[[bytes], None],
    *,
    expected_sha256: str | None,
    progress: Progress,
    timeout: float,
    digest_of_sink: Callable[[], str] | None = None,
    max_bytes: int | None = None,
) -> tuple[int, str]:
    """Stream ``url`` into ``sink``; returns (bytes, sha256) once both checks pass.

    When the sink hashes what it is given (a staged file does), pass its digest
    as ``digest_of_sink``: hashing twice would cost more than the disk write.
    ``max_bytes`` caps the download, announced (``Content-Length``) or counted:
    a source with neither a length nor a digest cannot fill the volume.
    """
    shown = display_url(url)
    request = urllib.request.Request(  # noqa: S310 - the scheme is http(s), checked by the API
        url,
        headers={"User-Agent": f"tritonfleet-sync/{__version__}", "Accept-Encoding": "identity"},
    )
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as error:
        raise _status_error(error.code, url, str(error.reason)) from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, ssl.SSLError):
            raise SourceUnavailable(f"GET {shown}: TLS error: {reason}") from None
        raise SourceUnavailable(f"GET {shown}: {reason}") from None
    except TimeoutError:
        raise SourceUnavailable(f"GET {shown}: timed out after {timeout:.0f}s") from None
    except (OSError, http.client.HTTPException) as error:
        raise SourceUnavailable(f"GET {shown}: {error}") from None
    digest = hashlib.sha256() if digest_of_sink is None else None
    received = 0
    with response:
        length_header = response.headers.get("Content-Length")
        expected_length = int(length_header) if length_header and length_header.isdigit() else None
        progress.total = expected_length
        emit(log, "http download", url=shown, content_length=expected_length or "unknown")
        cap = max_bytes if max_bytes is not None else -1
        if cap >= 0 and expected_length is not None and expected_length > cap:
            raise _too_big(shown, cap, f"Content-Length says {expected_length} bytes")
        try:
            while chunk := response.read(CHUNK):
                received += len(chunk)
                if 0 <= cap < received:
                    raise _too_big(shown, cap, f"{received} bytes received so far")
                if digest is not None:
                    digest.update(chunk)
                sink(chunk)
                progress.add(len(chunk))
        except http.client.IncompleteRead as error:
            got = received + len(error.partial)
            raise IntegrityError(
                f"GET {shown}: truncated transfer: received {got} of "
                f"{expected_length if expected_length is not None else '?'} bytes"
            ) from None
        except TimeoutError:
            raise SourceUnavailable(
                f"GET {shown}: no data for {timeout:.0f}s after {received} bytes"
            ) from None
        except (ConnectionError, http.client.HTTPException) as error:
            raise IntegrityError(
                f"GET {shown}: transfer broken after {received} bytes "
                f"(expected {expected_length if expected_length is not None else '?'}): {error}"
            ) from None
    if expected_length is not None and received != expected_length:
        raise IntegrityError(
            f"GET {shown}: truncated transfer: received {received} of {expected_length} bytes "
            "(Content-Length)"
        )
    if digest_of_sink is not None:
        actual = digest_of_sink()
    else:
        assert digest is not None
        actual = digest.hexdigest()
    if expected_sha256 and actual != expected_sha256:
        raise IntegrityError(
            f"GET {shown}: sha256 mismatch: expected {expected_sha256}, got {actual}"
        )
    return received, actual


def _too_big(shown: str, cap: int, what: str) -> UnsafeSource:
    return UnsafeSource(
        f"GET {shown}: {what}, more than {format_bytes(cap)} (limit --max-download-bytes)"
    )


def fetch_http(
    spec: HttpSource, policy: Policy, staging: Staging, options: FetchOptions
) -> FetchResult:
    # The whole download is identified by its digest; without one, nothing can be
    # reused, since the same URL may serve new bytes.
    fingerprint = f"http:sha256={spec.sha256}:{spec.archive or 'file'}" if spec.sha256 else None
    progress = Progress("http", None, options.progress_interval, files=1)
    if spec.archive is None:
        if spec.path:
            try:
                rel = safe_relative_path(spec.path)
            except UnsafeMember as error:
                raise UnsafeSource(f"spec.source.http.path: {error}") from None
        else:
            rel = default_path(spec.url)
        selection = choose([rel], policy, display_url(spec.url))
        if rel not in selection.fetch:
            raise SourceNotFound(
                f"{display_url(spec.url)}: {rel} is not kept by versionPolicy {policy.describe()}"
            )
        if staging.reuse(rel, fingerprint):
            emit(log, "download unchanged (same sha256): reused from the live revision")
            return FetchResult(selection, fingerprint)
        with staging.create(rel, fingerprint=fingerprint) as target:
            download(
                spec.url,
                target.write,
                expected_sha256=spec.sha256,
                progress=progress,
                timeout=options.timeout,
                digest_of_sink=target.sha256,
                max_bytes=options.max_download_bytes,
            )
        progress.finish()
        return FetchResult(selection, fingerprint, progress.done)

    reused = _reuse_archive(staging, fingerprint, policy, display_url(spec.url))
    if reused is not None:
        return FetchResult(reused, fingerprint)
    staging.scratch.mkdir(parents=True, exist_ok=True)
    archive_path = staging.scratch / f"download.{spec.archive}"
    try:
        with archive_path.open("wb") as handle:

            def sink(chunk: bytes) -> None:
                try:
                    handle.write(chunk)
                except OSError as error:
                    raise local_error(error, f"saving {archive_path.name}", staging.root) from None

            download(
                spec.url,
                sink,
                expected_sha256=spec.sha256,
                progress=progress,
                timeout=options.timeout,
                max_bytes=options.max_download_bytes,
            )
    except OSError as error:
        raise local_error(error, f"saving {archive_path.name}", staging.root) from None
    progress.finish()
    selection = extract_archive(
        archive_path,
        spec.archive,
        staging,
        policy,
        options.limits,
        where=display_url(spec.url),
        fingerprint=fingerprint,
        progress_interval=options.progress_interval,
    )
    archive_path.unlink()
    return FetchResult(selection, fingerprint, progress.done)


def _reuse_archive(
    staging: Staging, fingerprint: str | None, policy: Policy, where: str
) -> FileSelection | None:
    """Re-publish the live revision's files when the archive is the same one
    (same sha256) and that revision left no version out; None to download."""
    previous = staging.previous
    if fingerprint is None or previous is None:
        return None
    manifest = previous.manifest
    if manifest.source_fingerprint != fingerprint or manifest.dropped_versions:
        return None
    for name, entry in manifest.files.items():
        if entry.kind == "file":
            try:
                if previous.path.joinpath(name).lstat().st_size != entry.size:
                    return None
            except OSError:
                return None
    selection = choose([PurePosixPath(p) for p in manifest.files], policy, where)
    linked = 0
    for rel in selection.fetch:
        entry = manifest.files[str(rel)]
        if entry.kind == "symlink":
            staging.symlink(rel, entry.target or "")
        elif staging.reuse(rel, entry.fingerprint):
            linked += 1
        elif linked == 0:
            return None  # no hard links on this filesystem: download instead
        else:
            raise LocalStorageError(f"could not hard-link {rel} from the live revision")
    emit(log, "archive unchanged (same sha256): reused files from the live revision")
    return selection
