"""The Events the operator's plans post on a TritonModel or ModelEnsemble: one value
type shared by the reconcile's plan (``desired.kube.plan``), the loader's
(``desired.kube.loading``) and the rollout's (``desired.kube.rollout``). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
