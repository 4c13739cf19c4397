"""Hypothesis strategies for valid ``spec.config`` objects, as a user writes them
(camelCase wire form), over every typed field of Triton's ModelConfig and within the
rules Triton applies when it loads a model (so a generated config renders clean)."""

from __future__ import annotations

import math
from typing import Any, get_args

from hypothesis import strategies as st

from tritonfleet.api.triton_config import (
    CORRID_DATA_TYPES,
    PLATFORM_BACKENDS,
    BatchInputKind,
    DataType,
)

DATA_TYPES = list(get_args(DataType))
INT32 = 2**31 - 1
UINT32 = 2**32 - 1
BIG = 2**40

# Anything a YAML string can hold: unicode, quotes, backslashes, newlines.
names = st.text(min_size=1, max_size=12)
_dim = st.integers(min_value=-1, max_value=2**12).filter(lambda d: d != 0)
dims = st.lists(_dim, min_size=1, max_size=4)
float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)


def _maybe(draw: st.DrawFn, target: dict[str, Any], key: str, strategy: Any) -> None:
    if draw(st.booleans()):
        target[key] = draw(strategy)


def _reshape_for(draw: st.DrawFn, shape: list[int] | None, batching: bool) -> list[int] | None:
    """A reshape Triton accepts for ``shape`` (ValidateIOShape), or None."""
    if shape is None or not draw(st.booleans()):
        return None
    options: list[list[int]] = [list(shape)]
    if -1 not in shape:
        options.append([math.prod(shape)])
        if math.prod(shape) == 1 and batching:
            options.append([])
    return draw(st.sampled_from(options))


@st.composite
def runtimes(draw: st.DrawFn) -> dict[str, str]:
    """platform/backend pairs Triton loads (AutoCompleteBackendFields, ValidateModelConfig)."""
    platform = st.sampled_from(sorted(PLATFORM_BACKENDS))
    choice = draw(st.sampled_from(["platform", "backend", "both", "neither", "custom"]))
    if choice == "platform":
        return {"platform": draw(platform)}
    if choice == "both":
        chosen = draw(platform)
        return {"platform": chosen, "backend": PLATFORM_BACKENDS[chosen]}
    if choice == "neither":
        return {}
    backend = draw(st.sampled_from(["python", "onnxruntime", "vllm", "tensorrtllm", "dali"]))
    if choice == "custom" and backend not in ("onnxruntime",):
        return {"backend": backend, "platform": draw(st.sampled_from(["custom", "x_y"]))}
    return {"backend": backend}


@st.composite
def tensors(
    draw: st.DrawFn, *, inputs: bool, batching: bool, tensorrt: bool
) -> list[dict[str, Any]]:
    out = []
    for name in draw(st.lists(names, max_size=4, unique=True)):
        item: dict[str, Any] = {"name": name}
        _maybe(draw, item, "dataType", st.sampled_from(DATA_TYPES))
        shape = draw(st.one_of(st.none(), dims))
        if shape is not None:
            item["dims"] = shape
        reshape = _reshape_for(draw, shape, batching)
        if reshape is not None:
            item["reshape"] = reshape
        three = shape is None or len(shape) == 3
        if inputs:
            _maybe(draw, item, "optional", st.booleans())
            _maybe(draw, item, "allowRaggedBatch", st.booleans())
            if three:
                _maybe(draw, item, "format", st.sampled_from(["FORMAT_NHWC", "FORMAT_NCHW"]))
        else:
            _maybe(draw, item, "labelFilename", st.sampled_from(["labels.txt", "l/a b.txt"]))
        if tensorrt:
            _maybe(draw, item, "isShapeTensor", st.booleans())
            if three:
                _maybe(draw, item, "isNonLinearFormatIo", st.booleans())
        out.append(item)
    return out


