"""Measure the local tritonserver: start time to live / to a model READY, load time, RSS.

usage: python3 hack/triton/measure.py [--runs N] [--cold-install]

--cold-install also times install.sh into a throw-away cache with pip's cache disabled
(downloads the wheel again) and then the warm (already installed) path.
Prints one JSON object. Uses hack/devtools/triton.py; run from anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hack.devtools.triton import (  # noqa: E402
    INSTALL_SCRIPT,
    TritonProcess,
    copy_model_repository,
    ensure_triton,
)


def _time_install(env: dict[str, str]) -> float:
    t0 = time.monotonic()
    subprocess.run(["bash", str(INSTALL_SCRIPT)], env=env, check=True, capture_output=True)
    return round(time.monotonic() - t0, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cold-install", action="store_true")
    args = ap.parse_args()
    result: dict[str, object] = {}

    if args.cold_install:
        with tempfile.TemporaryDirectory(prefix="tf-cache-") as cache:
            env = {**os.environ, "TRITONFLEET_CACHE": cache, "PIP_NO_CACHE_DIR": "1"}
            result["install_cold_s"] = _time_install(env)
            result["install_warm_s"] = _time_install(env)

    launcher = ensure_triton()
    with tempfile.TemporaryDirectory(prefix="tf-measure-") as tmp:
        repo = copy_model_repository(Path(tmp) / "models")
        live, ready_llm, load_rag, load_stream = [], [], [], []
        rss: dict[str, int] = {}
        for i in range(args.runs):
            t = TritonProcess(launcher, log_dir=Path(tmp) / "logs")
            t.start(repo, host="127.0.0.2")  # nothing loaded
            live.append(t.live_after)
            t.stop()
            t0 = time.monotonic()
            t.start(repo, host="127.0.0.2", load_models=["toy_llm"])
            ready_llm.append(time.monotonic() - t0)
            if i == 0:
                rss["server_no_models_mb"] = 0  # filled below from a fresh server
                rss["server_toy_llm_total_mb"] = t.rss_bytes() // 2**20
            t0 = time.monotonic()
            assert t.load("toy_rag")[0] == 200  # + toy_embed, vector_search (toy_llm reloads)
            load_rag.append(time.monotonic() - t0)
            t0 = time.monotonic()
            assert t.load("toy_llm_stream")[0] == 200
            load_stream.append(time.monotonic() - t0)
            if i == 0:
                for m, body in (
                    ("toy_llm", {"text_input": "a b c"}),
                    ("toy_rag", {"text_input": "x"}),
                ):
                    assert t.generate(m, body)[0] == 200
                assert t.generate_stream("toy_llm_stream", {"text_input": "a b"})[0] == 200
                rss["all_toy_models_total_mb"] = t.rss_bytes() // 2**20
                rss["all_toy_models_server_only_mb"] = t.rss_bytes(include_children=False) // 2**20
                rss["python_stub_processes"] = len(
                    (Path("/proc") / str(t.pid) / "task" / str(t.pid) / "children")
                    .read_text()
                    .split()
                )
            t.stop()
        t = TritonProcess(launcher, log_dir=Path(tmp) / "logs").start(repo, host="127.0.0.3")
        rss["server_no_models_mb"] = t.rss_bytes() // 2**20
        t.stop()

    def stats(xs: list[float]) -> dict[str, float]:
        return {
            "median": round(statistics.median(xs), 3),
            "min": round(min(xs), 3),
            "max": round(max(xs), 3),
        }

    result.update(
        start_to_live_s=stats(live),
        start_to_toy_llm_ready_s=stats(ready_llm),
        load_toy_rag_s=stats(load_rag),
        load_toy_llm_stream_s=stats(load_stream),
        rss=rss,
        runs=args.runs,
        cpus=os.cpu_count(),
        loadavg=os.getloadavg()[0],
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
