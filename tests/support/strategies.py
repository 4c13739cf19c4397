"""Hypothesis strategies for valid ``spec.config`` objects, as a user writes them
(camelCase wire form), within the ranges Triton's ModelConfig protobuf holds."""

from __future__ import annotations

from typing import Any, get_args

from hypothesis import strategies as st

from tritonfleet.api.model import DataType

DATA_TYPES = list(get_args(DataType))
INT32 = 2**31 - 1

# Anything a YAML string can hold: unicode, quotes, backslashes, newlines.
names = st.text(min_size=1, max_size=12)
# Triton dims: -1 (variable) or >= 1, at least one of them; a reshape may be empty.
_dim = st.integers(min_value=-1, max_value=2**40).filter(lambda d: d != 0)
dims = st.lists(_dim, min_size=1, max_size=4)
reshape = st.lists(_dim, max_size=4)


@st.composite
def tensors(draw: st.DrawFn, *, inputs: bool) -> list[dict[str, Any]]:
    tensor_names = draw(st.lists(names, max_size=4, unique=True))
    out = []
    for name in tensor_names:
        item: dict[str, Any] = {
            "name": name,
            "dataType": draw(st.sampled_from(DATA_TYPES)),
            "dims": draw(dims),
        }
        if inputs and draw(st.booleans()):
            item["optional"] = draw(st.booleans())
        if draw(st.booleans()):
            item["reshape"] = draw(reshape)
        out.append(item)
    return out


def _maybe(draw: st.DrawFn, target: dict[str, Any], key: str, strategy: Any) -> None:
    if draw(st.booleans()):
        target[key] = draw(strategy)


@st.composite
def dynamic_batchings(draw: st.DrawFn, max_batch_size: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "preferredBatchSize": draw(
            st.lists(st.integers(min_value=1, max_value=max_batch_size), max_size=4)
        )
    }
    _maybe(draw, out, "maxQueueDelayMicroseconds", st.integers(0, 2**40))
    _maybe(draw, out, "preserveOrdering", st.booleans())
    if draw(st.booleans()):
        levels = draw(st.integers(1, 16))
        out["priorityLevels"] = levels
        out["defaultPriorityLevel"] = draw(st.integers(1, levels))
    if draw(st.booleans()):
        policy: dict[str, Any] = {}
        _maybe(draw, policy, "timeoutAction", st.sampled_from(["REJECT", "DELAY"]))
        _maybe(draw, policy, "defaultTimeoutMicroseconds", st.integers(0, 2**40))
        _maybe(draw, policy, "allowTimeoutOverride", st.booleans())
        _maybe(draw, policy, "maxQueueSize", st.integers(0, INT32))
        out["defaultQueuePolicy"] = policy
    return out


instance_groups = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "name": names,
            "kind": st.sampled_from(["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]),
            "count": st.integers(1, 64),
            "gpus": st.lists(st.integers(0, 7), max_size=4),
        },
    ),
    max_size=3,
)

version_policies = st.one_of(
    st.builds(lambda n: {"latest": {"numVersions": n}}, st.integers(1, 100)),
    st.just({"all": {}}),
    st.builds(
        lambda v: {"specific": {"versions": v}},
        st.lists(st.integers(1, 2**40), min_size=1, max_size=4),
    ),
)

optimizations = st.fixed_dictionaries(
    {},
    optional={
        "inputPinnedMemory": st.booleans(),
        "outputPinnedMemory": st.booleans(),
        "graphLevel": st.integers(-1, 3),
    },
)


@st.composite
def model_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A ``spec.config`` that pydantic accepts and Triton's protobuf can hold."""
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["platform"] = draw(
            st.sampled_from(["onnxruntime_onnx", "pytorch_libtorch", "tensorrt_plan"])
        )
    else:
        out["backend"] = draw(st.sampled_from(["python", "onnxruntime", "vllm", "tensorrtllm"]))
    max_batch_size = draw(st.integers(0, INT32))
    out["maxBatchSize"] = max_batch_size
    out["inputs"] = draw(tensors(inputs=True))
    out["outputs"] = draw(tensors(inputs=False))
    if max_batch_size and draw(st.booleans()):
        out["dynamicBatching"] = draw(dynamic_batchings(min(max_batch_size, 1024)))
    _maybe(draw, out, "instanceGroups", instance_groups)
    _maybe(draw, out, "versionPolicy", version_policies)
    _maybe(draw, out, "parameters", st.dictionaries(names, st.text(max_size=12), max_size=4))
    _maybe(draw, out, "optimization", optimizations)
    _maybe(draw, out, "decoupled", st.booleans())
    return out
