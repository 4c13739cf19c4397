"""A ModelEnsemble checked against its member TritonModels from the specs alone:
every problem Triton would hit at load time, each named with its path."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import text_format

from tests.support.builders import sample_docs, tensor
from tritonfleet.api import ModelEnsemble, TritonModel
from tritonfleet.api.problems import Problem
from tritonfleet.desired.triton.ensemble import ensemble_problems, render_ensemble_config
from tritonfleet.desired.triton.proto import mc


def member(
    name: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    max_batch_size: int = 8,
    model_name: str | None = None,
) -> TritonModel:
    spec: dict[str, Any] = {
        "source": {"pvc": {"claimName": "models"}},
        "config": {
            "backend": "python",
            "maxBatchSize": max_batch_size,
            "inputs": inputs,
            "outputs": outputs,
        },
    }
    if model_name:
        spec["modelName"] = model_name
    return TritonModel.model_validate({"metadata": {"name": name}, "spec": spec})


def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
    return {"model": model, "inputMap": inputs, "outputMap": outputs}


def ensemble(
    steps: list[dict[str, Any]],
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    max_batch_size: int = 8,
    **spec: Any,
) -> ModelEnsemble:
    return ModelEnsemble.model_validate(
        {
            "metadata": {"name": "pipe", "namespace": "ml"},
            "spec": {
                "maxBatchSize": max_batch_size,
                "inputs": inputs or [tensor("IN", "TYPE_STRING")],
                "outputs": outputs or [tensor("OUT", "TYPE_FP32")],
                "steps": steps,
                **spec,
            },
        }
    )


# A two-stage pipeline: tokenizer (STRING → INT64) then encoder (INT64 → FP32).
TOKENIZER = member("tokenizer", [tensor("text", "TYPE_STRING")], [tensor("ids", "TYPE_INT64")])
ENCODER = member(
    "encoder",
    [tensor("input_ids", "TYPE_INT64"), tensor("mask", "TYPE_INT64", optional=True)],
    [tensor("embedding", "TYPE_FP32")],
)
MEMBERS = {"tokenizer": TOKENIZER, "encoder": ENCODER}
STEPS = [
    step("tokenizer", {"text": "IN"}, {"ids": "TOKENS"}),
    step("encoder", {"input_ids": "TOKENS"}, {"embedding": "OUT"}),
]


def problems_of(
    steps: list[dict[str, Any]] = STEPS, members: dict[str, TritonModel] = MEMBERS, **kw: Any
) -> list[Problem]:
    return ensemble_problems(ensemble(steps, **kw), members)


def by_path(problems: list[Problem]) -> dict[str, str]:
    return {p.path: p.message for p in problems}


def test_valid_pipeline_has_no_problems() -> None:
    assert problems_of() == []


def test_rag_sample_validates_clean() -> None:
    docs = sample_docs("rag-ensemble")
    members = {d["metadata"]["name"]: TritonModel.model_validate(d) for d in docs[:-1]}
    rag = ModelEnsemble.model_validate(docs[-1])
    assert ensemble_problems(rag, members) == []
    _, problems = render_ensemble_config(rag, members)
    assert problems == []


def test_missing_member() -> None:
    problems = problems_of(members={"tokenizer": TOKENIZER})
    assert "spec.steps[1].model" in by_path(problems)
    message = by_path(problems)["spec.steps[1].model"]
    assert "'encoder'" in message
    assert "ml" in message  # the namespace it looked in
    assert len(problems) == 1, problems


def test_unknown_member_input() -> None:
    steps = [
        STEPS[0],
        step("encoder", {"input_ids": "TOKENS", "ids": "TOKENS"}, {"embedding": "OUT"}),
    ]
    problems = by_path(problems_of(steps))
    assert list(problems) == ["spec.steps[1].inputMap.ids"]
    assert "'ids'" in problems["spec.steps[1].inputMap.ids"]
    assert "input_ids" in problems["spec.steps[1].inputMap.ids"]  # lists what exists


def test_unknown_member_output() -> None:
    steps = [step("tokenizer", {"text": "IN"}, {"tokens": "TOKENS"}), STEPS[1]]
    problems = by_path(problems_of(steps))
    assert list(problems) == ["spec.steps[0].outputMap.tokens"]
    assert "'tokens'" in problems["spec.steps[0].outputMap.tokens"]
    assert "ids" in problems["spec.steps[0].outputMap.tokens"]


def test_tensor_without_producer() -> None:
    steps = [STEPS[0], step("encoder", {"input_ids": "TOKENZ"}, {"embedding": "OUT"})]
    problems = by_path(problems_of(steps))
    assert "spec.steps[1].inputMap.input_ids" in problems
    assert "'TOKENZ'" in problems["spec.steps[1].inputMap.input_ids"]


def test_two_producers_of_one_tensor() -> None:
    other = member("other", [tensor("text", "TYPE_STRING")], [tensor("ids", "TYPE_INT64")])
    steps = [*STEPS, step("other", {"text": "IN"}, {"ids": "TOKENS"})]
    problems = by_path(problems_of(steps, members={**MEMBERS, "other": other}))
    assert "spec.steps[2].outputMap.ids" in problems
    message = problems["spec.steps[2].outputMap.ids"]
    assert "'TOKENS'" in message
    assert "step 0" in message  # who already produces it


def test_step_output_onto_an_ensemble_input_is_two_producers() -> None:
    steps = [step("tokenizer", {"text": "IN"}, {"ids": "IN"}), STEPS[1]]
    problems = by_path(problems_of(steps))
    assert "spec.steps[0].outputMap.ids" in problems
    assert "ensemble input" in problems["spec.steps[0].outputMap.ids"]


def test_cycle_is_reported_with_the_cycle() -> None:
    a = member("a", [tensor("x")], [tensor("y")])
    b = member("b", [tensor("x")], [tensor("y")])
    c = member("c", [tensor("x", "TYPE_STRING")], [tensor("y")])
    steps = [
        step("c", {"x": "IN"}, {"y": "OUT"}),
        step("a", {"x": "T2"}, {"y": "T1"}),
        step("b", {"x": "T1"}, {"y": "T2"}),
    ]
    problems = by_path(problems_of(steps, members={"a": a, "b": b, "c": c}))
    assert "spec.steps" in problems
    message = problems["spec.steps"]
    assert "cycle" in message
    assert "step 1 (a)" in message
    assert "step 2 (b)" in message
    assert "step 0" not in message


def test_self_loop_is_a_cycle() -> None:
    loop = member("loop", [tensor("x")], [tensor("y")])
    steps = [step("loop", {"x": "T"}, {"y": "T"}), STEPS[0], STEPS[1]]
    problems = by_path(problems_of(steps, members={**MEMBERS, "loop": loop}))
    assert "step 0 (loop)" in problems["spec.steps"]


def test_ensemble_output_not_produced() -> None:
    outputs = [tensor("OUT", "TYPE_FP32"), tensor("SCORES", "TYPE_FP32")]
    problems = by_path(problems_of(outputs=outputs))
    assert list(problems) == ["spec.outputs[1]"]
    assert "'SCORES'" in problems["spec.outputs[1]"]


def test_ensemble_input_passed_straight_to_output_is_not_produced_by_a_step() -> None:
    outputs = [tensor("OUT", "TYPE_FP32"), tensor("IN", "TYPE_STRING")]
    assert "spec.outputs[1]" in by_path(problems_of(outputs=outputs))


def test_type_mismatch_ensemble_input_to_member_input() -> None:
    problems = by_path(problems_of(inputs=[tensor("IN", "TYPE_FP32")]))
    assert list(problems) == ["spec.steps[0].inputMap.text"]
    message = problems["spec.steps[0].inputMap.text"]
    assert "TYPE_FP32" in message
    assert "TYPE_STRING" in message


def test_type_mismatch_member_output_to_member_input() -> None:
    tokenizer = member("tokenizer", [tensor("text", "TYPE_STRING")], [tensor("ids", "TYPE_INT32")])
    problems = by_path(problems_of(members={**MEMBERS, "tokenizer": tokenizer}))
    assert list(problems) == ["spec.steps[1].inputMap.input_ids"]
    message = problems["spec.steps[1].inputMap.input_ids"]
    assert "TYPE_INT32" in message
    assert "TYPE_INT64" in message
    assert "step 0 (tokenizer)" in message


def test_type_mismatch_member_output_to_ensemble_output() -> None:
    """Triton declares the ensemble's outputs first and compares the producing step with them
    (ValidateTensorMapping), so the step's mapping is where the mismatch shows."""
    problems = by_path(problems_of(outputs=[tensor("OUT", "TYPE_FP16")]))
    assert list(problems) == ["spec.steps[1].outputMap.embedding"]
    message = problems["spec.steps[1].outputMap.embedding"]
    assert "ensemble output 'OUT' is TYPE_FP16" in message
    assert "step 1 (encoder) output 'embedding' is TYPE_FP32" in message