@st.composite
def batch_ios(
    draw: st.DrawFn, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sources = [t["name"] for t in inputs]
    if not sources:
        return out
    kinds = list(get_args(BatchInputKind))
    batch_inputs = []
    for _ in range(draw(st.integers(0, 2))):
        item = {
            "dataType": draw(st.sampled_from(["TYPE_INT32", "TYPE_FP32"])),
            "sourceInput": [draw(st.sampled_from(sources))],
            "targetName": draw(st.lists(names, min_size=1, max_size=2)),
        }
        _maybe(draw, item, "kind", st.sampled_from(kinds))
        batch_inputs.append(item)
    if batch_inputs:
        out["batchInputs"] = batch_inputs
    targets = [t["name"] for t in outputs]
    if targets and draw(st.booleans()):
        out["batchOutputs"] = [
            {
                "kind": "BATCH_SCATTER_WITH_INPUT_SHAPE",
                "sourceInput": [draw(st.sampled_from(sources))],
                "targetName": draw(st.lists(st.sampled_from(targets), max_size=2, unique=True)),
            }
        ]
    return out


def _queue_policies(delay: bool) -> Any:
    actions = ["REJECT", "DELAY"] if delay else ["REJECT"]
    return st.fixed_dictionaries(
        {},
        optional={
            "timeoutAction": st.sampled_from(actions),
            "defaultTimeoutMicroseconds": st.integers(0, BIG),
            "allowTimeoutOverride": st.booleans(),
            "maxQueueSize": st.integers(0, UINT32),
        },
    )


@st.composite
def dynamic_batchings(draw: st.DrawFn, max_batch_size: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if max_batch_size:
        _maybe(
            draw,
            out,
            "preferredBatchSize",
            st.lists(st.integers(min_value=1, max_value=min(max_batch_size, 1024)), max_size=4),
        )
    _maybe(draw, out, "maxQueueDelayMicroseconds", st.integers(0, BIG))
    preserve = draw(st.booleans())
    if preserve:
        out["preserveOrdering"] = True
    if draw(st.booleans()):
        levels = draw(st.integers(1, 1 if preserve else 16))
        out["priorityLevels"] = levels
        out["defaultPriorityLevel"] = draw(st.integers(1, levels))
        _maybe(
            draw,
            out,
            "priorityQueuePolicy",
            st.dictionaries(
                st.integers(1, levels).map(str), _queue_policies(not preserve), max_size=3
            ),
        )
    _maybe(draw, out, "defaultQueuePolicy", _queue_policies(not preserve))
    return out


@st.composite
def sequence_batchings(draw: st.DrawFn, max_batch_size: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    strategy = draw(st.sampled_from(["none", "direct", "oldest"]))
    if strategy == "direct":
        out["direct"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "maxQueueDelayMicroseconds": st.integers(0, BIG),
                    "minimumSlotUtilization": st.floats(0, 1, width=32),
                },
            )
        )
    elif strategy == "oldest":
        oldest = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "maxCandidateSequences": st.integers(0, INT32),
                    "maxQueueDelayMicroseconds": st.integers(0, BIG),
                    "preserveOrdering": st.booleans(),
                },
            )
        )
        if max_batch_size:
            _maybe(
                draw,
                oldest,
                "preferredBatchSize",
                st.lists(st.integers(1, min(max_batch_size, 64)), max_size=3),
            )
        out["oldest"] = oldest
    _maybe(draw, out, "maxSequenceIdleMicroseconds", st.integers(0, BIG))
    _maybe(draw, out, "iterativeSequence", st.booleans())
    kinds = draw(
        st.lists(
            st.sampled_from(
                [
                    "CONTROL_SEQUENCE_START",
                    "CONTROL_SEQUENCE_READY",
                    "CONTROL_SEQUENCE_END",
                    "CONTROL_SEQUENCE_CORRID",
                ]
            ),
            unique=True,
        )
    )
    if kinds:
        control_names = draw(st.lists(names, min_size=len(kinds), max_size=len(kinds), unique=True))
        control_inputs = []
        for kind, name in zip(kinds, control_names, strict=True):
            control: dict[str, Any] = {"kind": kind}
            if kind == "CONTROL_SEQUENCE_CORRID":
                control["dataType"] = draw(st.sampled_from(CORRID_DATA_TYPES))
            else:
                values = draw(
                    st.sampled_from(
                        [
                            (
                                "int32FalseTrue",
                                st.lists(st.integers(-INT32, INT32), min_size=2, max_size=2),
                            ),
                            ("fp32FalseTrue", st.lists(float32s, min_size=2, max_size=2)),
                            ("boolFalseTrue", st.lists(st.booleans(), min_size=2, max_size=2)),
                        ]
                    )
                )
                control[values[0]] = draw(values[1])
            control_inputs.append({"name": name, "controls": [control]})
        out["controlInputs"] = control_inputs
    if draw(st.booleans()):
        state: dict[str, Any] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "inputName": names,
                    "outputName": names,
                    "dataType": st.sampled_from(DATA_TYPES),
                    "dims": dims,
                    "useSameBufferForInputOutput": st.booleans(),
                    "useGrowableMemory": st.booleans(),
                },
            )
        )
        initial: dict[str, Any] = {"name": draw(names), "dims": draw(dims)}
        _maybe(draw, initial, "dataType", st.sampled_from(DATA_TYPES))
        source = draw(st.sampled_from(["zeroData", "dataFile", None]))
        if source == "zeroData":
            initial["zeroData"] = True
        elif source == "dataFile":
            initial["dataFile"] = "state/initial.bin"
        state["initialStates"] = [initial]
        out["states"] = [state]
    return out


