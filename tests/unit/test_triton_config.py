"""``config.pbtxt`` rendering, checked by parsing the text back into Triton's own
``ModelConfig`` protobuf rather than by matching strings."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import text_format
from hypothesis import given, settings

from tests.support import strategies
from tests.support.builders import config, tensor
from tritonfleet.api.model import ModelConfigSpec
from tritonfleet.api.problems import Problem
from tritonfleet.desired.triton.config import build_model_config, render_config
from tritonfleet.desired.triton.proto import mc


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
        outputs=[tensor("logits", data_type, [-1, -1, 32000], reshape=[-1, 32000])],
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
    assert list(logits.dims) == [-1, -1, 32000]
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
            "preserveOrdering": True,
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
    assert batching.preserve_ordering is True
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
    assert auto.count == 1


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


# --- semantic checks -------------------------------------------------------------


def test_dynamic_batching_without_batch_dimension_is_refused() -> None:
    _, problems = render(maxBatchSize=0, dynamicBatching={})
    assert paths(problems) == ["spec.config.dynamicBatching"]
    assert "maxBatchSize" in problems[0].message


def test_preferred_batch_size_above_max_is_refused() -> None:
    _, problems = render(maxBatchSize=16, dynamicBatching={"preferredBatchSize": [8, 16, 32, 64]})
    assert paths(problems) == [
        "spec.config.dynamicBatching.preferredBatchSize[2]",
        "spec.config.dynamicBatching.preferredBatchSize[3]",
    ]
    assert "32" in problems[0].message
    assert "16" in problems[0].message


@pytest.mark.parametrize("kind", ["inputs", "outputs"])
def test_duplicate_tensor_names_are_refused(kind: str) -> None:
    _, problems = render(**{kind: [tensor("a"), tensor("b"), tensor("a")]})
    assert paths(problems) == [f"spec.config.{kind}[2].name"]
    assert "'a'" in problems[0].message


def test_same_name_for_an_input_and_an_output_is_fine() -> None:
    assert render(inputs=[tensor("x")], outputs=[tensor("x")])[1] == []


@pytest.mark.parametrize("optional", [True, False])
def test_optional_output_is_refused(optional: bool) -> None:
    _, problems = render(outputs=[tensor("OUT", optional=optional)])
    assert paths(problems) == ["spec.config.outputs[0].optional"]


@pytest.mark.parametrize("name", ["-bad", "a/b", "x" * 128, ""])
def test_invalid_triton_name_is_refused(name: str) -> None:
    _, problems = render(name)
    assert paths(problems) == ["spec.modelName"]


def test_all_problems_are_listed_at_once() -> None:
    _, problems = render(
        maxBatchSize=4,
        inputs=[tensor("a"), tensor("a")],
        outputs=[tensor("o", optional=True)],
        dynamicBatching={"preferredBatchSize": [8]},
    )
    assert sorted(paths(problems)) == [
        "spec.config.dynamicBatching.preferredBatchSize[0]",
        "spec.config.inputs[1].name",
        "spec.config.outputs[0].optional",
    ]
    _, problems = render(
        "-bad", maxBatchSize=0, dynamicBatching={}, outputs=[tensor("o"), tensor("o")], extra="oops"
    )
    assert len(problems) == 4
    assert sorted(paths(problems)) == [
        "spec.config.dynamicBatching",
        "spec.config.extra",
        "spec.config.outputs[1].name",
        "spec.modelName",
    ]


def test_text_is_returned_even_with_problems() -> None:
    pbtxt, problems = render_config("toy", spec(outputs=[tensor("o", optional=True)]))
    assert problems
    assert text_format.Parse(pbtxt, mc.ModelConfig()).name == "toy"


@pytest.mark.parametrize(
    ("batching", "why"),
    [
        ({"priorityLevels": 3}, "priority levels without a default level"),
        ({"priorityLevels": 3, "defaultPriorityLevel": 0}, "default level 0 of 3 levels"),
    ],
)
def test_priority_levels_triton_refuses_are_refused(batching: dict[str, int], why: str) -> None:
    """Triton: with priority_levels > 0, default_priority_level must be in [1, levels]."""
    try:
        _, problems = render(dynamicBatching=batching)
    except ValueError:  # refused by the API model: fine
        return
    assert problems, why


# --- properties -------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(strategies.model_configs())
def test_rendered_text_parses_back_to_the_built_config(wire: dict[str, Any]) -> None:
    spec_ = ModelConfigSpec.model_validate(wire)
    pbtxt, _ = render_config("model", spec_)
    parsed = text_format.Parse(pbtxt, mc.ModelConfig())
    assert parsed == build_model_config("model", spec_)
    # ... and says what the spec says (independently of build_model_config).
    assert parsed.max_batch_size == spec_.max_batch_size
    for rendered_tensors, typed in ((parsed.input, spec_.inputs), (parsed.output, spec_.outputs)):
        assert [t.name for t in rendered_tensors] == [t.name for t in typed]
        assert [mc.DataType.Name(t.data_type) for t in rendered_tensors] == [
            t.data_type for t in typed
        ]
        assert [list(t.dims) for t in rendered_tensors] == [t.dims for t in typed]
        assert [
            list(t.reshape.shape) if t.HasField("reshape") else None for t in rendered_tensors
        ] == [t.reshape for t in typed]
    assert [i.optional for i in parsed.input] == [bool(t.optional) for t in spec_.inputs]
    assert {k: v.string_value for k, v in parsed.parameters.items()} == spec_.parameters
    assert len(parsed.instance_group) == len(spec_.instance_groups)
    assert parsed.HasField("dynamic_batching") == (spec_.dynamic_batching is not None)
    assert parsed.HasField("version_policy") == (spec_.version_policy is not None)


@settings(max_examples=60, deadline=None)
@given(strategies.model_configs())
def test_rendering_is_deterministic(wire: dict[str, Any]) -> None:
    first = render_config("model", ModelConfigSpec.model_validate(wire))
    assert render_config("model", ModelConfigSpec.model_validate(wire)) == first
    if wire.get("parameters"):
        items = list(wire["parameters"].items())
        shuffled = {**wire, "parameters": dict(items[1::2] + items[::2])}
        assert render_config("model", ModelConfigSpec.model_validate(shuffled))[0] == first[0]
