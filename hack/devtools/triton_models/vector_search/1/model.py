"""vector_search: top-1 cosine search of a query embedding over a tiny fixed corpus."""

import hashlib
import re

import numpy as np
import triton_python_backend_utils as pb_utils

CORPUS = [
    "triton serves models over http and grpc",
    "kubernetes schedules pods onto nodes",
    "the operator scales replicas from queue time",
    "gpu nodes advertise nvidia.com/gpu capacity",
    "the gateway fails over to the hosted api",
]
DIM = 64


def embed(text):  # identical to toy_embed
    vec = np.zeros(DIM, dtype=np.float32)
    for word in set(re.findall(r"[a-z0-9]+", text.lower())):
        h = hashlib.sha256(word.encode()).digest()
        vec[h[0] % DIM] += 1.0 if h[1] & 1 else -1.0
    norm = np.linalg.norm(vec)
    return vec / norm if norm else vec


class TritonPythonModel:
    def initialize(self, args):
        self.matrix = np.stack([embed(doc) for doc in CORPUS])

    def execute(self, requests):
        out = []
        for request in requests:
            q = pb_utils.get_input_tensor_by_name(request, "query_embedding").as_numpy()
            texts = pb_utils.get_input_tensor_by_name(request, "query_text").as_numpy().reshape(-1)
            scores = q @ self.matrix.T
            best = scores.argmax(axis=1)
            prompts = [
                f"context: {CORPUS[b]} question: {t.decode('utf-8', 'replace')}".encode()
                for b, t in zip(best, texts, strict=True)
            ]
            n = len(best)
            out.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor(
                            "prompt", np.array(prompts, dtype=np.object_).reshape(n, 1)
                        ),
                        pb_utils.Tensor("doc_id", best.astype(np.int32).reshape(n, 1)),
                        pb_utils.Tensor(
                            "score", scores[np.arange(n), best].astype(np.float32).reshape(n, 1)
                        ),
                    ]
                )
            )
        return out
