"""The ``TritonServerPool`` API: one Deployment of Triton replicas shared by many
models, each replica with a GPU memory budget the models are placed within.

A pooled ``TritonModel`` or ``ModelEnsemble`` names its pool and its own GPU memory
in ``spec.serving.pool`` (``api.model.PoolRef``) instead of getting a Deployment of
its own. The pool's spec is the Deployment's serving fields, as a model's own
``spec.serving`` has them, plus ``gpuMemory``, the budget per replica. Placement,
loading and routing per model are the operator's (``desired.kube.placement``).

The budget comes from ``gpuMemory`` when set; else from the nodes the pool selects:
GPU feature discovery's ``nvidia.com/gpu.memory`` label (MiB per GPU) or a
``nvidia.com/gpu.product`` label naming its memory (``NVIDIA-A100-SXM4-80GB``); else
from a MIG profile (``nvidia.com/mig-1g.10gb``); times ``gpus`` in the last three
cases. A CEL rule refuses a pool whose budget cannot be told.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from tritonfleet.api.base import ApiModel, ObjectMeta, Quantity, cel, quantity_bytes
from tritonfleet.api.model import POD_ANNOTATIONS_RULE, QueueTimeAutoscaling, TritonServing
from tritonfleet.api.status import Condition

GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB per GPU (GPU feature discovery)
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # e.g. NVIDIA-A100-SXM4-80GB
_PRODUCT_MEMORY = re.compile(r"([0-9]+)GB")
_MIG_MEMORY = re.compile(r"^nvidia\.com/mig-[0-9]+g\.([0-9]+)gb$")
GIB = 2**30
MIB = 2**20

_BUDGET_MESSAGE = (
    "set gpuMemory, or select nodes by nvidia.com/gpu.memory (MiB) or by a "
    "nvidia.com/gpu.product naming its memory (e.g. NVIDIA-A100-SXM4-80GB), or request a MIG "
    "gpuResource: models are placed within each replica's GPU memory"
)

_POSITIVE_MESSAGE = "gpuMemory must be a positive quantity such as 80Gi"


def gpu_memory_budget(spec: TritonServerPoolSpec) -> tuple[int, str] | None:
    """(bytes per replica, where the figure came from), or None when it cannot be told."""
    if spec.gpu_memory is not None:
        return quantity_bytes(spec.gpu_memory), "gpuMemory"
    gpus = max(spec.gpus, 1)
    labelled = spec.node_selector.get(GPU_MEMORY_LABEL, "")
    if labelled.isdigit():
        return int(labelled) * MIB * gpus, f"nodeSelector {GPU_MEMORY_LABEL}={labelled} x {gpus}"
    mig = _MIG_MEMORY.match(spec.gpu_resource)
    if mig:
        return int(mig.group(1)) * GIB * gpus, f"gpuResource {spec.gpu_resource} x {gpus}"
    product = spec.node_selector.get(GPU_PRODUCT_LABEL, "")
    found = _PRODUCT_MEMORY.search(product)
    if found:
        source = f"nodeSelector {GPU_PRODUCT_LABEL}={product} x {gpus}"
        return int(found.group(1)) * GIB * gpus, source
    return None


class TritonServerPoolSpec(TritonServing):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                POD_ANNOTATIONS_RULE,
                cel(
                    "has(self.gpuMemory) || self.gpuResource.startsWith('nvidia.com/mig-')"
                    " || (has(self.nodeSelector) && (('nvidia.com/gpu.memory' in"
                    " self.nodeSelector && self.nodeSelector['nvidia.com/gpu.memory']"
                    ".matches('^[0-9]+$')) || ('nvidia.com/gpu.product' in self.nodeSelector"
                    " && self.nodeSelector['nvidia.com/gpu.product'].matches('[0-9]+GB'))))",
                    _BUDGET_MESSAGE,
                    ".gpuMemory",
                ),
                cel(
                    "!has(self.gpuMemory) || (isQuantity(string(self.gpuMemory))"
                    " && quantity(string(self.gpuMemory)).isGreaterThan(quantity('0')))",
                    _POSITIVE_MESSAGE,
                    ".gpuMemory",
                ),
            ]
        }
    )

    autoscaling: QueueTimeAutoscaling | None = Field(
        default=None,
        description="Scale the pool on the worst queue time of the models it holds.",
    )
    gpu_memory: Quantity | None = Field(
        default=None,
        description="GPU memory budget per replica (e.g. 80Gi); default: from the nodeSelector's "
        "nvidia.com/gpu.memory or nvidia.com/gpu.product label, or the MIG profile, times gpus.",
    )

    @field_validator("gpu_memory")
    @classmethod
    def _positive(cls, value: str | int | None) -> str | int | None:
        if value is not None and quantity_bytes(value) <= 0:
            raise ValueError(_POSITIVE_MESSAGE)
        return value

    @model_validator(mode="after")
    def _budget_can_be_told(self) -> TritonServerPoolSpec:
        if gpu_memory_budget(self) is None:
            raise ValueError(_BUDGET_MESSAGE)
        return self


# --- status ---------------------------------------------------------------------------------


class PoolReplicaStatus(ApiModel):
    """One replica of the pool: the models placed on it and its memory."""

    index: int = Field(description="The replica's number, 0 up: placement is by replica.")
    pod: str | None = Field(default=None, description="The pod holding it (none yet: pending).")
    ready: bool = Field(default=False, description="Its pod is Ready.")
    models: list[str] = Field(
        default_factory=list, description="Triton models placed on it (each loaded once)."
    )
    memory_used: str = Field(default="0", description="GPU memory its placed models take.")
    memory_free: str = Field(default="0", description="GPU memory left of the budget.")


class PooledModelStatus(ApiModel):
    """One TritonModel or ModelEnsemble of the pool: where it is placed, or why not."""

    kind: Literal["TritonModel", "ModelEnsemble"] = Field(description="Its kind.")
    name: str = Field(description="Its name (same namespace).")
    triton_name: str = Field(description="The model's name inside Triton.")
    memory: str = Field(description="GPU memory it takes on each replica holding it.")
    state: Literal["Placed", "FewerReplicas", "DoesNotFit", "ScaledToZero", "Leaving"] = Field(
        description="Placed; FewerReplicas (placed on fewer replicas than asked); DoesNotFit "
        "(refused, see message); ScaledToZero (unloaded while idle); Leaving (unloading)."
    )
    replicas: list[int] = Field(default_factory=list, description="Pool replicas it is placed on.")
    pods: list[str] = Field(default_factory=list, description="Pool pods holding those replicas.")
    message: str = Field(default="", description="Why it is not placed as asked, in numbers.")


class PoolStatus(ApiModel):
    observed_generation: int | None = Field(
        default=None, description="The generation of the spec this status is about."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Valid, Placed and Ready, each with its reason."
    )
    replicas: int | None = Field(default=None, description="Replicas of the pool's Deployment.")
    ready_replicas: int | None = Field(default=None, description="Of those, Ready.")
    replica_summary: str | None = Field(default=None, description="ready/desired replicas.")
    gpu_memory: str | None = Field(default=None, description="GPU memory budget per replica.")
    memory_summary: str | None = Field(
        default=None, description="GPU memory placed / budget, over every replica."
    )
    model_summary: str | None = Field(default=None, description="placed / pooled models.")
    deployment: str | None = Field(default=None, description="The pool's Triton Deployment.")
    placement: list[PoolReplicaStatus] = Field(
        default_factory=list, description="Per replica: its pod, its models, its memory."
    )
    models: list[PooledModelStatus] = Field(
        default_factory=list, description="Per pooled model: where it is placed, or why not."
    )


class TritonServerPool(ApiModel):
    """A whole ``TritonServerPool`` object as read from YAML or the API server."""

    model_config = ConfigDict(alias_generator=None, extra="ignore")

    api_version: Literal["tritonfleet.io/v1alpha1"] = Field(
        default="tritonfleet.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["TritonServerPool"] = "TritonServerPool"
    metadata: ObjectMeta
    spec: TritonServerPoolSpec
    status: PoolStatus | None = None

    @property
    def budget(self) -> int:
        """GPU memory per replica, in bytes (the spec validated, so it is known)."""
        told = gpu_memory_budget(self.spec)
        assert told is not None
        return told[0]

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> TritonServerPool:
        return cls.model_validate(obj, by_alias=True, by_name=False)
