"""``echo``: the python-backend model the sync tests publish and a real tritonserver
then loads (``y = x * factor`` on three floats), so a test can tell which revision
Triton serves from its answer.

Used by tests/integration/test_sync.py and tests/chaos/test_sync_faults.py. With
``weights_sha256`` the model refuses to initialise unless the ``weights.bin`` beside
it has that digest: Triton loading it proves the served directory is whole.
"""

from __future__ import annotations

from typing import Any

from hack.devtools.triton import TritonProcess

ECHO_CONFIG: dict[str, Any] = {
    "backend": "python",
    "inputs": [{"name": "x", "dataType": "TYPE_FP32", "dims": [3]}],
    "outputs": [{"name": "y", "dataType": "TYPE_FP32", "dims": [3]}],
    "instanceGroups": [{"kind": "KIND_CPU", "count": 1}],
}

_HEAD = """\
import hashlib
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
"""

_CHECK_WEIGHTS = """\
    def initialize(self, args):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights.bin")
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        if digest != "WEIGHTS_SHA256":
            raise pb_utils.TritonModelException(f"weights.bin is damaged: {digest}")

"""

_EXECUTE = """\
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            y = (x * FACTOR).astype(np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y)]))
        return out
"""


def echo_model_py(factor: int, weights_sha256: str | None = None) -> str:
    """The model's ``model.py``."""
    check = _CHECK_WEIGHTS.replace("WEIGHTS_SHA256", weights_sha256) if weights_sha256 else ""
    return _HEAD + check + _EXECUTE.replace("FACTOR", str(factor))


def infer_echo(triton: TritonProcess, model: str = "echo") -> list[float]:
    """``model``'s answer to x = [1, 2, 3]."""
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]}]}
    status, answer = triton.post(f"/v2/models/{model}/infer", body)
    assert status == 200, answer
    data: list[float] = answer["outputs"][0]["data"]
    return data