def test_unmapped_required_member_input() -> None:
    encoder = member(
        "encoder",
        [tensor("input_ids", "TYPE_INT64"), tensor("attention_mask", "TYPE_INT64")],
        [tensor("embedding", "TYPE_FP32")],
    )
    problems = by_path(problems_of(members={**MEMBERS, "encoder": encoder}))
    assert list(problems) == ["spec.steps[1].inputMap"]
    assert "'attention_mask'" in problems["spec.steps[1].inputMap"]


def test_unmapped_optional_member_input_is_fine() -> None:
    assert "mask" not in str(problems_of())  # ENCODER's mask is optional and unmapped


def test_ensemble_batch_size_above_a_members() -> None:
    encoder = member(
        "encoder", [tensor("input_ids", "TYPE_INT64")], [tensor("embedding")], max_batch_size=4
    )
    problems = by_path(problems_of(members={**MEMBERS, "encoder": encoder}))
    assert list(problems) == ["spec.maxBatchSize"]
    assert "'encoder'" in problems["spec.maxBatchSize"]
    assert "4" in problems["spec.maxBatchSize"]


def test_ensemble_batch_size_at_or_below_members_is_fine() -> None:
    assert problems_of(max_batch_size=8) == []
    assert problems_of(max_batch_size=0) == []