@st.composite
def instance_groups(draw: st.DrawFn, tensorrt: bool) -> list[dict[str, Any]]:
    groups = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]))
        group: dict[str, Any] = {"kind": kind}
        _maybe(draw, group, "name", names)
        _maybe(draw, group, "count", st.integers(1, INT32))
        if kind in ("KIND_GPU", "KIND_AUTO"):
            _maybe(draw, group, "gpus", st.lists(st.integers(0, 7), min_size=1, max_size=4))
        if tensorrt:
            _maybe(draw, group, "profile", st.lists(st.integers(0, 9).map(str), max_size=3))
        _maybe(draw, group, "passive", st.booleans())
        _maybe(draw, group, "hostPolicy", names)
        _maybe(
            draw,
            group,
            "rateLimiter",
            st.fixed_dictionaries(
                {},
                optional={
                    "priority": st.integers(0, UINT32),
                    "resources": st.lists(
                        st.fixed_dictionaries(
                            {"name": names},
                            optional={"global": st.booleans(), "count": st.integers(0, UINT32)},
                        ),
                        min_size=1,
                        max_size=2,
                    ),
                },
            ),
        )
        _maybe(
            draw,
            group,
            "secondaryDevices",
            st.lists(
                st.builds(lambda d: {"kind": "KIND_NVDLA", "deviceId": d}, st.integers(0, 7)),
                max_size=2,
            ),
        )
        groups.append(group)
    return groups


version_policies = st.one_of(
    st.builds(lambda n: {"latest": {"numVersions": n}}, st.integers(1, 100)),
    st.just({"all": {}}),
    st.builds(
        lambda v: {"specific": {"versions": v}},
        st.lists(st.integers(1, BIG), min_size=1, max_size=4),
    ),
)

_string_maps = st.dictionaries(names, st.text(max_size=12), max_size=3)
_accelerators = st.lists(
    st.fixed_dictionaries({"name": names}, optional={"parameters": _string_maps}),
    min_size=1,
    max_size=2,
)
_graph_inputs = st.dictionaries(names, st.fixed_dictionaries({"dim": dims}), max_size=2)

optimizations = st.fixed_dictionaries(
    {},
    optional={
        "inputPinnedMemory": st.booleans(),
        "outputPinnedMemory": st.booleans(),
        "graphLevel": st.integers(-1, 3),
        "priority": st.sampled_from(["PRIORITY_DEFAULT", "PRIORITY_MAX", "PRIORITY_MIN"]),
        "gatherKernelBufferThreshold": st.integers(0, UINT32),
        "eagerBatching": st.booleans(),
        "cuda": st.fixed_dictionaries(
            {},
            optional={
                "graphs": st.booleans(),
                "busyWaitEvents": st.booleans(),
                "outputCopyStream": st.booleans(),
                "graphSpecs": st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "batchSize": st.integers(0, 64),
                            "input": _graph_inputs,
                            "graphLowerBound": st.fixed_dictionaries(
                                {},
                                optional={"batchSize": st.integers(0, 64), "input": _graph_inputs},
                            ),
                        },
                    ),
                    max_size=2,
                ),
            },
        ),
        "executionAccelerators": st.fixed_dictionaries(
            {},
            optional={
                "gpuExecutionAccelerators": _accelerators,
                "cpuExecutionAccelerators": _accelerators,
            },
        ),
    },
)

