"""TritonModel and ModelEnsemble as a user writes them: camelCase YAML in,
defaults filled in, every bad input refused with the field named."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from pydantic import ValidationError

from tests.support import strategies
from tests.support.builders import (
    all_sample_docs,
    ensemble_doc,
    model_doc,
    refusal,
    sample_docs,
    tensor,
    with_path,
)
from tritonfleet.api import ModelConfigSpec, ModelEnsemble, TritonModel
from tritonfleet.api.model import MAX_INLINE_FILES
from tritonfleet.api.pool import TritonServerPool


def parse(doc: dict[str, Any]) -> TritonModel:
    return TritonModel.model_validate(doc)


def refused(doc: dict[str, Any], kind: type = TritonModel) -> str:
    with pytest.raises(ValidationError) as caught:
        kind.from_object(doc)
    return refusal(caught.value)


# --- parsing ----------------------------------------------------------------


def test_sample_yaml_is_parsed_into_typed_fields() -> None:
    (doc,) = sample_docs("tensorrt-llm-plan")
    model = parse(doc)
    spec = model.spec
    assert model.metadata.name == "llama-trt-plan"
    assert spec.source.kind == "pvc"
    assert spec.source.pvc is not None
    assert spec.source.pvc.claim_name == "engines"
    assert spec.source.pvc.path == "/llama-3-8b/fp16"
    assert spec.config.platform == "tensorrt_plan"
    assert spec.config.backend is None
    assert spec.config.max_batch_size == 64
    assert [t.name for t in spec.config.inputs] == ["input_ids", "input_lengths"]
    assert spec.config.inputs[0].data_type == "TYPE_INT32"
    assert spec.config.inputs[0].dims == [-1]
    assert spec.config.inputs[1].reshape == []
    assert spec.config.outputs[0].dims == [-1, -1]
    batching = spec.config.dynamic_batching
    assert batching is not None
    assert batching.preferred_batch_size == [16, 32, 64]
    assert batching.max_queue_delay_microseconds == 100000
    assert batching.default_queue_policy is not None
    assert batching.default_queue_policy.timeout_action == "REJECT"
    assert batching.default_queue_policy.max_queue_size == 512
    assert spec.config.instance_groups[0].kind == "KIND_GPU"
    assert spec.config.instance_groups[0].count == 2
    assert spec.config.instance_groups[0].gpus == [0]
    assert spec.config.parameters == {"precision": "FP16"}
    assert spec.config.optimization is not None
    assert spec.config.optimization.input_pinned_memory is True
    assert spec.config.version_policy is not None
    assert spec.config.version_policy.latest is not None
    assert spec.config.version_policy.latest.num_versions == 1
    assert spec.serving.shm_size == "8Gi"
    assert spec.serving.replicas.min == 1
    assert spec.serving.replicas.max == 8
    assert spec.serving.autoscaling is not None
    assert spec.serving.autoscaling.queue_time_target_ms == 100
    assert spec.serving.resources is not None
    assert spec.serving.resources.requests == {"cpu": "8", "memory": "64Gi"}
    assert spec.serving.node_selector == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}


def test_failover_sample_is_parsed() -> None:
    (doc,) = sample_docs("python-llm-bridge")
    spec = parse(doc).spec
    assert spec.source.kind == "http"
    assert spec.source.http is not None
    assert spec.source.http.archive == "tgz"
    assert spec.config.inputs[1].optional is True
    assert spec.serving.replicas.min == 0
    assert spec.serving.autoscaling is not None
    assert spec.serving.autoscaling.scale_to_zero_after_seconds == 900
    assert spec.failover is not None
    assert spec.failover.provider.base_url == "https://api.deepseek.com/v1"
    assert spec.failover.provider.model == "deepseek-chat"
    assert spec.failover.provider.api_key_secret is not None
    assert spec.failover.provider.api_key_secret.key == "api-key"
    assert spec.failover.triggers.queue_time_above_ms == 2000
    assert spec.failover.mode == "auto"


@pytest.mark.parametrize(
    ("model_name", "expected"), [(None, "toy"), ("Toy_Model.v2", "Toy_Model.v2")]
)
def test_model_name_falls_back_to_metadata_name(model_name: str | None, expected: str) -> None:
    doc = model_doc("toy") if model_name is None else model_doc("toy", modelName=model_name)
    assert parse(doc).triton_name == expected


def test_serving_defaults() -> None:
    serving = parse(model_doc()).spec.serving
    assert serving.gpus == 1
    assert serving.gpu_resource == "nvidia.com/gpu"
    assert (serving.replicas.min, serving.replicas.max) == (1, 1)
    assert serving.shm_size == "1Gi"
    assert serving.autoscaling is None
    assert serving.image is None
    assert serving.tolerations == []
    assert serving.env == []


def test_nested_defaults() -> None:
    doc = model_doc(
        source={"pvc": {"claimName": "models"}},
        serving={"autoscaling": {}, "replicas": {"max": 3}},
        failover={"provider": {"baseUrl": "https://api.example.com/v1", "model": "m"}},
        config={
            "backend": "python",
            "instanceGroups": [{}],
            "versionPolicy": {"latest": {}},
            "dynamicBatching": {},
        },
    )
    spec = parse(doc).spec
    assert spec.source.pvc is not None
    assert spec.source.pvc.path == "/"
    assert spec.config.max_batch_size == 0
    assert spec.config.instance_groups[0].kind == "KIND_AUTO"
    assert spec.config.instance_groups[0].count is None  # Triton's default (1, or 2 on CPU)
    assert spec.config.version_policy is not None
    assert spec.config.version_policy.latest is not None
    assert spec.config.version_policy.latest.num_versions == 1
    assert spec.config.dynamic_batching is not None
    assert spec.config.dynamic_batching.preferred_batch_size is None  # Triton: maxBatchSize
    assert spec.serving.replicas.min == 1
    assert spec.serving.replicas.max == 3
    assert spec.serving.autoscaling is not None
    assert spec.serving.autoscaling.queue_time_target_ms == 50
    assert spec.serving.autoscaling.window_seconds == 30
    assert spec.failover is not None
    assert spec.failover.mode == "auto"
    assert spec.failover.triggers.unavailable is True
    assert spec.failover.triggers.queue_time_above_ms is None


def test_ensemble_sample_is_parsed() -> None:
    docs = sample_docs("rag-ensemble")
    ensemble = ModelEnsemble.model_validate(docs[-1])
    assert ensemble.triton_name == "rag"
    assert ensemble.member_names == ("rag-embedder", "rag-retriever", "rag-generator")
    step = ensemble.spec.steps[1]
    assert step.model == "rag-retriever"
    assert step.model_version == -1
    assert step.input_map == {"query_embedding": "question_embedding", "question": "question"}
    assert step.output_map == {"prompt": "augmented_prompt"}
    assert ensemble.spec.max_batch_size == 16
    assert ensemble.spec.serving.replicas.max == 4


def test_ensemble_member_names_are_distinct_in_first_use_order() -> None:
    step = {"inputMap": {"a": "IN"}, "outputMap": {"b": "OUT"}}
    doc = ensemble_doc(
        steps=[{"model": m, **step} for m in ("b-model", "a-model", "b-model", "c-model")]
    )
    assert ModelEnsemble.model_validate(doc).member_names == ("b-model", "a-model", "c-model")


def test_ensemble_model_name_falls_back_to_metadata_name() -> None:
    assert ModelEnsemble.model_validate(ensemble_doc("pipe")).triton_name == "pipe"
    renamed = ensemble_doc("pipe", modelName="Pipe_V2")
    assert ModelEnsemble.model_validate(renamed).triton_name == "Pipe_V2"


# --- cross-field rules --------------------------------------------------------

S3 = {"uri": "s3://bucket/model"}
PVC = {"claimName": "models"}


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ({}, "found 0"),
        ({"s3": S3, "pvc": PVC}, "found 2"),
        ({"s3": S3, "http": {"url": "https://x.example/m.onnx"}}, "found 2"),
        ({"s3": S3, "pvc": PVC, "inline": {"files": {"a": "b"}}}, "found 3"),
    ],
)
def test_source_needs_exactly_one_kind(source: dict[str, Any], found: str) -> None:
    message = refused(model_doc(source=source))
    assert "spec.source" in message
    assert "exactly one of s3, http, pvc, inline" in message
    assert found in message


@pytest.mark.parametrize("source", [{"s3": S3}, {"pvc": PVC}, {"http": {"url": "http://x/y"}}])
def test_each_source_kind_alone_is_accepted(source: dict[str, Any]) -> None:
    assert parse(model_doc(source=source)).spec.source.kind == next(iter(source))


@pytest.mark.parametrize(
    "runtime",
    [
        {},  # Triton's auto-complete picks the backend from the model files
        {"platform": "onnxruntime_onnx", "backend": "onnxruntime"},
        {"platform": "tensorrt_plan"},
        {"platform": "anything", "backend": "python"},  # a custom backend ignores the platform
        {"backend": "tensorrtllm"},
    ],
)
def test_platform_and_backend_combinations_triton_loads_are_accepted(
    runtime: dict[str, Any],
) -> None:
    parse(model_doc(config={"maxBatchSize": 0, **runtime}))


@pytest.mark.parametrize(
    ("runtime", "named"),
    [
        ({"platform": "onnxruntime_onnx", "backend": "pytorch"}, "pytorch_libtorch"),
        ({"platform": "python"}, "needs a backend"),
        ({"platform": "tensorflow_savedmodel", "backend": "tensorrt"}, "tensorrt_plan"),
    ],
)
def test_platform_and_backend_combinations_triton_refuses_are_refused(
    runtime: dict[str, Any], named: str
) -> None:
    message = refused(model_doc(config={"maxBatchSize": 0, **runtime}))
    assert "spec.config.platform" in message
    assert repr(runtime["platform"]) in message
    assert named in message


def test_platform_ensemble_is_refused_with_a_pointer_to_model_ensemble() -> None:
    message = refused(model_doc(config={"platform": "ensemble"}))
    assert "platform" in message
    assert "ModelEnsemble" in message


@pytest.mark.parametrize(("low", "high"), [(2, 1), (5, 4), (1000, 1)])
def test_replicas_min_above_max_is_refused(low: int, high: int) -> None:
    message = refused(model_doc(serving={"replicas": {"min": low, "max": high}}))
    assert "spec.serving.replicas" in message
    assert "min" in message
    assert "max" in message


def test_replicas_min_above_default_max_is_refused() -> None:
    assert "replicas" in refused(model_doc(serving={"replicas": {"min": 2}}))


@pytest.mark.parametrize("replicas", [{"min": 0, "max": 0}, {"min": -1, "max": 2}, {"max": 1001}])
def test_replicas_out_of_range(replicas: dict[str, int]) -> None:
    assert "spec.serving.replicas" in refused(model_doc(serving={"replicas": replicas}))


@pytest.mark.parametrize("replicas", [None, {"min": 1, "max": 3}, {"max": 3}])
def test_scale_to_zero_needs_min_zero(replicas: dict[str, int] | None) -> None:
    serving: dict[str, Any] = {"autoscaling": {"scaleToZeroAfterSeconds": 300}}
    if replicas is not None:
        serving["replicas"] = replicas
    message = refused(model_doc(serving=serving))
    assert "spec.serving" in message
    assert "scaleToZeroAfterSeconds" in message
    assert "replicas.min: 0" in message


def test_scale_to_zero_with_min_zero_is_accepted() -> None:
    serving = {"replicas": {"min": 0, "max": 2}, "autoscaling": {"scaleToZeroAfterSeconds": 300}}
    autoscaling = parse(model_doc(serving=serving)).spec.serving.autoscaling
    assert autoscaling is not None
    assert autoscaling.scale_to_zero_after_seconds == 300


@pytest.mark.parametrize(
    "policy",
    [
        {},
        {"latest": {"numVersions": 2}, "all": {}},
        {"latest": {}, "specific": {"versions": [1]}},
        {"latest": {}, "all": {}, "specific": {"versions": [1]}},
    ],
)
def test_version_policy_needs_exactly_one(policy: dict[str, Any]) -> None:
    message = refused(model_doc(config={"backend": "python", "versionPolicy": policy}))
    assert "spec.config.versionPolicy" in message
    assert "latest, all, specific" in message


@pytest.mark.parametrize(
    "policy", [{"latest": {"numVersions": 2}}, {"all": {}}, {"specific": {"versions": [1, 3]}}]
)
def test_each_version_policy_alone_is_accepted(policy: dict[str, Any]) -> None:
    config = parse(model_doc(config={"backend": "python", "versionPolicy": policy})).spec.config
    assert config.version_policy is not None
    assert getattr(config.version_policy, next(iter(policy))) is not None


@pytest.mark.parametrize(
    "batching",
    [
        {"defaultPriorityLevel": 1},
        {"priorityLevels": 2, "defaultPriorityLevel": 3},
        {"priorityLevels": 1, "defaultPriorityLevel": 5},
    ],
)
def test_default_priority_level_needs_and_fits_priority_levels(batching: dict[str, int]) -> None:
    message = refused(model_doc(config={"backend": "python", "dynamicBatching": batching}))
    assert "spec.config.dynamicBatching" in message
    assert "defaultPriorityLevel" in message
    assert "priorityLevels" in message


@pytest.mark.parametrize("level", [1, 2, 3])
def test_default_priority_level_within_levels_is_accepted(level: int) -> None:
    batching = {"priorityLevels": 3, "defaultPriorityLevel": level}
    config = parse(model_doc(config={"backend": "python", "dynamicBatching": batching})).spec.config
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.default_priority_level == level


@pytest.mark.parametrize(
    "path", ["../x", "/etc/passwd", "a/../../b", "..", "1/../../model.py", "a\\..\\b", ""]
)
def test_inline_file_paths_must_stay_inside_the_model_directory(path: str) -> None:
    doc = model_doc(source={"inline": {"files": {"1/model.py": "", path: "x"}}})
    message = refused(doc)
    assert "spec.source.inline.files" in message
    if path:
        assert repr(path) in message


@pytest.mark.parametrize("path", ["1/model.py", "config.pbtxt", "1/tokenizer/vocab.txt", "x"])
def test_inline_relative_paths_are_accepted(path: str) -> None:
    files = parse(model_doc(source={"inline": {"files": {path: "x"}}})).spec.source.inline
    assert files is not None
    assert path in files.files


@pytest.mark.parametrize("count", [0, MAX_INLINE_FILES + 1])
def test_inline_file_count_is_bounded(count: int) -> None:
    files = {f"1/f{i}.txt": "" for i in range(count)}
    assert "spec.source.inline.files" in refused(model_doc(source={"inline": {"files": files}}))


BAD_QUANTITIES = ["1Gb", "-1", "-1Gi", "abc", "", "1.2.3", "1 Gi", "Gi", -1, "1gi"]
GOOD_QUANTITIES = ["512Mi", "2", "500m", "1e3", "1.5Gi", "64Gi", 0, 8]


@pytest.mark.parametrize("quantity", BAD_QUANTITIES)
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("spec.serving.shmSize", "spec.serving.shmSize"),
        ("spec.serving.resources", "spec.serving.resources.limits.memory"),
    ],
)
def test_bad_quantities_are_refused(quantity: str | int, path: str, field: str) -> None:
    value = quantity if path.endswith("shmSize") else {"limits": {"memory": quantity}}
    message = refused(with_path(model_doc(), path, value))
    assert field in message


@pytest.mark.parametrize("quantity", GOOD_QUANTITIES)
def test_good_quantities_are_accepted(quantity: str | int) -> None:
    doc = model_doc(serving={"shmSize": quantity, "resources": {"requests": {"cpu": quantity}}})
    serving = parse(doc).spec.serving
    assert serving.shm_size == quantity
    assert serving.resources is not None
    assert serving.resources.requests == {"cpu": quantity}


@pytest.mark.parametrize(
    "resource",
    [
        "nvidia.com/gpu",
        "nvidia.com/mig-1g.10gb",
        "nvidia.com/mig-1g.5gb",
        "nvidia.com/mig-3g.40gb",
        "nvidia.com/mig-7g.80gb",
        "nvidia.com/gpu.shared",
        "nvidia.com/mig-1g.10gb.shared",
    ],
)
def test_gpu_and_mig_resources_are_accepted(resource: str) -> None:
    assert parse(model_doc(serving={"gpuResource": resource})).spec.serving.gpu_resource == resource


@pytest.mark.parametrize(
    "resource",
    [
        "nvidia.com/GPU",
        "amd.com/gpu",
        "gpu",
        "nvidia.com/gpus",
        "nvidia.com/mig-1g10gb",
        "nvidia.com/mig-1g.10GB",
        "nvidia.com/mig-g.10gb",
        "nvidia.com/gpu ",
        "nvidia_com/gpu",
        "nvidia.com/gpu.",
        "nvidia.com/gpu.Shared",
    ],
)
def test_bad_gpu_resources_are_refused(resource: str) -> None:
    assert "spec.serving.gpuResource" in refused(model_doc(serving={"gpuResource": resource}))


INVALID_MODEL_NAMES = ["-model", ".hidden", "_x", "has space", "a/b", "x" * 128, "", "modèle"]


@pytest.mark.parametrize("name", INVALID_MODEL_NAMES)
def test_invalid_model_names_are_refused(name: str) -> None:
    assert "spec.modelName" in refused(model_doc(modelName=name))


@pytest.mark.parametrize("name", INVALID_MODEL_NAMES)
def test_invalid_ensemble_model_names_are_refused(name: str) -> None:
    assert "spec.modelName" in refused(ensemble_doc(modelName=name), ModelEnsemble)


@pytest.mark.parametrize("name", ["a", "A1_b.c-d", "x" * 127, "0model", "resnet50.v2"])
def test_valid_model_names_are_accepted(name: str) -> None:
    assert parse(model_doc(modelName=name)).triton_name == name


@pytest.mark.parametrize("name", ["Upper", "under_score", "-x", "x.", "a" * 254, ""])
def test_invalid_metadata_names_are_refused(name: str) -> None:
    assert "metadata.name" in refused(model_doc(name))


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("spec.config.inputs.0.dataType", "FP32", "spec.config.inputs[0].dataType"),
        ("spec.config.inputs.0.dims", [-2], "spec.config.inputs[0].dims[0]"),
        ("spec.config.inputs.0.name", "", "spec.config.inputs[0].name"),
        ("spec.config.maxBatchSize", -1, "spec.config.maxBatchSize"),
        ("spec.config.instanceGroups", [{"count": 0}], "spec.config.instanceGroups[0].count"),
        ("spec.config.instanceGroups", [{"kind": "GPU"}], "spec.config.instanceGroups[0].kind"),
        ("spec.config.platform", "ONNX Runtime", "spec.config.platform"),
        ("spec.source", {"s3": {"uri": "http://x/y"}}, "spec.source.s3.uri"),
        ("spec.source", {"http": {"url": "ftp://x/y"}}, "spec.source.http.url"),
        ("spec.source", {"http": {"url": "https://x", "sha256": "abc"}}, "sha256"),
        ("spec.source", {"pvc": {"claimName": "Bad_Claim"}}, "spec.source.pvc.claimName"),
        ("spec.serving.gpus", -1, "spec.serving.gpus"),
        ("spec.serving.autoscaling", {"windowSeconds": 1}, "autoscaling.windowSeconds"),
        ("spec.serving.autoscaling", {"queueTimeTargetMs": 0}, "autoscaling.queueTimeTargetMs"),
        ("spec.serving.env", [{"name": "1BAD"}], "spec.serving.env[0].name"),
        ("spec.serving.tolerations", [{"effect": "Never"}], "tolerations[0].effect"),
        ("spec.failover", {"provider": {"baseUrl": "api.x", "model": "m"}}, "provider.baseUrl"),
        ("spec.failover", {"provider": {"baseUrl": "https://x"}}, "spec.failover.provider.model"),
    ],
)
def test_bad_field_values_are_refused_with_the_field_named(
    path: str, value: Any, field: str
) -> None:
    assert field in refused(with_path(model_doc(), path, value))


# --- unknown fields -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("spec.replicas", "spec.replicas"),
        ("spec.config.max_batch", "spec.config.max_batch"),
        ("spec.config.inputs.0", "spec.config.inputs[0].shape"),
        ("spec.config.dynamicBatching", "spec.config.dynamicBatching.maxQueueDelay"),
        ("spec.serving.gpuCount", "spec.serving.gpuCount"),
        ("spec.serving.replicas", "spec.serving.replicas.minimum"),
        ("spec.source.s3", "spec.source.s3.bucket"),
        ("spec.source.http", "spec.source.http.checksum"),
    ],
)
def test_unknown_fields_are_refused_and_named(path: str, field: str) -> None:
    doc = model_doc(
        config={**model_doc()["spec"]["config"], "dynamicBatching": {}},
        serving={"replicas": {"min": 1}},
    )
    unknown = field.rsplit(".", 1)[-1]
    if path == "spec.source.s3":
        doc = with_path(doc, "spec.source", {"s3": {**S3, unknown: "b"}})
    elif path == "spec.source.http":
        doc = with_path(doc, "spec.source", {"http": {"url": "https://x/y", unknown: "b"}})
    elif path in ("spec.config.inputs.0", "spec.config.dynamicBatching", "spec.serving.replicas"):
        doc = with_path(doc, f"{path}.{unknown}", 1)
    else:
        doc = with_path(doc, path, 1)
    message = refused(doc)
    assert field in message
    assert "Extra inputs are not permitted" in message


def test_unknown_ensemble_step_field_is_refused_and_named() -> None:
    doc = with_path(ensemble_doc(), "spec.steps.0", {"model": "toy", "inputs": {}, "outputMap": {}})
    message = refused(doc, ModelEnsemble)
    assert "spec.steps[0].inputs" in message
    assert "spec.steps[0].inputMap" in message  # the required field the user misspelled


@pytest.mark.parametrize(
    ("path", "snake"),
    [
        ("spec.config", "max_batch_size"),
        ("spec.serving", "gpu_resource"),
        ("spec", "model_name"),
    ],
)
def test_snake_case_field_names_are_refused(path: str, snake: str) -> None:
    """The API server only knows the camelCase names: `max_batch_size` is an unknown
    field there (pruned, or refused by kubectl's strict field validation), so the
    offline parser must refuse it too instead of quietly accepting it."""
    value = {"max_batch_size": 4, "gpu_resource": "nvidia.com/mig-1g.10gb", "model_name": "x"}
    camel = "".join(w.title() if i else w for i, w in enumerate(snake.split("_")))
    doc = with_path(model_doc(), f"{path}.{camel}")  # only the snake_case spelling is left
    message = refused(with_path(doc, f"{path}.{snake}", value[snake]))
    assert f"{path}.{snake}" in message


def test_problems_in_several_fields_are_all_reported() -> None:
    doc = model_doc(
        modelName="-bad",
        config={**model_doc()["spec"]["config"], "maxBatchSize": -1},
        serving={"gpuResource": "amd.com/gpu", "shmSize": "1Gb"},
    )
    message = refused(doc)
    for field in ("spec.modelName", "spec.config.maxBatchSize", "gpuResource", "shmSize"):
        assert field in message


# --- wire form ----------------------------------------------------------------


def _contains(wire: Any, written: Any, path: str = "") -> None:
    """Everything the user wrote is in the wire form, unchanged."""
    if isinstance(written, dict):
        assert isinstance(wire, dict), path
        for key, value in written.items():
            assert key in wire, f"{path}.{key} missing from to_wire()"
            _contains(wire[key], value, f"{path}.{key}")
    elif isinstance(written, list):
        assert isinstance(wire, list), path
        assert len(wire) == len(written), path
        for i, (a, b) in enumerate(zip(wire, written, strict=True)):
            _contains(a, b, f"{path}[{i}]")
    else:
        assert wire == written, path


@pytest.mark.parametrize(
    "doc",
    all_sample_docs(),
    ids=lambda d: f"{d['kind']}-{d['metadata']['name']}",
)
def test_to_wire_round_trips_every_sample(doc: dict[str, Any]) -> None:
    kinds: dict[str, Any] = {
        "TritonModel": TritonModel,
        "ModelEnsemble": ModelEnsemble,
        "TritonServerPool": TritonServerPool,
    }
    kind = kinds[doc["kind"]]
    obj = kind.model_validate(doc)
    wire = obj.to_wire()
    assert kind.model_validate(wire) == obj
    _contains(wire, doc)


def test_to_wire_is_camel_case_and_omits_unset_fields() -> None:
    wire = parse(model_doc()).to_wire()
    assert wire["spec"]["config"]["maxBatchSize"] == 8
    assert wire["spec"]["config"]["inputs"][0]["dataType"] == "TYPE_FP32"
    assert wire["spec"]["serving"]["gpuResource"] == "nvidia.com/gpu"
    assert "max_batch_size" not in wire["spec"]["config"]
    assert "platform" not in wire["spec"]["config"]
    assert "failover" not in wire["spec"]
    assert "modelName" not in wire["spec"]
    assert "status" not in wire


@settings(max_examples=60, deadline=None)
@given(strategies.model_configs())
def test_to_wire_round_trips_any_valid_config(config: dict[str, Any]) -> None:
    spec = ModelConfigSpec.model_validate(config)
    assert ModelConfigSpec.model_validate(spec.to_wire()) == spec
    _contains(spec.to_wire(), config)


def test_models_are_immutable() -> None:
    model = parse(model_doc())
    with pytest.raises(ValidationError):
        model.spec.config.max_batch_size = 4  # type: ignore[misc]


def test_ensemble_needs_steps_inputs_and_outputs() -> None:
    for field in ("steps", "inputs", "outputs"):
        message = refused(ensemble_doc(**{field: []}), ModelEnsemble)
        assert f"spec.{field}" in message


def test_tensor_helper_matches_the_api() -> None:
    # Guards the builders the other test modules rely on.
    assert parse(model_doc(config={"backend": "python", "inputs": [tensor("x")]}))


def test_numbers_triton_takes_are_not_capped_lower() -> None:
    """Triton takes any int32 instance count and a uint64 number of priority levels."""
    doc = model_doc(
        config={
            "backend": "python",
            "maxBatchSize": 8,
            "instanceGroups": [{"kind": "KIND_CPU", "count": 65}, {"count": 2**31 - 1}],
            "dynamicBatching": {"priorityLevels": 2**40, "defaultPriorityLevel": 2**39},
        }
    )
    spec = parse(doc).spec.config
    assert [g.count for g in spec.instance_groups] == [65, 2**31 - 1]
    assert spec.dynamic_batching is not None
    assert spec.dynamic_batching.priority_levels == 2**40
