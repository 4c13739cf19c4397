"""Steady client load through the gateway, and a watch on a rollout, for the rollout
e2e tests (tests/e2e/test_rollouts.py) and benchmark (bench/bench_rollout.py).

:class:`Load` runs N threads, each an openai SDK client (no retries) sending chat
completions in a loop to one model through the gateway (streamed with ``stream=True``:
an answer is good only when its stream ends cleanly), and records every answer:
when, whether it failed, who answered (``x-tritonfleet-backend``: triton or hosted)
and which revision (``x-tritonfleet-revision``). :class:`RolloutWatch` polls an
object's ``status.rollout`` from a thread and records when each phase and step was
first seen, so answers can be attributed to canary steps. :func:`rolled_out` waits on
the testbed until a model is fully at one revision.

Test/bench tooling only: the standard library, the openai SDK and the testbed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from openai import APIConnectionError, APIError, APIStatusError, APITimeoutError, OpenAI, omit
from openai.types.chat import ChatCompletionChunk

from hack.devtools.operator import condition
from hack.devtools.testbed import Testbed


class StreamCutError(Exception):
    """A streamed answer that ended without its last chunk."""


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when the answer (or the failure) arrived
    ok: bool
    backend: str  # triton, hosted, none, or "" when no HTTP answer came
    revision: str  # the revision of the Triton pod that answered ("" if none)
    status: int  # HTTP status (0: no answer)
    error: str = ""
    seconds: float = 0.0


@dataclass
class Load:
    """``clients`` threads asking ``model`` through the gateway at ``base_url``."""

    base_url: str
    model: str
    clients: int = 4
    pause_s: float = 0.02  # between one client's requests (2 cores are shared)
    max_tokens: int | None = 4  # None: not sent (an ensemble may take no such parameter)
    stream: bool = False
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self, worker: int) -> None:
        client = OpenAI(base_url=self.base_url, api_key="unused", max_retries=0, timeout=30)
        i = 0
        while not self._stop.is_set():
            i += 1
            started = time.monotonic()
            answer = self._ask(client, f"client {worker} request {i} of the rollout", started)
            with self._lock:
                self.answers.append(answer)
            self._stop.wait(self.pause_s)

    def _ask(self, client: OpenAI, prompt: str, started: float) -> Answer:
        raw = None
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=omit if self.max_tokens is None else self.max_tokens,
                stream=self.stream,
            )
            parsed = raw.parse()
            if self.stream:
                # An error event mid-stream raises APIError; a cut one has no finish_reason.
                chunks = list(cast(Iterable[ChatCompletionChunk], parsed))
                if not any(c.choices and c.choices[0].finish_reason for c in chunks):
                    raise StreamCutError(f"no finish_reason in the stream: {chunks[-1:]}")
            headers = raw.headers
            return Answer(
                time.monotonic(), True, headers.get("x-tritonfleet-backend", ""),
                headers.get("x-tritonfleet-revision", ""), raw.status_code,
                seconds=time.monotonic() - started,
            )  # fmt: skip
        except APIStatusError as error:
            headers = error.response.headers
            return Answer(
                time.monotonic(), False, headers.get("x-tritonfleet-backend", ""),
                headers.get("x-tritonfleet-revision", ""), error.status_code,
                error=str(error)[:300], seconds=time.monotonic() - started,
            )  # fmt: skip
        except (APIConnectionError, APITimeoutError) as error:
            return Answer(time.monotonic(), False, "", "", 0, error=repr(error)[:300])
        except (APIError, StreamCutError) as error:  # a stream that broke after its headers

            def header(name: str) -> str:
                return raw.headers.get(name, "") if raw is not None else ""

            return Answer(
                time.monotonic(), False, header("x-tritonfleet-backend"),
                header("x-tritonfleet-revision"), raw.status_code if raw is not None else 0,
                error=repr(error)[:300], seconds=time.monotonic() - started,
            )  # fmt: skip

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def wait_for_answers(self, n: int, timeout: float = 120) -> None:
        """Until ``n`` answers came (any kind), or fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(self.snapshot()) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.snapshot())} of {n} answers in {timeout} s")
            time.sleep(0.2)


def failures(answers: Iterable[Answer]) -> list[Answer]:
    return [a for a in answers if not a.ok]


def by_revision(answers: Iterable[Answer]) -> Counter[str]:
    """Triton answers (ok or not) by the revision that gave them."""
    return Counter(a.revision for a in answers if a.backend == "triton" and a.revision)


def summary(answers: list[Answer]) -> str:
    backends = Counter(a.backend or "no answer" for a in answers)
    return (
        f"{len(answers)} requests, {len(failures(answers))} failed, "
        f"by backend {dict(backends)}, by revision {dict(by_revision(answers))}"
    )


@dataclass
class RolloutWatch:
    """Polls ``get()`` (an object, or None) every ``interval`` and records when each
    (phase, step, weights) of ``status.rollout`` was first seen."""

    get: Callable[[], dict[str, Any] | None]
    interval: float = 0.5
    seen: list[tuple[float, str, int | None, dict[str, int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RolloutWatch:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                obj = self.get()
            except Exception:  # a failed kubectl call: look again next time
                obj = None
            rollout = ((obj or {}).get("status") or {}).get("rollout") or {}
            state = (
                str(rollout.get("phase", "")),
                rollout.get("step"),
                dict(rollout.get("weights") or {}),
            )
            if rollout and (not self.seen or self.seen[-1][1:] != state):
                self.seen.append((time.monotonic(), *state))
            self._stop.wait(self.interval)

    def first(self, phase: str, step: int | None = None) -> float | None:
        """When ``phase`` (and ``step``) was first seen."""
        for at, seen_phase, seen_step, _ in self.seen:
            if seen_phase == phase and (step is None or seen_step == step):
                return at
        return None

    def windows(self, phase: str = "Analyzing") -> list[tuple[int, dict[str, int], float, float]]:
        """(step, weights, from, to) of each state in ``phase``, until the next state."""
        out = []
        for i, (at, seen_phase, step, weights) in enumerate(self.seen):
            if seen_phase != phase or step is None:
                continue
            until = self.seen[i + 1][0] if i + 1 < len(self.seen) else time.monotonic()
            out.append((step, weights, at, until))
        return out


def rolled_out(
    testbed: Testbed,
    ns: str,
    name: str,
    pods: int,
    *,
    kind: str = "tritonmodel",
    not_revision: str | None = None,
    timeout: float = 300,
) -> dict[str, Any]:
    """The object once Ready with every one of ``pods`` pods serving ``status.revision``."""

    def check() -> dict[str, Any] | None:
        body: dict[str, Any] | None = testbed.get(kind, name, namespace=ns)
        status = (body or {}).get("status") or {}
        revision = status.get("revision")
        listed = [p for p in status.get("pods") or [] if p["state"] != "Terminating"]
        done = (
            revision
            and revision != not_revision
            and condition(body, "Ready").get("status") == "True"
            and len(listed) == pods
            and all(p["state"] == "Ready" and p.get("revision") == revision for p in listed)
        )
        return body if done else None

    found: dict[str, Any] = testbed.wait_for(
        check, timeout, f"{kind} {ns}/{name} rolled out on {pods} pod(s)", interval=1.0
    )
    return found
