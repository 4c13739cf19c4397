"""The runnable samples, rendered by tritonfleet, load in a real tritonserver and
answer; a broken config is refused by the renderer before Triton ever sees it.

This is the proof that what ``tritonfleet render`` prints is what Triton
accepts: the repository is laid out by ``tritonfleet sync`` (as the sync Job
does it), its config.pbtxt files produced by the renderer, never by hand.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from hack.devtools.triton import TritonProcess

pytestmark = pytest.mark.integration

RUNNABLE = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "runnable"


def sync(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tritonfleet sync`` as the sync Job runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tritonfleet", "sync", "--repository", str(repo), "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_runnable_sample_loads_and_answers(
    tmp_path: Path, triton_factory: Callable[..., TritonProcess]
) -> None:
    repo = tmp_path / "models"
    synced = sync(repo, "-f", str(RUNNABLE), "--all")
    assert synced.returncode == 0, synced.stderr
    names = {line.split(":")[0] for line in synced.stdout.splitlines()}
    assert names == {"toy_llm", "toy_llm_stream", "toy_embed", "vector_search", "toy_rag"}

    server = triton_factory(repo, load_models=sorted(names))
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
    (doc,) = yaml.safe_load_all((RUNNABLE / "toy-llm.yaml").read_text())
    # The classic copied-from-a-blog mistake: a string where Triton wants a map.
    doc["spec"]["config"]["extra"] = 'dynamic_batching { priority_queue_policy: "max_utilization" }'
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    repo = tmp_path / "repo"
    repo.mkdir()
    refused = sync(repo, "-f", str(broken))
    assert refused.returncode == 1
    assert "spec.config.extra: line 1, column 43, field priority_queue_policy" in refused.stderr
    assert list(repo.iterdir()) == []

    # Triton never saw it: the repository it serves stays empty.
    server = triton_factory(repo)
    status, index = server.post("/v2/repository/index", {})
    assert status == 200
    assert index == []
