"""Benchmark: loading one model on N Triton servers at once, against a single load.

Four real tritonserver 2.51 processes (CPU, python backend) on 127.0.0.2-.5 share one
repository, as the pods of a Deployment share the RWX volume. For every measurement a new
revision of a toy python model is published the way ``tritonfleet sync`` does it (new
directory, symlink renamed over the model). Every server therefore has to really reload.
The figures:

* **single load**: one raw ``POST /v2/repository/models/<m>/load`` to one server, which is
  Triton's own cost and the floor;
* **converge N**: what the reconciler does for a Deployment of N pods, end to end: observe
  (index + stamped config) every pod, plan, ``converge`` (check, load, verify the served
  revision) in parallel, and re-observe;
* **converge N, one at a time**: the same with ``concurrency=1``, i.e. a loop over pods.

    .venv/bin/python bench/bench_loading.py [--rounds 3] [--servers 4]

Figures are printed, not asserted (``make bench``). This machine has 2 shared cores, and
starting a python-backend model is mostly CPU (a new stub process, imports). So parallel
loads to more servers than cores overlap only partly here; on real pods, each with its own
CPUs, fan-out time stays close to the slowest single load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "operator"))

from hack.devtools.triton import TritonProcess, ensure_triton  # noqa: E402
from tritonfleet.adapters.triton_repository import (  # noqa: E402
    PodEndpoint,
    TritonRepository,
    converge,
    observe,
)
from tritonfleet.desired.triton.loading import LoadTarget, plan_loading  # noqa: E402
from tritonfleet.desired.triton.revision import stamp_revision  # noqa: E402

MODEL = "bench_echo"
CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""
MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils

REVISION = "%s"


class TritonPythonModel:
    def execute(self, requests):
        out = np.array([REVISION.encode()], dtype=np.object_)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("text_output", out)]) for _ in requests]
"""


class Publisher:
    """Publishes revisions of the toy model like the sync: new directory, one rename."""

    def __init__(self, root: Path) -> None:
        self.models = root / "models"
        self.revisions = root / "revisions"
        self.models.mkdir(parents=True)
        self.revisions.mkdir()
        self.count = 0

    def next_revision(self) -> str:
        self.count += 1
        revision = f"bench{self.count:04d}"
        target = self.revisions / revision
        (target / "1").mkdir(parents=True)
        (target / "config.pbtxt").write_text(stamp_revision(CONFIG, revision))
        (target / "1" / "model.py").write_text(MODEL_PY % revision)
        link = self.models / f".{MODEL}.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(target, self.models))
        link.replace(self.models / MODEL)
        return revision


async def converge_once(pods: list[PodEndpoint], revision: str, concurrency: int) -> None:
    target = LoadTarget.model(MODEL, revision)
    async with aiohttp.ClientSession() as session:
        before = await observe(pods, target.names, session=session)
        plan = plan_loading(target, before)
        after = await converge(pods, plan, concurrency=concurrency, session=session)
    final = plan_loading(target, after)
    if not final.loaded:
        raise RuntimeError(f"not loaded: {final.condition.message}")


async def single_load(pod: PodEndpoint) -> None:
    assert pod.url is not None
    async with aiohttp.ClientSession() as session:
        await TritonRepository(pod.url, session).load(MODEL)


def timed(work: Coroutine[Any, Any, None]) -> float:
    t0 = time.perf_counter()
    asyncio.run(work)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", type=int, default=4, choices=range(1, 9))
    args = parser.parse_args()

    launcher = ensure_triton()
    root = Path(tempfile.mkdtemp(prefix="bench-loading-"))
    publisher = Publisher(root)
    publisher.next_revision()
    hosts = [f"127.0.0.{2 + i}" for i in range(args.servers)]
    servers = [TritonProcess(launcher, log_dir=root / "logs") for _ in hosts]
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            for future in [
                pool.submit(t.start, publisher.models, host=h)
                for t, h in zip(servers, hosts, strict=True)
            ]:
                future.result()
        pods = [PodEndpoint(f"triton-{i}", t.http_url, True, t.host) for i, t in enumerate(servers)]
        # Warm-up: the first load of a model on a fresh server also pays one-time costs.
        asyncio.run(converge_once(pods, "bench0001", concurrency=len(pods)))

        cases: list[tuple[str, int, str]] = [("single load (raw POST .../load)", 1, "-")]
        sizes = sorted({n for n in (1, 2, 4, args.servers) if n <= args.servers})
        cases += [(f"converge {n}", n, "8") for n in sizes]
        cases.append((f"converge {args.servers}, one pod at a time", args.servers, "1"))
        results: dict[str, list[float]] = {label: [] for label, _, _ in cases}
        for _ in range(args.rounds):
            for label, n, concurrency in cases:
                revision = publisher.next_revision()
                if concurrency == "-":
                    seconds = timed(single_load(pods[0]))
                else:
                    seconds = timed(converge_once(pods[:n], revision, int(concurrency)))
                results[label].append(seconds)

        single = statistics.median(results[cases[0][0]])
        print(
            f"\nload fan-out: toy python model, tritonserver 2.51 on CPU, {os.cpu_count()} cores"
            f" (shared), {args.rounds} rounds, a new revision per measurement\n"
        )
        print(
            f"{'what':<36} {'servers':>7} {'conc.':>5} {'median s':>9} {'best s':>7} {'/single':>8}"
        )
        for label, n, concurrency in cases:
            values = results[label]
            median = statistics.median(values)
            print(
                f"{label:<36} {n:>7} {concurrency:>5} {median:>9.2f} {min(values):>7.2f}"
                f" {median / single:>7.2f}x"
            )
        return 0
    finally:
        for t in servers:
            t.stop(timeout=20)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
