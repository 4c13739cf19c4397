"""CustomResourceDefinitions generated from the pydantic models.

``crds/`` and the Helm chart's copy are written from here (``tritonfleet crds``)
and never edited by hand; ``tritonfleet crds --check`` fails when they drift
from the code. The JSON Schema pydantic emits is turned into a Kubernetes
*structural* schema: references inlined, ``Optional`` unwrapped, OpenAPI v3.0
keywords only, CEL rules carried over.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from tritonfleet.api.base import GROUP, VERSION
from tritonfleet.api.ensemble import ModelEnsembleSpec
from tritonfleet.api.model import TritonModelSpec
from tritonfleet.api.pool import PoolStatus, TritonServerPoolSpec
from tritonfleet.api.status import ModelStatus

# Keywords Kubernetes' structural schemas accept; everything else is dropped.
_KEPT_KEYWORDS = {
    "type",
    "description",
    "properties",
    "items",
    "additionalProperties",
    "required",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "default",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
}


def _is_null(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "null"


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one pydantic JSON Schema node into a structural schema node."""
    node = copy.deepcopy(schema)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**copy.deepcopy(target), **node}
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in node.pop("anyOf") if not _is_null(o)]
        if len(options) != 1:
            raise ValueError(f"unions other than Optional are not structural: {schema}")
        inner = _structural(options[0], defs)
        # The outer node's description/default win over the referenced model's.
        node = {**inner, **{k: v for k, v in node.items() if k in ("description", "default")}}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    # JSON Schema 2020 numeric exclusives → OpenAPI v3.0 boolean form.
    for exclusive, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(exclusive), int | float) and not isinstance(
            node.get(exclusive), bool
        ):
            node[inclusive] = node.pop(exclusive)
            node[exclusive] = True
    if node.get("default") is None or isinstance(node.get("default"), dict | list):
        # Object and list defaults are applied by pydantic; the API server only
        # gets scalar defaults so `kubectl get -o yaml` stays close to what was applied.
        node.pop("default", None)
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEPT_KEYWORDS:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        elif key == "anyOf":
            out[key] = [{"type": o["type"]} for o in value]
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    return out


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model (wire names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def _condition_column(type_: str) -> dict[str, str]:
    return {
        "name": type_,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{type_}")].status',
    }


_AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_COMMON_COLUMNS: list[dict[str, Any]] = [
    _condition_column("Ready"),
    {"name": "Replicas", "type": "string", "jsonPath": ".status.replicaSummary"},
    {"name": "Revision", "type": "string", "jsonPath": ".status.revision"},
    {"name": "Served-By", "type": "string", "jsonPath": ".status.servedBy"},
    {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase"},
    {
        "name": "Target",
        "type": "string",
        "priority": 1,
        "jsonPath": ".status.rollout.targetRevision",
    },
    {
        "name": "Reason",
        "type": "string",
        "priority": 1,
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
    _AGE_COLUMN,
]
_POOL_COLUMNS: list[dict[str, Any]] = [
    _condition_column("Ready"),
    {"name": "Models", "type": "string", "jsonPath": ".status.modelSummary"},
    {"name": "Replicas", "type": "string", "jsonPath": ".status.replicaSummary"},
    {"name": "Memory", "type": "string", "jsonPath": ".status.memorySummary"},
    {
        "name": "Reason",
        "type": "string",
        "priority": 1,
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
    _AGE_COLUMN,
]


_API_VERSION = "The versioned schema of this representation of an object (tritonfleet.io/v1alpha1)."
_KIND = "The kind of object this is (its REST resource), in CamelCase."


def _crd(
    kind: str,
    plural: str,
    short_names: list[str],
    spec_model: type[BaseModel],
    doc: str,
    spec_doc: str,
    status_model: type[BaseModel] = ModelStatus,
    columns: list[dict[str, Any]] = _COMMON_COLUMNS,
    status_doc: str = "What the operator observed: conditions, revision, replicas, per-pod "
    "model state.",
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "tritonfleet"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["tritonfleet", "all"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": doc,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": _API_VERSION},
                                "kind": {"type": "string", "description": _KIND},
                                # The API server allows nothing but the type here.
                                "metadata": {"type": "object"},
                                "spec": {
                                    **structural_schema(spec_model),
                                    "description": spec_doc,
                                },
                                "status": {
                                    **structural_schema(status_model),
                                    "description": status_doc,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def custom_resource_definitions() -> list[dict[str, Any]]:
    """Every CRD of the project, in a stable order."""
    return [
        _crd(
            "TritonModel",
            "tritonmodels",
            ["tm", "tmodel"],
            TritonModelSpec,
            "A model served by a fleet of Triton Inference Server replicas.",
            "What to serve and how: source, Triton config, serving, failover.",
        ),
        _crd(
            "ModelEnsemble",
            "modelensembles",
            ["me", "ensemble"],
            ModelEnsembleSpec,
            "A Triton ensemble of TritonModel members, served co-located on one Deployment.",
            "The pipeline: its tensors and the member TritonModels it runs, in steps.",
        ),
        _crd(
            "TritonServerPool",
            "tritonserverpools",
            ["tsp"],
            TritonServerPoolSpec,
            "A Deployment of Triton replicas shared by many models, placed within each "
            "replica's GPU memory.",
            "The pool's Triton servers (how many, on what GPUs, with how much GPU memory "
            "each) and their autoscaling.",
            PoolStatus,
            _POOL_COLUMNS,
            "What the operator observed: conditions, the placement per replica (models, "
            "memory used and free) and per model (which pods hold it).",
        ),
    ]


CRD_DIR = "crds"
CHART_CRD_DIR = "charts/tritonfleet/templates/crds"
_GENERATED = "# Generated by `tritonfleet crds` from the pydantic models. Do not edit.\n"


def _dump(obj: Any) -> str:
    return str(yaml.safe_dump(obj, sort_keys=False, width=100, default_flow_style=False))


def _chart_template(crd: dict[str, Any]) -> str:
    """The chart's copy: gated by ``crds.enabled`` and kept on uninstall by ``crds.keep``,
    the way cert-manager's chart does it."""
    meta = crd["metadata"]
    labels = "".join(f"    {k}: {v}\n" for k, v in meta["labels"].items())
    return (
        _GENERATED
        + "{{- if .Values.crds.enabled }}\n"
        + _dump({"apiVersion": crd["apiVersion"], "kind": crd["kind"]})
        + "metadata:\n"
        + f"  name: {meta['name']}\n"
        + "  labels:\n"
        + labels
        + "    app.kubernetes.io/managed-by: {{ .Release.Service }}\n"
        + "  {{- if .Values.crds.keep }}\n"
        + "  annotations:\n"
        + "    helm.sh/resource-policy: keep\n"
        + "  {{- end }}\n"
        + _dump({"spec": crd["spec"]})
        + "{{- end }}\n"
    )


def crd_files() -> dict[str, str]:
    """Relative path → content of every generated CRD file (plain and chart copy)."""
    files = {}
    for crd in custom_resource_definitions():
        plural = crd["spec"]["names"]["plural"]
        files[f"{CRD_DIR}/{GROUP}_{plural}.yaml"] = _GENERATED + "---\n" + _dump(crd)
        files[f"{CHART_CRD_DIR}/{plural}.yaml"] = _chart_template(crd)
    return files
