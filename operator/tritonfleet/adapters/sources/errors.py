"""Failures of a model sync, one class per thing the user must do differently.

Each class carries the process exit code ``tritonfleet sync`` ends with, so the
operator (and a person reading ``kubectl get pods``) can tell "fix the bucket
name" from "the disk is full" from "retry later" without parsing logs. The
messages name the object, file or member concerned and never include secrets.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base: a sync failed for a reason worth its own exit code."""

    exit_code = 10
    kind = "sync-failed"


class InvalidSource(SyncError):  # noqa: N818 - named for what happened
    """The source spec cannot be acted on (e.g. no file name in the URL and no
    ``path``): the TritonModel must change, retrying will not help."""

    exit_code = 1
    kind = "invalid-source"


class SourceNotFound(SyncError):  # noqa: N818 - named for what happened
    """Bucket, object, prefix, URL (404) or PVC path does not exist; or the
    source lacks a version the spec asks for."""

    exit_code = 3
    kind = "source-not-found"


class SourceAccessDenied(SyncError):  # noqa: N818 - named for what happened
    """Credentials missing, wrong or not allowed (S3 403, HTTP 401/403, EACCES
    reading a PVC)."""

    exit_code = 4
    kind = "source-access-denied"


class IntegrityError(SyncError):
    """Checksum mismatch, truncated transfer, size that does not add up."""

    exit_code = 5
    kind = "integrity"


class UnsafeSource(SyncError):  # noqa: N818 - named for what happened
    """An archive member, S3 key or PVC entry that would escape the model
    directory or is not a plain file; or an archive over the size limits."""

    exit_code = 6
    kind = "unsafe-source"


class LocalStorageError(SyncError):
    """Writing the repository failed: disk full, permission denied, read-only
    filesystem, state directory on another filesystem."""

    exit_code = 7
    kind = "local-storage"


class SourceUnavailable(SyncError):  # noqa: N818 - named for what happened
    """Network or server trouble worth a retry: connection refused, timeout,
    HTTP 5xx, throttling."""

    exit_code = 8
    kind = "source-unavailable"
