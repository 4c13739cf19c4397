"""Configs the renderer used to refuse, imported with ``tritonfleet import`` and synced with
``tritonfleet sync``, load in a real tritonserver 2.51 and answer.

The GPU models (TensorRT-LLM's engine, a TensorRT resnet50) cannot run on this CPU-only
tritonserver, so each TritonModel keeps its imported tensors exactly (ragged inputs, labelled
outputs, reshapes, optional inputs) and gets a python-backend stand-in that answers with
arange-filled tensors of the declared types and shapes. The ensembles are imported unchanged.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.devtools.triton import TritonProcess

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "data" / "triton_configs"
TRTLLM = CORPUS / "tensorrtllm_backend-inflight_batcher_llm"
RESNET = CORPUS / "python_backend-preprocessing"
TRTLLM_VALUES = {
    "triton_backend": "tensorrtllm",
    "triton_max_batch_size": "4",
    "decoupled_mode": "False",
    "max_queue_delay_microseconds": "100",
    "max_queue_size": "0",
    "preprocessing_instance_count": "1",
    "postprocessing_instance_count": "1",
    "bls_instance_count": "1",
}

# Answers every request with each declared output filled 0, 1, 2, ... in its data type. A -1
# dim is 1, or for a model that does not batch the size of that dim in its first input; the
# request's batch size goes in front when the model batches.
STANDIN = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])

    def execute(self, requests):
        responses = []
        for request in requests:
            given = [pb_utils.get_input_tensor_by_name(request, t["name"])
                     for t in self.config["input"]]
            first = next(t.as_numpy().shape for t in given if t is not None)
            batching = self.config["max_batch_size"] > 0
            outputs = []
            for output in self.config["output"]:
                dims = output["dims"]
                if batching:
                    shape = [first[0]] + [1 if d == -1 else d for d in dims]
                else:
                    shape = [first[i] if d == -1 and i < len(first) else max(d, 1)
                             for i, d in enumerate(dims)]
                dtype = pb_utils.triton_string_to_numpy(output["data_type"])
                count = int(np.prod(shape))
                if dtype == np.object_:
                    data = np.array([str(i).encode() for i in range(count)], dtype=np.object_)
                else:
                    data = np.arange(count).astype(dtype)
                outputs.append(pb_utils.Tensor(output["name"], data.reshape(shape)))
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
"""

LABELS = "".join(f"class-{i}\n" for i in range(1000))


def tritonfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tritonfleet", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def imported(path: Path, *extra: str) -> list[dict[str, Any]]:
    """``tritonfleet import`` as a user runs it."""
    proc = tritonfleet("import", str(path), "--source-prefix", "pvc://models/repo", *extra)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def stand_in(document: dict[str, Any]) -> dict[str, Any]:
    """The same TritonModel with its files and runtime replaced by a CPU python stand-in."""
    if document["kind"] != "TritonModel":
        document["spec"]["serving"] = {"gpus": 0}
        return document
    spec = document["spec"]
    config = spec["config"]
    files = {"1/model.py": STANDIN}
    for output in config.get("outputs", []):
        if "labelFilename" in output:
            files[output["labelFilename"]] = LABELS
    spec["source"] = {"inline": {"files": files}}
    spec["serving"] = {"gpus": 0}
    config.pop("platform", None)
    config["backend"] = "python"
    config["instanceGroups"] = [{"kind": "KIND_CPU", "count": 1}]
    return document


def sync(tmp_path: Path, documents: list[dict[str, Any]]) -> Path:
    manifest = tmp_path / "models.yaml"
    manifest.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    rendered = tritonfleet("render", "-f", str(manifest))
    assert rendered.returncode == 0, rendered.stderr
    repo = tmp_path / "models" / "repository"
    synced = tritonfleet("sync", "--repository", str(repo), "--quiet", "--all", "-f", str(manifest))
    assert synced.returncode == 0, synced.stderr
    return repo


def infer(server: TritonProcess, model: str, inputs: list[dict[str, Any]], **kw: Any) -> Any:
    status, body = server.post(f"/v2/models/{model}/infer", {"inputs": inputs, **kw})
    assert status == 200, body
    return {o["name"]: o for o in body["outputs"]}


