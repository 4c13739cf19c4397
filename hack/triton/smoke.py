"""Smoke check for a tritonserver install (stdlib only; used by hack/triton/install.sh).

usage: smoke.py LAUNCHER EXPECTED_TRITON_VERSION EXPECTED_NUMPY_VERSION

Starts the launcher on a free loopback port with a one-model python-backend repository,
checks the server version from the metadata endpoint, then runs one inference and checks
the answer and the numpy version the python backend runs with.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [
  { name: "y" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "numpy" data_type: TYPE_STRING dims: [ 1 ] }
]
"""

MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("y", (x * 2).astype(np.float32)),
                pb_utils.Tensor("numpy", np.array([np.__version__.encode()], dtype=np.object_)),
            ]))
        return out
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def _http(method: str, url: str, body: dict | None = None, timeout: float = 10.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with _opener.open(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as err:
        raise RuntimeError(
            f"{method} {url}: HTTP {err.code}: {err.read().decode(errors='replace')}"
        ) from None
    return resp.status, (json.loads(raw) if raw else None)


def main() -> int:
    launcher, want_triton, want_numpy = sys.argv[1:4]
    with tempfile.TemporaryDirectory(prefix="triton-smoke-") as tmp:
        repo = Path(tmp, "repo")
        (repo / "smoke" / "1").mkdir(parents=True)
        (repo / "smoke" / "config.pbtxt").write_text(CONFIG)
        (repo / "smoke" / "1" / "model.py").write_text(MODEL)
        port = _free_port()
        log = Path(tmp, "server.log")
        base = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        with log.open("wb") as logf:
            proc = subprocess.Popen(
                [
                    launcher,
                    f"--model-repository={repo}",
                    "--model-control-mode=explicit",
                    "--load-model=smoke",
                    "--http-address=127.0.0.1",
                    f"--http-port={port}",
                    "--allow-grpc=false",
                    "--allow-metrics=false",
                ],
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"tritonserver exited with {proc.returncode}")
                try:
                    if _http("GET", f"{base}/v2/models/smoke/ready", timeout=2)[0] == 200:
                        break
                except (RuntimeError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("model 'smoke' not ready after 120 s")
                time.sleep(0.2)
            ready_s = time.monotonic() - t0
            _, meta = _http("GET", f"{base}/v2")
            if meta.get("version") != want_triton:
                raise RuntimeError(
                    f"server version {meta.get('version')!r}, expected {want_triton!r}"
                )
            _, out = _http(
                "POST",
                f"{base}/v2/models/smoke/infer",
                {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3.5]}]},
            )
            got = {o["name"]: o["data"] for o in out["outputs"]}
            if got["y"] != [2.0, 4.0, 7.0]:
                raise RuntimeError(f"wrong inference result {got['y']!r}")
            if got["numpy"] != [want_numpy]:
                raise RuntimeError(
                    f"python backend runs numpy {got['numpy']!r}, expected {want_numpy}"
                )
            print(
                f"[triton-install] smoke ok: tritonserver {meta['version']}, python backend with "
                f"numpy {got['numpy'][0]}, model ready in {ready_s:.1f}s"
            )
            return 0
        except Exception as exc:
            print(f"[triton-install] smoke FAILED: {exc}")
            tail = log.read_text(errors="replace").splitlines()[-40:]
            print("\n".join("    " + line for line in tail))
            return 1
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
