"""Real public configs (tests/data/triton_configs, provenance in its PROVENANCE.yaml) go
through ``import`` and ``render`` unchanged, with typed fields only; and every config Triton's
own QA suite expects tritonserver 2.51 to refuse (tests/data/triton_configs_refused) is
refused here too, naming the field, unless Triton's verdict depends on the machine.

The round trip compares Triton's ``ModelConfig`` protos, the directory name standing in for
a missing ``name`` as Triton does.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format

from tritonfleet.desired.triton.importing import ConfigFile, fill_placeholders, import_configs
from tritonfleet.desired.triton.proto import mc
from tritonfleet.desired.triton.render import render_documents

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS = DATA / "triton_configs"
REFUSED = DATA / "triton_configs_refused"
PROVENANCE = yaml.safe_load((CORPUS / "PROVENANCE.yaml").read_text())
TEMPLATE_VALUES: Mapping[str, Mapping[str, str]] = PROVENANCE["templateValues"]

# Triton's verdict on these depends on the machine, not the config: the GPU ids that exist
# (invalid_gpu asks for GPU 42) and whether auto-complete runs (Triton's QA disables it for
# missing_datatype; tritonfleet's pods keep it on, and the backend then fills the type in).
MACHINE_DEPENDENT = {"invalid_gpu", "missing_datatype"}


def collections() -> dict[str, list[ConfigFile]]:
    found: dict[str, list[ConfigFile]] = defaultdict(list)
    for path in sorted(CORPUS.glob("*/*/config.pbtxt")):
        collection, directory = path.parts[-3], path.parts[-2]
        found[collection].append(ConfigFile(directory, path.read_text(), str(path)))
    return dict(found)


COLLECTIONS = collections()


def source(collection: str) -> Any:
    return lambda directory: {"s3": {"uri": f"s3://corpus/{collection}/{directory}"}}


def original(file: ConfigFile, values: Mapping[str, str]) -> mc.ModelConfig:
    config = text_format.Parse(fill_placeholders(file.text, values), mc.ModelConfig())
    config.name = config.name or file.directory
    return config


def test_the_corpus_is_what_the_provenance_lists() -> None:
    listed = {entry["file"] for entry in PROVENANCE["configs"]}
    stored = {str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*/config.pbtxt")}
    assert listed == stored
    assert len(stored) >= 40
    for entry in PROVENANCE["configs"]:
        assert re.fullmatch(r"[0-9a-f]{40}", entry["commit"]), entry
        assert entry["repository"].count("/") == 1 and entry["path"].endswith(".pbtxt"), entry


@pytest.mark.parametrize("collection", sorted(COLLECTIONS))
def test_every_config_imports_and_renders_back_unchanged(collection: str) -> None:
    files = COLLECTIONS[collection]
    values = TEMPLATE_VALUES.get(collection, {})
    result = import_configs(files, source(collection), values=values)
    assert result.errors == []
    assert len(result.documents) == len(files)
    rendered = render_documents(result.documents)
    assert [r.problems for r in rendered] == [()] * len(files)
    by_name = {r.triton_name: r for r in rendered}
    for file in files:
        expected = original(file, values)
        got = text_format.Parse(by_name[expected.name].pbtxt, mc.ModelConfig())
        assert got == expected, file.origin


def test_no_corpus_config_needs_extra() -> None:
    """Every field these real configs use has a typed field."""
    for collection, files in COLLECTIONS.items():
        result = import_configs(
            files, source(collection), values=TEMPLATE_VALUES.get(collection, {})
        )
        for document in result.documents:
            assert "extra" not in document["spec"].get("config", document["spec"]), document


def test_the_tensorrt_llm_ensemble_keeps_its_optional_inputs() -> None:
    """TensorRT-LLM's ensemble: every optional input stays optional, so a request with only
    the required inputs is still valid for the rendered ensemble."""
    collection = "tensorrtllm_backend-inflight_batcher_llm"
    files = COLLECTIONS[collection]
    result = import_configs(files, source(collection), values=TEMPLATE_VALUES[collection])
    (ensemble,) = [d for d in result.documents if d["kind"] == "ModelEnsemble"]
    optional = [t["name"] for t in ensemble["spec"]["inputs"] if t.get("optional")]
    source_config = original(
        next(f for f in files if f.directory == "ensemble"), TEMPLATE_VALUES[collection]
    )
    assert optional == [t.name for t in source_config.input if t.optional]
    assert len(optional) == 25  # all but text_input and max_tokens, in v0.14.0
    assert [s["model"] for s in ensemble["spec"]["steps"]] == [
        "preprocessing",
        "tensorrt-llm",
        "postprocessing",
    ]


def refused_cases() -> list[str]:
    return sorted(p.name for p in REFUSED.iterdir() if (p / "config.pbtxt").is_file())


@pytest.mark.parametrize("case", refused_cases())
def test_what_triton_refuses_is_refused(case: str) -> None:
    text = (REFUSED / case / "config.pbtxt").read_text()
    # As Triton's own test does (qa/L0_model_config/test.sh): replace the platform.
    text = re.sub(r"^platform:.*$", "", text, flags=re.MULTILINE) + 'platform: "onnxruntime_onnx"\n'
    result = import_configs(
        [ConfigFile(case, text, case)], lambda d: {"pvc": {"claimName": "models", "path": d}}
    )
    if case in MACHINE_DEPENDENT:
        assert result.errors == []
        return
    assert result.errors, (REFUSED / case / "expected").read_text()
    assert result.documents == []
    # The refusal names a field of the config (or Triton's own rule for the config as a whole).
    assert all(
        re.search(r": spec\.config\.\w+|ensemble_scheduling", error) for error in result.errors
    ), result.errors
