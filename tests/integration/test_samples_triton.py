"""The runnable samples, rendered by tritonfleet, load in a real tritonserver and
answer; a broken config is refused by the renderer before Triton ever sees it.

This is the proof that what ``tritonfleet render`` prints is what Triton
accepts: the samples' config.pbtxt files are produced by the renderer, never
written by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.triton import TritonProcess
from tritonfleet.desired.render import Rendered, render_documents

pytestmark = pytest.mark.integration

RUNNABLE = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "runnable"


def _documents(paths: list[Path]) -> list[dict[str, Any]]:
    return [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]


def write_repository(docs: list[dict[str, Any]], repo: Path) -> list[Rendered]:
    """Lay the rendered configs and inline files out as a Triton repository.

    Refuses to write anything when a document is invalid, as the operator does.
    """
    results = render_documents(docs)
    problems = [f"{r.resource}: {p}" for r in results for p in r.problems]
    if problems:
        raise ValueError("refusing to write an invalid repository:\n" + "\n".join(problems))
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for result in results:
        model_dir = repo / result.triton_name
        model_dir.mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(result.pbtxt)
        source = by_name[(result.kind, result.name)]["spec"].get("source", {})
        for relative, content in source.get("inline", {}).get("files", {}).items():
            (model_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (model_dir / relative).write_text(content)
        if result.kind == "ModelEnsemble":
            (model_dir / "1").mkdir()  # Triton wants a version directory, even empty
    return results


def test_every_runnable_sample_loads_and_answers(
    tmp_path: Path, triton_factory: Callable[..., TritonProcess]
) -> None:
    results = write_repository(_documents(sorted(RUNNABLE.glob("*.yaml"))), tmp_path)
    names = {r.triton_name for r in results}
    assert names == {"toy_llm", "toy_llm_stream", "toy_embed", "vector_search", "toy_rag"}

    server = triton_factory(tmp_path, load_models=sorted(names))
    assert all(server.model_ready(name) for name in names)

    status, answer = server.generate("toy_llm", {"text_input": "one two three", "max_tokens": 4})
    assert status == 200, answer
    assert answer["text_output"] == "three two one three"
    assert answer["completion_tokens"] == 4

    status, events = server.generate_stream(
        "toy_llm_stream", {"text_input": "a b", "max_tokens": 3}
    )
    assert status == 200, events
    assert "".join(e["text_output"] for e in events) == "b a b"

    status, rag = server.generate("toy_rag", {"text_input": "what is triton"})
    assert status == 200, rag
    assert rag["text_output"]
    assert rag["score"] > 0

    status, body = server.post(
        "/v2/models/toy_embed/infer",
        {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["gpu"]}]},
    )
    assert status == 200, body
    assert len(body["outputs"][0]["data"]) == 64


def test_an_invalid_config_never_reaches_triton(
    tmp_path: Path, triton_factory: Callable[..., TritonProcess]
) -> None:
    (doc,) = _documents([RUNNABLE / "toy-llm.yaml"])
    # The classic copied-from-a-blog mistake: a string where Triton wants a map.
    doc["spec"]["config"]["extra"] = 'dynamic_batching { priority_queue_policy: "max_utilization" }'
    repo = tmp_path / "repo"
    repo.mkdir()
    with pytest.raises(ValueError, match="priority_queue_policy") as refused:
        write_repository([doc], repo)
    assert "spec.config.extra: line 1" in str(refused.value)
    assert list(repo.iterdir()) == []

    # Triton never saw it: the repository it serves stays empty.
    server = triton_factory(repo)
    status, index = server.post("/v2/repository/index", {})
    assert status == 200
    assert index == []
