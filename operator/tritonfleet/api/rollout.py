"""``spec.rollout``: how a new revision of a TritonModel or ModelEnsemble replaces the
one being served.

``Rolling`` (the default) replaces the Triton pods one surge at a time; the old pods
keep answering until pods of the new revision are loaded and routed to. ``Canary``
runs the new revision beside the old one (its own pods), gives it a growing share of
the requests (``steps``), judges each step on the gateway's measurements of both
revisions (``analysis``) and promotes it, or rolls it back automatically.

The field names here are the user-facing contract. Each cross-field rule exists twice:
as a CEL rule the API server enforces and as a pydantic validator (the offline twin).
The state machine that walks these steps is ``tritonfleet.desired.kube.rollout``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from tritonfleet.api.base import ApiModel, cel

MAX_CANARY_STEPS = 16


class CanaryStep(ApiModel):
    weight: Annotated[int, Field(ge=1, le=100)] = Field(
        description="Percent of the model's requests the new revision takes at this step."
    )
    pause_seconds: Annotated[int, Field(ge=0, le=86400)] = Field(
        default=60,
        description="How long the step lasts: its analysis window. The step passes at the "
        "end of it if the analysis holds; 0 moves on once the new revision's pods are loaded.",
    )


class CanaryAnalysis(ApiModel):
    """The limits a canary step is judged against (the canary's numbers over the step,
    compared with the stable revision's over the same window)."""

    max_error_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.05,
        description="How much the canary's error rate (failed or refused Triton attempts / "
        "attempts) may exceed the stable revision's, as a fraction: 0.05 = 5 points.",
    )
    max_p99_latency_ms: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Highest p99 latency the canary may show, in ms (time to the whole answer, "
        "or to the first token of a stream), when it is also slower than the stable revision.",
    )
    max_queue_time_ms: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Highest mean Triton queue time per request on the canary's pods, in ms, "
        "when it is also above the stable revision's.",
    )
    min_requests: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        default=20,
        description="Requests the canary must have answered in a step before it can pass or "
        "fail; a step that has not seen them waits (promote by hand for idle models).",
    )


class CanarySpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.steps.map(s, s.weight).isSorted()",
                    "step weights must not decrease",
                    ".steps",
                )
            ]
        }
    )

    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=MAX_CANARY_STEPS)] = Field(
        description="Traffic steps, in order; after the last one the new revision is promoted "
        "(the stable pods are replaced)."
    )
    analysis: CanaryAnalysis = Field(
        default_factory=CanaryAnalysis,
        description="The limits each step is judged against, on the gateways' numbers of the "
        "canary and the stable revision over the step.",
    )

    @field_validator("steps")
    @classmethod
    def _weights_grow(cls, steps: list[CanaryStep]) -> list[CanaryStep]:
        weights = [s.weight for s in steps]
        if weights != sorted(weights):
            raise ValueError(f"step weights must not decrease (found {weights})")
        return steps


class RolloutSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.strategy != 'Canary' || has(self.canary)",
                    "strategy Canary needs canary (its steps)",
                    ".canary",
                ),
                cel(
                    "self.strategy == 'Canary' || !has(self.canary)",
                    "canary may only be set with strategy Canary",
                    ".canary",
                ),
            ]
        }
    )

    strategy: Literal["Rolling", "Canary"] = Field(
        default="Rolling",
        description="Rolling: replace the pods, the old ones answering until the new ones "
        "are loaded. Canary: run the new revision beside the old, shift traffic by "
        "canary.steps, judge each step, promote or roll back automatically.",
    )
    max_surge: Annotated[int, Field(ge=1, le=100)] = Field(
        default=1,
        description="Triton pods a rollout may run beyond the current replicas: the Rolling "
        "update's surge, and at most this many canary pods.",
    )
    canary: CanarySpec | None = Field(
        default=None, description="The canary's steps and analysis (strategy Canary only)."
    )

    @model_validator(mode="after")
    def _canary_goes_with_its_strategy(self) -> RolloutSpec:
        if self.strategy == "Canary" and self.canary is None:
            raise ValueError("strategy Canary needs canary (its steps)")
        if self.strategy != "Canary" and self.canary is not None:
            raise ValueError("canary may only be set with strategy Canary")
        return self
