"""``config.pbtxt`` rendering, checked by parsing the text back into Triton's own
``ModelConfig`` protobuf rather than by matching strings."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any, get_args

import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from pydantic import BaseModel, ValidationError

from tests.support import strategies
from tests.support.builders import config, tensor
from tritonfleet.api.model import ModelConfigSpec
from tritonfleet.api.problems import Problem, problems_from_validation_error
from tritonfleet.desired.triton import wire
from tritonfleet.desired.triton.config import build_model_config, render_config
from tritonfleet.desired.triton.proto import mc
from tritonfleet.desired.triton.wire import float32_value, read


def spec(**overrides: Any) -> ModelConfigSpec:
    return ModelConfigSpec.model_validate(config(**overrides))


def render(name: str = "toy", **overrides: Any) -> tuple[mc.ModelConfig, list[Problem]]:
    pbtxt, problems = render_config(name, spec(**overrides))
    return text_format.Parse(pbtxt, mc.ModelConfig()), problems


def rendered(name: str = "toy", **overrides: Any) -> mc.ModelConfig:
    parsed, problems = render(name, **overrides)
    assert problems == []
    return parsed


def paths(problems: list[Problem]) -> list[str]:
    return [p.path for p in problems]


# --- typed fields ---------------------------------------------------------------


def test_name_runtime_and_batch_size() -> None:
    parsed = rendered("my-model", maxBatchSize=32)
    assert parsed.name == "my-model"
    assert parsed.backend == "python"
    assert parsed.platform == ""
    assert parsed.max_batch_size == 32
    platform = {k: v for k, v in config().items() if k != "backend"}
    parsed = text_format.Parse(
        render_config(
            "x", ModelConfigSpec.model_validate({**platform, "platform": "onnxruntime_onnx"})
        )[0],
        mc.ModelConfig(),
    )
    assert parsed.platform == "onnxruntime_onnx"
    assert parsed.backend == ""


@pytest.mark.parametrize("data_type", strategies.DATA_TYPES)
def test_tensors(data_type: str) -> None:
    parsed = rendered(
        inputs=[
            tensor("ids", data_type, [-1, 128]),
            tensor("lengths", "TYPE_INT32", [1], reshape=[], optional=True),
        ],
        outputs=[tensor("logits", data_type, [-1, 8, 4000], reshape=[-1, 32000])],
    )
    ids, lengths = parsed.input
    assert ids.name == "ids"
    assert ids.data_type == mc.DataType.Value(data_type)
    assert list(ids.dims) == [-1, 128]
    assert not ids.HasField("reshape")
    assert ids.optional is False
    assert lengths.optional is True
    assert lengths.HasField("reshape"), "reshape: [] (to a scalar) must be rendered"
    assert list(lengths.reshape.shape) == []
    (logits,) = parsed.output
    assert logits.data_type == mc.DataType.Value(data_type)
    assert list(logits.dims) == [-1, 8, 4000]
    assert list(logits.reshape.shape) == [-1, 32000]


def test_tensor_order_is_kept() -> None:
    names = ["z", "a", "m", "b"]
    parsed = rendered(inputs=[tensor(n) for n in names], outputs=[tensor(n) for n in names])
    assert [t.name for t in parsed.input] == names
    assert [t.name for t in parsed.output] == names


def test_dynamic_batching() -> None:
    parsed = rendered(
        maxBatchSize=64,
        dynamicBatching={
            "preferredBatchSize": [16, 32, 64],
            "maxQueueDelayMicroseconds": 100,
            "preserveOrdering": False,
            "priorityLevels": 3,
            "defaultPriorityLevel": 2,
            "defaultQueuePolicy": {
                "timeoutAction": "DELAY",
                "defaultTimeoutMicroseconds": 30000,
                "allowTimeoutOverride": True,
                "maxQueueSize": 512,
            },
        },
    )
    batching = parsed.dynamic_batching
    assert list(batching.preferred_batch_size) == [16, 32, 64]
    assert batching.max_queue_delay_microseconds == 100
    assert batching.preserve_ordering is False
    assert batching.priority_levels == 3
    assert batching.default_priority_level == 2
    policy = batching.default_queue_policy
    assert policy.timeout_action == mc.ModelQueuePolicy.DELAY
    assert policy.default_timeout_microseconds == 30000
    assert policy.allow_timeout_override is True
    assert policy.max_queue_size == 512


def test_empty_dynamic_batching_still_turns_batching_on() -> None:
    assert rendered(dynamicBatching={}).HasField("dynamic_batching")
    assert not rendered().HasField("dynamic_batching")


def test_queue_policy_reject() -> None:
    parsed = rendered(dynamicBatching={"defaultQueuePolicy": {"timeoutAction": "REJECT"}})
    assert parsed.dynamic_batching.HasField("default_queue_policy")
    assert parsed.dynamic_batching.default_queue_policy.timeout_action == mc.ModelQueuePolicy.REJECT


def test_instance_groups() -> None:
    parsed = rendered(
        instanceGroups=[
            {"kind": "KIND_GPU", "count": 2, "gpus": [0, 1], "name": "gpu-pair"},
            {"kind": "KIND_CPU", "count": 4},
            {},
        ]
    )
    gpu, cpu, auto = parsed.instance_group
    assert gpu.kind == mc.ModelInstanceGroup.KIND_GPU
    assert gpu.count == 2
    assert list(gpu.gpus) == [0, 1]
    assert gpu.name == "gpu-pair"
    assert cpu.kind == mc.ModelInstanceGroup.KIND_CPU
    assert cpu.count == 4
    assert list(cpu.gpus) == []
    assert auto.kind == mc.ModelInstanceGroup.KIND_AUTO
    assert auto.count == 0  # unset: Triton's default (1, or 2 CPU instances for onnxruntime)


@pytest.mark.parametrize(
    ("policy", "check"),
    [
        ({"latest": {"numVersions": 3}}, lambda p: p.latest.num_versions == 3),
        ({"latest": {}}, lambda p: p.HasField("latest") and p.latest.num_versions == 1),
        ({"all": {}}, lambda p: p.HasField("all")),
        ({"specific": {"versions": [1, 4]}}, lambda p: list(p.specific.versions) == [1, 4]),
    ],
)
def test_version_policy(policy: dict[str, Any], check: Any) -> None:
    parsed = rendered(versionPolicy=policy)
    assert parsed.version_policy.WhichOneof("policy_choice") == next(iter(policy))
    assert check(parsed.version_policy)


def test_parameters_are_string_values() -> None:
    parsed = rendered(
        parameters={"EXECUTION_ENV_PATH": "$$TRITON_MODEL_DIRECTORY/env.tar.gz", "a": ""}
    )
    assert (
        parsed.parameters["EXECUTION_ENV_PATH"].string_value
        == "$$TRITON_MODEL_DIRECTORY/env.tar.gz"
    )
    assert "a" in parsed.parameters
    assert parsed.parameters["a"].string_value == ""


def test_optimization() -> None:
    parsed = rendered(
        optimization={"inputPinnedMemory": True, "outputPinnedMemory": False, "graphLevel": 1}
    )
    assert parsed.optimization.input_pinned_memory.enable is True
    assert parsed.optimization.HasField("output_pinned_memory")
    assert parsed.optimization.output_pinned_memory.enable is False
    assert parsed.optimization.graph.level == 1
    assert not rendered().HasField("optimization")


@pytest.mark.parametrize("decoupled", [True, False])
def test_decoupled(decoupled: bool) -> None:
    parsed = rendered(decoupled=decoupled)
    assert parsed.HasField("model_transaction_policy")
    assert parsed.model_transaction_policy.decoupled is decoupled
    assert not rendered().HasField("model_transaction_policy")


def test_unset_fields_are_not_rendered() -> None:
    parsed = rendered()
    for name in ("dynamic_batching", "version_policy", "optimization", "model_transaction_policy"):
        assert not parsed.HasField(name), name
    assert len(parsed.instance_group) == 0
    assert len(parsed.parameters) == 0


# --- extra --------------------------------------------------------------------


def test_extra_scalar_overrides_typed_value() -> None:
    parsed = rendered(maxBatchSize=8, extra="max_batch_size: 4\n")
    assert parsed.max_batch_size == 4


def test_extra_repeated_fields_append() -> None:
    parsed = rendered(
        instanceGroups=[{"kind": "KIND_GPU"}],
        extra='input { name: "EXTRA" data_type: TYPE_INT64 dims: [ 2 ] }\n'
        "instance_group { kind: KIND_CPU count: 3 }\n",
    )
    assert [t.name for t in parsed.input] == ["INPUT0", "EXTRA"]
    assert parsed.input[1].data_type == mc.TYPE_INT64
    assert [g.kind for g in parsed.instance_group] == [
        mc.ModelInstanceGroup.KIND_GPU,
        mc.ModelInstanceGroup.KIND_CPU,
    ]


def test_extra_merges_into_typed_messages_and_maps() -> None:
    parsed = rendered(
        dynamicBatching={"preferredBatchSize": [4]},
        parameters={"a": "1", "b": "2"},
        extra="dynamic_batching { max_queue_delay_microseconds: 500 }\n"
        'parameters { key: "b" value { string_value: "3" } }\n',
    )
    assert list(parsed.dynamic_batching.preferred_batch_size) == [4]
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 500
    assert parsed.parameters["a"].string_value == "1"
    assert parsed.parameters["b"].string_value == "3"


def test_extra_adds_untyped_fields() -> None:
    parsed = rendered(
        extra="sequence_batching { max_sequence_idle_microseconds: 5000000 }\n"
        'model_warmup { name: "w" batch_size: 1 }\n'
    )
    assert parsed.sequence_batching.max_sequence_idle_microseconds == 5000000
    assert parsed.model_warmup[0].name == "w"


def test_extra_keeping_the_name_is_fine() -> None:
    assert rendered("toy", extra='name: "toy"').name == "toy"


@pytest.mark.parametrize(
    ("extra", "line", "column", "named"),
    [
        ('priority_queue_policy: "max_utilization"', 1, 1, "priority_queue_policy"),
        (
            'dynamic_batching {\n  priority_queue_policy: "max_utilization"\n}\n',
            2,
            None,
            "priority_queue_policy",
        ),
        ("max_batch_size: 4\n\n  max_batch_sise: 8\n", 3, 3, "max_batch_sise"),
        ("instance_group { kind: KIND_TPU }", 1, None, "KIND_TPU"),
        ('max_batch_size: "eight"', 1, None, "eight"),
        ("dynamic_batching {\n  preferred_batch_size: 4\n", 2, None, '"}"'),
    ],
)
def test_extra_errors_name_line_column_and_field(
    extra: str, line: int, column: int | None, named: str
) -> None:
    _, problems = render(extra=extra)
    (problem,) = problems
    assert problem.path == "spec.config.extra"
    assert f"line {line}, column " in problem.message
    if column is not None:
        assert f"line {line}, column {column}:" in problem.message
    assert named in problem.message


def test_extra_changing_the_model_name_is_refused() -> None:
    _, problems = render("toy", extra='name: "other"')
    (problem,) = problems
    assert problem.path == "spec.config.extra"
    assert "modelName" in problem.message


def test_extra_turning_the_model_into_an_ensemble_is_refused() -> None:
    _, problems = render(extra='platform: "ensemble"')
    assert paths(problems) == ["spec.config.extra"]
    assert "ensemble" in problems[0].message


def test_extra_is_checked_like_typed_fields() -> None:
    """Triton refuses a preferred batch size above max_batch_size at load time; a
    max_batch_size lowered through ``extra`` must be caught here like a typed one."""
    _, problems = render(
        maxBatchSize=16, dynamicBatching={"preferredBatchSize": [8, 16]}, extra="max_batch_size: 4"
    )
    assert problems, "preferredBatchSize 8 and 16 exceed the max_batch_size 4 set in extra"


# --- Triton's load-time checks -------------------------------------------------------


def refused(**overrides: Any) -> list[str]:
    """The problems pydantic (the CEL twins) reports for a config, as ``path: message``."""
    with pytest.raises(ValidationError) as caught:
        spec(**overrides)
    return [str(p) for p in problems_from_validation_error(caught.value, "spec.config")]


def test_dynamic_batching_on_a_non_batching_model_is_accepted() -> None:
    """Triton 2.51 loads it (ValidateModelConfig only bounds the preferred sizes)."""
    parsed = rendered(maxBatchSize=0, dynamicBatching={"maxQueueDelayMicroseconds": 100})
    assert parsed.HasField("dynamic_batching")
    assert parsed.max_batch_size == 0


def test_preferred_batch_size_above_max_is_refused_with_the_values() -> None:
    assert refused(maxBatchSize=16, dynamicBatching={"preferredBatchSize": [8, 16, 32, 64]}) == [
        "spec.config.dynamicBatching: preferredBatchSize 32, 64 exceeds maxBatchSize 16"
    ]
    (problem,) = refused(maxBatchSize=0, dynamicBatching={"preferredBatchSize": [4]})
    assert "exceeds maxBatchSize 0 (the model does not batch)" in problem


def test_an_input_declared_twice_as_required_is_refused() -> None:
    """Triton 2.51 loads such a config but then expects the input twice in every request
    and refuses them all ("expected 2 inputs but got 1"), verified on tritonserver."""
    _, problems = render(inputs=[tensor("a"), tensor("b"), tensor("a")])
    assert paths(problems) == ["spec.config.inputs[2].name"]
    assert "'a'" in problems[0].message
    assert "spec.config.inputs[0]" in problems[0].message


def test_duplicates_triton_serves_are_accepted() -> None:
    """A duplicated output, or an input duplicated as optional, loads and answers."""
    assert render(outputs=[tensor("o"), tensor("o", "TYPE_INT32")])[1] == []
    assert render(inputs=[tensor("a"), tensor("a", optional=True)])[1] == []


def test_same_name_for_an_input_and_an_output_is_fine() -> None:
    assert render(inputs=[tensor("x")], outputs=[tensor("x")])[1] == []


@pytest.mark.parametrize("optional", [True, False])
def test_optional_is_not_a_field_of_outputs(optional: bool) -> None:
    (problem,) = refused(outputs=[tensor("OUT", optional=optional)])
    assert problem.startswith("spec.config.outputs[0].optional: Extra inputs are not permitted")


@pytest.mark.parametrize(
    ("dims", "reshape", "batching", "why"),
    [
        ([4], [2, 3], 8, "hold different numbers of elements"),
        ([2, -1], [-1, 2, -1], 8, "different numbers of variable (-1) dimensions"),
        ([2, 3, -1], [3, -1, 2], 8, "hold different numbers of elements"),
        ([1], [], 0, "needs maxBatchSize > 0"),
        ([-1], [], 8, "hold different numbers of elements"),
    ],
)
def test_reshapes_triton_refuses_are_refused(
    dims: list[int], reshape: list[int], batching: int, why: str
) -> None:
    """Triton: ValidateIOShape."""
    _, problems = render(maxBatchSize=batching, inputs=[tensor("x", dims=dims, reshape=reshape)])
    assert paths(problems) == ["spec.config.inputs[0].reshape"]
    assert why in problems[0].message


@pytest.mark.parametrize(
    ("dims", "reshape", "batching"),
    [([2, 3], [6], 0), ([1], [], 8), ([2, 4, -1, 6], [8, -1, 1, 6], 0), ([-1, 4], [-1, 2, 2], 0)],
)
def test_reshapes_triton_accepts_are_accepted(
    dims: list[int], reshape: list[int], batching: int
) -> None:
    assert render(maxBatchSize=batching, inputs=[tensor("x", dims=dims, reshape=reshape)])[1] == []


@pytest.mark.parametrize("flag", ["isShapeTensor", "isNonLinearFormatIo"])
def test_tensorrt_only_tensor_flags_need_tensorrt(flag: str) -> None:
    shape = [3, 4, 5]
    _, problems = render(inputs=[tensor("x", dims=shape, **{flag: True})])
    assert paths(problems) == [f"spec.config.inputs[0].{flag}"]
    assert "backend 'python'" in problems[0].message
    trt = {k: v for k, v in config().items() if k != "backend"}
    for runtime in ({"platform": "tensorrt_plan"}, {"backend": "tensorrt"}, {}):
        ok = ModelConfigSpec.model_validate(
            {**trt, **runtime, "inputs": [tensor("x", dims=shape, **{flag: True})]}
        )
        assert render_config("m", ok)[1] == [], runtime


def test_profiles_need_tensorrt() -> None:
    _, problems = render(instanceGroups=[{"kind": "KIND_GPU", "profile": ["0"]}])
    assert paths(problems) == ["spec.config.instanceGroups[0].profile"]


def test_batch_inputs_and_outputs_must_name_real_tensors() -> None:
    """Triton: ValidateBatchIO."""
    _, problems = render(
        inputs=[tensor("ids")],
        outputs=[tensor("out")],
        batchInputs=[{"dataType": "TYPE_INT32", "sourceInput": ["idz"], "targetName": ["n"]}],
        batchOutputs=[{"sourceInput": ["ids"], "targetName": ["out", "out", "nope"]}],
    )
    assert sorted(map(str, problems)) == [
        "spec.config.batchInputs[0].sourceInput: 'idz' is not an input of the model",
        "spec.config.batchOutputs[0].targetName: 'nope' is not an output of the model",
        "spec.config.batchOutputs[0].targetName: 'out' is listed more than once",
    ]


def test_sequence_controls_are_one_tensor_per_kind() -> None:
    """Triton: GetBooleanSequenceControlProperties."""
    start = {"kind": "CONTROL_SEQUENCE_START", "int32FalseTrue": [0, 1]}
    _, problems = render(
        sequenceBatching={
            "controlInputs": [
                {"name": "START", "controls": [start]},
                {"name": "START", "controls": [start]},
            ]
        }
    )
    assert sorted(paths(problems)) == [
        "spec.config.sequenceBatching.controlInputs[1].controls",
        "spec.config.sequenceBatching.controlInputs[1].name",
    ]


def test_invalid_triton_name_is_refused_here_too() -> None:
    for name in ["-bad", "a/b", "x" * 128, ""]:
        _, problems = render(name)
        assert paths(problems) == ["spec.modelName"]


def test_all_problems_are_listed_at_once() -> None:
    problems = refused(
        maxBatchSize=4,
        backend="pytorch",
        platform="onnx",
        inputs=[tensor("a", dims=[0]), tensor("b", format="FORMAT_NHWC")],
        outputs=[tensor("o", optional=True)],
        dynamicBatching={"preferredBatchSize": [8]},
        instanceGroups=[{"kind": "KIND_CPU", "gpus": [0]}],
        responseCache={"enable": True},
        decoupled=True,
    )
    assert sorted(p.split(": ")[0] for p in problems) == [
        "spec.config.dynamicBatching",
        "spec.config.inputs[0].dims",
        "spec.config.inputs[1].format",
        "spec.config.instanceGroups[0].gpus",
        "spec.config.outputs[0].optional",
        "spec.config.platform",
        "spec.config.responseCache",
    ]
    _, problems = render(
        "-bad",
        inputs=[tensor("i", dims=[4], reshape=[3]), tensor("i")],
        outputs=[tensor("o", isShapeTensor=True)],
        extra="oops",
    )
    assert sorted(paths(problems)) == [
        "spec.config.extra",
        "spec.config.inputs[0].reshape",
        "spec.config.inputs[1].name",
        "spec.config.outputs[0].isShapeTensor",
        "spec.modelName",
    ]


def test_text_is_returned_even_with_problems() -> None:
    pbtxt, problems = render_config("toy", spec(inputs=[tensor("a"), tensor("a")]))
    assert problems
    assert text_format.Parse(pbtxt, mc.ModelConfig()).name == "toy"


@pytest.mark.parametrize(
    ("batching", "why"),
    [
        ({"priorityLevels": 3}, "priority levels without a default level"),
        ({"priorityLevels": 3, "defaultPriorityLevel": 0}, "default level 0 of 3 levels"),
        ({"preserveOrdering": True, "priorityLevels": 2, "defaultPriorityLevel": 1}, "ordering"),
    ],
)
def test_priority_levels_triton_refuses_are_refused(batching: dict[str, int], why: str) -> None:
    """Triton: with priority_levels > 0, default_priority_level must be in [1, levels]."""
    assert refused(dynamicBatching=batching), why


# --- extra amends typed tensors ---------------------------------------------------------


def test_extra_amends_a_typed_tensor_in_place() -> None:
    parsed = rendered(
        inputs=[tensor("ids"), tensor("mask")],
        extra='input { name: "ids" allow_ragged_batch: true dims: [ -1 ] }\n'
        'input { name: "late" data_type: TYPE_INT32 dims: [ 1 ] }\n',
    )
    assert [t.name for t in parsed.input] == ["ids", "mask", "late"]
    assert parsed.input[0].allow_ragged_batch is True
    assert list(parsed.input[0].dims) == [-1]  # a list in extra replaces the typed one
    assert parsed.input[0].data_type == mc.TYPE_FP32  # untouched fields stay


def test_extra_naming_a_tensor_twice_is_refused_on_extra() -> None:
    _, problems = render(extra='output { name: "x" dims: [1] }\noutput { name: "x" dims: [2] }\n')
    assert [str(p) for p in problems] == [
        "spec.config.extra: output 'x' appears more than once in extra"
    ]


def test_problems_only_extra_causes_are_blamed_on_extra() -> None:
    _, problems = render(
        inputs=[tensor("a", dims=[4])], extra='input { name: "a" reshape { shape: [ 3 ] } }'
    )
    (problem,) = problems
    assert problem.path == "spec.config.extra"
    assert "inputs[0].reshape" in problem.message
    assert "different numbers of elements" in problem.message


# --- properties -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(strategies.model_configs())
def test_generated_configs_render_clean_and_say_what_the_spec_says(wire: dict[str, Any]) -> None:
    spec_ = ModelConfigSpec.model_validate(wire)
    pbtxt, problems = render_config("model", spec_)
    assert problems == []
    parsed = text_format.Parse(pbtxt, mc.ModelConfig())
    assert parsed == build_model_config("model", spec_)
    # Read back into the API, the config renders to the same proto: nothing typed is lost.
    assert build_model_config("model", ModelConfigSpec.model_validate(read(parsed))) == parsed
    assert [t.name for t in parsed.input] == [t.name for t in spec_.inputs]


@settings(max_examples=60, deadline=None)
@given(strategies.model_configs())
def test_rendering_is_deterministic(wire: dict[str, Any]) -> None:
    first = render_config("model", ModelConfigSpec.model_validate(wire))
    assert render_config("model", ModelConfigSpec.model_validate(wire)) == first
    if wire.get("parameters"):
        items = list(wire["parameters"].items())
        shuffled = {**wire, "parameters": dict(items[1::2] + items[::2])}
        assert render_config("model", ModelConfigSpec.model_validate(shuffled))[0] == first[0]


# --- the typed API covers Triton's ModelConfig -------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "triton-config.md"


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The API model inside an annotation (``X | None``, ``list[X]``, ``dict[str, X]``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def _check_covers(descriptor: Any, model: type[BaseModel], path: str, seen: set[str]) -> None:
    shape = wire.shape_of(descriptor)
    api_fields = {f.alias or n: f for n, f in model.model_fields.items()}
    typed = {
        wire.api_name(descriptor, f): f for f in descriptor.fields if f.name not in shape.untyped
    }
    assert set(typed) == set(api_fields) - {"extra"}, path
    for name, proto_field in typed.items():
        sub = proto_field.message_type
        if sub is None or proto_field.name in shape.flattened:
            continue
        if sub.GetOptions().map_entry:
            if proto_field.name in shape.flat_map_values:
                continue
            sub = sub.fields_by_name["value"].message_type
            if sub is None:
                continue
        inner = _model_class(api_fields[name].annotation)
        assert inner is not None, f"{path}.{name}"
        if sub.full_name not in seen:
            _check_covers(sub, inner, f"{path}.{name}", seen | {sub.full_name})


def test_every_field_of_tritons_model_config_has_a_typed_field() -> None:
    """A newer Triton proto (tritonclient upgrade) fails this until its fields are typed
    here or listed as untyped (``extra``) in wire.SHAPES."""
    assert wire.SHAPES[wire.MODEL_CONFIG].untyped == {
        "name",
        "ensemble_scheduling",
        "model_metrics",
    }
    _check_covers(mc.ModelConfig.DESCRIPTOR, ModelConfigSpec, "spec.config", set())


def test_the_docs_name_every_triton_field() -> None:
    text = DOCS.read_text()
    for message in (
        mc.ModelConfig,
        mc.ModelInput,
        mc.ModelOutput,
        mc.ModelDynamicBatching,
        mc.ModelSequenceBatching,
        mc.ModelInstanceGroup,
        mc.ModelOptimizationPolicy,
    ):
        for proto_field in message.DESCRIPTOR.fields:
            assert re.search(rf"\b{proto_field.name}\b", text), proto_field.full_name


@pytest.mark.parametrize(
    "value", [3.4025001647762064e38, -3.4025001647762064e38, 3.4028234663852886e38]
)
def test_float32_values_near_the_maximum_read_back_without_overflow(value: float) -> None:
    # A short decimal of such a value can round past float32's range (3.403e38):
    # the shortest one that is still the same float32 is found, never an OverflowError.
    assert struct.pack("<f", float32_value(value)) == struct.pack("<f", value)
