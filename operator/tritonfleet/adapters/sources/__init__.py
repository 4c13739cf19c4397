"""Model sources: fetch a TritonModel's files into a staging directory.

The only code in tritonfleet that reads S3, HTTP(S) or a source PVC. ``sync``
calls :func:`fetch` with the model's ``spec.source``, the version policy read
from the rendered config, and a :class:`Staging` directory it will later
publish; each fetcher lists its source, lets the pure plan in
``desired.triton.repository`` pick the files, and writes them through the staging
writer (path checks, sha256, fsync). Failures are
:class:`~tritonfleet.adapters.sources.errors.SyncError` subclasses, one per
exit code.
"""

from __future__ import annotations

from tritonfleet.adapters.sources.common import FetchOptions, FetchResult, redact
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
from tritonfleet.adapters.sources.http import display_url, fetch_http
from tritonfleet.adapters.sources.inline import fetch_inline
from tritonfleet.adapters.sources.pvc import fetch_pvc
from tritonfleet.adapters.sources.s3 import fetch_s3
from tritonfleet.adapters.sources.staging import (
    PreviousRevision,
    Progress,
    Staging,
    emit,
    fsync_dir,
    local_error,
)
from tritonfleet.api.model import ModelSource
from tritonfleet.desired.triton.repository import Policy

__all__ = [
    "FetchOptions",
    "FetchResult",
    "IntegrityError",
    "InvalidSource",
    "LocalStorageError",
    "PreviousRevision",
    "Progress",
    "SourceAccessDenied",
    "SourceNotFound",
    "SourceUnavailable",
    "Staging",
    "SyncError",
    "UnsafeSource",
    "describe",
    "display_url",
    "emit",
    "fetch",
    "fsync_dir",
    "local_error",
    "redact",
]


def fetch(
    source: ModelSource, policy: Policy, staging: Staging, options: FetchOptions
) -> FetchResult:
    """Fill ``staging`` from ``source`` (exactly one of s3/http/pvc/inline)."""
    if source.s3 is not None:
        return fetch_s3(source.s3, policy, staging, options)
    if source.http is not None:
        return fetch_http(source.http, policy, staging, options)
    if source.pvc is not None:
        return fetch_pvc(source.pvc, policy, staging, options)
    if source.inline is not None:
        return fetch_inline(source.inline, policy, staging, options)
    raise SyncError("the model has no source")


def describe(source: ModelSource) -> str:
    """The source as safe to log (no URL query strings)."""
    if source.s3 is not None:
        return source.s3.uri
    if source.http is not None:
        return display_url(source.http.url)
    if source.pvc is not None:
        return f"pvc://{source.pvc.claim_name}/{source.pvc.path.strip('/')}"
    return f"inline ({len(source.inline.files) if source.inline else 0} files)"
