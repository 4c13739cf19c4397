"""toy_llm: deterministic toy LLM. Completion = the prompt's words read backwards, cycled to
max_tokens (default 16); temperature (>= 0) only rotates the starting word."""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

DEFAULT_MAX_TOKENS = 16


def complete(prompt, max_tokens, temperature):
    words = prompt.split() or ["<empty>"]
    start = round(temperature * 10)
    return [words[-1 - (start + i) % len(words)] for i in range(max_tokens)]


def scalar(request, name, default, row):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return default if t is None else t.as_numpy().reshape(-1)[row].item()


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay_ms = float(params.get("token_delay_ms", {}).get("string_value", "0"))

    def execute(self, requests):
        return [self._one(r) for r in requests]

    def _one(self, request):
        text = pb_utils.get_input_tensor_by_name(request, "text_input")
        if text is None:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError("text_input is required"))
        delay_ms = float(
            json.loads(request.parameters() or "{}").get("token_delay_ms", self.delay_ms)
        )
        rows = text.as_numpy().reshape(-1)
        outs = {
            "text_output": [],
            "prompt_tokens": [],
            "completion_tokens": [],
            "finish_reason": [],
        }
        for row, raw in enumerate(rows):
            prompt = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            max_tokens = int(scalar(request, "max_tokens", DEFAULT_MAX_TOKENS, row))
            temperature = float(scalar(request, "temperature", 0.0, row))
            if not 0 <= max_tokens <= 4096 or temperature < 0:
                return pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(
                        f"invalid max_tokens={max_tokens} or temperature={temperature}"
                    )
                )
            tokens = complete(prompt, max_tokens, temperature)
            if delay_ms:
                time.sleep(delay_ms * len(tokens) / 1000.0)
            outs["text_output"].append(" ".join(tokens).encode())
            outs["prompt_tokens"].append(len(prompt.split()))
            outs["completion_tokens"].append(len(tokens))
            outs["finish_reason"].append(b"length")
        shape = (len(rows), 1)
        return pb_utils.InferenceResponse(
            [
                pb_utils.Tensor(
                    "text_output", np.array(outs["text_output"], dtype=np.object_).reshape(shape)
                ),
                pb_utils.Tensor(
                    "prompt_tokens", np.array(outs["prompt_tokens"], dtype=np.int32).reshape(shape)
                ),
                pb_utils.Tensor(
                    "completion_tokens",
                    np.array(outs["completion_tokens"], dtype=np.int32).reshape(shape),
                ),
                pb_utils.Tensor(
                    "finish_reason",
                    np.array(outs["finish_reason"], dtype=np.object_).reshape(shape),
                ),
            ]
        )
