"""A real Prometheus server for the tests and benchmarks (built by hack/prometheus/install.sh).

:func:`ensure_prometheus` builds or finds the cached binary; :class:`PrometheusServer`
runs it on a free loopback port with a given configuration (and rule files), waits
until it is ready, and reads its HTTP API. The chart tests load the chart's alert
rules into it and watch one fire; ``bench/bench_autoscaling.py`` scrapes Triton with it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from hack.devtools.testbed import REPO_ROOT

INSTALL = REPO_ROOT / "hack" / "prometheus" / "install.sh"
# Loopback only: a proxy from the environment must never sit between us and Prometheus.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PrometheusInstallError(RuntimeError):
    """hack/prometheus/install.sh could not provide the binary."""


def ensure_prometheus() -> Path:
    """The cached Prometheus binary, built on first use (minutes on 2 cores)."""
    proc = subprocess.run([str(INSTALL)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PrometheusInstallError(proc.stderr.strip()[-2000:])
    return Path(proc.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrometheusServer:
    """One Prometheus process; ``config`` is prometheus.yml as a mapping."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def start(self, config: dict[str, Any], timeout: float = 60) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    "--storage.tsdb.retention.time=2h",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError, ValueError):
                self.get("/-/ready")
                return self
            time.sleep(0.5)
        raise RuntimeError(f"prometheus not ready after {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def get(self, path: str, timeout: float = 5) -> bytes:
        with _OPENER.open(self.url + path, timeout=timeout) as response:
            body: bytes = response.read()
            return body

    def api(self, path: str, **params: str) -> Any:
        """``/api/v1/<path>``'s ``data`` (raises on an error answer, with its message)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            body = json.loads(self.get(f"/api/v1/{path}{query}"))
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        if body.get("status") != "success":
            raise ValueError(f"{path} {params}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=promql)["result"]
        return result
