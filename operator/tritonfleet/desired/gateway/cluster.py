"""Routes from the cluster: the in-cluster gateway's table, built from the objects it lists.

Each ``TritonModel``/``ModelEnsemble`` becomes one route. Its endpoints are
the pods of its ``status.pods`` that serve the model (Ready, each at the revision it
was started for: during a rollout pods of the old and the new revision answer side by
side, :func:`ready_endpoints`); while a canary runs, ``status.rollout.weights`` is the
route's split (:func:`route_split`); its failover is ``spec.failover``
with the key in a Secret of the object's namespace; its OpenAI mapping is the
``tritonfleet.io/openai-mapping`` annotation, else derived from the model's
tensors. The gateway's cluster source
(``tritonfleet.gateway.sources.ClusterRouteSource``) lists the objects and
calls :func:`routes_from_cluster` every poll; the operator's scale-to-zero
loop uses :func:`openai_name` to read the gateway's per-model metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import yaml
from pydantic import ValidationError

from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import TritonModel
from tritonfleet.api.status import ModelStatus
from tritonfleet.desired.gateway.openai_mapping import EmbeddingMapping, GenerateMapping
from tritonfleet.desired.gateway.prices import PriceTable
from tritonfleet.desired.gateway.routes import (
    DEFAULT_TRITON_HTTP_PORT,
    DEFAULT_TRITON_METRICS_PORT,
    ApiKeyRef,
    Endpoint,
    Failover,
    Kind,
    Route,
    RouteTable,
    Split,
)
from tritonfleet.desired.gateway.routes_file import (
    MappingSpec,
    OutputsSpec,
    embedding_mapping,
    failover_from,
    generate_mapping,
    problems,
)

# Annotation on a TritonModel/ModelEnsemble holding its OpenAI mapping (YAML or
# JSON, the same shape as a routes file's `mapping`, plus `kind`).
MAPPING_ANNOTATION = "tritonfleet.io/openai-mapping"
# Annotation naming the model clients use, when it differs from the Triton name.
OPENAI_NAME_ANNOTATION = "tritonfleet.io/openai-model"


@dataclass(frozen=True, slots=True)
class ClusterRoutes:
    table: RouteTable
    problems: tuple[str, ...]  # objects that could not be routed, and why


class _AnnotationSpec(MappingSpec):
    kind: Kind | None = None


def openai_name(obj: TritonModel | ModelEnsemble) -> str:
    """The model name clients send (and the gateway's metrics label): the
    ``tritonfleet.io/openai-model`` annotation, else the Triton model name."""
    return (obj.metadata.annotations or {}).get(OPENAI_NAME_ANNOTATION) or obj.triton_name


def ready_endpoints(
    status: ModelStatus | None,
    *,
    http_port: int = DEFAULT_TRITON_HTTP_PORT,
    metrics_port: int = DEFAULT_TRITON_METRICS_PORT,
) -> tuple[Endpoint, ...]:
    """The pods of a status that serve the model: Ready at the revision each was started
    for, whichever revisions a rollout has running (a pod being removed is Terminating,
    a pod still loading or failing is not Ready: neither is routed to)."""
    if status is None:
        return ()
    out = []
    for pod in status.pods:
        if pod.state != "Ready" or not pod.ip:
            continue
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        out.append(
            Endpoint(
                name=pod.name,
                url=f"http://{host}:{http_port}",
                metrics_url=f"http://{host}:{metrics_port}/metrics",
                revision=pod.revision,
            )
        )
    return tuple(out)


def route_split(status: ModelStatus | None) -> Split:
    """The canary's traffic split from ``status.rollout.weights`` (revision order as
    written); () when none is in force."""
    rollout = status.rollout if status is not None else None
    if rollout is None or not rollout.weights:
        return ()
    return tuple((revision, max(0, weight)) for revision, weight in rollout.weights.items())


class _Tensors(NamedTuple):
    inputs: list[str]
    outputs: set[str]
    decoupled: bool
    batched: bool


def _tensors(obj: TritonModel | ModelEnsemble) -> _Tensors:
    if isinstance(obj, TritonModel):
        config = obj.spec.config
        return _Tensors(
            [t.name for t in config.inputs],
            {t.name for t in config.outputs},
            bool(config.decoupled),
            config.max_batch_size > 0,
        )
    spec = obj.spec
    return _Tensors(
        [t.name for t in spec.inputs],
        {t.name for t in spec.outputs},
        False,
        spec.max_batch_size > 0,
    )


def _guess_kind(tensors: _Tensors) -> Kind | None:
    if "text_input" in tensors.inputs or tensors.decoupled:
        return "generate"
    if len(tensors.inputs) == 1:
        return "embedding"
    return None


def _mappings(
    tensors: _Tensors, annotation: MappingSpec | None, kind: Kind
) -> tuple[GenerateMapping | None, EmbeddingMapping | None]:
    """The annotation's mapping, else the conventions: for generate, the default
    mapping less the inputs and token/finish outputs the model lacks; for
    embeddings, its first input and output."""
    if kind == "generate":
        spec = annotation
        if spec is None:
            outputs = tensors.outputs
            spec = MappingSpec(
                outputs=OutputsSpec(
                    prompt_tokens="prompt_tokens" if "prompt_tokens" in outputs else None,
                    completion_tokens=(
                        "completion_tokens" if "completion_tokens" in outputs else None
                    ),
                    finish_reason="finish_reason" if "finish_reason" in outputs else None,
                ),
                inputs={k: (k if k in tensors.inputs else None) for k in GenerateMapping().inputs},
            )
        return generate_mapping(spec, tensors.decoupled), None
    spec = annotation or MappingSpec()
    if annotation is None and tensors.inputs and tensors.outputs:
        spec = MappingSpec(
            input=tensors.inputs[0], output=sorted(tensors.outputs)[0], batched=tensors.batched
        )
    return None, embedding_mapping(spec)


def _failover(obj: TritonModel | ModelEnsemble, namespace: str) -> Failover | None:
    spec = obj.spec.failover
    if spec is None:
        return None
    ref = spec.provider.api_key_secret
    key = (
        ApiKeyRef(secret_namespace=namespace, secret_name=ref.name, secret_key=ref.key)
        if ref is not None
        else None
    )
    return failover_from(spec, key)


def routes_from_cluster(
    models: Iterable[TritonModel],
    ensembles: Iterable[ModelEnsemble] = (),
    *,
    prices: PriceTable | None = None,
    http_port: int = DEFAULT_TRITON_HTTP_PORT,
    metrics_port: int = DEFAULT_TRITON_METRICS_PORT,
) -> ClusterRoutes:
    """Routes for the in-cluster mode, from the objects the gateway watches.

    The OpenAI name is the ``tritonfleet.io/openai-model`` annotation or the
    Triton model name; the mapping comes from the ``tritonfleet.io/openai-mapping``
    annotation, else from the model's tensors by convention (an input named
    ``text_input`` means a generate model, a single input an embedding model).
    Objects sorted by namespace/name, so a duplicate name resolves the same way
    on every gateway replica.
    """
    found: list[str] = []
    routes: dict[str, Route] = {}
    items: list[tuple[str, TritonModel | ModelEnsemble]] = [
        *(("TritonModel", m) for m in models),
        *(("ModelEnsemble", e) for e in ensembles),
    ]
    items.sort(key=lambda kv: (kv[1].metadata.namespace or "", kv[1].metadata.name, kv[0]))
    for kind_name, obj in items:
        ns = obj.metadata.namespace or "default"
        origin = f"{kind_name} {ns}/{obj.metadata.name}"
        name = openai_name(obj)
        raw = (obj.metadata.annotations or {}).get(MAPPING_ANNOTATION)
        try:
            spec = _AnnotationSpec.model_validate(yaml.safe_load(raw) or {} if raw else {})
        except (ValidationError, yaml.YAMLError) as error:
            detail = (
                "; ".join(problems(error)) if isinstance(error, ValidationError) else "bad YAML"
            )
            found.append(f"{origin}: annotation {MAPPING_ANNOTATION}: {detail}")
            continue
        tensors = _tensors(obj)
        kind = spec.kind or _guess_kind(tensors)
        if kind is None:
            found.append(
                f"{origin}: cannot tell how to call it from OpenAI; set annotation "
                f"{MAPPING_ANNOTATION} with kind and mapping"
            )
            continue
        if name in routes:
            found.append(f"{origin}: model name {name!r} already served by {routes[name].origin}")
            continue
        generate, embedding = _mappings(tensors, spec if raw is not None else None, kind)
        routes[name] = Route(
            name=name,
            kind=kind,
            triton_model=obj.triton_name,
            endpoints=ready_endpoints(obj.status, http_port=http_port, metrics_port=metrics_port),
            split=route_split(obj.status),
            generate=generate,
            embedding=embedding,
            failover=_failover(obj, ns),
            origin=origin,
        )
    return ClusterRoutes(RouteTable(routes, prices or PriceTable()), tuple(found))