def test_several_problems_are_all_listed() -> None:
    steps = [
        step("tokenizer", {"text": "IN"}, {"ids": "TOKENS", "nope": "X"}),
        step("encoder", {"input_ids": "TOKENS", "extra": "MISSING"}, {"embedding": "OUT"}),
        step("ghost", {"a": "IN"}, {"b": "G"}),
    ]
    problems = problems_of(
        steps,
        inputs=[tensor("IN", "TYPE_STRING")],
        outputs=[tensor("OUT", "TYPE_FP64"), tensor("NEVER", "TYPE_FP32")],
        max_batch_size=16,
    )
    paths = {p.path for p in problems}
    assert {
        "spec.steps[0].outputMap.nope",
        "spec.steps[1].inputMap.extra",
        "spec.steps[2].model",
        "spec.steps[1].outputMap.embedding",
        "spec.outputs[1]",
        "spec.maxBatchSize",
    } <= paths
    assert len(problems) >= 7  # MISSING has no producer, too


def test_invalid_triton_name_of_the_ensemble() -> None:
    ens = ModelEnsemble.model_validate(
        {
            "metadata": {"name": "x" * 200},
            "spec": {
                "inputs": [tensor("IN", "TYPE_STRING")],
                "outputs": [tensor("OUT")],
                "steps": STEPS,
            },
        }
    )
    assert "spec.modelName" in by_path(ensemble_problems(ens, MEMBERS))


# --- Triton's own load-time ensemble rules ------------------------------------


def test_unused_ensemble_input_is_reported() -> None:
    """Triton refuses an ensemble with an input no step consumes ("ensemble input
    'X' ... is not used") -- e.g. after renaming a tensor in one place only."""
    inputs = [tensor("IN", "TYPE_STRING"), tensor("UNUSED", "TYPE_FP32")]
    assert any("UNUSED" in p.message for p in problems_of(inputs=inputs))