def tensor(name: str, datatype: str, shape: list[int], data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


# Dynamic batching on a model that does not batch, and a batching ensemble over it: both
# refused by the renderer before, both loaded by Triton (ValidateModelConfig,
# ValidateEnsembleConfig "batchable ensemble can include non-batchable models").
SMALL = """
apiVersion: tritonfleet.io/v1alpha1
kind: TritonModel
metadata: {name: unbatched}
spec:
  source: {inline: {files: {1/model.py: ""}}}
  config:
    backend: python
    maxBatchSize: 0
    dynamicBatching: {maxQueueDelayMicroseconds: 100}
    inputs: [{name: X, dataType: TYPE_FP32, dims: [-1, 4]}]
    outputs: [{name: Y, dataType: TYPE_FP32, dims: [-1, 4]}]
---
apiVersion: tritonfleet.io/v1alpha1
kind: ModelEnsemble
metadata: {name: batched-over-unbatched}
spec:
  maxBatchSize: 8
  inputs: [{name: IN, dataType: TYPE_FP32, dims: [4]}]
  outputs: [{name: OUT, dataType: TYPE_FP32, dims: [4]}]
  steps: [{model: unbatched, inputMap: {X: IN}, outputMap: {Y: OUT}}]
"""


def test_formerly_refused_configs_load_and_answer(
    tmp_path: Path, triton_factory: Callable[..., TritonProcess]
) -> None:
    documents = [
        d
        for d in imported(TRTLLM, *(f"--set={k}={v}" for k, v in TRTLLM_VALUES.items()))
        if d["metadata"]["name"] != "tensorrt-llm-bls"  # a BLS model: not needed here
    ]
    documents += imported(RESNET)
    documents += list(yaml.safe_load_all(SMALL))
    repo = sync(tmp_path, [stand_in(d) for d in documents])

    models = sorted(p.name for p in repo.iterdir())
    assert models == [
        "batched-over-unbatched",
        "ensemble",
        "ensemble_python_resnet50",
        "postprocessing",
        "preprocess",
        "preprocessing",
        "resnet50_trt",
        "tensorrt_llm",
        "unbatched",
    ]
    server = triton_factory(repo.parent / "repository", load_models=models, timeout=300)

    # TensorRT-LLM's ensemble with only its two required inputs: every optional one stayed
    # optional, so Triton takes the request (it used to lose all of them).
    answer = infer(
        server,
        "ensemble",
        [
            tensor("text_input", "BYTES", [1, 1], ["What is Triton?"]),
            tensor("max_tokens", "INT32", [1, 1], [8]),
        ],
    )
    assert answer["text_output"]["datatype"] == "BYTES"

    # The engine's ragged inputs: two requests of different lengths, answered.
    for length in (3, 5):
        infer(
            server,
            "tensorrt_llm",
            [
                tensor("input_ids", "INT32", [1, length], list(range(length))),
                tensor("input_lengths", "INT32", [1, 1], [length]),
                tensor("request_output_len", "INT32", [1, 1], [4]),
            ],
        )

    # python_backend's resnet50 ensemble, and the labelled output of its TensorRT member.
    image = tensor("INPUT", "UINT8", [1, 16], list(range(16)))
    assert infer(server, "ensemble_python_resnet50", [image])["OUTPUT"]["shape"] == [1, 1000]
    labelled = infer(
        server,
        "resnet50_trt",
        [tensor("input", "FP32", [1, 3, 2, 2], [0.0] * 12)],
        outputs=[{"name": "output", "parameters": {"classification": 2}}],
    )
    assert labelled["output"]["data"] == ["999.000000:999:class-999", "998.000000:998:class-998"]

    # Dynamic batching without a batch dimension; a batching ensemble over that model.
    x = tensor("X", "FP32", [1, 4], [1.0, 2.0, 3.0, 4.0])
    assert infer(server, "unbatched", [x])["Y"]["shape"] == [1, 4]
    both = tensor("IN", "FP32", [2, 4], [0.0] * 8)
    assert infer(server, "batched-over-unbatched", [both])["OUT"]["shape"] == [2, 4]
