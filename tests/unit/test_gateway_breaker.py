"""Circuit breaker state machine and retry budget (gateway/breaker.py), with a
fake clock; plus the small wire helpers of the adapters and the gateway's
secret handling."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tritonfleet.adapters.hosted import parse_retry_after, redact
from tritonfleet.adapters.logs import LOG_FORMATS, formatter
from tritonfleet.adapters.triton_http import _ResponseParser, sse_data
from tritonfleet.desired.gateway.routes import ApiKeyRef, BreakerSettings
from tritonfleet.gateway.breaker import BreakerState, CircuitBreaker, RetryBudget
from tritonfleet.gateway.secrets import (
    REDACTOR,
    ClientTokens,
    KeyStore,
    MissingKeyError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kw: float) -> tuple[CircuitBreaker, list[BreakerState]]:
    changes: list[BreakerState] = []
    settings = BreakerSettings(**{"failure_threshold": 3, "open_s": 1.0, "max_open_s": 4.0, **kw})  # type: ignore[arg-type]
    return CircuitBreaker(settings, clock, changes.append), changes


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    b, changes = breaker(clock)
    b.failure()
    b.failure()
    b.success()  # resets the count
    b.failure()
    b.failure()
    assert b.state is BreakerState.CLOSED and b.admits()
    b.failure()
    assert b.state is BreakerState.OPEN and not b.admits() and not b.acquire()
    assert changes == [BreakerState.OPEN]


def test_hard_failure_opens_at_once() -> None:
    b, _ = breaker(Clock())
    b.failure(hard=True)
    assert b.state is BreakerState.OPEN


def test_half_open_admits_one_probe() -> None:
    clock = Clock()
    b, changes = breaker(clock)
    b.failure(hard=True)
    clock.now += 0.99
    assert b.state is BreakerState.OPEN
    clock.now += 0.02
    assert b.state is BreakerState.HALF_OPEN
    assert b.admits() and b.acquire()
    assert not b.admits() and not b.acquire()  # the probe is in flight
    b.success()
    assert b.state is BreakerState.CLOSED and b.acquire() and b.acquire()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_failed_probes_back_off_exponentially_up_to_max() -> None:
    clock = Clock()
    b, _ = breaker(clock)
    b.failure(hard=True)
    waits = []
    for _ in range(4):
        opened = clock.now
        while b.state is BreakerState.OPEN:
            clock.now += 0.25
        waits.append(clock.now - opened)
        assert b.acquire()
        b.failure()
    assert waits == [1.0, 2.0, 4.0, 4.0]
    b.success()
    b.failure(hard=True)
    clock.now += 1.0
    assert b.state is BreakerState.HALF_OPEN  # back to the first period after a success


def test_release_frees_the_probe_and_stragglers_are_ignored() -> None:
    clock = Clock()
    b, _ = breaker(clock)
    b.failure(hard=True)
    b.failure()  # a request that started before the breaker opened
    clock.now += 1.0
    assert b.acquire()
    b.release()  # ended without a verdict (client error)
    assert b.acquire()


def test_prober_success_skips_the_open_period() -> None:
    clock = Clock()
    b, _ = breaker(clock, open_s=30.0, max_open_s=60.0)
    b.failure(hard=True)
    b.probe_ok()
    assert b.state is BreakerState.HALF_OPEN and b.acquire()
    b.probe_ok()  # no effect unless open
    assert not b.acquire()


def test_retry_budget_minimum_and_ratio() -> None:
    clock = Clock()
    budget = RetryBudget(percent=20, min_per_s=1, window_s=10, clock=clock)
    assert sum(budget.try_withdraw() for _ in range(20)) == 10  # the floor: 1/s over 10 s
    for _ in range(50):
        budget.deposit()
    assert sum(budget.try_withdraw() for _ in range(20)) == 10  # 20% of 50
    assert budget.available == pytest.approx(0.0)
    clock.now += 10  # everything slides out of the window
    assert budget.available == pytest.approx(10.0)


def test_retry_budget_without_floor() -> None:
    budget = RetryBudget(percent=0, min_per_s=0, clock=Clock())
    budget.deposit()
    assert not budget.try_withdraw()


# --- adapters' wire helpers -----------------------------------------------------------


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "3"}) == 0.25
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480) == 10
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "-5"}) == 0.0


def test_redact_masks_whole_and_partial_echoes() -> None:
    key = "sk-0123456789abcdefghijklmnop"
    text = f"bad key {key}; shown as {key[:14]}...{key[-14:]}"
    out = redact(text, [key])
    assert key not in out and key[:14] not in out and key[-14:] not in out
    assert redact("short key abc", ["abc"]) == "short key abc"  # too short to redact


def test_sse_data() -> None:
    assert sse_data(b'data: {"a":1}\n') == b'{"a":1}'
    assert sse_data(b"data:[DONE]") == b"[DONE]"
    assert sse_data(b": comment") is None and sse_data(b"event: x") is None


# --- secrets ------------------------------------------------------------------------------


def test_keystore_env_and_file_and_redacting_formatter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_TEST_KEY", "sk-env-secret-value-123")
    keys = KeyStore()
    assert keys.get(ApiKeyRef(env="TF_TEST_KEY")) == "sk-env-secret-value-123"
    path = tmp_path / "key"
    path.write_text("sk-file-secret-value-456\n")
    assert keys.get(ApiKeyRef(file=str(path))) == "sk-file-secret-value-456"
    assert keys.get(None) is None
    with pytest.raises(MissingKeyError, match="TF_MISSING is not set"):
        keys.get(ApiKeyRef(env="TF_MISSING"))
    with pytest.raises(MissingKeyError, match="cannot resolve secret"):
        keys.get(ApiKeyRef(secret_namespace="n", secret_name="s", secret_key="k"))
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "using %s and %s", ("sk-env-secret-value-123", path), None
    )
    for log_format in LOG_FORMATS:  # every line the gateway writes, either format
        line = formatter(log_format, REDACTOR).format(record)
        assert "sk-env-secret-value-123" not in line and "***" in line


def test_keystore_projected_secrets(tmp_path: Path) -> None:
    (tmp_path / "team" / "deepseek").mkdir(parents=True)
    (tmp_path / "team" / "deepseek" / "api-key").write_text("sk-projected-secret-789")
    keys = KeyStore(tmp_path)
    ref = ApiKeyRef(secret_namespace="team", secret_name="deepseek", secret_key="api-key")
    assert keys.get(ref) == "sk-projected-secret-789"
    assert "sk-projected-secret-789" in REDACTOR.secrets


def test_client_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ClientTokens().check(None)  # auth off
    monkeypatch.setenv("TF_TOKENS", "tok-one-aaaaaaaa, tok-two-bbbbbbbb")
    path = tmp_path / "tokens"
    path.write_text("# team A\ntok-file-cccccccc\n")
    tokens = ClientTokens(str(path), "TF_TOKENS")
    assert tokens.enabled
    assert tokens.check("Bearer tok-two-bbbbbbbb")
    assert tokens.check("Bearer tok-file-cccccccc")
    assert not tokens.check("Bearer nope") and not tokens.check(None)
    assert not tokens.check("tok-one-aaaaaaaa")  # not a bearer header
    # rotation: the file is re-read when it changes
    path.write_text("tok-new-dddddddd\n")
    os.utime(path, (1, 1))
    tokens._file.checked = -1e9  # type: ignore[union-attr]
    assert tokens.check("Bearer tok-new-dddddddd")
    assert not tokens.check("Bearer tok-file-cccccccc")


# --- the lean HTTP/1.1 response parser ----------------------------------------------------


def _feed_all(raw: bytes, step: int) -> _ResponseParser:
    parser = _ResponseParser()
    for i in range(0, len(raw), step):
        done = parser.feed(raw[i : i + step])
        assert done == (i + step >= len(raw)), (i, step)
    return parser


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_parser_chunked_as_triton_sends_it(step: int) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
    )
    p = _feed_all(raw, step)
    assert (p.status, bytes(p.body), p.keep_alive, p.end) == (200, b'{"a": 1}', True, len(raw))


@pytest.mark.parametrize("step", [1, 5, 1000])
def test_parser_content_length(step: int) -> None:
    raw = b'HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\n\r\n{"error":""}'
    p = _feed_all(raw, step)
    assert (p.status, bytes(p.body), p.end) == (404, b'{"error":""}', len(raw))


def test_parser_trailers_connection_close_and_eof() -> None:
    p = _ResponseParser()
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    assert not p.feed(head)
    assert p.feed(b"1;ext=1\r\nx\r\n0\r\nX-Trailer: y\r\n\r\n")
    assert bytes(p.body) == b"x" and not p.keep_alive
    # no length, not chunked: the body runs to EOF and the connection is not reused
    q = _ResponseParser()
    assert not q.feed(b"HTTP/1.0 200 OK\r\n\r\nhello")
    assert q.eof() and bytes(q.body) == b"hello" and not q.keep_alive
    # a response cut off before its head: no verdict at EOF
    assert not _ResponseParser().eof()
    with pytest.raises(ValueError):
        _ResponseParser().feed(b"SSH-2.0-OpenSSH\r\n\r\n")
