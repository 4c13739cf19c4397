"""The typed API of tritonfleet: the pydantic models of ``TritonModel`` and
``ModelEnsemble`` (spec and status), their conditions, and the CRD schemas
generated from them.

This is the innermost layer: it does no I/O and imports neither kopf nor a
Kubernetes client, so every other layer can depend on it.
"""

from tritonfleet.api.base import API_VERSION, GROUP, VERSION
from tritonfleet.api.ensemble import EnsembleStep, ModelEnsemble, ModelEnsembleSpec
from tritonfleet.api.model import (
    ModelConfigSpec,
    ModelInput,
    ModelOutput,
    ModelSource,
    ServingSpec,
    TritonModel,
    TritonModelSpec,
)
from tritonfleet.api.status import Condition, ModelStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Condition",
    "EnsembleStep",
    "ModelConfigSpec",
    "ModelEnsemble",
    "ModelEnsembleSpec",
    "ModelInput",
    "ModelOutput",
    "ModelSource",
    "ModelStatus",
    "ServingSpec",
    "TritonModel",
    "TritonModelSpec",
]
