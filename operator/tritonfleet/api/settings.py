"""Operator settings: what a platform team configures once per installation
(default Triton image, model-repository storage, watched namespaces, log
format...), as opposed to what ML engineers put in a ``TritonModel``.

The Helm chart passes them as ``TRITONFLEET_*`` environment variables (from
its values); :meth:`OperatorSettings.from_env` parses such a mapping. Reading
the real process environment is the caller's job (``cli.operator``), so this
module stays pure like the rest of ``api/`` and the desired-state functions
can take settings as a plain value.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tritonfleet import __version__
from tritonfleet.api.base import DNS_SUBDOMAIN_PATTERN, Quantity
from tritonfleet.api.model import ResourceRequirements

ENV_PREFIX = "TRITONFLEET_"

# Triton 2.51, the release the project is tested against (its CPU build ships
# in the nvidia-pytriton wheel the test suite runs).
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
DEFAULT_OPERATOR_IMAGE = f"tritonfleet/tritonfleet:{__version__}"
DEFAULT_REPOSITORY_CLAIM = "tritonfleet-models"
# Address the operator's and gateway's listeners bind (default: all). Not an
# operator setting: the test suite's local pod runner sets it to the pod's own
# loopback IP so several "pods" can use the same ports on one machine.
LISTEN_HOST_ENV = f"{ENV_PREFIX}LISTEN_HOST"

ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
Namespace = Annotated[str, Field(pattern=r"^[a-z0-9*?]([-a-z0-9*?]*[a-z0-9*?])?$", max_length=63)]


class SettingsError(ValueError):
    """A ``TRITONFLEET_*`` variable has a value the operator cannot use."""


def _parse_labels(raw: str) -> dict[str, str]:
    """``k=v,k2=v2`` (the ``kubectl label`` syntax) → mapping."""
    labels: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


class OperatorSettings(BaseModel):
    """Installation-wide settings of the operator (immutable once started)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    triton_image: str = Field(
        default=DEFAULT_TRITON_IMAGE, description="Triton image for models that set none."
    )
    operator_image: str = Field(
        default=DEFAULT_OPERATOR_IMAGE,
        description="Image of tritonfleet itself (has the `tritonfleet` command).",
    )
    sync_image: str | None = Field(
        default=None,
        description="Image the sync and cleanup Jobs run; the operator image if unset.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    repository_claim: ObjectName | None = Field(
        default=None,
        description="Existing RWX claim holding the model repository, in every watched "
        "namespace. Unset: the operator creates one claim per namespace.",
    )
    repository_claim_name: ObjectName = Field(
        default=DEFAULT_REPOSITORY_CLAIM,
        description="Name of the per-namespace claim the operator creates.",
    )
    repository_storage_class: ObjectName | None = Field(
        default=None, description="StorageClass of the created claim; the cluster default if unset."
    )
    repository_size: Quantity = Field(default="100Gi", description="Size of the created claim.")
    namespaces: tuple[Namespace, ...] = Field(
        default=(), description="Namespaces (or globs) to watch; all namespaces if empty."
    )
    log_format: Literal["json", "text"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    triton_default_resources: ResourceRequirements | None = Field(
        default=None,
        description="Requests and limits of the Triton container for models whose "
        "serving.resources is unset (JSON in TRITONFLEET_TRITON_DEFAULT_RESOURCES); GPUs "
        "come from serving.gpus either way.",
    )
    triton_pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on every Triton pod."
    )
    sync_pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on every sync and cleanup pod."
    )
    reconcile_interval_seconds: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="How often every object is re-checked against the cluster."
    )
    job_image_pull_secrets: tuple[ObjectName, ...] = Field(
        default=(),
        description="Secrets to pull the sync and cleanup Jobs' image (the tritonfleet image "
        "in a private registry); comma-separated in TRITONFLEET_JOB_IMAGE_PULL_SECRETS. They "
        "must exist in every namespace with models.",
    )
    job_resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(
            requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "2Gi"}
        ),
        description="Requests and limits of the sync and cleanup Jobs (JSON in "
        "TRITONFLEET_JOB_RESOURCES, as a container's resources).",
    )
    sync_backoff_limit: Annotated[int, Field(ge=0, le=20)] = 3
    sync_ttl_seconds: Annotated[int, Field(ge=0)] = Field(
        default=86400, description="How long a finished sync Job is kept for inspection."
    )
    sync_deadline_seconds: Annotated[int, Field(ge=60)] = Field(
        default=7200, description="A sync Job running longer than this is failed."
    )
    cleanup_timeout_seconds: Annotated[int, Field(ge=10)] = Field(
        default=300,
        description="How long deletion waits for the cleanup Job before releasing the object.",
    )
    startup_seconds: Annotated[int, Field(ge=30)] = Field(
        default=1800,
        description="Time Triton gets to load its models before the kubelet restarts it "
        "(startup probe budget; big LLMs take many minutes).",
    )
    dial_pod_networks: tuple[str, ...] = Field(
        default=(),
        description="CIDRs whose pod IPs the operator may dial to load models (comma-separated "
        "in TRITONFLEET_DIAL_POD_NETWORKS). Empty: every pod IP. A safety for clusters with "
        "fake nodes (kwok): pods outside these networks are reported unreachable, never dialled.",
    )
    drain_seconds: Annotated[int, Field(ge=0, le=600)] = Field(
        default=10,
        description="How long a Triton pod that is being removed keeps answering before it "
        "is told to stop (preStop sleep): long enough for the loader to mark it terminating "
        "and every gateway replica to stop choosing it (they re-read routes every 2 s).",
    )
    unload_timeout_seconds: Annotated[int, Field(ge=1)] = Field(
        default=60,
        description="How long deletion waits for every pod to unload a model before its "
        "files are removed anyway (unreachable pods must not block deletion).",
    )
    scale_down_stabilization_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=300,
        description="HPA scale-down stabilisation window of autoscaled models (scale-up "
        "is immediate; a GPU pod takes minutes to come back, so shrinking waits).",
    )
    metrics_api_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=0, description="Port of the external metrics API (TLS); 0 = not served."
    )
    metrics_api_cert_dir: str = Field(
        default="/etc/tritonfleet/metrics-api",
        description="Directory with tls.crt and tls.key of the external metrics API.",
    )
    gateway_pod_selector: str = Field(
        default="",
        description="Label selector of the gateway pods whose /metrics carry the activation "
        "signal for scale from zero (each replica's newest request per model). Empty: no "
        "gateway is watched, so a model scaled to zero comes back only by kubectl scale.",
    )
    gateway_namespace: str = Field(
        default="", description="Namespace of those gateway pods (empty: every namespace)."
    )
    gateway_metrics_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8080, description="Port of the gateway pods' /metrics."
    )
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    health_port: Annotated[int, Field(ge=0, le=65535)] = 8081
    leader_election: bool = Field(
        default=False,
        description="Several replicas, one active: the holder of a Lease does the work, the "
        "others watch and stand by (see desired/kube/leadership.py). Off: this process is "
        "the only operator.",
    )
    lease_name: Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] = Field(
        default="tritonfleet-operator", description="Name of the leader-election Lease."
    )
    lease_namespace: str = Field(
        default="",
        description="Namespace of the Lease (the operator's own); empty: the service "
        "account's namespace, else default.",
    )
    lease_duration_seconds: Annotated[float, Field(ge=3, le=300)] = Field(
        default=15.0,
        description="A standby takes over when the Lease went unrenewed this long; the "
        "active replica renews it every third of that.",
    )
    pod_name: str = Field(
        default="",
        description="This replica's pod (downward API): its identity in the Lease, and the "
        "pod labelled as the leader for the external metrics API's Service.",
    )

    @field_validator("triton_pod_labels", "sync_pod_labels", mode="before")
    @classmethod
    def _labels_from_text(cls, value: Any) -> Any:
        return _parse_labels(value) if isinstance(value, str) else value

    @field_validator("namespaces", mode="before")
    @classmethod
    def _namespaces_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(n.strip() for n in value.split(",") if n.strip())
        return value

    @field_validator("job_image_pull_secrets", mode="before")
    @classmethod
    def _names_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(n.strip() for n in value.split(",") if n.strip())
        return value

    @field_validator("job_resources", "triton_default_resources", mode="before")
    @classmethod
    def _resources_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as error:
                raise ValueError(f"not JSON: {error}") from None
        return value

    @field_validator("dial_pod_networks", mode="before")
    @classmethod
    def _networks_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(n.strip() for n in value.split(",") if n.strip())
        out = []
        for network in value:
            try:
                out.append(str(ipaddress.ip_network(str(network), strict=False)))
            except ValueError as error:
                raise ValueError(f"{network!r} is not a CIDR: {error}") from None
        return tuple(out)

    def may_dial(self, ip: str) -> bool:
        """Whether the operator may open connections to pod IP ``ip``."""
        if not self.dial_pod_networks:
            return True
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(n) for n in self.dial_pod_networks)

    @property
    def effective_sync_image(self) -> str:
        return self.sync_image or self.operator_image

    @property
    def creates_repository_claim(self) -> bool:
        return self.repository_claim is None

    @property
    def repository_claim_in_use(self) -> str:
        """Name of the claim Triton and the sync Jobs mount."""
        return self.repository_claim or self.repository_claim_name

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorSettings:
        """Settings from ``TRITONFLEET_<FIELD>`` variables (e.g. ``TRITONFLEET_TRITON_IMAGE``).

        Empty values count as unset. Variables that name no setting are ignored
        here (other tools of the project share the prefix); :func:`unknown_env`
        lists them so the operator can warn about a likely typo.
        """
        known = {name.upper(): name for name in cls.model_fields}
        values: dict[str, Any] = {}
        for key, value in env.items():
            name = key.removeprefix(ENV_PREFIX)
            if key.startswith(ENV_PREFIX) and value != "" and name in known:
                values[known[name]] = value
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            lines = [
                f"{ENV_PREFIX}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in error.errors(include_url=False)
            ]
            raise SettingsError("invalid operator settings:\n  " + "\n  ".join(lines)) from None


def listen_host(env: Mapping[str, str]) -> str:
    """The address our listeners bind: $TRITONFLEET_LISTEN_HOST, or all addresses."""
    return env.get(LISTEN_HOST_ENV) or "0.0.0.0"  # noqa: S104


def unknown_env(env: Mapping[str, str]) -> list[str]:
    """``TRITONFLEET_*`` variables that are no operator setting (probably typos)."""
    known = {name.upper() for name in OperatorSettings.model_fields}
    return sorted(
        key
        for key in env
        if key.startswith(ENV_PREFIX)
        and key.removeprefix(ENV_PREFIX) not in known
        and key != LISTEN_HOST_ENV
    )