def test_step_output_nobody_consumes_is_reported() -> None:
    """Triton refuses an ensemble tensor that is produced but neither consumed nor an
    ensemble output ("ensemble tensor 'X' is unused")."""
    tokenizer = member(
        "tokenizer", [tensor("text", "TYPE_STRING")], [tensor("ids", "TYPE_INT64"), tensor("n")]
    )
    steps = [step("tokenizer", {"text": "IN"}, {"ids": "TOKENS", "n": "COUNT"}), STEPS[1]]
    problems = problems_of(steps, members={**MEMBERS, "tokenizer": tokenizer})
    assert any("COUNT" in p.message for p in problems)


# --- rendering ------------------------------------------------------------------


def test_rendered_ensemble_config_parses_back() -> None:
    encoder = member(
        "encoder",
        [tensor("input_ids", "TYPE_INT64")],
        [tensor("embedding", "TYPE_FP32")],
        model_name="Encoder_v2",
    )
    steps = [
        {**STEPS[0], "modelVersion": 3},
        STEPS[1],
    ]
    ens = ensemble(
        steps, inputs=[tensor("IN", "TYPE_STRING", [-1])], outputs=[tensor("OUT", dims=[-1])]
    )
    pbtxt, problems = render_ensemble_config(ens, {**MEMBERS, "encoder": encoder})
    assert problems == []
    config = text_format.Parse(pbtxt, mc.ModelConfig())
    assert config.name == "pipe"
    assert config.platform == "ensemble"
    assert config.max_batch_size == 8
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("IN", mc.TYPE_STRING, [-1])
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("OUT", mc.TYPE_FP32, [-1])
    ]
    first, second = config.ensemble_scheduling.step
    assert first.model_name == "tokenizer"
    assert first.model_version == 3
    assert dict(first.input_map) == {"text": "IN"}
    assert dict(first.output_map) == {"ids": "TOKENS"}
    assert second.model_name == "Encoder_v2"  # the member's modelName, not metadata.name
    assert second.model_version == -1
    assert dict(second.input_map) == {"input_ids": "TOKENS"}
    assert dict(second.output_map) == {"embedding": "OUT"}
    assert len(config.instance_group) == 0  # Triton refuses instance groups on ensembles
    assert not config.HasField("optimization")


def test_rendered_ensemble_uses_the_ensembles_model_name() -> None:
    ens = ensemble(STEPS, modelName="Pipe_V1")
    config = text_format.Parse(render_ensemble_config(ens, MEMBERS)[0], mc.ModelConfig())
    assert config.name == "Pipe_V1"


def test_rag_sample_renders_with_every_step() -> None:
    docs = sample_docs("rag-ensemble")
    members = {d["metadata"]["name"]: TritonModel.model_validate(d) for d in docs[:-1]}
    pbtxt, _ = render_ensemble_config(ModelEnsemble.model_validate(docs[-1]), members)
    config = text_format.Parse(pbtxt, mc.ModelConfig())
    assert [s.model_name for s in config.ensemble_scheduling.step] == [
        "rag-embedder",
        "rag-retriever",
        "rag-generator",
    ]
    assert dict(config.ensemble_scheduling.step[1].input_map) == {
        "query_embedding": "question_embedding",
        "question": "question",
    }


@pytest.mark.parametrize("missing", ["tokenizer", "encoder"])
def test_missing_member_still_renders_a_preview(missing: str) -> None:
    members = {k: v for k, v in MEMBERS.items() if k != missing}
    pbtxt, problems = render_ensemble_config(ensemble(STEPS), members)
    assert problems
    names = [
        s.model_name for s in text_format.Parse(pbtxt, mc.ModelConfig()).ensemble_scheduling.step
    ]
    assert names == ["tokenizer", "encoder"]


# --- Triton's ensemble rules, as tritonserver 2.51 applies them --------------------------------


def test_optional_and_reshape_of_ensemble_inputs_are_rendered() -> None:
    steps = [STEPS[0], {**STEPS[1], "inputMap": {"input_ids": "TOKENS", "mask": "HINT"}}]
    inputs = [
        tensor("IN", "TYPE_STRING", [1]),
        tensor("HINT", "TYPE_INT64", [1, 1], optional=True, reshape=[1]),
    ]
    pbtxt, problems = render_ensemble_config(
        ensemble(steps, inputs=inputs, outputs=[tensor("OUT", dims=[-1])]), MEMBERS
    )
    assert problems == []
    hint = text_format.Parse(pbtxt, mc.ModelConfig()).input[1]
    assert hint.optional is True
    assert list(hint.reshape.shape) == [1]  # what Triton compares with the member's dims


