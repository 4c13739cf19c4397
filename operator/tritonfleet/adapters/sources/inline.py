"""Inline sources: small files written verbatim from the TritonModel spec
(python-backend ``model.py``, label files). No network; kept here so every
source goes through the same staging, policy and manifest path."""

from __future__ import annotations

from pathlib import PurePosixPath

from tritonfleet.adapters.sources.common import FetchOptions, FetchResult, choose
from tritonfleet.adapters.sources.staging import Progress, Staging
from tritonfleet.api.model import InlineSource
from tritonfleet.desired.triton.repository import Policy


def fetch_inline(
    spec: InlineSource, policy: Policy, staging: Staging, options: FetchOptions
) -> FetchResult:
    files: dict[PurePosixPath, bytes] = {
        staging.check(name): content.encode() for name, content in spec.files.items()
    }
    selection = choose(files, policy, "inline")
    chosen = selection.fetch
    progress = Progress("inline", sum(len(files[p]) for p in chosen), files=len(chosen))
    for rel in selection.fetch:
        staging.write_bytes(rel, files[rel])
        progress.add(len(files[rel]))
    progress.finish()
    return FetchResult(selection, fetched_bytes=progress.done)
