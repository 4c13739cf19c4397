"""The runnable samples carry the toy models' code inline (so `kubectl apply`
needs no model store); the test fixtures keep the same code as files. This
test keeps the two from drifting apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNNABLE = ROOT / "manifests" / "samples" / "runnable"
TOY_MODELS = ROOT / "hack" / "devtools" / "triton_models"

# The pool sample (pool/) serves the same toys from one shared pool; its own directory,
# as its models share names with the per-model samples.
INLINE = {
    doc["spec"]["modelName"]: doc["spec"]["source"]["inline"]["files"]
    for path in sorted([*RUNNABLE.glob("*.yaml"), *RUNNABLE.glob("pool/*.yaml")])
    for doc in yaml.safe_load_all(path.read_text())
    if doc and doc["kind"] == "TritonModel"
}


@pytest.mark.parametrize("model", sorted(INLINE))
def test_inline_code_matches_the_toy_model(model: str) -> None:
    for relative, content in INLINE[model].items():
        on_disk = TOY_MODELS / model / relative
        assert on_disk.is_file(), f"{model}: {relative} has no twin in {TOY_MODELS}"
        assert content == on_disk.read_text(), (
            f"{model}: the sample's inline {relative} differs from {on_disk}; copy one to the other"
        )


def test_every_runnable_model_is_covered() -> None:
    assert set(INLINE) == {"toy_llm", "toy_llm_stream", "toy_embed", "vector_search"}
