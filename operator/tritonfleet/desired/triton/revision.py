"""Revisions: short digests that change exactly when what Triton serves changes,
and the stamp that carries one into ``config.pbtxt``.

A model's revision covers its source and its rendered ``config.pbtxt``; an
ensemble's covers its own config and its members' revisions. Serving fields
(replicas, GPUs) are left out on purpose: scaling must not trigger a re-sync.

The operator computes a revision once (``desired.kube``) and hands it to the sync
Job (``tritonfleet sync --revision``), which stamps it into the published config
(:func:`stamp_revision`); each Triton pod then says which revision it really
loaded (:func:`served_revision`, read by the loader).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import text_format

from tritonfleet.api.model import TritonModel
from tritonfleet.desired.triton.proto import mc

REVISION_LENGTH = 10
REVISION_PARAMETER = "tritonfleet.revision"
# The repository layout Triton pods read (``desired.triton.repository``: a pin per
# revision). It is part of every revision, so an operator whose pods need another
# layout re-syncs each model once (hard-linking unchanged files) before rolling to it.
REPOSITORY_LAYOUT = "pins-1"


def _digest(parts: Iterable[str]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode())
        hasher.update(b"\0")
    return hasher.hexdigest()[:REVISION_LENGTH]


def model_revision(model: TritonModel, pbtxt: str) -> str:
    source = json.dumps(model.spec.source.to_wire(), sort_keys=True, separators=(",", ":"))
    return _digest(["model", REPOSITORY_LAYOUT, model.triton_name, source, pbtxt])


def ensemble_revision(triton_name: str, pbtxt: str, member_revisions: Iterable[str]) -> str:
    return _digest(["ensemble", REPOSITORY_LAYOUT, triton_name, pbtxt, *member_revisions])


def stamp_revision(pbtxt: str, revision: str) -> str:
    """``config.pbtxt`` with ``revision`` recorded as the ``tritonfleet.revision``
    parameter (replacing an earlier stamp), printed by protobuf like every
    config this package renders.

    Raises ValueError when ``pbtxt`` is not a valid ModelConfig or the revision
    is empty.
    """
    if not revision:
        raise ValueError("revision must not be empty")
    config = mc.ModelConfig()
    try:
        text_format.Parse(pbtxt, config)
    except text_format.ParseError as error:
        raise ValueError(f"config.pbtxt does not parse: {error}") from error
    config.parameters[REVISION_PARAMETER].string_value = revision
    return str(text_format.MessageToString(config))


def served_revision(config_json: Mapping[str, Any]) -> str | None:
    """The revision a loaded model was stamped with, from the JSON that
    ``GET /v2/models/<m>/config`` returns; None if it carries no stamp."""
    parameters = config_json.get("parameters")
    if not isinstance(parameters, Mapping):
        return None
    stamp = parameters.get(REVISION_PARAMETER)
    if not isinstance(stamp, Mapping):
        return None
    value = stamp.get("string_value")
    return value if isinstance(value, str) and value else None
