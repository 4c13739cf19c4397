"""``tritonfleet import``: what a user migrating a hand-written model repository gets, and
the property behind it: ``render(import(config)) == config`` for any config Triton loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from hypothesis import given, settings

from tests.support import strategies
from tritonfleet.api.model import ModelConfigSpec
from tritonfleet.cli import main
from tritonfleet.desired.triton.config import render_config
from tritonfleet.desired.triton.importing import (
    ConfigFile,
    ImportResult,
    import_configs,
    object_name,
    placeholders,
    source_for_prefix,
)
from tritonfleet.desired.triton.proto import mc
from tritonfleet.desired.triton.render import render_documents

PVC = source_for_prefix("pvc://models/repo")

PYTHON_MODEL = """
name: "tokenizer_v2"
backend: "python"
max_batch_size: 8
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "IDS" data_type: TYPE_INT64 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU } ]
"""

ENSEMBLE = """
name: "pipeline"
platform: "ensemble"
max_batch_size: 8
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "IDS" data_type: TYPE_INT64 dims: [ -1 ] } ]
ensemble_scheduling { step [ {
  model_name: "tokenizer_v2" model_version: -1
  input_map { key: "TEXT" value: "TEXT" } output_map { key: "IDS" value: "IDS" } } ] }
"""


def run(files: list[ConfigFile], **kw: Any) -> ImportResult:
    return import_configs(files, kw.pop("source", PVC), **kw)


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


# --- the property ----------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(strategies.model_configs())
def test_render_of_import_is_the_config(wire: dict[str, Any]) -> None:
    pbtxt, problems = render_config("model", ModelConfigSpec.model_validate(wire))
    assert problems == []
    result = run([ConfigFile("model", pbtxt, "model/config.pbtxt")])
    assert result.errors == []
    (document,) = result.documents
    (rendered,) = render_documents([document])
    assert parse(rendered.pbtxt) == parse(pbtxt)
    assert "extra" not in document["spec"]["config"]


# --- models and ensembles ----------------------------------------------------------------


def test_a_model_and_its_ensemble() -> None:
    result = run(
        [
            ConfigFile("pipeline", ENSEMBLE, "repo/pipeline/config.pbtxt"),
            ConfigFile("tokenizer_v2", PYTHON_MODEL, "repo/tokenizer_v2/config.pbtxt"),
        ],
        namespace="ml",
    )
    assert result.errors == []
    model, ensemble = result.documents  # members first, so an apply creates them first
    assert model["kind"] == "TritonModel"
    assert model["metadata"] == {"name": "tokenizer-v2", "namespace": "ml"}
    assert model["spec"]["modelName"] == "tokenizer_v2"
    assert model["spec"]["source"] == {"pvc": {"claimName": "models", "path": "/repo/tokenizer_v2"}}
    assert model["spec"]["config"]["instanceGroups"] == [{"kind": "KIND_CPU"}]
    assert ensemble["kind"] == "ModelEnsemble"
    assert ensemble["metadata"]["name"] == "pipeline"
    assert "modelName" not in ensemble["spec"]
    assert ensemble["spec"]["steps"] == [
        {
            "model": "tokenizer-v2",
            "modelVersion": -1,
            "inputMap": {"TEXT": "TEXT"},
            "outputMap": {"IDS": "IDS"},
        }
    ]


def test_an_ensemble_alone_names_the_tritonmodels_its_members_become() -> None:
    result = run([ConfigFile("pipeline", ENSEMBLE, "repo/pipeline/config.pbtxt")])
    assert result.errors == []
    (ensemble,) = result.documents
    assert ensemble["spec"]["steps"][0]["model"] == "tokenizer-v2"
    (note,) = result.notes
    assert "'tokenizer_v2' is not among the imported models" in note


def test_a_config_without_name_takes_its_directory_name_as_triton_does() -> None:
    text = PYTHON_MODEL.replace('name: "tokenizer_v2"', "")
    (document,) = run([ConfigFile("tok", text, "repo/tok/config.pbtxt")]).documents
    assert document["metadata"]["name"] == "tok"
    assert "modelName" not in document["spec"]


def test_a_model_directory_with_only_versions_imports_as_auto_complete() -> None:
    result = run([ConfigFile("resnet", "", "repo/resnet")])
    (document,) = result.documents
    assert document["spec"]["config"] == {}
    (rendered,) = render_documents(result.documents)
    assert parse(rendered.pbtxt) == mc.ModelConfig(name="resnet")


def test_the_revision_tritonfleet_sync_stamps_is_not_imported() -> None:
    text = PYTHON_MODEL + 'parameters { key: "tritonfleet.revision" value { string_value: "a" } }'
    (document,) = run([ConfigFile("tokenizer_v2", text, "x")]).documents
    assert "parameters" not in document["spec"]["config"]


def test_fields_newer_than_triton_2_51_travel_in_extra() -> None:
    text = PYTHON_MODEL + (
        'model_metrics { metric_control { metric_identifier { family: "nv_inference" }'
        " histogram_options { buckets: [ 1.0, 10.0 ] } } }"
    )
    result = run([ConfigFile("tokenizer_v2", text, "x")])
    assert result.errors == []
    (document,) = result.documents
    assert "model_metrics" in document["spec"]["config"]["extra"]
    (rendered,) = render_documents(result.documents)
    assert parse(rendered.pbtxt) == parse(text)


@pytest.mark.parametrize(
    ("text", "directory", "says"),
    [
        (PYTHON_MODEL, "other", "directory name must equal model name"),
        ("max_batch_size: eight", "m", "line 1, column 17"),
        ('platform: "ensemble"', "m", "go together"),
        (
            PYTHON_MODEL + "\ninstance_group [ { kind: KIND_CPU gpus: [ 0 ] } ]",
            "tokenizer_v2",
            "gpus",
        ),
        (
            PYTHON_MODEL.replace("dims: [ -1 ]", "dims: [ -1 ] reshape { shape: [ 2 ] }"),
            "tokenizer_v2",
            "spec.config.outputs[0].reshape",
        ),
    ],
)
def test_configs_triton_refuses_are_not_imported(text: str, directory: str, says: str) -> None:
    result = run([ConfigFile(directory, text, f"repo/{directory}/config.pbtxt")])
    assert result.documents == []
    assert any(says in error and error.startswith("repo/") for error in result.errors), (
        result.errors
    )


def test_an_ensemble_of_ensembles_is_refused() -> None:
    inner = ENSEMBLE.replace('name: "pipeline"', 'name: "inner"')
    outer = ENSEMBLE.replace('model_name: "tokenizer_v2"', 'model_name: "inner"')
    result = run(
        [
            ConfigFile("inner", inner, "inner"),
            ConfigFile("pipeline", outer, "pipeline"),
            ConfigFile("tokenizer_v2", PYTHON_MODEL, "tok"),
        ]
    )
    assert any("is itself an ensemble" in e for e in result.errors)


def test_two_models_that_would_share_an_object_name_are_both_reported() -> None:
    a = PYTHON_MODEL.replace("tokenizer_v2", "Tok_A")
    b = PYTHON_MODEL.replace("tokenizer_v2", "tok-a")
    result = run([ConfigFile("Tok_A", a, "a"), ConfigFile("tok-a", b, "b")])
    assert any("would be TritonModel 'tok-a', like 'Tok_A'" in e for e in result.errors)


@pytest.mark.parametrize(
    ("triton", "kube"),
    [("tensorrt_llm", "tensorrt-llm"), ("Encoder_V2", "encoder-v2"), ("llava-1.5", "llava-1.5")],
)
def test_object_names(triton: str, kube: str) -> None:
    assert object_name(triton) == kube


# --- templates ---------------------------------------------------------------------------

TEMPLATE = """
name: "tensorrt_llm"
backend: "${triton_backend}"
max_batch_size: ${triton_max_batch_size}
model_transaction_policy { decoupled: ${decoupled_mode} }
input [ { name: "input_ids" data_type: TYPE_INT32 dims: [ -1 ] allow_ragged_batch: true } ]
output [ { name: "output_ids" data_type: TYPE_INT32 dims: [ -1, -1 ] } ]
parameters: { key: "gpt_model_path" value: { string_value: "${engine_dir}" } }
# a comment mentioning ${not_a_placeholder}
"""


def test_unfilled_placeholders_outside_strings_stop_the_import_with_the_values_needed() -> None:
    result = run([ConfigFile("tensorrt_llm", TEMPLATE, "t")])
    assert result.documents == []
    (error,) = result.errors
    assert "decoupled_mode, triton_max_batch_size" in error
    assert "--set decoupled_mode=VALUE --set triton_max_batch_size=VALUE" in error


def test_filled_templates_import_and_quoted_placeholders_stay_as_written() -> None:
    values = {
        "triton_max_batch_size": "64",
        "decoupled_mode": "True",
        "triton_backend": "tensorrtllm",
    }
    result = run([ConfigFile("tensorrt_llm", TEMPLATE, "t")], values=values)
    assert result.errors == []
    (document,) = result.documents
    config = document["spec"]["config"]
    assert (config["backend"], config["maxBatchSize"], config["decoupled"]) == (
        "tensorrtllm",
        64,
        True,
    )
    assert config["parameters"] == {"gpt_model_path": "${engine_dir}"}
    (note,) = result.notes
    assert "${engine_dir}" in note


def test_a_placeholder_left_in_a_checked_field_says_which_value_to_give() -> None:
    values = {"triton_max_batch_size": "64", "decoupled_mode": "false"}
    (error,) = run([ConfigFile("tensorrt_llm", TEMPLATE, "t")], values=values).errors
    assert "spec.config.backend" in error
    assert "--set triton_backend=VALUE" in error


def test_placeholders_are_told_apart_by_where_they_are() -> None:
    text = 'a: ${x}\nb: "${y} and \\" ${z}"\n# ${w}\nc: \'${v}\'\n'
    assert placeholders(text) == (["x"], ["v", "y", "z"])


# --- sources ------------------------------------------------------------------------------


def test_source_prefixes() -> None:
    s3 = source_for_prefix(
        "s3://bucket/repo/", s3_endpoint="http://minio:9000", s3_credentials_secret="s3-creds"
    )
    assert s3("resnet") == {
        "s3": {
            "uri": "s3://bucket/repo/resnet",
            "endpoint": "http://minio:9000",
            "credentialsSecret": "s3-creds",
        }
    }
    assert source_for_prefix("pvc://models")("m") == {"pvc": {"claimName": "models", "path": "/m"}}
    assert source_for_prefix("pvc://models/a/b")("m")["pvc"]["path"] == "/a/b/m"
    for bad in ("gs://bucket/x", "s3://B/x", "pvc://Bad_Claim/x", "/local/path"):
        with pytest.raises(ValueError, match="source prefix"):
            source_for_prefix(bad)
    with pytest.raises(ValueError, match="s3://"):
        source_for_prefix("pvc://models", s3_endpoint="http://x")


def test_gpus_an_instance_group_names_are_given_to_the_pod() -> None:
    text = PYTHON_MODEL.replace("kind: KIND_CPU", "kind: KIND_GPU gpus: [ 0, 3 ]")
    (document,) = run([ConfigFile("tokenizer_v2", text, "x")]).documents
    assert document["spec"]["serving"] == {"gpus": 4}


# --- the command ----------------------------------------------------------------------------


def repository(tmp_path: Path) -> Path:
    repo = tmp_path / "model_repository"
    for name, text in (("tokenizer_v2", PYTHON_MODEL), ("pipeline", ENSEMBLE)):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(text)
    (repo / "onnx_auto" / "1").mkdir(parents=True)  # no config.pbtxt: auto-complete
    (repo / "notes").mkdir()  # neither: not a model
    (repo / ".tritonfleet").mkdir()
    return repo


def test_import_a_repository_then_render_gives_the_configs_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repository(tmp_path)
    code = main(["import", str(repo), "--source-prefix", "s3://bucket/models"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("# Imported by `tritonfleet import`")
    documents = list(yaml.safe_load_all(out))
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [
        ("TritonModel", "onnx-auto"),
        ("TritonModel", "tokenizer-v2"),
        ("ModelEnsemble", "pipeline"),
    ]
    assert "dims: [-1]" in out  # shapes read as people write them
    manifest = tmp_path / "models.yaml"
    manifest.write_text(out)
    assert main(["render", "-f", str(manifest)]) == 0
    rendered = capsys.readouterr().out
    for name, text in (("tokenizer_v2", PYTHON_MODEL), ("pipeline", ENSEMBLE)):
        section = rendered.split(f": {name}/config.pbtxt")[1].split("# ---")[0]
        assert parse(section.split("\n", 1)[1]) == parse(text)


def test_import_writes_a_file_with_o(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out.yaml"
    config = repository(tmp_path) / "tokenizer_v2" / "config.pbtxt"
    code = main(["import", str(config), "--source-prefix", "pvc://models", "-o", str(target)])
    assert code == 0
    assert capsys.readouterr().out == ""
    (document,) = yaml.safe_load_all(target.read_text())
    assert document["spec"]["source"]["pvc"] == {"claimName": "models", "path": "/tokenizer_v2"}


def test_import_lists_every_failure_and_prints_nothing_unless_partial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = repository(tmp_path)
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text("max_batch_size: -1\nbackend: 'python'\n")
    args = ["import", str(repo), "--source-prefix", "s3://bucket/models"]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "broken/config.pbtxt: spec.config.maxBatchSize" in err
    assert "got -1" in err
    assert "3 of 4 model(s) imported" in err
    assert main([*args, "--partial"]) == 1
    assert len(list(yaml.safe_load_all(capsys.readouterr().out))) == 3


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["/does/not/exist", "--source-prefix", "s3://bkt/x"], "no such file or directory"),
        (["{repo}", "--source-prefix", "gs://bkt/x"], "not a source prefix"),
        (["{repo}", "--source-prefix", "s3://bkt/x", "--set", "novalue"], "NAME=VALUE"),
        (["{repo}/notes", "--source-prefix", "s3://bkt/x"], "no model found"),
    ],
)
def test_import_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    repo = repository(tmp_path)
    code = main(["import", *(a.format(repo=repo) for a in args)])
    assert code == 2
    assert says in capsys.readouterr().err
