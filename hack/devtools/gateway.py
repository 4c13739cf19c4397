"""Run ``tritonfleet gateway`` as a real local process for the tests.

:func:`start_gateway` starts the production entry point with the given flags on a
free loopback port, waits for ``/readyz`` (failing with the gateway's log if it
exits or never gets ready) and returns a :class:`GatewayProcess` that reads its
``/metrics`` and stops it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hack.devtools.testbed import REPO_ROOT
from hack.devtools.triton import free_port, parse_metrics

# Loopback only: a proxy from the environment must never sit between a test and its gateway.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class GatewayProcess:
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes]
    routes: dict[str, Any] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 10) -> bytes:
        with OPENER.open(self.url + path, timeout=timeout) as resp:
            body: bytes = resp.read()
            return body

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse_metrics(self.get("/metrics").decode())

    def metric(self, name: str, **labels: str) -> float:
        want = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and want <= ls)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start_gateway(
    args: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    routes: dict[str, Any] | None = None,
    timeout: float = 30,
) -> GatewayProcess:
    """``python -m tritonfleet gateway ARGS --host 127.0.0.1 --port <free>``, ready."""
    port = free_port()
    argv = [sys.executable, "-m", "tritonfleet", "gateway", *args]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "operator"), **(env or {})},
            cwd=REPO_ROOT,
        )
    gateway = GatewayProcess(f"http://127.0.0.1:{port}", log_path, proc, routes or {})
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"gateway exited with {proc.returncode}:\n{gateway.log_text()}")
        try:
            if gateway.get("/readyz", timeout=2) is not None:
                return gateway
        except OSError:
            pass
        if time.monotonic() > deadline:
            gateway.stop()
            pytest.fail(f"gateway not ready after {timeout:.0f} s:\n{gateway.log_text()}")
        time.sleep(0.1)
