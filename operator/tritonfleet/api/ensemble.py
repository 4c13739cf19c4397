"""The ``ModelEnsemble`` API: a pipeline of ``TritonModel`` members (e.g.
embedding → vector search → LLM) that Triton runs as one ensemble model.

Only the shape of each step is checked here; whether the steps fit their
members (names, tensors, data types, shapes, ordering) needs the members' rendered
configs and is checked by ``tritonfleet.desired.triton.ensemble``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from tritonfleet.api.base import INT32_MAX, MAX_SAFE_INT, ApiModel, ObjectMeta, Quantity, cel
from tritonfleet.api.model import (
    FailoverSpec,
    ModelName,
    ObjectName,
    PoolRef,
    ServingSpec,
)
from tritonfleet.api.rollout import RolloutSpec
from tritonfleet.api.status import ModelStatus
from tritonfleet.api.triton_config import (
    MAX_TENSORS,
    EnsembleInput,
    EnsembleOutput,
    StringMap,
    VersionPolicy,
)

TensorName = Annotated[str, Field(min_length=1, max_length=1024)]


class EnsembleStep(ApiModel):
    model: ObjectName = Field(description="Name of a TritonModel in the same namespace.")
    model_version: Annotated[int, Field(ge=-1, le=MAX_SAFE_INT)] = Field(
        default=-1, description="Version of the member to run; -1 means the latest loaded."
    )
    # Triton: BuildEnsembleGraph, "must specify 'input_map'" / "must specify 'output_map'".
    input_map: Annotated[dict[TensorName, TensorName], Field(min_length=1)] = Field(
        description="Member input name → ensemble tensor that feeds it."
    )
    output_map: Annotated[dict[TensorName, TensorName], Field(min_length=1)] = Field(
        description="Member output name → ensemble tensor it produces."
    )


class EnsemblePoolRef(PoolRef):
    """A pooled ensemble: loaded on pool replicas that hold its members, never duplicating
    them (its members are pooled TritonModels of the same pool)."""

    memory: Quantity = Field(
        default="0",
        description="GPU memory the ensemble itself takes, beyond its members' (usually 0).",
    )


class EnsembleServingSpec(ServingSpec):
    pool: EnsemblePoolRef | None = Field(
        default=None,
        description="Serve the ensemble on the TritonServerPool its members are pooled in.",
    )


class ModelEnsembleSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("size(self.steps) > 0", "an ensemble needs at least one step", ".steps")
            ]
        }
    )

    model_name: ModelName | None = Field(
        default=None, description="Name inside Triton; defaults to metadata.name."
    )
    max_batch_size: Annotated[int, Field(ge=0, le=INT32_MAX)] = Field(
        default=0, description="Largest batch the ensemble accepts; 0 for no batch dimension."
    )
    inputs: Annotated[list[EnsembleInput], Field(min_length=1, max_length=MAX_TENSORS)] = Field(
        description="Tensors a request gives the ensemble."
    )
    outputs: Annotated[list[EnsembleOutput], Field(min_length=1, max_length=MAX_TENSORS)] = Field(
        description="Tensors the ensemble answers with."
    )
    steps: Annotated[list[EnsembleStep], Field(min_length=1, max_length=64)] = Field(
        description="Member TritonModels in order, with how their tensors map to the ensemble's."
    )
    version_policy: VersionPolicy | None = Field(
        default=None, description="Which versions of the ensemble Triton serves."
    )
    parameters: StringMap = Field(
        default_factory=dict, description="Values are strings (quote numbers and booleans)."
    )
    extra: str | None = Field(
        default=None,
        description="Raw config.pbtxt text merged last into the ensemble's config (e.g. "
        "response_cache, metric_tags); steps come from spec.steps only.",
    )
    serving: EnsembleServingSpec = Field(
        default_factory=EnsembleServingSpec,
        description="How the ensemble's Deployment (members and ensemble together) is served, "
        "or the pool it is placed on.",
    )
    failover: FailoverSpec | None = Field(
        default=None,
        description="Failover of the whole pipeline to a hosted OpenAI-compatible API through "
        "the gateway.",
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec,
        description="How a new revision (also one a member update causes) replaces the "
        "served one: Rolling (default) or Canary.",
    )


class ModelEnsemble(ApiModel):
    """A whole ``ModelEnsemble`` object as read from YAML or the API server."""

    model_config = ConfigDict(alias_generator=None, extra="ignore")

    api_version: Literal["tritonfleet.io/v1alpha1"] = Field(
        default="tritonfleet.io/v1alpha1",
        alias="apiVersion",
        description="tritonfleet.io/v1alpha1.",
    )
    kind: Literal["ModelEnsemble"] = Field(default="ModelEnsemble", description="ModelEnsemble.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: ModelEnsembleSpec = Field(
        description="The pipeline: its tensors and the member TritonModels it runs, in steps."
    )
    status: ModelStatus | None = Field(
        default=None,
        description="What the operator observed: conditions, revision, replicas, per-pod model "
        "state.",
    )

    @property
    def triton_name(self) -> str:
        return self.spec.model_name or self.metadata.name

    @property
    def member_names(self) -> tuple[str, ...]:
        """Distinct TritonModel names the steps use, in first-use order."""
        return tuple(dict.fromkeys(step.model for step in self.spec.steps))

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ModelEnsemble:
        # Documents use wire (camelCase) names only: a snake_case key is a typo the
        # API server would drop, so refuse it here too.
        return cls.model_validate(obj, by_alias=True, by_name=False)
