"""A real ``tritonserver`` (2.51, CPU, python backend) for tests, the pod runner and benchmarks.

* :func:`ensure_triton` installs it through ``hack/triton/install.sh`` (cached; < 1 s when done)
  and returns the launcher path.
* :class:`TritonProcess` runs one server in explicit model-control mode on a chosen loopback
  address (several can share one model repository on 127.0.0.2, 127.0.0.3, ...), with helpers
  for the repository API, readiness, metrics and RSS.
* pytest fixtures ``triton_launcher`` (session), ``triton_factory`` and ``triton_model_repo``
  (function) -- load this module as a plugin (``-p hack.devtools.triton``) or import the
  fixtures into a conftest.

Only the standard library is needed at import time; pytest is used if it is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hack.devtools.scripts import run_script

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "hack" / "triton" / "install.sh"
MODELS_DIR = Path(__file__).resolve().parent / "triton_models"
TOY_MODELS = ("toy_llm", "toy_llm_stream", "toy_embed", "vector_search", "toy_rag")

__all__ = [
    "MODELS_DIR",
    "TOY_MODELS",
    "TritonError",
    "TritonInstallError",
    "TritonProcess",
    "copy_model_repository",
    "ensure_triton",
    "free_port",
    "parse_metrics",
]


class TritonInstallError(RuntimeError):
    """tritonserver could not be installed (the message says what is missing)."""


class TritonError(RuntimeError):
    """tritonserver failed to start, died, or answered with an error."""


# --------------------------------------------------------------------------- install

_launcher_lock = threading.Lock()
_launcher: Path | None = None


def ensure_triton(*, force: bool = False) -> Path:
    """Install tritonserver if needed (progress on stderr) and return the launcher path.

    Raises TritonInstallError with install.sh's error lines and the likely missing piece.
    """
    global _launcher
    with _launcher_lock:
        if _launcher is not None and not force and _launcher.exists():
            return _launcher
        if not INSTALL_SCRIPT.exists():
            raise TritonInstallError(f"missing {INSTALL_SCRIPT}")
        rc, lines, tail = run_script(INSTALL_SCRIPT)
        if rc != 0 or not lines:
            errors = [ln for ln in tail if "ERROR" in ln] or tail[-15:]
            raise TritonInstallError(
                f"{INSTALL_SCRIPT.relative_to(REPO_ROOT)} failed (exit {rc}):\n  "
                + "\n  ".join(errors)
                + "\nIt needs: pip access to PyPI (nvidia-pytriton, numpy<2), a python3 3.8-3.13"
                " with the venv module, and apt-get (as root) for any missing shared library."
            )
        launcher = Path(lines[-1])
        if not os.access(launcher, os.X_OK):
            raise TritonInstallError(f"install.sh reported {launcher}, which is not executable")
        _launcher = launcher
        return launcher


# --------------------------------------------------------------------------- helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def copy_model_repository(dest: Path, models: Iterable[str] | None = None) -> Path:
    """Copy the toy model repository (or some of its models) to ``dest`` and return it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in models if models is not None else TOY_MODELS:
        shutil.copytree(
            MODELS_DIR / name, dest / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    return dest


_METRIC_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text format -> {(name, frozenset(labels)): value}."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if not m:
            continue
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            continue
    return out


# loopback servers only: never route through an http(s)_proxy from the environment
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _opener.open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return status, payload


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids.extend(int(p) for p in (task / "children").read_text().split())
    return kids


# --------------------------------------------------------------------------- process


class TritonProcess:
    """One tritonserver process (explicit model control) on one address.

    >>> t = TritonProcess().start(repo, host="127.0.0.2", load_models=["toy_llm"])
    >>> t.http_url, t.grpc_url, t.metrics_url
    >>> t.stop()
    """

    def __init__(
        self, launcher: Path | str | None = None, *, log_dir: Path | str | None = None
    ) -> None:
        self.launcher = Path(launcher) if launcher else ensure_triton()
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="tritonserver-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.http_port = self.grpc_port = self.metrics_port = 0
        self.model_repository: Path | None = None
        self.log_path: Path | None = None
        self.started_at = 0.0  # time.monotonic() of the last start
        self.live_after = 0.0  # seconds from spawn to /v2/health/live
        self._start_kwargs: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(
        self,
        model_repository: Path | str,
        *,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        load_models: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        timeout: float = 120.0,
    ) -> TritonProcess:
        """Start the server and wait for /v2/health/live (and the ``load_models`` to be READY).

        Ports left as None are picked free on ``host``; if such a pick loses a race the start is
        retried with new ports.
        """
        if self.running:
            raise TritonError(f"already running (pid {self.pid})")
        self._start_kwargs = dict(
            model_repository=model_repository,
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            load_models=tuple(load_models),
            extra_args=tuple(extra_args),
            timeout=timeout,
        )
        auto = http_port is None or grpc_port is None or metrics_port is None
        for attempt in range(3):
            self.http_port = http_port or free_port(host)
            self.grpc_port = grpc_port or free_port(host)
            self.metrics_port = metrics_port or free_port(host)
            if len({self.http_port, self.grpc_port, self.metrics_port}) < 3:
                continue
            try:
                self._spawn(Path(model_repository), host, load_models, extra_args, timeout)
                return self
            except TritonError as err:
                if auto and attempt < 2 and "Address already in use" in str(err):
                    continue
                raise
        raise TritonError("could not find free ports")

    def _spawn(
        self,
        repo: Path,
        host: str,
        load_models: Sequence[str],
        extra_args: Sequence[str],
        timeout: float,
    ) -> None:
        self.host = host
        self.model_repository = repo.resolve()
        self.log_path = self.log_dir / f"tritonserver-{host}-{self.http_port}.log"
        args = [
            str(self.launcher),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            f"--http-address={host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            *(f"--load-model={m}" for m in load_models),
            *extra_args,
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(args)}\n".encode())
            log.flush()
            t0 = time.monotonic()
            # own session: kill() can take the python backend stubs down with the server
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started_at = t0
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise TritonError(
                    f"tritonserver exited with {self.proc.returncode} before it was live "
                    f"({self.http_url})\n{self.log_tail()}"
                )
            try:
                if self.get("/v2/health/live", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self._kill_group()
                raise TritonError(
                    f"tritonserver not live after {timeout:.0f}s ({self.http_url})\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)
        self.live_after = time.monotonic() - t0
        for model in load_models:
            self.wait_model_ready(model, timeout=max(1.0, deadline - time.monotonic()))

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful: in-flight requests finish, models unload), SIGKILL after timeout."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
        self._reap_group()
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL the server and its python backend stubs at once (simulates a crash)."""
        if self.proc is None:
            return None
        self._kill_group()
        return self.proc.returncode

    def pause(self) -> None:
        """SIGSTOP the server and its stubs: a hung server. The kernel still accepts
        connections (the listen backlog); nothing answers them, probes included."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT what :meth:`pause` stopped."""
        self._signal_group(signal.SIGCONT)

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            raise TritonError("never started")
        os.killpg(self.proc.pid, sig)

    def restart(self, timeout: float | None = None) -> TritonProcess:
        """stop() (if running) and start again with the same repository, address and ports."""
        if not self._start_kwargs:
            raise TritonError("never started")
        self.stop()
        kw = dict(self._start_kwargs)
        kw.update(
            http_port=self.http_port, grpc_port=self.grpc_port, metrics_port=self.metrics_port
        )
        if timeout is not None:
            kw["timeout"] = timeout
        return self.start(kw.pop("model_repository"), **kw)

    def _kill_group(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def _reap_group(self) -> None:
        # python backend stubs exit by themselves shortly after the server; never leave them behind
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def __enter__(self) -> TritonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state -------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """host:port, as tritonclient.grpc expects it."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "--- tritonserver log tail ---\n" + "\n".join(text[-lines:])

    def rss_bytes(self, include_children: bool = True) -> int:
        """Resident memory of the server (+ its python backend stub processes)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0
        pids = [self.proc.pid, *(_children(self.proc.pid) if include_children else [])]
        return sum(_rss_kb(p) for p in pids) * 1024

    # -- HTTP API ----------------------------------------------------------------------------

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, Any]:
        return _http("GET", self.http_url + path, timeout=timeout)

    def post(self, path: str, body: Any = None, timeout: float = 120.0) -> tuple[int, Any]:
        return _http(
            "POST", self.http_url + path, body if body is not None else {}, timeout=timeout
        )

    def load(
        self, model: str, *, config: dict[str, Any] | str | None = None, timeout: float = 120.0
    ) -> tuple[int, Any]:
        """POST /v2/repository/models/<model>/load -> (status, body). A config (dict or JSON)
        overrides config.pbtxt. Note: loading an already loaded model reloads it."""
        body: dict[str, Any] = {}
        if config is not None:
            body = {
                "parameters": {"config": config if isinstance(config, str) else json.dumps(config)}
            }
        return self.post(f"/v2/repository/models/{model}/load", body, timeout=timeout)

    def unload(self, model: str, *, unload_dependents: bool = False) -> tuple[int, Any]:
        """POST .../unload -> (status, body). Returns at once: UNLOADING, then UNAVAILABLE."""
        body = {"parameters": {"unload_dependents": True}} if unload_dependents else {}
        return self.post(f"/v2/repository/models/{model}/unload", body)

    def index(self, ready: bool | None = None) -> list[dict[str, Any]]:
        status, body = self.post("/v2/repository/index", {} if ready is None else {"ready": ready})
        if status != 200:
            raise TritonError(f"repository index: {status} {body}")
        entries: list[dict[str, Any]] = body
        return entries

    def model_states(self) -> dict[str, dict[str, str]]:
        """{model: {version: state}} from the repository index (never-loaded models: {})."""
        states: dict[str, dict[str, str]] = {}
        for entry in self.index():
            versions = states.setdefault(entry["name"], {})
            if "version" in entry:
                versions[entry["version"]] = entry.get("state", "")
        return states

    def model_ready(self, model: str, version: str | int | None = None) -> bool:
        path = (
            f"/v2/models/{model}"
            + (f"/versions/{version}" if version is not None else "")
            + "/ready"
        )
        try:
            return self.get(path, timeout=5)[0] == 200
        except OSError:
            return False

    def wait_model_ready(
        self, model: str, version: str | int | None = None, timeout: float = 60.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while not self.model_ready(model, version):
            if not self.running:
                raise TritonError(f"tritonserver died while waiting for {model}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TritonError(
                    f"model {model} not READY after {timeout:.0f}s: "
                    f"{self.model_states().get(model)}\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def wait_unloaded(self, model: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while any(
            s in ("READY", "UNLOADING", "LOADING")
            for s in self.model_states().get(model, {}).values()
        ):
            if time.monotonic() > deadline:
                raise TritonError(f"model {model} still not unloaded after {timeout:.0f}s")
            time.sleep(0.05)

    def wait_states(self, model: str, states: dict[str, str], timeout: float = 60.0) -> None:
        """Wait until the index shows exactly ``states`` ({version: state}) for ``model``."""
        deadline = time.monotonic() + timeout
        while (got := self.model_states().get(model, {})) != states:
            if time.monotonic() > deadline:
                raise TritonError(
                    f"model {model}: states {got}, wanted {states} after {timeout:.0f}s"
                )
            time.sleep(0.05)

    def generate(self, model: str, body: dict[str, Any], timeout: float = 60.0) -> tuple[int, Any]:
        return self.post(f"/v2/models/{model}/generate", body, timeout=timeout)

    def generate_stream(
        self, model: str, body: dict[str, Any], timeout: float = 60.0
    ) -> tuple[int, list[Any]]:
        """POST .../generate_stream -> (status, [event JSON, ...]) from the SSE ``data:`` lines."""
        req = urllib.request.Request(
            f"{self.http_url}/v2/models/{model}/generate_stream",
            data=json.dumps(body).encode(),
            method="POST",
        )
        req.add_header("Content-Type", "application/json")
        try:
            resp = _opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as err:
            resp = err
        with resp:
            status = resp.status if hasattr(resp, "status") else resp.code
            events = [
                json.loads(line[len(b"data: ") :])
                for line in resp.read().split(b"\n")
                if line.startswith(b"data: ")
            ]
        return status, events

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with _opener.open(self.metrics_url, timeout=10) as resp:
            return parse_metrics(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float | None:
        """Sum of the samples of ``name`` whose labels include ``labels`` (None: no sample)."""
        want = set(labels.items())
        values = [v for (n, ls), v in self.metrics().items() if n == name and want <= ls]
        return sum(values) if values else None

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<TritonProcess {self.http_url} {state}>"
