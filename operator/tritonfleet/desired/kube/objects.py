"""The Kubernetes objects a ``TritonModel`` or ``ModelEnsemble`` should have:
the namespace's model-repository claim, a ConfigMap and a sync Job per
revision, a cleanup Job on deletion, the Triton Deployment and its Service.

This is the pure middle of the reconcile loop (handlers read the cluster,
call these functions, and only apply what differs). Every object carries

* an owner reference to the model (``controller``, ``blockOwnerDeletion``), so
  the real garbage collector removes it with its owner, and
* a ``tritonfleet.io/spec-hash`` annotation, a digest of the object as built
  here, so the reconciler knows whether its desired state changed by
  comparing one string it already holds in memory - no write, no dry run.

A ``ModelEnsemble`` gets one Deployment that loads its members and then the
ensemble, so a pipeline never crosses the network.

Each Triton pod loads exactly the revisions its pod template names (annotation
``tritonfleet.io/serves``), from the repository's pins
(``desired.triton.repository``), so pods of two revisions can serve side by side:
during a Rolling update (one Deployment, ``maxUnavailable: 0``) and during a canary
(a second Deployment, :func:`canary_deployment`, ``tmc-``/``mec-`` + the name). A pod
counts as available only once the operator confirmed it serves its revision and
published it to the gateways (readiness gate ``tritonfleet.io/loaded``), and a pod
being removed keeps answering for ``drainSeconds`` (``preStop`` sleep) while every
gateway stops choosing it. No I/O here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

import yaml

from tritonfleet.api.base import API_VERSION
from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import ModelSource, ServingSpec, TritonModel
from tritonfleet.api.settings import OperatorSettings
from tritonfleet.desired.triton.repository import RepositoryLayout

Obj = dict[str, Any]
Kind = Literal["TritonModel", "ModelEnsemble", "TritonServerPool"]

FIELD_MANAGER = "tritonfleet"
FINALIZER = "tritonfleet.io/cleanup"

SPEC_HASH_ANNOTATION = "tritonfleet.io/spec-hash"
REVISION_ANNOTATION = "tritonfleet.io/revision"
# On a Triton pod template: every model the pod loads and its revision, in load order
# (members first, the object's own model last): "member=rev,...,model=rev".
SERVES_ANNOTATION = "tritonfleet.io/serves"
# The pod condition the loader sets once the pod serves its revision (readiness gate).
LOADED_GATE = "tritonfleet.io/loaded"
LABEL_TRACK = "tritonfleet.io/track"  # "canary" on the canary Deployment's pods
LABEL_MODEL = "tritonfleet.io/model"
LABEL_KIND = "tritonfleet.io/kind"
LABEL_REVISION = "tritonfleet.io/revision"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"

#: Server-side label selector of every child the operator watches.
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={FIELD_MANAGER}"

COMPONENT_SERVER = "inference-server"
COMPONENT_SYNC = "model-sync"
COMPONENT_CLEANUP = "model-cleanup"
COMPONENT_REPOSITORY = "model-repository"

REPOSITORY_MOUNT = "/models"
# The repository is a directory inside the volume, not its root: `tritonfleet
# sync` keeps its revisions and staging next to the repository, and Triton's
# index would list anything inside it as a model.
REPOSITORY_PATH = f"{REPOSITORY_MOUNT}/repository"
REPOSITORY_LAYOUT = RepositoryLayout.for_repository(PurePosixPath(REPOSITORY_PATH))
MODEL_YAML_DIR = "/etc/tritonfleet/model"
MODEL_YAML_KEY = "model.yaml"
MODEL_YAML_PATH = f"{MODEL_YAML_DIR}/{MODEL_YAML_KEY}"
PVC_SOURCE_MOUNT = "/pvc"

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
RUN_AS_USER = 1000  # the triton-server user of NVIDIA's images; also the tritonfleet image's
GPU_TOLERATION: Obj = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

# Names of children derive from the owner's name. Services and Jobs need DNS-1035
# labels of at most 63 characters (Job names become pod labels), so long or
# dotted names are shortened and disambiguated with a digest of the full name.
_MAX_NAME = 63
_PREFIX: dict[str, str] = {"TritonModel": "tm", "ModelEnsemble": "me", "TritonServerPool": "tsp"}
# A canary Deployment's prefix: never the prefix of another object's children, so a
# model named "x-canary" cannot collide with the canary of model "x".
_CANARY_PREFIX: dict[str, str] = {"TritonModel": "tmc", "ModelEnsemble": "mec"}
_LABEL_SAFE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_OK = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _short_digest(text: str, length: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def child_name(kind: Kind, name: str, suffix: str = "", *, canary: bool = False) -> str:
    """``tm-<name>[-suffix]`` (``me-`` for ensembles; ``tmc-``/``mec-`` for a canary),
    a DNS-1035 label of ≤ 63 chars."""
    tail = f"-{suffix}" if suffix else ""
    base = f"{(_CANARY_PREFIX if canary else _PREFIX)[kind]}-{name}"
    if len(base) + len(tail) <= _MAX_NAME and _LABEL_SAFE.match(base):
        return base + tail
    digest = _short_digest(f"{kind}/{name}")
    cleaned = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")
    room = _MAX_NAME - len(tail) - len(digest) - 1
    return f"{cleaned[:room].rstrip('-')}-{digest}{tail}"


def label_value(value: str) -> str:
    """A label value (≤ 63 chars, alphanumeric ends) for an arbitrary object name."""
    if len(value) <= _MAX_NAME and _LABEL_VALUE_OK.match(value):
        return value
    digest = _short_digest(value)
    kept = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[: _MAX_NAME - len(digest) - 1]
    return f"{kept.strip('-_.')}-{digest}"


# --- what one Deployment serves ---------------------------------------------------------

Serves = tuple[tuple[str, str], ...]  # (Triton model name, revision), in load order


def format_serves(serves: Serves) -> str:
    return ",".join(f"{model}={revision}" for model, revision in serves)


def parse_serves(text: str) -> Serves:
    """The ``tritonfleet.io/serves`` annotation back to pairs; () when absent or malformed."""
    out = []
    for item in text.split(","):
        model, sep, revision = item.partition("=")
        if not sep or not model or not revision:
            return ()
        out.append((model, revision))
    return tuple(out)


@dataclass(frozen=True)
class Target:
    """Everything the object builders need about one TritonModel or ModelEnsemble.

    ``load_models`` are the Triton model names the Deployment loads, members
    before the ensemble (Triton resolves an ensemble's steps at load time).
    ``documents`` are the YAML documents the sync Job reads: the object itself
    first and, for an ensemble, its members after it.
    """

    kind: Kind
    name: str
    namespace: str
    uid: str
    triton_name: str
    revision: str
    serving: ServingSpec
    load_models: tuple[str, ...]
    documents: tuple[Obj, ...]
    source: ModelSource | None = None
    extra_pod_annotations: Mapping[str, str] = field(default_factory=dict)
    # Ensembles: (Triton name, revision) of each member, which the loader checks on every pod.
    member_revisions: tuple[tuple[str, str], ...] = ()

    @property
    def deployment_name(self) -> str:
        return child_name(self.kind, self.name)

    @property
    def canary_deployment_name(self) -> str:
        return child_name(self.kind, self.name, canary=True)

    @property
    def serves(self) -> Serves:
        """What a pod of this revision loads: (Triton name, revision), members first."""
        return (*self.member_revisions, (self.triton_name, self.revision))

    @property
    def service_name(self) -> str:
        return child_name(self.kind, self.name)

    @property
    def cleanup_job_name(self) -> str:
        return child_name(self.kind, self.name, "cleanup")

    def sync_job_name(self, revision: str | None = None) -> str:
        return child_name(self.kind, self.name, f"sync-{revision or self.revision}")

    def configmap_name(self, revision: str | None = None) -> str:
        return child_name(self.kind, self.name, revision or self.revision)


# Only what the revision covers goes to the sync Job: a serving change (replicas,
# GPUs) then neither changes the revision's ConfigMap (it is immutable) nor re-syncs.
_SYNC_FIELDS = {
    "TritonModel": ("modelName", "source", "config"),
    "ModelEnsemble": ("modelName", "maxBatchSize", "inputs", "outputs", "steps"),
}


def _document(obj: TritonModel | ModelEnsemble) -> Obj:
    """The object as the sync command reads it: identity and the synced part of its spec."""
    spec = obj.spec.to_wire()
    return {
        "apiVersion": API_VERSION,
        "kind": obj.kind,
        "metadata": {"name": obj.metadata.name, "namespace": obj.metadata.namespace or "default"},
        "spec": {k: spec[k] for k in _SYNC_FIELDS[obj.kind] if k in spec},
    }


def model_target(model: TritonModel, revision: str) -> Target:
    return Target(
        kind="TritonModel",
        name=model.metadata.name,
        namespace=model.metadata.namespace or "default",
        uid=model.metadata.uid or "",
        triton_name=model.triton_name,
        revision=revision,
        serving=model.spec.serving,
        load_models=(model.triton_name,),
        documents=(_document(model),),
        source=model.spec.source,
    )


def ensemble_target(
    ensemble: ModelEnsemble,
    members: Mapping[str, TritonModel],
    revision: str,
    member_revisions: Mapping[str, str] | None = None,
) -> Target:
    """``member_revisions``: each member's revision, by TritonModel name."""
    ordered = [members[name] for name in ensemble.member_names if name in members]
    revisions = member_revisions or {}
    return Target(
        kind="ModelEnsemble",
        name=ensemble.metadata.name,
        namespace=ensemble.metadata.namespace or "default",
        uid=ensemble.metadata.uid or "",
        triton_name=ensemble.triton_name,
        revision=revision,
        serving=ensemble.spec.serving,
        load_models=(*dict.fromkeys(m.triton_name for m in ordered), ensemble.triton_name),
        documents=(_document(ensemble), *(_document(m) for m in ordered)),
        member_revisions=tuple(
            (m.triton_name, revisions[m.metadata.name])
            for m in ordered
            if m.metadata.name in revisions
        ),
    )


def cleanup_target(kind: Kind, namespace: str, name: str, uid: str, triton_name: str) -> Target:
    """Just enough of a Target to remove a model's files when its spec no longer renders."""
    return Target(
        kind=kind,
        name=name,
        namespace=namespace,
        uid=uid,
        triton_name=triton_name,
        revision="",
        serving=ServingSpec(),
        load_models=(),
        documents=(),
    )


# --- metadata ------------------------------------------------------------------------


def owner_reference(target: Target) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": target.kind,
        "name": target.name,
        "uid": target.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_labels(target: Target, component: str) -> dict[str, str]:
    """The labels that identify one component of one owner (immutable Deployment selector)."""
    return {
        LABEL_INSTANCE: label_value(target.name),
        LABEL_COMPONENT: component,
        LABEL_KIND: target.kind.lower(),
        LABEL_MODEL: label_value(target.name),
    }


def common_labels(target: Target, component: str) -> dict[str, str]:
    return {
        LABEL_NAME: "triton" if component == COMPONENT_SERVER else "tritonfleet",
        **selector_labels(target, component),
        LABEL_MANAGED_BY: FIELD_MANAGER,
        LABEL_PART_OF: "tritonfleet",
    }


def _metadata(
    target: Target, name: str, component: str, extra_labels: Mapping[str, str] | None = None
) -> Obj:
    return {
        "name": name,
        "namespace": target.namespace,
        "labels": {**common_labels(target, component), **(extra_labels or {})},
        "ownerReferences": [owner_reference(target)],
    }


def spec_hash(obj: Obj) -> str:
    """Digest of a desired object, ignoring its own hash annotation."""
    stripped = copy.deepcopy(obj)
    annotations = stripped.get("metadata", {}).get("annotations", {})
    annotations.pop(SPEC_HASH_ANNOTATION, None)
    if not annotations:
        stripped.get("metadata", {}).pop("annotations", None)
    canonical = json.dumps(stripped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def with_spec_hash(obj: Obj) -> Obj:
    """``obj`` with its ``tritonfleet.io/spec-hash`` annotation set."""
    out = copy.deepcopy(obj)
    digest = spec_hash(out)
    out["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = digest
    return out


# --- security -----------------------------------------------------------------------


def pod_security_context() -> Obj:
    """Pod Security Standards "restricted", with the uid of NVIDIA's and our images."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Obj:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


# --- the repository claim -----------------------------------------------------------------


def repository_claim(namespace: str, settings: OperatorSettings) -> Obj | None:
    """The namespace's RWX model-repository claim, or None when an existing one is used.

    It is shared by every model of the namespace, so no model owns it: owner
    references from a thousand models would make every model's reconcile rewrite
    one ever-growing object. The operator deletes it itself when the last
    TritonModel/ModelEnsemble of the namespace is released (``plan_deletion``).
    """
    if not settings.creates_repository_claim:
        return None
    spec: Obj = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": settings.repository_size}},
    }
    if settings.repository_storage_class:
        spec["storageClassName"] = settings.repository_storage_class
    return with_spec_hash(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": settings.repository_claim_name,
                "namespace": namespace,
                "labels": {
                    LABEL_NAME: "tritonfleet",
                    LABEL_COMPONENT: COMPONENT_REPOSITORY,
                    LABEL_MANAGED_BY: FIELD_MANAGER,
                    LABEL_PART_OF: "tritonfleet",
                },
            },
            "spec": spec,
        }
    )


# --- sync: ConfigMap + Job per revision ---------------------------------------------------


def model_configmap(target: Target) -> Obj:
    """The model's YAML for this revision, mounted into the sync Job.

    One ConfigMap per revision (its name carries the revision) so a Job always
    reads exactly the spec it was created for, even while a newer one is applied.
    """
    text = yaml.safe_dump_all(list(target.documents), sort_keys=False)
    meta = _metadata(
        target,
        target.configmap_name(),
        COMPONENT_SYNC,
        {LABEL_REVISION: target.revision},
    )
    return with_spec_hash(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {MODEL_YAML_KEY: text},
            "immutable": True,
        }
    )


def _repository_volume(settings: OperatorSettings, read_only: bool) -> Obj:
    return {
        "name": "models",
        "persistentVolumeClaim": {
            "claimName": settings.repository_claim_in_use,
            **({"readOnly": True} if read_only else {}),
        },
    }


def _s3_credentials_env(source: ModelSource | None) -> list[Obj]:
    """AWS_* variables from the Secret a model names; the operator itself never reads it."""
    if source is None or source.s3 is None or source.s3.credentials_secret is None:
        return []
    secret = source.s3.credentials_secret

    def ref(key: str, optional: bool) -> Obj:
        return {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}},
        }

    return [
        ref("AWS_ACCESS_KEY_ID", False),
        ref("AWS_SECRET_ACCESS_KEY", False),
        ref("AWS_SESSION_TOKEN", True),
    ]


def _job_pod_base(target: Target, settings: OperatorSettings, component: str) -> Obj:
    return {
        "labels": {**common_labels(target, component), **settings.sync_pod_labels},
    }


def _job_pod_spec(settings: OperatorSettings, container: Obj, volumes: list[Obj]) -> Obj:
    """The pod of a sync or cleanup Job: restricted, no API token, the installation's
    pull secrets for the tritonfleet image."""
    spec: Obj = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if settings.job_image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in settings.job_image_pull_secrets]
    return spec


def _tritonfleet_container(
    settings: OperatorSettings, args: list[str], mounts: list[Obj], env: list[Obj]
) -> Obj:
    return {
        "name": "tritonfleet",
        "image": settings.effective_sync_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["tritonfleet"],
        # The installation's one log format (the operator's and the gateway's too).
        "args": [*args, "--log-format", settings.log_format],
        "env": [{"name": "HOME", "value": "/tmp"}, *env],  # noqa: S108 - an emptyDir
        "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
        "resources": settings.job_resources.model_dump(exclude_defaults=True),
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def sync_job(target: Target, settings: OperatorSettings, keep: tuple[str, ...] = ()) -> Obj:
    """The Job that copies this revision's files into the shared repository.

    It runs ``tritonfleet sync --revision <revision>`` (stage, checksum, atomic
    publish, pin), so a Job killed half-way leaves the previous revision intact.
    ``keep``: revisions still served (the stable one of a rollout), whose files the
    sync must not garbage-collect.
    """
    mounts: list[Obj] = [
        {"name": "models", "mountPath": REPOSITORY_MOUNT},
        {"name": "model-yaml", "mountPath": MODEL_YAML_DIR, "readOnly": True},
    ]
    volumes: list[Obj] = [
        _repository_volume(settings, read_only=False),
        {"name": "model-yaml", "configMap": {"name": target.configmap_name()}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if target.source is not None and target.source.pvc is not None:
        claim = target.source.pvc.claim_name
        volumes.append(
            {"name": "source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append(
            {"name": "source", "mountPath": f"{PVC_SOURCE_MOUNT}/{claim}", "readOnly": True}
        )
    container = _tritonfleet_container(
        settings,
        # The file also holds an ensemble's members (to check it against them);
        # each member is published by its own Job, so name the one to publish.
        # The revision is the one computed here: the sync publishes under it and the
        # loader waits for exactly it on every pod, whatever the sync image computes.
        [
            "sync",
            "-f",
            MODEL_YAML_PATH,
            "--model-name",
            target.triton_name,
            "--revision",
            target.revision,
            *(arg for revision in keep for arg in ("--keep-revision", revision)),
            "--repository",
            REPOSITORY_PATH,
        ],
        mounts,
        _s3_credentials_env(target.source),
    )
    pod_meta = _job_pod_base(target, settings, COMPONENT_SYNC)
    pod_meta["labels"][LABEL_REVISION] = target.revision
    return with_spec_hash(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _metadata(
                target, target.sync_job_name(), COMPONENT_SYNC, {LABEL_REVISION: target.revision}
            ),
            "spec": {
                "backoffLimit": settings.sync_backoff_limit,
                "activeDeadlineSeconds": settings.sync_deadline_seconds,
                "ttlSecondsAfterFinished": settings.sync_ttl_seconds,
                "template": {
                    "metadata": pod_meta,
                    "spec": _job_pod_spec(settings, container, volumes),
                },
            },
        }
    )


def cleanup_job(target: Target, settings: OperatorSettings) -> Obj:
    """The Job that removes the model's directory from the repository on deletion."""
    container = _tritonfleet_container(
        settings,
        [
            "sync",
            "--remove",
            "--model-name",
            target.triton_name,
            "--repository",
            REPOSITORY_PATH,
        ],
        [{"name": "models", "mountPath": REPOSITORY_MOUNT}],
        [],
    )
    return with_spec_hash(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _metadata(target, target.cleanup_job_name, COMPONENT_CLEANUP),
            "spec": {
                "backoffLimit": settings.sync_backoff_limit,
                "activeDeadlineSeconds": settings.cleanup_timeout_seconds,
                "template": {
                    "metadata": _job_pod_base(target, settings, COMPONENT_CLEANUP),
                    "spec": _job_pod_spec(
                        settings,
                        container,
                        [
                            _repository_volume(settings, read_only=False),
                            {"name": "tmp", "emptyDir": {}},
                        ],
                    ),
                },
            },
        }
    )


# --- serving: Deployment + Service -----------------------------------------------------


def triton_args(serves: Serves, *, pooled: bool = False) -> list[str]:
    """tritonserver's arguments: one pinned repository per model (so the pod loads exactly
    these revisions), explicit model control, the models to load at start.

    A pool's server (``pooled``) starts empty on the namespace's shared repository (the
    loader loads what is placed on it, each model at its current revision) and is ready
    once it answers: one model failing to load must not take the others' server out.
    """
    repositories = (
        [REPOSITORY_PATH]
        if pooled
        else [str(REPOSITORY_LAYOUT.pin_repository(model, revision)) for model, revision in serves]
    )
    return [
        *(f"--model-repository={repository}" for repository in repositories),
        "--model-control-mode=explicit",
        *(f"--load-model={model}" for model, _ in serves),
        # Ready only once every model is loaded, so traffic never meets a cold replica.
        f"--strict-readiness={'false' if pooled else 'true'}",
        # A model that fails to load at start must not kill the server: the pod stays
        # up (NotReady), so the loader can read Triton's error, report it and retry.
        "--exit-on-error=false",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=true",
    ]


def _resources(serving: ServingSpec, settings: OperatorSettings) -> Obj:
    """Requests/limits from the spec (else the installation's default); GPUs as
    requests == limits (extended resources)."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    chosen = serving.resources or settings.triton_default_resources
    if chosen is not None:
        requests.update(chosen.requests)
        limits.update(chosen.limits)
    if serving.gpus > 0:
        requests[serving.gpu_resource] = serving.gpus
        limits[serving.gpu_resource] = serving.gpus
    out: Obj = {}
    if requests:
        out["requests"] = {k: requests[k] for k in sorted(requests)}
    if limits:
        out["limits"] = {k: limits[k] for k in sorted(limits)}
    return out


def _tolerations(serving: ServingSpec) -> list[Obj]:
    tolerations = [t.to_wire() for t in serving.tolerations]
    if serving.gpus > 0 and GPU_TOLERATION not in tolerations:
        tolerations.append(dict(GPU_TOLERATION))
    return tolerations


def _http_probe(path: str, period: int, failures: int) -> Obj:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def replicas(serving: ServingSpec) -> int:
    """Replicas the Deployment starts with: the minimum, at least one.

    A scale-to-zero model starts with one replica so it can be loaded and
    checked; scaling it down is the autoscaler's decision.
    """
    return max(serving.replicas.min, 1)


@dataclass(frozen=True)
class Surge:
    """The Deployment's RollingUpdate: new pods beyond the replicas, and old pods that may
    go before their replacement is available."""

    max_surge: int = 1
    max_unavailable: int = 0

    def strategy(self) -> Obj:
        return {
            "type": "RollingUpdate",
            "rollingUpdate": {
                "maxUnavailable": self.max_unavailable,
                "maxSurge": self.max_surge,
            },
        }


def _pod_template(
    target: Target, settings: OperatorSettings, serves: Serves, labels: Mapping[str, str]
) -> Obj:
    """The Triton pod: its args load ``serves`` (or nothing yet: an empty ``serves``)."""
    serving = target.serving
    pooled = target.kind == "TritonServerPool"
    container: Obj = {
        "name": "triton",
        "image": serving.image or settings.triton_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["tritonserver"],
        "args": triton_args(serves, pooled=pooled),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": [
            # Triton's python backend and EXECUTION_ENV_PATH unpack into $HOME / /tmp.
            {"name": "HOME", "value": "/tmp"},  # noqa: S108 - an emptyDir
            *(e.to_wire() for e in serving.env),
        ],
        # The models load before Triton's HTTP endpoint comes up: the startup
        # probe gives big models `startup_seconds`; liveness starts after it.
        "startupProbe": _http_probe("/v2/health/live", 10, max(settings.startup_seconds // 10, 1)),
        "livenessProbe": _http_probe("/v2/health/live", 10, 3),
        "readinessProbe": _http_probe("/v2/health/ready", 5, 3),
        "volumeMounts": [
            {"name": "models", "mountPath": REPOSITORY_MOUNT, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 - memory emptyDir
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
        ],
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.drain_seconds:
        # Removed from a rollout (or scaled in), the pod keeps answering while the
        # loader marks it terminating and every gateway stops choosing it; only then
        # is Triton told to stop (it finishes what is in flight, up to 30 s).
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": settings.drain_seconds}}}
    resources = _resources(serving, settings)
    if resources:
        container["resources"] = resources
    pod_spec: Obj = {
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # The drain, then Triton's own exit timeout for in-flight requests (30 s), then slack.
        "terminationGracePeriodSeconds": settings.drain_seconds + 60,
        # Available only once the loader confirmed the model (at this pod's revision)
        # and the gateways can know it: a Deployment never removes an old pod before.
        # A pool's pod holds many models, each routed to once loaded there (status.pods).
        **({} if pooled else {"readinessGates": [{"conditionType": LOADED_GATE}]}),
        "containers": [container],
        "volumes": [
            _repository_volume(settings, read_only=True),
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": serving.shm_size}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if serving.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(serving.node_selector.items()))
    tolerations = _tolerations(serving)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if serving.affinity:
        pod_spec["affinity"] = serving.affinity
    if serving.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s.name} for s in serving.image_pull_secrets]
    if serving.priority_class_name:
        pod_spec["priorityClassName"] = serving.priority_class_name
    if serving.runtime_class_name:
        pod_spec["runtimeClassName"] = serving.runtime_class_name
    if serving.topology_spread_constraints:
        pod_spec["topologySpreadConstraints"] = serving.topology_spread_constraints
    revision = serves[-1][1] if serves else ""
    # The user's first: ours (the revision that rolls the pods) win.
    annotations = {
        **serving.pod_annotations,
        REVISION_ANNOTATION: revision,
        **target.extra_pod_annotations,
    }
    if serves:
        annotations[SERVES_ANNOTATION] = format_serves(serves)
    return {
        "metadata": {
            "labels": {**settings.triton_pod_labels, **labels},
            "annotations": annotations,
        },
        "spec": pod_spec,
    }


def _server_deployment(
    target: Target,
    settings: OperatorSettings,
    name: str,
    serves: Serves,
    selector: Mapping[str, str],
    spec_replicas: Obj,
    surge: Surge,
) -> Obj:
    revision = serves[-1][1] if serves else ""
    return with_spec_hash(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(
                target,
                name,
                COMPONENT_SERVER,
                {**selector, **({LABEL_REVISION: revision} if revision else {})},
            ),
            "spec": {
                **spec_replicas,
                "revisionHistoryLimit": 3,
                "progressDeadlineSeconds": settings.startup_seconds + 600,
                "selector": {"matchLabels": dict(selector)},
                # Zero downtime: a new pod must be available (its model loaded and
                # published to the gateways) before an old one goes.
                "strategy": surge.strategy(),
                "template": _pod_template(
                    target,
                    settings,
                    serves,
                    {**common_labels(target, COMPONENT_SERVER), **selector},
                ),
            },
        }
    )


def deployment(
    target: Target, settings: OperatorSettings, serves: Serves, surge: Surge | None = None
) -> Obj:
    """The (stable) Triton Deployment, serving ``serves``; rolled when that changes.

    ``serves`` only ever names synced revisions: pods never start on a revision that
    is still being copied. Until a first revision is synced (empty) the Deployment
    exists with zero replicas, so every child is visible from the start and nothing
    crash-loops on missing files. ``surge``: the rollout's RollingUpdate (default: one
    new pod at a time, none removed before its replacement is available).
    """
    serving = target.serving
    spec_replicas: Obj = {"replicas": replicas(serving) if serves else 0}
    if serves and serving.autoscaling is not None:
        # The HPA owns the count (server-side apply without the field; when it was
        # ours at 0 the API server defaults it to 1 and the HPA takes it from there).
        spec_replicas = {}
    selector = selector_labels(target, COMPONENT_SERVER)
    return _server_deployment(
        target, settings, target.deployment_name, serves, selector, spec_replicas, surge or Surge()
    )


def canary_deployment(target: Target, settings: OperatorSettings, count: int) -> Obj:
    """The canary: ``count`` pods of the target revision beside the stable Deployment.

    Its selector adds ``tritonfleet.io/track: canary`` (the stable selector, fixed at
    creation, selects a superset; ReplicaSets own their pods, so the two never fight).
    No HPA scales it: the rollout sizes it from the step's weight.
    """
    selector = {**selector_labels(target, COMPONENT_SERVER), LABEL_TRACK: "canary"}
    return _server_deployment(
        target,
        settings,
        target.canary_deployment_name,
        target.serves,
        selector,
        {"replicas": count},
        Surge(),
    )


def service(target: Target) -> Obj:
    """A headless Service: one DNS record per ready Triton pod, no virtual IP.

    Requests must reach the pods that hold the model (the loader loads every pod,
    the gateway routes per pod), which a load-balanced virtual IP cannot promise;
    and a thousand models must not exhaust the cluster's service IP range.
    """
    return with_spec_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(target, target.service_name, COMPONENT_SERVER),
            "spec": {
                "type": "ClusterIP",
                "clusterIP": "None",
                "selector": selector_labels(target, COMPONENT_SERVER),
                "ports": [
                    {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                    {
                        "name": "grpc",
                        "port": GRPC_PORT,
                        "targetPort": "grpc",
                        "protocol": "TCP",
                        "appProtocol": "grpc",
                    },
                    {
                        "name": "metrics",
                        "port": METRICS_PORT,
                        "targetPort": "metrics",
                        "protocol": "TCP",
                    },
                ],
            },
        }
    )


def object_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace, name) of an object: how children are indexed."""
    meta = obj["metadata"]
    return str(obj["kind"]), str(meta.get("namespace") or ""), str(meta["name"])
