"""The ``TritonModel`` API: where a model's files come from, how Triton should
configure it, how it is served on GPUs, and where requests go when Triton cannot
answer.

These field names are the user-facing contract. Each cross-field rule exists
twice: as a CEL rule (``x-kubernetes-validations``) the API server enforces at
``kubectl apply`` time, and as a pydantic validator so ``tritonfleet render``
refuses the same object offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from tritonfleet.api.base import (
    DNS_SUBDOMAIN_PATTERN,
    MODEL_NAME_PATTERN,
    QUALIFIED_NAME_PATTERN,
    QUALIFIED_NAME_RE,
    ApiModel,
    FreeFormObject,
    ObjectMeta,
    Quantity,
    cel,
    exactly_one,
)
from tritonfleet.api.rollout import RolloutSpec
from tritonfleet.api.status import ModelStatus
from tritonfleet.api.triton_config import DataType, Dim, ModelConfigSpec, ModelInput, ModelOutput

__all__ = [
    "DataType",
    "Dim",
    "ModelConfigSpec",
    "ModelInput",
    "ModelOutput",
]

ModelName = Annotated[str, Field(pattern=MODEL_NAME_PATTERN, max_length=127)]
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]

MAX_INLINE_FILES = 64


# --- source -----------------------------------------------------------------


class S3Source(ApiModel):
    uri: Annotated[str, Field(pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$")] = Field(
        description="s3://bucket/prefix holding the model directory (config.pbtxt optional, "
        "version folders 1/, 2/...)."
    )
    endpoint: str | None = Field(
        default=None, description="S3-compatible endpoint URL (MinIO, Ceph, moto); AWS if unset."
    )
    region: str | None = Field(
        default=None,
        description="Region of the bucket; the endpoint's or the SDK's default if unset.",
    )
    credentials_secret: ObjectName | None = Field(
        default=None,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and optionally "
        "AWS_SESSION_TOKEN); the pod's ambient credentials are used if unset.",
    )


class HttpSource(ApiModel):
    url: Annotated[str, Field(pattern=r"^https?://.+", max_length=4096)] = Field(
        description="http(s) URL of one file or a .tar.gz/.tgz/.zip archive of the model directory."
    )
    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")] | None = Field(
        default=None, description="Expected SHA-256 of the download; the sync fails on mismatch."
    )
    archive: Literal["tar", "tgz", "zip"] | None = Field(
        default=None,
        description="Unpack the download into the model directory. Unset: a single file "
        "stored at `path`.",
    )
    path: str | None = Field(
        default=None,
        description="Where a non-archive download goes inside the model directory "
        "(default 1/<file name from the URL>).",
    )


class PvcSource(ApiModel):
    claim_name: ObjectName = Field(
        description="PersistentVolumeClaim in the model's namespace holding the model files."
    )
    path: str = Field(default="/", description="Directory inside the claim holding the model.")


def _check_relative_path(path: str) -> str:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\\" in path:
        raise ValueError(f"{path!r} must be a relative path inside the model directory")
    return path


class InlineSource(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.files.all(k, size(k) > 0 && !k.startsWith('/') && !k.contains('\\\\')"
                    " && k != '..' && !k.startsWith('../') && !k.endsWith('/..')"
                    " && !k.contains('/../'))",
                    "file paths must be relative and stay inside the model directory",
                    ".files",
                )
            ]
        }
    )

    files: Annotated[
        dict[Annotated[str, Field(max_length=255)], str],
        Field(min_length=1, max_length=MAX_INLINE_FILES),
    ] = Field(description="Relative path (e.g. 1/model.py) → file content.")

    @field_validator("files")
    @classmethod
    def _paths_stay_inside(cls, files: dict[str, str]) -> dict[str, str]:
        for path in files:
            _check_relative_path(path)
        return files


class ModelSource(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.s3), has(self.http), has(self.pvc), has(self.inline)]"
                    ".filter(x, x).size() == 1",
                    "set exactly one of s3, http, pvc, inline",
                )
            ]
        }
    )

    s3: S3Source | None = Field(
        default=None, description="Fetch the model from an S3 (or S3-compatible) bucket prefix."
    )
    http: HttpSource | None = Field(
        default=None, description="Fetch the model from an http(s) URL."
    )
    pvc: PvcSource | None = Field(
        default=None, description="Copy the model from a path on a PersistentVolumeClaim."
    )
    inline: InlineSource | None = Field(
        default=None,
        description="The model files written in the object itself (small Python models, configs).",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ModelSource:
        exactly_one(self, ("s3", "http", "pvc", "inline"))
        return self

    @property
    def kind(self) -> str:
        return next(f for f in ("s3", "http", "pvc", "inline") if getattr(self, f) is not None)


# --- serving ----------------------------------------------------------------


class ReplicaRange(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.min <= self.max", "min must not exceed max", ".min")
            ]
        }
    )

    min: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=1,
        description="Fewest Triton replicas; 0 allows scaling to zero (with "
        "autoscaling.scaleToZeroAfterSeconds).",
    )
    max: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=1, description="Most Triton replicas the autoscaler may run."
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> ReplicaRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class QueueTimeAutoscaling(ApiModel):
    """Queue-time autoscaling of a Deployment of Triton replicas (a model's or a pool's)."""

    queue_time_target_ms: Annotated[float, Field(gt=0)] = Field(
        default=50.0, description="Target average queue time per request, in milliseconds."
    )
    window_seconds: Annotated[int, Field(ge=5, le=3600)] = Field(
        default=30, description="Window the queue time is averaged over."
    )


class Autoscaling(QueueTimeAutoscaling):
    scale_to_zero_after_seconds: Annotated[int, Field(ge=30)] | None = Field(
        default=None, description="Scale to zero after this long without requests (min: 0 only)."
    )


class ResourceRequirements(ApiModel):
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Resource limits (cpu, memory, ...) of the Triton container, as Kubernetes "
        "quantities.",
    )
    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Resource requests (cpu, memory, ...) of the Triton container, as Kubernetes "
        "quantities.",
    )


class Toleration(ApiModel):
    key: str | None = Field(
        default=None,
        description="Taint key the toleration applies to; empty with operator Exists matches "
        "every key.",
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists (any value) or Equal (the value below); Equal if unset."
    )
    value: str | None = Field(default=None, description="Taint value to match with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; all effects if unset."
    )
    toleration_seconds: int | None = Field(
        default=None,
        description="How long a NoExecute taint is tolerated before eviction; for ever if unset.",
    )


class EnvVar(ApiModel):
    name: Annotated[str, Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")] = Field(
        description="Name of the environment variable."
    )
    value: str | None = Field(
        default=None, description="Its value ($(VAR) references expand as in a pod spec)."
    )
    value_from: FreeFormObject | None = Field(
        default=None,
        description="A source for its value, as in a pod spec (secretKeyRef, configMapKeyRef, "
        "fieldRef...).",
    )


class LocalObjectReference(ApiModel):
    name: ObjectName = Field(description="Name of the object in the same namespace.")


# nvidia.com/gpu, a MIG profile, and either with a suffix: the NVIDIA device plugin's
# time-slicing and MPS sharing advertise "nvidia.com/gpu.shared" by default (or another
# ".name" rename), and the GPU Operator's node labelling per model ("nvidia.com/gpu.a100").
GPU_RESOURCE_PATTERN = (
    r"^nvidia\.com/(gpu|mig-[0-9]+g\.[0-9]+gb)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"
)


POD_ANNOTATIONS_RULE = cel(
    "!has(self.podAnnotations) || self.podAnnotations.all(k, k.matches('"
    + QUALIFIED_NAME_PATTERN.replace("\\", "\\\\")
    + "'))",
    "podAnnotations keys must be qualified names ([prefix/]name)",
    ".podAnnotations",
)


class TritonServing(ApiModel):
    """The fields of a Deployment of Triton replicas: a model's own (``spec.serving``) or a
    pool's (``TritonServerPool.spec``)."""

    # A subclass's own rules replace these: each repeats POD_ANNOTATIONS_RULE.
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [POD_ANNOTATIONS_RULE]}
    )

    image: str | None = Field(default=None, description="Triton image; operator default if unset.")
    gpus: Annotated[int, Field(ge=0, le=64)] = Field(default=1, description="GPUs per replica.")
    gpu_resource: Annotated[str, Field(pattern=GPU_RESOURCE_PATTERN)] = Field(
        default="nvidia.com/gpu",
        description="Extended resource to request: nvidia.com/gpu, a MIG profile such as "
        "nvidia.com/mig-1g.10gb, or a shared or renamed one such as nvidia.com/gpu.shared "
        "(time-slicing, MPS).",
    )
    replicas: ReplicaRange = Field(
        default_factory=ReplicaRange, description="How many Triton replicas serve it: min and max."
    )
    autoscaling: QueueTimeAutoscaling | None = Field(
        default=None,
        description="Scale on Triton's queue time (an HPA per model); fixed at replicas.min if "
        "unset.",
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Requests and limits of the Triton container besides GPUs (the installation "
        "default if unset).",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the Triton pods must run on."
    )
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = Field(
        default_factory=list,
        description="Taints the Triton pods tolerate (the GPU taint nvidia.com/gpu is tolerated "
        "with gpus > 0).",
    )
    affinity: FreeFormObject | None = Field(
        default=None, description="Affinity of the Triton pods, as in a pod spec."
    )
    shm_size: Quantity = Field(default="1Gi", description="Size of /dev/shm (memory emptyDir).")
    env: Annotated[list[EnvVar], Field(max_length=128)] = Field(
        default_factory=list, description="Extra environment variables of the Triton container."
    )
    image_pull_secrets: Annotated[list[LocalObjectReference], Field(max_length=16)] = Field(
        default_factory=list, description="Secrets to pull the Triton image."
    )
    priority_class_name: ObjectName | None = Field(
        default=None,
        description="PriorityClass of the Triton pods (e.g. to preempt batch work for serving).",
    )
    runtime_class_name: ObjectName | None = Field(
        default=None,
        description="RuntimeClass of the Triton pods (e.g. nvidia, where the NVIDIA container "
        "runtime is not the node's default).",
    )
    topology_spread_constraints: Annotated[list[FreeFormObject], Field(max_length=8)] = Field(
        default_factory=list,
        description="Pod topology spread constraints of the Triton pods, as in a pod spec "
        "(labelSelector may use the pod labels tritonfleet.io/model and "
        "app.kubernetes.io/component: inference-server).",
    )
    pod_annotations: Annotated[dict[str, str], Field(max_length=64)] = Field(
        default_factory=dict,
        description="Annotations on the Triton pods (e.g. for a service mesh or a log shipper).",
    )

    @field_validator("pod_annotations")
    @classmethod
    def _annotation_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not QUALIFIED_NAME_RE.match(k)]
        if bad:
            raise ValueError(
                f"podAnnotations keys must be qualified names ([prefix/]name): {', '.join(bad)}"
            )
        return value


