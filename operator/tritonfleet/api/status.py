"""Status of TritonModel and ModelEnsemble: metav1-shaped conditions plus the
fields the reconciler, loader, autoscaler and gateway fill in.

Condition helpers here are pure: they return a new list and never touch the
clock themselves, so handlers pass ``now`` in and tests stay deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field

from tritonfleet.api.base import ApiModel

ConditionStatus = Literal["True", "False", "Unknown"]

# Condition types, in the order a model progresses through them.
VALID = "Valid"
SYNCED = "Synced"
LOADED = "Loaded"
AVAILABLE = "Available"
AUTOSCALING = "Autoscaling"
READY = "Ready"


class Condition(ApiModel):
    """One observation about the object, shaped like metav1.Condition."""

    type: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=64)] = Field(
        description="Valid, Synced, Available, Loaded, Ready or Autoscaling."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")] = Field(
        default="Unknown",
        description="One word for the state, for tools (e.g. SyncFailed, ScaledToZero).",
    )
    message: Annotated[str, Field(max_length=32768)] = Field(
        default="", description="What happened and what to do, for people."
    )
    last_transition_time: str | None = Field(default=None, description="When status last changed.")
    observed_generation: int | None = Field(
        default=None, description="The spec generation this condition is about."
    )


def set_condition(
    conditions: Sequence[Condition], new: Condition, now: str
) -> tuple[Condition, ...]:
    """Return ``conditions`` with ``new`` in place of the one of the same type.

    ``lastTransitionTime`` moves only when the status flips, as metav1
    prescribes, so an unchanged condition produces an identical status and the
    reconciler can skip the write.
    """
    kept: list[Condition] = []
    replaced = False
    for old in conditions:
        if old.type != new.type:
            kept.append(old)
            continue
        replaced = True
        since = old.last_transition_time if old.status == new.status else now
        kept.append(new.model_copy(update={"last_transition_time": since or now}))
    if not replaced:
        kept.append(new.model_copy(update={"last_transition_time": now}))
    return tuple(kept)


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


class PodModelState(ApiModel):
    """What one Triton pod reports for this model (filled by the loader)."""

    name: str = Field(description="Name of the Triton pod.")
    ip: str | None = Field(default=None, description="Its pod IP.")
    revision: str | None = Field(default=None, description="The model revision that pod serves.")
    state: Literal["Pending", "Loading", "Ready", "Unavailable", "Failed", "Unloading"] = Field(
        default="Pending",
        description="The model on that pod: Pending, Loading, Ready, Unavailable, Failed or "
        "Unloading.",
    )
    message: str = Field(default="", description="Triton's error or why the pod is not serving it.")


class ModelStatus(ApiModel):
    """Status shared by TritonModel and ModelEnsemble."""

    observed_generation: int | None = Field(
        default=None, description="The spec generation the status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Valid, Synced, Available, Loaded, Ready (and Autoscaling) with reasons and "
        "messages.",
    )
    revision: str | None = Field(
        default=None, description="Digest of the source and rendered config being served."
    )
    replicas: int | None = Field(default=None, description="Triton replicas wanted.")
    ready_replicas: int | None = Field(default=None, description="Triton replicas ready.")
    replica_summary: str | None = Field(
        default=None, description="ready/desired replicas, as shown by kubectl get."
    )
    served_by: str | None = Field(
        default=None, description="Who answers requests now: triton, hosted, or none."
    )
    deployment: str | None = Field(default=None, description="The Triton Deployment serving it.")
    pods: list[PodModelState] = Field(
        default_factory=list, description="The model's state on each Triton pod."
    )
