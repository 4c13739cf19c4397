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
PLACED = "Placed"  # pooled models: placed on pool replicas within their GPU memory
LOADED = "Loaded"
AVAILABLE = "Available"
AUTOSCALING = "Autoscaling"
READY = "Ready"
ROLLED_BACK = "RolledBack"


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
    revision: str | None = Field(
        default=None, description="The model revision that pod serves (its model READY at it)."
    )
    wanted: str | None = Field(
        default=None,
        description="The revision the pod was started for (its pod template): during a rollout "
        "pods of two revisions serve side by side.",
    )
    state: Literal[
        "Pending", "Loading", "Ready", "Unavailable", "Failed", "Unloading", "Terminating"
    ] = Field(
        default="Pending",
        description="The model on that pod: Pending, Loading, Ready, Unavailable, Failed, "
        "Unloading, or Terminating (the pod is being removed: it finishes what it has, takes "
        "no new request).",
    )
    message: str = Field(default="", description="Triton's error or why the pod is not serving it.")


class RevisionNumbers(ApiModel):
    """One revision's measurements over a canary step's window (the gateway's attempts at
    its pods, and Triton's queue time on them)."""

    requests: int = Field(description="Triton attempts at the revision's pods in the window.")
    errors: int = Field(description="Of those, failed (5xx, timeout, broken) or refused (4xx).")
    error_rate: float | None = Field(default=None, description="errors / requests.")
    p99_latency_ms: float | None = Field(
        default=None,
        description="p99 latency of the answered attempts, in ms: to the whole answer, or to "
        "the first token of a stream.",
    )
    queue_time_ms: float | None = Field(
        default=None, description="Triton's mean queue time per request on its pods, in ms."
    )


class RolloutAnalysis(ApiModel):
    """The numbers of the latest judgement of a canary step, and what they decided."""

    window_seconds: int = Field(description="Seconds of the step judged so far.")
    canary: RevisionNumbers | None = Field(default=None, description="The target revision's.")
    stable: RevisionNumbers | None = Field(default=None, description="The stable revision's.")
    verdict: Literal["Pending", "Passed", "Failed"] = Field(
        default="Pending",
        description="Pending: too few canary requests yet; Passed: within every limit so far; "
        "Failed: a limit crossed (the rollout is rolled back).",
    )
    reason: str = Field(default="", description="Why, with the numbers that decided.")


class RolloutStatus(ApiModel):
    """Where the latest rollout is: what it rolls out, how far, and the traffic split."""

    target_revision: str = Field(description="The revision being rolled out (the spec's).")
    stable_revision: str | None = Field(
        default=None, description="The revision fully rolled out when this rollout started."
    )
    strategy: Literal["Rolling", "Canary"] = Field(
        default="Rolling", description="The strategy the rollout follows (spec.rollout)."
    )
    phase: Literal["Progressing", "Analyzing", "Promoting", "Succeeded", "RolledBack"] = Field(
        description="Progressing: pods of the target start and load. Analyzing: a canary step "
        "takes its share of traffic and is judged. Promoting: the stable pods are replaced "
        "by the target's. Succeeded: every pod serves the target. RolledBack: the target was "
        "judged bad or aborted; the stable revision serves, the target is not retried until "
        "the spec changes."
    )
    step: int | None = Field(default=None, description="Canary step (1-based) in progress.")
    steps: int | None = Field(default=None, description="Canary steps in all.")
    weights: dict[str, int] = Field(
        default_factory=dict,
        description="Revision → percent of requests while a split is in force (a revision at "
        "0 answers only when no other has a pod to take the request). Empty: every loaded "
        "pod takes requests, whatever its revision.",
    )
    started_at: str | None = Field(default=None, description="When the rollout began.")
    step_started_at: str | None = Field(
        default=None, description="When the current canary step's traffic began."
    )
    finished_at: str | None = Field(
        default=None, description="When it succeeded or was rolled back."
    )
    reason: str = Field(default="", description="Why the rollout is where it is, in one word.")
    message: str = Field(default="", description="Where the rollout is, in words.")
    analysis: RolloutAnalysis | None = Field(
        default=None, description="The latest judgement of a canary step."
    )


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
        default=None,
        description="The revision fully rolled out: every Triton pod serves it (a digest of "
        "the source and rendered config). A rollout in progress is in `rollout`.",
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
    rollout: RolloutStatus | None = Field(
        default=None,
        description="The latest rollout: its target revision, phase, canary step and traffic "
        "split, and the numbers it was judged on.",
    )