def test_a_batching_ensemble_may_use_a_non_batching_member() -> None:
    """Triton's ValidateEnsembleConfig skips non-batching members; shapes are compared with
    the batch dimension added ([-1, 1] on the member is [1] with batch in the ensemble)."""
    tokenizer = member(
        "tokenizer",
        [tensor("text", "TYPE_STRING", [-1, 1])],
        [tensor("ids", "TYPE_INT64", [-1, 1])],
        max_batch_size=0,
    )
    assert problems_of(members={**MEMBERS, "tokenizer": tokenizer}, max_batch_size=8) == []


def test_shapes_must_agree_where_a_tensor_is_used() -> None:
    """Triton: ValidateTensorConsistency."""
    encoder = member(
        "encoder", [tensor("input_ids", "TYPE_INT64", [4])], [tensor("embedding", dims=[1])]
    )
    tokenizer = member(
        "tokenizer", [tensor("text", "TYPE_STRING")], [tensor("ids", "TYPE_INT64", [5])]
    )
    problems = by_path(problems_of(members={"encoder": encoder, "tokenizer": tokenizer}))
    assert list(problems) == ["spec.steps[1].inputMap.input_ids"]
    assert "shape mismatch" in problems["spec.steps[1].inputMap.input_ids"]
    assert "[-1, 5]" in problems["spec.steps[1].inputMap.input_ids"]
    assert "[-1, 4]" in problems["spec.steps[1].inputMap.input_ids"]


def test_member_tensors_given_in_extra_count() -> None:
    """The checks read each member's config as Triton gets it, extra included."""
    encoder = TritonModel.model_validate(
        {
            "metadata": {"name": "encoder"},
            "spec": {
                "source": {"pvc": {"claimName": "models"}},
                "config": {
                    "backend": "python",
                    "maxBatchSize": 8,
                    "outputs": [tensor("embedding", "TYPE_FP32")],
                    "extra": 'input { name: "input_ids" data_type: TYPE_INT64 dims: [ 1 ] '
                    "allow_ragged_batch: true }",
                },
            },
        }
    )
    assert problems_of(members={**MEMBERS, "encoder": encoder}) == []


def test_a_member_without_declared_inputs_leaves_them_to_auto_complete() -> None:
    encoder = member("encoder", [], [tensor("embedding", "TYPE_FP32")])
    assert problems_of(members={**MEMBERS, "encoder": encoder}) == []
    blank = member("encoder", [], [])
    assert problems_of(members={**MEMBERS, "encoder": blank}) == []


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("instance_group { kind: KIND_CPU }", "instance_group"),
        ("optimization { priority: PRIORITY_MAX }", "optimization"),
        ('model_warmup { name: "w" }', "model_warmup"),
        ('backend: "python"', "platform or backend"),
        ("dynamic_batching { }", "replaces the ensemble's steps"),
        ('ensemble_scheduling { step { model_name: "x" } }', "use spec.steps"),
        ('name: "other"', "spec.modelName"),
    ],
)
def test_extra_cannot_break_the_ensemble(extra: str, says: str) -> None:
    """Triton: ValidateEnsembleSchedulingConfig and ValidateModelConfig on ensembles."""
    _, problems = render_ensemble_config(ensemble(STEPS, extra=extra), MEMBERS)
    assert [p.path for p in problems] == ["spec.extra"]
    assert says in problems[0].message


def test_extra_adds_what_an_ensemble_may_have() -> None:
    pbtxt, problems = render_ensemble_config(
        ensemble(
            STEPS,
            extra="response_cache { enable: true }",
            versionPolicy={"latest": {"numVersions": 2}},
            parameters={"owner": "search"},
        ),
        MEMBERS,
    )
    assert problems == []
    config = text_format.Parse(pbtxt, mc.ModelConfig())
    assert config.response_cache.enable is True
    assert config.version_policy.latest.num_versions == 2
    assert config.parameters["owner"].string_value == "search"