warmups = st.lists(
    st.fixed_dictionaries(
        {"name": names},
        optional={
            "batchSize": st.integers(0, 64),
            "count": st.integers(0, 10),
            "inputs": st.dictionaries(
                names,
                st.one_of(
                    st.fixed_dictionaries(
                        {"dataType": st.sampled_from(DATA_TYPES), "dims": dims},
                        optional={"zeroData": st.just(True)},
                    ),
                    st.fixed_dictionaries(
                        {"dataType": st.sampled_from(DATA_TYPES), "dims": dims},
                        optional={"randomData": st.just(True)},
                    ),
                    st.fixed_dictionaries(
                        {"dataType": st.sampled_from(DATA_TYPES), "dims": dims},
                        optional={"inputDataFile": names},
                    ),
                ),
                max_size=2,
            ),
        },
    ),
    min_size=1,
    max_size=2,
)


@st.composite
def model_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A ``spec.config`` that pydantic accepts, Triton 2.51 would load (as far as its config
    checks go) and Triton's ModelConfig protobuf can hold."""
    out: dict[str, Any] = dict(draw(runtimes()))
    tensorrt = out.get("platform") == "tensorrt_plan" or out.get("backend") == "tensorrt"
    max_batch_size = draw(st.one_of(st.just(0), st.integers(1, INT32)))
    out["maxBatchSize"] = max_batch_size
    batching = max_batch_size > 0
    out["inputs"] = draw(tensors(inputs=True, batching=batching, tensorrt=tensorrt))
    out["outputs"] = draw(tensors(inputs=False, batching=batching, tensorrt=tensorrt))
    # An input declared twice as required can never be satisfied; keep names unique.
    out.update(draw(batch_ios(out["inputs"], out["outputs"])))
    scheduler = draw(st.sampled_from(["none", "dynamic", "sequence"]))
    if scheduler == "dynamic":
        out["dynamicBatching"] = draw(dynamic_batchings(max_batch_size))
    elif scheduler == "sequence":
        out["sequenceBatching"] = draw(sequence_batchings(max_batch_size))
    _maybe(draw, out, "instanceGroups", instance_groups(tensorrt))
    _maybe(draw, out, "versionPolicy", version_policies)
    _maybe(draw, out, "parameters", _string_maps)
    _maybe(draw, out, "optimization", optimizations)
    _maybe(draw, out, "decoupled", st.booleans())
    _maybe(draw, out, "runtime", st.sampled_from(["model.py", "libtriton_custom.so"]))
    _maybe(draw, out, "defaultModelFilename", st.sampled_from(["model.plan", "weights/x.onnx"]))
    _maybe(
        draw,
        out,
        "ccModelFilenames",
        st.dictionaries(st.sampled_from(["7.5", "8.0", "9.0"]), names),
    )
    _maybe(draw, out, "metricTags", _string_maps)
    _maybe(draw, out, "modelWarmups", warmups)
    _maybe(
        draw,
        out,
        "modelOperations",
        st.fixed_dictionaries({"opLibraryFilename": st.lists(names, min_size=1, max_size=2)}),
    )
    _maybe(
        draw,
        out,
        "modelRepositoryAgents",
        st.fixed_dictionaries(
            {
                "agents": st.lists(
                    st.fixed_dictionaries({"name": names}, optional={"parameters": _string_maps}),
                    min_size=1,
                    max_size=2,
                )
            }
        ),
    )
    if not out.get("decoupled") and scheduler != "sequence":
        _maybe(draw, out, "responseCache", st.fixed_dictionaries({"enable": st.booleans()}))
    return out
