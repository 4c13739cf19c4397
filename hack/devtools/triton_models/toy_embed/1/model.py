"""toy_embed: text -> 64-dim unit vector (signed feature hashing of distinct lower-case words)."""

import hashlib
import re

import numpy as np
import triton_python_backend_utils as pb_utils

DIM = 64


def embed(text):
    vec = np.zeros(DIM, dtype=np.float32)
    for word in set(re.findall(r"[a-z0-9]+", text.lower())):
        h = hashlib.sha256(word.encode()).digest()
        vec[h[0] % DIM] += 1.0 if h[1] & 1 else -1.0
    norm = np.linalg.norm(vec)
    return vec / norm if norm else vec


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            texts = [r.decode("utf-8", "replace") if isinstance(r, bytes) else str(r) for r in rows]
            emb = np.stack([embed(t) for t in texts])
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("embedding", emb)]))
        return out