class PoolRef(ApiModel):
    """Where a pooled model is served: a ``TritonServerPool`` of the same namespace."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # The schema of an int-or-string cannot say "quantity"; the twin is the
                # Quantity type's own check.
                cel(
                    "isQuantity(string(self.memory))"
                    " && !quantity(string(self.memory)).isLessThan(quantity('0'))",
                    "memory must be a quantity such as 6Gi",
                    ".memory",
                )
            ]
        }
    )

    name: ObjectName = Field(description="The TritonServerPool (same namespace) serving it.")
    memory: Quantity = Field(
        description="GPU memory the model takes when loaded (e.g. 6Gi): what placement checks "
        "against each pool replica's gpuMemory."
    )
    replicas: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        default=None,
        description="On how many of the pool's replicas it is loaded (default: every replica).",
    )
    scale_to_zero_after_seconds: Annotated[int, Field(ge=30)] | None = Field(
        default=None,
        description="Unload it from the pool after this long without requests (its memory is "
        "freed, no pod restarts); the next request through the gateway loads it again.",
    )


# Per-model serving fields that a pool's spec sets instead: a pooled model leaves them
# at their defaults (a field equal to its default cannot be told from an unset one once
# the API server has applied the schema's defaults, or once a spec went to the wire).
POOL_EXCLUSIVE_FIELDS = (
    "image, gpus, gpuResource, replicas, autoscaling, resources, nodeSelector, tolerations, "
    "affinity, shmSize, env, imagePullSecrets, priorityClassName, runtimeClassName, "
    "topologySpreadConstraints, podAnnotations"
)
_POOL_RULE_MESSAGE = (
    f"pool replaces the per-model serving fields: leave {POOL_EXCLUSIVE_FIELDS} to the "
    "TritonServerPool"
)


class ServingSpec(TritonServing):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.autoscaling) || !has(self.autoscaling.scaleToZeroAfterSeconds)"
                    " || (has(self.replicas) && self.replicas.min == 0)",
                    "autoscaling.scaleToZeroAfterSeconds needs replicas.min: 0",
                    ".autoscaling.scaleToZeroAfterSeconds",
                ),
                POD_ANNOTATIONS_RULE,
                cel(
                    "!has(self.pool) || (!has(self.image) && self.gpus == 1"
                    " && self.gpuResource == 'nvidia.com/gpu'"
                    " && (!has(self.replicas)"
                    " || (self.replicas.min == 1 && self.replicas.max == 1))"
                    " && !has(self.autoscaling) && !has(self.resources)"
                    " && (!has(self.nodeSelector) || size(self.nodeSelector) == 0)"
                    " && (!has(self.tolerations) || size(self.tolerations) == 0)"
                    " && !has(self.affinity) && string(self.shmSize) == '1Gi'"
                    " && (!has(self.env) || size(self.env) == 0)"
                    " && (!has(self.imagePullSecrets) || size(self.imagePullSecrets) == 0)"
                    " && !has(self.priorityClassName) && !has(self.runtimeClassName)"
                    " && (!has(self.topologySpreadConstraints)"
                    " || size(self.topologySpreadConstraints) == 0)"
                    " && (!has(self.podAnnotations) || size(self.podAnnotations) == 0))",
                    _POOL_RULE_MESSAGE,
                    ".pool",
                ),
            ]
        }
    )

    autoscaling: Autoscaling | None = Field(
        default=None,
        description="Scale on Triton's queue time (an HPA per model); fixed at replicas.min if "
        "unset.",
    )
    pool: PoolRef | None = Field(
        default=None,
        description="Serve the model on a shared TritonServerPool instead of its own Deployment.",
    )

    @model_validator(mode="after")
    def _scale_to_zero_needs_min_zero(self) -> ServingSpec:
        if (
            self.autoscaling is not None
            and self.autoscaling.scale_to_zero_after_seconds is not None
            and self.replicas.min != 0
        ):
            raise ValueError("autoscaling.scaleToZeroAfterSeconds needs replicas.min: 0")
        return self

    @model_validator(mode="after")
    def _pool_replaces_serving_fields(self) -> ServingSpec:
        if self.pool is None:
            return self
        set_here = [
            name
            for name, taken in (
                ("image", self.image is not None),
                ("gpus", self.gpus != 1),
                ("gpuResource", self.gpu_resource != "nvidia.com/gpu"),
                ("replicas", self.replicas != ReplicaRange()),
                ("autoscaling", self.autoscaling is not None),
                ("resources", self.resources is not None),
                ("nodeSelector", bool(self.node_selector)),
                ("tolerations", bool(self.tolerations)),
                ("affinity", self.affinity is not None),
                ("shmSize", str(self.shm_size) != "1Gi"),
                ("env", bool(self.env)),
                ("imagePullSecrets", bool(self.image_pull_secrets)),
                ("priorityClassName", self.priority_class_name is not None),
                ("runtimeClassName", self.runtime_class_name is not None),
                ("topologySpreadConstraints", bool(self.topology_spread_constraints)),
                ("podAnnotations", bool(self.pod_annotations)),
            )
            if taken
        ]
        if set_here:
            raise ValueError(f"{_POOL_RULE_MESSAGE} (set here: {', '.join(set_here)})")
        return self


# --- failover ---------------------------------------------------------------


class SecretKeyRef(ApiModel):
    name: ObjectName = Field(description="Secret in the model's namespace.")
    key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = Field(
        description="Key in the Secret holding the value."
    )


class HostedProvider(ApiModel):
    base_url: Annotated[str, Field(pattern=r"^https?://.+", max_length=2048)] = Field(
        description="Base URL of an OpenAI-compatible API, e.g. https://api.deepseek.com/v1."
    )
    api_key_secret: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the API key; never logged or echoed."
    )
    model: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="Model name at the provider, e.g. deepseek-chat."
    )


class FailoverTriggers(ApiModel):
    unavailable: bool = Field(
        default=True, description="Fail over while no Triton replica can answer."
    )
    queue_time_above_ms: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Spill over while Triton's queue time exceeds this."
    )


class FailoverSpec(ApiModel):
    provider: HostedProvider = Field(
        description="The hosted OpenAI-compatible API the gateway fails over to."
    )
    triggers: FailoverTriggers = Field(
        default_factory=FailoverTriggers,
        description="When the gateway sends requests to the provider instead of Triton.",
    )
    mode: Literal["auto", "hosted", "triton"] = Field(
        default="auto",
        description="auto: fail over on the triggers; hosted: always use the provider; "
        "triton: never fail over.",
    )


# --- the resource -----------------------------------------------------------


class TritonModelSpec(ApiModel):
    model_name: ModelName | None = Field(
        default=None, description="Name inside Triton; defaults to metadata.name."
    )
    source: ModelSource = Field(
        description="Where the model files come from: exactly one of s3, http, pvc, inline."
    )
    config: ModelConfigSpec = Field(
        description="Triton's model configuration (config.pbtxt) as typed fields, plus extra raw "
        "pbtxt."
    )
    serving: ServingSpec = Field(
        default_factory=ServingSpec,
        description="How the model is served: image, GPUs, replicas, autoscaling, scheduling.",
    )
    failover: FailoverSpec | None = Field(
        default=None, description="Failover to a hosted OpenAI-compatible API through the gateway."
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec,
        description="How a new revision replaces the served one: Rolling (default) or Canary.",
    )


class TritonModel(ApiModel):
    """A whole ``TritonModel`` object as read from YAML or the API server."""

    model_config = ConfigDict(alias_generator=None, extra="ignore")

    api_version: Literal["tritonfleet.io/v1alpha1"] = Field(
        default="tritonfleet.io/v1alpha1",
        alias="apiVersion",
        description="tritonfleet.io/v1alpha1.",
    )
    kind: Literal["TritonModel"] = Field(default="TritonModel", description="TritonModel.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: TritonModelSpec = Field(description="What to serve and how.")
    status: ModelStatus | None = Field(
        default=None,
        description="What the operator observed: conditions, revision, replicas, per-pod model "
        "state.",
    )

    @property
    def triton_name(self) -> str:
        return self.spec.model_name or self.metadata.name

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> TritonModel:
        # Documents use wire (camelCase) names only: a snake_case key is a typo the
        # API server would drop, so refuse it here too.
        return cls.model_validate(obj, by_alias=True, by_name=False)
