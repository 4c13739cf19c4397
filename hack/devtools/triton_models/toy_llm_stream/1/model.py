"""toy_llm_stream: decoupled toy_llm, one response per token (same tokens as toy_llm)."""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

DEFAULT_MAX_TOKENS = 16
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def complete(prompt, max_tokens, temperature):
    words = prompt.split() or ["<empty>"]
    start = round(temperature * 10)
    return [words[-1 - (start + i) % len(words)] for i in range(max_tokens)]


def scalar(request, name, default):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return default if t is None else t.as_numpy().reshape(-1)[0].item()


def response(text, prompt_tokens, completion_tokens, finish_reason):
    def col(value, dtype):
        return np.array([[value]], dtype=dtype)

    return pb_utils.InferenceResponse(
        [
            pb_utils.Tensor("text_output", col(text.encode(), np.object_)),
            pb_utils.Tensor("prompt_tokens", col(prompt_tokens, np.int32)),
            pb_utils.Tensor("completion_tokens", col(completion_tokens, np.int32)),
            pb_utils.Tensor("finish_reason", col(finish_reason.encode(), np.object_)),
        ]
    )


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay_ms = float(params.get("token_delay_ms", {}).get("string_value", "0"))

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._stream(request, sender)
            except Exception as exc:  # report instead of leaving the stream open
                sender.send(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))), flags=FINAL
                )
        return

    def _stream(self, request, sender):
        text = pb_utils.get_input_tensor_by_name(request, "text_input")
        if text is None:
            raise ValueError("text_input is required")
        rows = text.as_numpy().reshape(-1)
        if len(rows) != 1:
            raise ValueError("toy_llm_stream takes one prompt per request")
        prompt = rows[0].decode("utf-8", "replace") if isinstance(rows[0], bytes) else str(rows[0])
        max_tokens = int(scalar(request, "max_tokens", DEFAULT_MAX_TOKENS))
        temperature = float(scalar(request, "temperature", 0.0))
        if not 0 <= max_tokens <= 4096 or temperature < 0:
            raise ValueError(f"invalid max_tokens={max_tokens} or temperature={temperature}")
        delay_ms = float(
            json.loads(request.parameters() or "{}").get("token_delay_ms", self.delay_ms)
        )
        n_prompt = len(prompt.split())
        tokens = complete(prompt, max_tokens, temperature)
        if not tokens:
            sender.send(response("", n_prompt, 0, "length"), flags=FINAL)
            return
        for i, token in enumerate(tokens):
            if delay_ms:
                time.sleep(delay_ms / 1000.0)
            last = i == len(tokens) - 1
            resp = response(
                token if i == 0 else " " + token, n_prompt, i + 1, "length" if last else ""
            )
            sender.send(resp, flags=FINAL if last else 0)
