"""Builders shared by the unit tests: valid objects to start from, a way to break
them in one place, the samples, and the pydantic refusal as a user reads it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tritonfleet.api.problems import problems_from_validation_error

ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR = ROOT / "manifests" / "samples"
SAMPLE_FILES = sorted(SAMPLES_DIR.glob("*.yaml"))


def sample_docs(name: str) -> list[dict[str, Any]]:
    """The YAML documents of one sample file (``rag-ensemble`` → 4 documents)."""
    text = (SAMPLES_DIR / f"{name}.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def all_sample_docs() -> list[dict[str, Any]]:
    return [doc for path in SAMPLE_FILES for doc in sample_docs(path.stem)]


def tensor(name: str, data_type: str = "TYPE_FP32", dims: list[int] | None = None, **kw: Any):
    return {"name": name, "dataType": data_type, "dims": [1] if dims is None else dims, **kw}


def config(**overrides: Any) -> dict[str, Any]:
    """A valid ``spec.config``: python backend, batching, one input and one output."""
    out: dict[str, Any] = {
        "backend": "python",
        "maxBatchSize": 8,
        "inputs": [tensor("INPUT0")],
        "outputs": [tensor("OUTPUT0")],
    }
    out.update(overrides)
    return out


def model_spec(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": {"inline": {"files": {"1/model.py": "import triton_python_backend_utils\n"}}},
        "config": config(),
    }
    out.update(overrides)
    return out


def model_doc(name: str = "toy", namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonModel",
        "metadata": metadata,
        "spec": model_spec(**spec),
    }


def ensemble_spec(**overrides: Any) -> dict[str, Any]:
    """A valid ``ModelEnsemble`` spec over one member named ``toy`` (see :func:`model_doc`)."""
    out: dict[str, Any] = {
        "maxBatchSize": 8,
        "inputs": [tensor("IN")],
        "outputs": [tensor("OUT")],
        "steps": [{"model": "toy", "inputMap": {"INPUT0": "IN"}, "outputMap": {"OUTPUT0": "OUT"}}],
    }
    out.update(overrides)
    return out


def ensemble_doc(name: str = "pipe", namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "ModelEnsemble",
        "metadata": metadata,
        "spec": ensemble_spec(**spec),
    }


def pool_doc(name: str = "shared", namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    """A valid ``TritonServerPool``: 16Gi of GPU memory per replica unless ``spec`` says."""
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonServerPool",
        "metadata": metadata,
        "spec": {"gpuMemory": "16Gi", **spec},
    }


_MISSING = object()


def with_path(doc: dict[str, Any], path: str, value: Any = _MISSING) -> dict[str, Any]:
    """A deep copy of ``doc`` with the dotted ``path`` set to ``value`` (or removed).

    Integer segments index lists: ``spec.config.inputs.0.name``.
    """
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    elif value is _MISSING:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def refusal(error: ValidationError) -> str:
    """pydantic's refusal as ``tritonfleet render`` shows it: ``path: message`` lines."""
    return "\n".join(str(p) for p in problems_from_validation_error(error))
