"""Benchmark: ``tritonfleet sync`` throughput against a plain copy, in the same run.

A model of ``--size-mb`` random bytes (default 1 GiB, one version folder, a few shards) is
synced from moto's real S3 server and from the local HTTP server into a fresh repository,
with everything sync does (sha256, fsync of files and directories, manifest, atomic
publish). The baselines move the same bytes with nothing else: boto3 ``download_file`` per
object with the same TransferConfig, a plain streamed HTTP GET to a file, and (HTTP) a GET
that hashes and fsyncs with no framework around it. Sync and baselines run in this same
process (``tritonfleet.cli.main``), so neither pays interpreter start-up; that cost is
shown apart, as the wall time of a whole ``python -m tritonfleet sync`` re-run of the
unchanged revision (what a no-op sync Job costs).

    .venv/bin/python bench/bench_sync.py [--size-mb 1024] [--shards 4] [--concurrency 8]
                                         [--repeat 1]

Figures are printed, not asserted (``make bench``). Copy and sync runs are interleaved and
the best of ``--repeat`` is shown: this 2-core machine is shared, and page-cache writeback
from one run slows the next. The servers are on loopback, so this measures the sync's own
overhead, not a network.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from boto3.s3.transfer import TransferConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from hack.devtools.http_server import ModelHttpServer  # noqa: E402
from hack.devtools.s3 import MotoS3, start_moto  # noqa: E402
from tritonfleet.cli import main as tritonfleet_main  # noqa: E402

MiB = 1024 * 1024


def make_shards(directory: Path, size_mb: int, shards: int) -> list[Path]:
    directory.mkdir(parents=True)
    paths = []
    per = size_mb * MiB // shards
    for i in range(shards):
        path = directory / f"shard-{i:02d}.bin"
        with path.open("wb") as handle:
            left = per
            while left:
                n = min(left, 8 * MiB)
                handle.write(os.urandom(n))
                left -= n
        paths.append(path)
    return paths


def model_yaml(path: Path, source: dict[str, Any]) -> Path:
    doc = {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": "bench"},
        "spec": {"source": source, "config": {"backend": "python"}},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def sync_in_process(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run ``tritonfleet sync`` in this process, like the baselines: (seconds, log)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    log = io.StringIO()
    try:
        started = time.monotonic()
        with contextlib.redirect_stderr(log), contextlib.redirect_stdout(io.StringIO()):
            rc = tritonfleet_main(["sync", *args, "--progress-interval", "30"])
        seconds = time.monotonic() - started
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if rc != 0:
        raise SystemExit(f"sync failed ({rc}):\n{log.getvalue()}")
    return seconds, log.getvalue()


def run_sync(args: list[str], env: dict[str, str]) -> tuple[float, float | None, str]:
    """(wall seconds incl. interpreter start, the sync's own seconds from its log, stderr)."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "tritonfleet", "sync", *args, "--progress-interval", "30"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"sync failed ({proc.returncode}):\n{proc.stderr}")
    match = re.search(r"event=published .*seconds=([0-9.]+)", proc.stderr)
    if match:
        return wall, float(match.group(1)), proc.stderr
    return wall, _log_span(proc.stderr), proc.stderr


def _log_span(log: str) -> float | None:
    """Seconds between the first and last log line (their time= stamps)."""
    stamps = re.findall(r"^time=\S+T(\d+):(\d+):([0-9.]+)Z", log, re.MULTILINE)
    if len(stamps) < 2:
        return None
    first, last = ((int(h) * 3600 + int(m) * 60 + float(s)) for h, m, s in (stamps[0], stamps[-1]))
    return last - first


def drop_caches_hint(path: Path) -> None:
    # Page cache is left warm on purpose (both sides read/write the same way); remove
    # the output so each run writes fresh files.
    shutil.rmtree(path, ignore_errors=True)


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def best(values: list[float]) -> float:
    return min(values)


def row(label: str, seconds: list[float], total: int, copy: float | None = None) -> str:
    fastest = best(seconds)
    text = f"  {label:<34}{fastest:7.2f} s  {mbps(total, fastest):7.1f} MB/s"
    if copy:
        text += f"   ({fastest / copy:.2f}x the copy)"
    if len(seconds) > 1:
        text += "   runs: " + ", ".join(f"{s:.2f}" for s in seconds)
    return text


def bench_s3(
    server: MotoS3, shards: list[Path], work: Path, concurrency: int, repeat: int
) -> list[str]:
    bucket = server.bucket("bench")
    client = server.client()
    config = TransferConfig(
        max_concurrency=concurrency, multipart_threshold=16 * MiB, multipart_chunksize=16 * MiB
    )
    for shard in shards:
        client.upload_file(str(shard), bucket, f"bench/1/{shard.name}", Config=config)
    total = sum(p.stat().st_size for p in shards)
    yaml_path = model_yaml(
        work / "s3.yaml", {"s3": {"uri": f"s3://{bucket}/bench", "endpoint": server.endpoint}}
    )
    env = server.env(PYTHONPATH=str(REPO_ROOT / "operator"))
    copies: list[float] = []
    syncs: list[float] = []
    noop_own: list[float] = []
    noop_wall: list[float] = []
    for _ in range(repeat):  # interleaved, so both see the same machine load
        out = work / "boto3-copy"
        out.mkdir()
        started = time.monotonic()
        for shard in shards:
            client.download_file(
                bucket, f"bench/1/{shard.name}", str(out / shard.name), Config=config
            )
        copies.append(time.monotonic() - started)
        drop_caches_hint(out)

        repo = work / "s3-volume" / "repository"
        args = ["-f", str(yaml_path), "--repository", str(repo)]
        args += ["--concurrency", str(concurrency)]
        seconds, _ = sync_in_process(args, env)
        syncs.append(seconds)
        # the Job's view of a no-op: a whole process, interpreter start included
        again_wall, again_own, again_log = run_sync(args, env)
        assert "already at revision" in again_log
        noop_wall.append(again_wall)
        noop_own.append(again_own or again_wall)
        drop_caches_hint(repo.parent)
    copy = best(copies)
    return [
        f"S3 (moto server, {len(shards)} objects, {total / MiB:.0f} MiB, concurrency "
        f"{concurrency}, best of {repeat})",
        row("boto3 download_file copy", copies, total),
        row("tritonfleet sync", syncs, total, copy),
        f"  re-run of the unchanged revision: {best(noop_own) * 1000:.0f} ms own time, "
        f"{best(noop_wall):.2f} s wall",
    ]


def bench_http(shards: list[Path], work: Path, repeat: int) -> list[str]:
    # One file of the whole size: HTTP sources are a single download.
    single = work / "model.bin"
    with single.open("wb") as target:
        for shard in shards:
            with shard.open("rb") as part:
                shutil.copyfileobj(part, target, 8 * MiB)
    total = single.stat().st_size
    digest = hashlib.sha256()
    with single.open("rb") as handle:
        while chunk := handle.read(8 * MiB):
            digest.update(chunk)
    server = ModelHttpServer()
    copies: list[float] = []
    floors: list[float] = []
    syncs: list[float] = []
    try:
        url = server.add_file("/model.bin", single)
        source = {"http": {"url": url, "sha256": digest.hexdigest(), "path": "1/model.bin"}}
        yaml_path = model_yaml(work / "http.yaml", source)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "operator")}
        for _ in range(repeat):
            out = work / "http-copy.bin"
            started = time.monotonic()
            with urllib.request.urlopen(url) as response, out.open("wb") as handle:
                shutil.copyfileobj(response, handle, 1 * MiB)
            copies.append(time.monotonic() - started)
            out.unlink()

            # The least a checked, durable download can do: hash while writing, fsync.
            started = time.monotonic()
            hasher = hashlib.sha256()
            with urllib.request.urlopen(url) as response, out.open("wb") as handle:
                while chunk := response.read(1 * MiB):
                    hasher.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            floors.append(time.monotonic() - started)
            out.unlink()

            repo = work / "http-volume" / "repository"
            seconds, _ = sync_in_process(["-f", str(yaml_path), "--repository", str(repo)], env)
            syncs.append(seconds)
            drop_caches_hint(repo.parent)
    finally:
        server.stop()
    return [
        f"HTTP (local server, 1 file, {total / MiB:.0f} MiB, sha256 verified, best of {repeat})",
        row("plain streamed GET to a file", copies, total),
        row("GET + sha256 + fsync, no framework", floors, total, best(copies)),
        row("tritonfleet sync", syncs, total, best(copies)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="model size (default 1024)")
    parser.add_argument("--shards", type=int, default=4, help="S3 objects (default 4)")
    parser.add_argument("--concurrency", type=int, default=8, help="S3 transfer threads")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="interleaved runs, best shown (default 1; 3 for steadier figures on a busy machine)",
    )
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-s3", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    lines = [f"bench_sync: {args.size_mb} MiB model, {os.cpu_count()} CPUs, work dir {work}"]
    server = None
    try:
        shards = make_shards(work / "source", args.size_mb, args.shards)
        if not args.skip_s3:
            server = start_moto()
            lines += bench_s3(server, shards, work, args.concurrency, args.repeat)
        if not args.skip_http:
            lines += bench_http(shards, work, args.repeat)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
