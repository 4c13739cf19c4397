"""Revisions: short digests that change exactly when what Triton serves changes.

A model's revision covers its source and its rendered ``config.pbtxt``; an
ensemble's covers its own config and its members' revisions. Serving fields
(replicas, GPUs) are left out on purpose: scaling must not trigger a re-sync.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from tritonfleet.api.model import TritonModel

REVISION_LENGTH = 10


def _digest(parts: Iterable[str]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode())
        hasher.update(b"\0")
    return hasher.hexdigest()[:REVISION_LENGTH]


def model_revision(model: TritonModel, pbtxt: str) -> str:
    source = json.dumps(model.spec.source.to_wire(), sort_keys=True, separators=(",", ":"))
    return _digest(["model", model.triton_name, source, pbtxt])


def ensemble_revision(triton_name: str, pbtxt: str, member_revisions: Iterable[str]) -> str:
    return _digest(["ensemble", triton_name, pbtxt, *member_revisions])
