"""Steady OpenAI SDK load for the chaos suite and the soak: what a user's clients see while a fault
is injected.

Each worker is one ``openai`` client (no SDK retries: what it sees is what the gateway
did) sending non-streamed chat or streamed completions in a loop; every answer is
recorded with when it ended, how long it took, the backend and the pod the gateway
named, and every failure with the same timing. The tests slice these records by the
moments they injected and lifted a fault.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import openai


@dataclass(frozen=True)
class Answer:
    ended: float  # time.monotonic() when the answer (or the error) was complete
    seconds: float
    model: str
    backend: str  # "triton", "hosted" or "error"
    pod: str | None
    error: str = ""


@dataclass
class Load:
    base_url: str  # the gateway's, ending in /v1
    token: str
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    client_timeout_s: float = 60.0
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, model: str, clients: int, *, streams_every: int = 0) -> None:
        """``clients`` workers on ``model``; every ``streams_every``-th one streams."""
        for i in range(clients):
            stream = streams_every > 0 and i % streams_every == streams_every - 1
            t = threading.Thread(target=self._worker, args=(model, i, stream), daemon=True)
            t.start()
            self._threads.append(t)

    def finish(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(self.client_timeout_s + 5)

    def between(self, start: float, end: float, model: str | None = None) -> list[Answer]:
        return [
            a
            for a in list(self.answers)
            if start <= a.ended < end and (model is None or a.model == model)
        ]

    def failures(self, model: str | None = None) -> list[Answer]:
        return [a for a in self.between(0, float("inf"), model) if a.backend == "error"]

    def _worker(self, model: str, i: int, stream: bool) -> None:
        client = openai.OpenAI(
            base_url=self.base_url, api_key=self.token, max_retries=0, timeout=self.client_timeout_s
        )
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                if stream:
                    streamed = client.completions.with_raw_response.create(
                        model=model, prompt=f"w{i} x y", max_tokens=3, stream=True
                    )
                    headers = streamed.headers
                    text = "".join(ch.choices[0].text for ch in streamed.parse())
                    if not text:
                        raise AssertionError("an empty stream")
                else:
                    whole = client.chat.completions.with_raw_response.create(
                        model=model, messages=[{"role": "user", "content": f"w{i} x y"}],
                        max_tokens=3,
                    )  # fmt: skip
                    headers = whole.headers
                    if not whole.parse().choices[0].message.content:
                        raise AssertionError("an empty answer")
                backend = headers.get("x-tritonfleet-backend", "?")
                pod = headers.get("x-tritonfleet-pod")
                error = ""
            except Exception as exc:  # every failure is what a user would see
                backend, pod, error = "error", None, f"{type(exc).__name__}: {exc}"[:300]
                # A refusal comes back at once: do not spin on it.
                time.sleep(0.05)
            ended = time.monotonic()
            self.answers.append(Answer(ended, ended - began, model, backend, pod, error))


def summary(answers: list[Answer]) -> str:
    """``n=…, failed=…, p50=…, max=…`` of some answers, for a test's printed figures."""
    if not answers:
        return "n=0"
    seconds = sorted(a.seconds for a in answers)
    failed = sum(a.backend == "error" for a in answers)
    p50 = seconds[len(seconds) // 2]
    return f"n={len(answers)} failed={failed} p50={p50 * 1000:.0f}ms max={seconds[-1] * 1000:.0f}ms"
