"""``tritonfleet sync`` under faults: what Triton is pointed at while syncs die, race,
meet lying sources and fill the volume.

Each case runs the real command as the operator's sync Job runs it (``python -m
tritonfleet sync -f model.yaml --model-name M --revision R --repository ...``) in
its own process, against a real HTTP server on loopback told how to misbehave
(``hack/devtools/http_server.py``) and, for the full volume, a real tmpfs mounted
with a size and an inode limit. A watcher thread samples ``<repository>/<model>``
(the link Triton reads) every few milliseconds for the whole case and checks that
whatever it points at holds every file of its manifest at the manifest's size: the
user-visible promise is that the served revision is always complete, before, during
and after the fault. After the kill-and-rerun case a real tritonserver loads the
served revision, whose model refuses to initialise unless its weights file has the
manifest's digest.

Integration tests (tests/integration/test_sync.py) pin each behaviour once; here
the faults are repeated, concurrent and timed, and each case prints a ``[chaos]``
line with its figures.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.devtools.http_server import ModelHttpServer
from hack.devtools.testbed import wait_for
from hack.devtools.triton import TritonProcess
from tests.support.echo_model import ECHO_CONFIG, echo_model_py, infer_echo
from tests.support.tmpfs import tmpfs

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ".tritonfleet-manifest.json"
MODEL = "echo"
EXIT_INTEGRITY, EXIT_LOCAL_STORAGE = 5, 7
SYNC_TIMEOUT_S = 120.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_doc(source: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": MODEL, "namespace": "default"},
        "spec": {"source": source, "config": ECHO_CONFIG},
    }


def echo_files(factor: int, weights: bytes) -> dict[str, bytes]:
    code = echo_model_py(factor, weights_sha256=sha(weights))
    return {"1/model.py": code.encode(), "1/weights.bin": weights}


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def inline_doc(text: str) -> dict[str, Any]:
    return model_doc({"inline": {"files": {"1/model.py": text}}})


# --- the volume, the sync process and what is served -------------------------------------------


@dataclass
class SyncRun:
    revision: str
    rc: int
    out: str
    err: str
    seconds: float


@dataclass
class Volume:
    """A repository on ``root`` as the sync Job sees it, its state directory beside it."""

    root: Path
    work: Path  # model YAML files

    @property
    def repo(self) -> Path:
        return self.root / "repository"

    @property
    def state(self) -> Path:
        return self.root / ".tritonfleet" / "repository"

    def start(self, doc: dict[str, Any], revision: str, *args: str) -> subprocess.Popen[str]:
        # A file per process: rewriting one a racing sync is reading would race too.
        path = self.work / f"{revision}.{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(doc))
        command = [sys.executable, "-m", "tritonfleet", "sync", "-f", str(path)]
        command += ["--model-name", MODEL, "--revision", revision]
        command += ["--repository", str(self.repo), "--progress-interval", "0.5", *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["PYTHONPATH"] = str(REPO_ROOT / "operator")
        return subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def sync(self, doc: dict[str, Any], revision: str, *args: str) -> SyncRun:
        started = time.monotonic()
        proc = self.start(doc, revision, *args)
        return finish(proc, revision, started)

    def served(self) -> str | None:
        """The revision directory ``<repo>/<model>`` points at (None: no model)."""
        try:
            return Path(os.readlink(self.repo / MODEL)).name  # noqa: PTH115 - the link itself
        except FileNotFoundError:
            return None

    def manifest(self, dirname: str) -> dict[str, Any]:
        text = (self.state / "revisions" / MODEL / dirname / MANIFEST).read_text()
        data: dict[str, Any] = json.loads(text)
        return data

    def problems(self, dirname: str, deep: bool = False) -> list[str]:
        """How revision directory ``dirname`` falls short of its own manifest."""
        directory = self.state / "revisions" / MODEL / dirname
        try:
            files = self.manifest(dirname)["files"]
        except (OSError, ValueError, KeyError) as error:
            return [f"{dirname}: no readable manifest ({error})"]
        found = []
        for name, entry in files.items():
            path = directory / name
            try:
                size = path.stat().st_size
            except OSError:
                found.append(f"{dirname}/{name} missing")
                continue
            if size != entry["size"]:
                found.append(f"{dirname}/{name} has {size} bytes, manifest {entry['size']}")
            elif deep and sha(path.read_bytes()) != entry["sha256"]:
                found.append(f"{dirname}/{name} sha256 differs from the manifest")
        return found

    def staging(self) -> list[str]:
        directory = self.state / "staging" / MODEL
        return sorted(p.name for p in directory.iterdir()) if directory.exists() else []

    def revisions(self) -> list[str]:
        directory = self.state / "revisions" / MODEL
        return sorted(p.name for p in directory.iterdir()) if directory.exists() else []

    def staged_bytes(self, pid: int) -> int:
        """Bytes in the staging of sync process ``pid`` (its directories carry the pid)."""
        total = 0
        for directory in (self.state / "staging" / MODEL).glob(f"*.{pid}.*"):
            for dirpath, _dirs, names in os.walk(directory):
                for name in names:
                    with contextlib.suppress(FileNotFoundError):
                        total += (Path(dirpath) / name).stat().st_size
        return total

    def file(self, rel: str) -> bytes:
        return (self.repo / MODEL / rel).read_bytes()


def finish(proc: subprocess.Popen[str], revision: str, started: float) -> SyncRun:
    try:
        out, err = proc.communicate(timeout=SYNC_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return SyncRun(revision, proc.returncode, out, err, time.monotonic() - started)


@dataclass
class Watch:
    """What the served link pointed at, sampled for the duration of a case."""

    samples: int = 0
    seen: list[str] = field(default_factory=list)  # distinct revision dirs, in order
    violations: list[str] = field(default_factory=list)


@contextlib.contextmanager
def watching(volume: Volume) -> Iterator[Watch]:
    """Sample ``<repo>/<model>`` until the block ends. A sample counts only when the
    link named the same directory before and after the check: a directory collected
    after the link moved on is no longer served and proves nothing."""
    watch = Watch()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            before = volume.served()
            if before is not None:
                found = volume.problems(before)
                if volume.served() == before:
                    watch.samples += 1
                    if not watch.seen or watch.seen[-1] != before:
                        watch.seen.append(before)
                    watch.violations += [f"served {p}" for p in found]
            stop.wait(0.005)

    thread = threading.Thread(target=sample, name="served-watch", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join(timeout=10)
    assert watch.samples > 0, "the watcher never saw a served revision"
    assert not watch.violations, watch.violations[:10]


def assert_complete(volume: Volume, dirname: str) -> None:
    assert volume.served() == dirname
    assert volume.problems(dirname, deep=True) == []


@pytest.fixture
def volume(tmp_path: Path) -> Volume:
    (tmp_path / "volume").mkdir()
    (tmp_path / "work").mkdir()
    return Volume(tmp_path / "volume", tmp_path / "work")


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Volume]:
    """A volume that really fills: a tmpfs of 16 MiB and 256 inodes."""
    (tmp_path / "work").mkdir()
    with tmpfs(tmp_path / "small", "size=16m,nr_inodes=256,mode=755") as root:
        yield Volume(root, tmp_path / "work")


def publish_first(volume: Volume, factor: int = 2) -> str:
    """Revision r1, published and served, complete: what every fault must leave alone."""
    files = echo_files(factor, b"w" * 4096)  # inline files are text
    doc = model_doc({"inline": {"files": {k: v.decode() for k, v in files.items()}}})
    run = volume.sync(doc, "r1")
    assert run.rc == 0, run.err
    served = volume.served()
    assert served is not None
    assert_complete(volume, served)
    return served


# --- 1. killed mid-download, then rerun ----------------------------------------------------


def staged_past(volume: Volume, pid: int, depth: int) -> Callable[[], bool]:
    return lambda: volume.staged_bytes(pid) > depth


def test_a_sync_killed_mid_download_then_rerun_publishes_a_complete_revision(
    volume: Volume,
    http_server: ModelHttpServer,
    triton_factory: Callable[..., TritonProcess],
) -> None:
    """SIGKILL (what a Job's pod eviction or OOM does) three times at growing depths of
    a slow download; the previous revision stays served and complete throughout; a
    rerun cleans up and publishes a revision Triton loads."""
    before = publish_first(volume)
    weights = os.urandom(16 * 1024 * 1024)
    archive = tar_of(echo_files(3, weights))
    slow = http_server.add("/slow/echo.tar", archive, rate=4_000_000)
    doc = model_doc({"http": {"url": slow, "archive": "tar", "sha256": sha(archive)}})
    kills: list[int] = []
    leftovers: list[int] = []
    with watching(volume) as watch:
        for depth in (1_000_000, 4_000_000, 9_000_000):
            proc = volume.start(doc, "r2")
            try:
                wait_for(
                    staged_past(volume, proc.pid, depth), 60, f"{depth} bytes staged", interval=0.05
                )
                assert volume.served() == before
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert proc.returncode == -signal.SIGKILL
            kills.append(depth)
            leftovers.append(len(volume.staging()))
            assert volume.served() == before  # a kill -9 publishes nothing
        http_server.add("/slow/echo.tar", archive)  # the source recovers
        rerun = volume.sync(doc, "r2")
    assert rerun.rc == 0, rerun.err
    assert "removed leftovers of an interrupted sync" in rerun.err
    after = volume.served()
    assert after is not None and after != before
    assert_complete(volume, after)
    assert volume.file("1/weights.bin") == weights
    assert volume.staging() == []
    assert watch.seen == [before, after]  # never anything in between

    started = time.monotonic()
    triton = triton_factory(volume.repo, load_models=[MODEL])
    triton.wait_model_ready(MODEL)
    assert infer_echo(triton) == [3.0, 6.0, 9.0]
    loaded = time.monotonic() - started
    print(
        f"\n[chaos] sync SIGKILLed {len(kills)} times mid-download (at >"
        f"{', '.join(f'{k / 1e6:.0f}' for k in kills)} MB of 16 MiB, staging entries left "
        f"{leftovers}); rerun published a complete revision in {rerun.seconds:.1f} s; "
        f"served link sampled {watch.samples} times, {len(watch.violations)} incomplete; "
        f"tritonserver loaded and answered from it in {loaded:.1f} s"
    )


# --- 2. racing syncs -------------------------------------------------------------------------


def test_syncs_of_one_model_racing_publish_one_complete_revision(
    volume: Volume, http_server: ModelHttpServer
) -> None:
    """Four syncs of the same revision at once (the Job retried while its first pod
    still ran), then two revisions at once (an edit while the first sync downloads):
    every process ends sanely, the source is fetched once per revision, and the served
    revision is complete at every instant."""
    before = publish_first(volume)
    bodies = {rev: os.urandom(6 * 1024 * 1024) for rev in ("r2", "r3", "r4")}
    docs = {}
    for rev, weights in bodies.items():
        archive = tar_of(echo_files(int(rev[1]), weights))
        url = http_server.add(f"/{rev}.tar", archive, rate=4_000_000)
        docs[rev] = model_doc({"http": {"url": url, "archive": "tar", "sha256": sha(archive)}})

    with watching(volume) as watch:
        started = time.monotonic()
        procs = [volume.start(docs["r2"], "r2") for _ in range(4)]
        same = [finish(p, "r2", started) for p in procs]
        same_seconds = time.monotonic() - started
        assert [r.rc for r in same] == [0] * 4, [r.err for r in same]
        published = [r for r in same if r.out.strip().endswith("r2 published")]
        assert len(published) == 1, [r.out for r in same]
        assert http_server.hits("/r2.tar") == 1, "the revision was downloaded more than once"
        after_same = volume.served()
        assert after_same is not None and after_same != before
        assert_complete(volume, after_same)
        assert volume.staging() == []

        started = time.monotonic()
        procs = [volume.start(docs["r3"], "r3"), volume.start(docs["r4"], "r4")]
        pair = [finish(p, rev, started) for p, rev in zip(procs, ("r3", "r4"), strict=True)]
        pair_seconds = time.monotonic() - started
    assert [r.rc for r in pair] == [0, 0], [r.err for r in pair]
    # The one that waited for the lock published last: its revision is served.
    (last,) = [r for r in pair if "waiting for another sync" in r.err]
    served = volume.served()
    assert served is not None
    assert volume.manifest(served)["revision"] == last.revision
    assert_complete(volume, served)
    assert volume.file("1/weights.bin") == bodies[last.revision]
    assert volume.staging() == []
    assert all(volume.problems(d, deep=True) == [] for d in volume.revisions())
    assert len(watch.seen) == len(set(watch.seen)) <= 4  # r1, r2, then r3/r4: no flapping
    print(
        f"\n[chaos] 4 syncs of one revision at once: all exit 0 in {same_seconds:.1f} s, "
        f"{len(published)} published, source fetched {http_server.hits('/r2.tar')} time; "
        f"2 revisions at once: both exit 0 in {pair_seconds:.1f} s, {last.revision} served "
        f"(it waited for the lock); served link sampled {watch.samples} times, "
        f"{len(watch.violations)} incomplete; staging left: 0"
    )


# --- 3. sources lying about their length -----------------------------------------------------


@dataclass(frozen=True)
class Lie:
    name: str
    route: dict[str, Any]
    digest: str | None  # the sha256 the spec gives (None: no digest)
    rc: int
    message: str


def test_a_source_lying_about_its_length_never_reaches_the_served_revision(
    volume: Volume, http_server: ModelHttpServer
) -> None:
    """Content-Length is the body's framing. A longer answer is read to its announced
    length: with the digest of the real file the sync refuses (integrity), with the
    digest of the announced bytes (or none) it publishes exactly those. A shorter
    answer, closed early or trickled then closed, is a truncated transfer: refused."""
    publish_first(volume)
    body = os.urandom(2 * 1024 * 1024)
    tail = os.urandom(64 * 1024)
    lies = [
        Lie(
            "longer, digest of all sent",
            {"extra_bytes": tail},
            sha(body + tail),
            EXIT_INTEGRITY,
            "sha256",
        ),
        Lie(
            "shorter, closed at half",
            {"truncate_at": len(body) // 2},
            None,
            EXIT_INTEGRITY,
            "truncated",
        ),
        Lie(
            "shorter, trickled then closed",
            {"truncate_at": len(body) - 1, "rate": 4_000_000},
            sha(body),
            EXIT_INTEGRITY,
            "truncated",
        ),
        Lie("longer, digest of the announced bytes", {"extra_bytes": tail}, sha(body), 0, ""),
        Lie("longer, no digest", {"extra_bytes": tail}, None, 0, ""),
    ]
    outcomes = []
    with watching(volume) as watch:
        for number, lie in enumerate(lies):
            served_before, revisions_before = volume.served(), volume.revisions()
            assert served_before is not None
            url = http_server.add(f"/lie{number}.bin", body, **lie.route)
            source: dict[str, Any] = {"url": url, "path": "1/weights.bin"}
            if lie.digest:
                source["sha256"] = lie.digest
            run = volume.sync(model_doc({"http": source}), f"lie{number}")
            outcomes.append(f"{lie.name}: exit {run.rc} in {run.seconds:.1f} s")
            assert run.rc == lie.rc, (lie.name, run.err)
            assert lie.message in run.err, (lie.name, run.err)
            assert volume.staging() == []
            served = volume.served()
            assert served is not None
            if lie.rc == 0:
                assert served != served_before
                assert volume.file("1/weights.bin") == body  # exactly the announced bytes
            else:
                assert served == served_before
                assert volume.revisions() == revisions_before  # nothing new, even unpublished
            assert_complete(volume, served)
    print(
        "\n[chaos] sources lying about Content-Length: "
        + "; ".join(outcomes)
        + f"; served link sampled {watch.samples} times, {len(watch.violations)} incomplete"
    )


# --- 4. the shared volume full -----------------------------------------------------------------


def _fill(directory: Path, make: Callable[[Path], None]) -> int:
    """Make filler entries in ``directory`` until the filesystem refuses (ENOSPC)."""
    directory.mkdir(exist_ok=True)
    made = 0
    while True:
        try:
            make(directory / f"f{made}")
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
            return made
        made += 1


def test_a_full_volume_fails_the_sync_and_leaves_the_served_revision_whole(
    small_volume: Volume, http_server: ModelHttpServer
) -> None:
    """A real tmpfs runs out of bytes (a download bigger than the volume, no length
    announced) and then of inodes, with 0 to 12 left, so the sync meets ENOSPC at each
    step in turn: staging, config, manifest, the switch link, the pin. Each run exits 0
    with the new revision served whole, or 7 naming the full disk with the served
    revision unchanged; no staging is ever left behind."""
    volume = small_volume
    before = publish_first(volume)
    big = os.urandom(24 * 1024 * 1024)
    url = http_server.add("/big.bin", big, send_length=False)
    free_before = os.statvfs(volume.root).f_bavail
    with watching(volume) as watch:
        run = volume.sync(model_doc({"http": {"url": url, "path": "1/weights.bin"}}), "big")
        assert run.rc == EXIT_LOCAL_STORAGE, run.err
        assert "disk full" in run.err
        assert volume.served() == before
        assert volume.staging() == []
        assert os.statvfs(volume.root).f_bavail == free_before  # staging's bytes given back
        bytes_run = run

        steps = []
        filler = volume.root / "filler"
        for left in range(13):
            served_before = volume.served()
            assert served_before is not None
            made = _fill(filler, lambda p: p.touch())
            for index in range(made - left, made):
                (filler / f"f{index}").unlink()
            run = volume.sync(inline_doc(f"left {left}"), f"inodes{left}")
            for entry in filler.iterdir():
                entry.unlink()
            served = volume.served()
            assert served is not None
            assert run.rc in (0, EXIT_LOCAL_STORAGE), run.err
            assert volume.staging() == [], (left, run.err)
            if run.rc == 0:
                assert volume.manifest(served)["revision"] == f"inodes{left}"
                steps.append(f"{left}:ok")
            else:
                assert "disk full" in run.err, run.err
                assert served == served_before, (left, run.err)
                steps.append(f"{left}:{_failed_step(run.err)}")
            assert_complete(volume, served)
    assert any(s.endswith(":ok") for s in steps), steps
    print(
        f"\n[chaos] full volume (16 MiB, 256-inode tmpfs): a 24 MiB download without "
        f"Content-Length exits {bytes_run.rc} in {bytes_run.seconds:.1f} s, nothing left; "
        f"inodes left -> outcome: {', '.join(steps)}; served link sampled "
        f"{watch.samples} times, {len(watch.violations)} incomplete"
    )


def _failed_step(err: str) -> str:
    """``disk full while X``: the X, for the figures."""
    marker = "disk full while "
    start = err.find(marker)
    if start < 0:
        return "?"
    what = err[start + len(marker) :].split(" (")[0].split(":")[0].strip('" ')
    return " ".join(Path(word).name if "/" in word else word for word in what.split())
