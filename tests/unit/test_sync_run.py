"""One sync in-process (sync.run and sync.publish) on a local directory, with an inline
source (no network): publish, do nothing when already there, repair, roll back without
fetching, switch over a directory made by hand, collect old revisions, remove, wait
for the lock; and the sync command's ``--revision`` (the operator's revision wins,
with a warning when this command computes another). Sources and signals against real
S3/HTTP servers and processes: tests/integration/test_sync.py."""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.support.builders import model_doc
from tritonfleet.adapters.sources import LocalStorageError, Staging, SyncError
from tritonfleet.api.model import InlineSource, ModelSource, TritonModel
from tritonfleet.cli import main
from tritonfleet.desired.triton.render import render_model
from tritonfleet.desired.triton.revision import stamp_revision
from tritonfleet.sync.publish import LockBusy, Repository, layout_for
from tritonfleet.sync.run import SyncRequest, remove_model, sync_model

PBTXT = render_model(TritonModel.from_object(model_doc("m"))).pbtxt


def request(repo: Path, code: str, revision: str, **kwargs: object) -> SyncRequest:
    source = ModelSource(inline=InlineSource(files={"1/model.py": code}))
    return SyncRequest(
        name="m",
        source=source,
        pbtxt=stamp_revision(PBTXT, revision),
        revision=revision,
        layout=layout_for(repo),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "volume" / "repository"


def live(repo: Path) -> str:
    return (repo / "m").readlink().name


def test_a_sync_publishes_atomically_and_a_second_does_nothing(repo: Path) -> None:
    first = sync_model(request(repo, "v1", "r1"))
    assert first.changed and live(repo) == "r1"
    assert (repo / "m" / "1" / "model.py").read_text() == "v1"
    assert 'string_value: "r1"' in (repo / "m" / "config.pbtxt").read_text()
    again = sync_model(request(repo, "v1", "r1"))
    assert not again.changed and again.directory == "r1"


def test_a_damaged_revision_is_fetched_again_under_a_fresh_name(repo: Path) -> None:
    sync_model(request(repo, "v1", "r1"))
    (repo / "m" / "1" / "model.py").write_text("tampered, and longer")
    repaired = sync_model(request(repo, "v1", "r1"))
    assert repaired.changed and repaired.directory == "r1.1"  # r1 may still be read
    assert (repo / "m" / "1" / "model.py").read_text() == "v1"


def test_old_revisions_are_collected_and_a_rollback_needs_no_fetch(repo: Path) -> None:
    sync_model(request(repo, "v1", "r1"))
    sync_model(request(repo, "v2", "r2"))
    third = sync_model(request(repo, "v3", "r3"))
    assert third.collected == ("r1",)  # live r3, and r2 kept for a rollback
    back = sync_model(request(repo, "v2", "r2"))
    assert back.changed and back.fetched_bytes == 0 and live(repo) == "r2"


def test_a_directory_made_by_hand_is_swapped_out_and_kept(repo: Path) -> None:
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "1" / "model.py").write_text("by hand")
    outcome = sync_model(request(repo, "v1", "r1"))
    assert outcome.previous is not None and outcome.previous.startswith("unmanaged-")
    assert live(repo) == "r1"
    kept = Repository(layout_for(repo)).revision_path("m", outcome.previous)
    assert (kept / "1" / "model.py").read_text() == "by hand"


def pinned(repo: Path, revision: str) -> Path:
    """The one-model repository a Triton pod of ``revision`` loads ``m`` from."""
    return Path(layout_for(repo).pin_repository("m", revision))


def test_each_revision_is_pinned_whatever_the_live_link_says(repo: Path) -> None:
    sync_model(request(repo, "v1", "r1"))
    sync_model(request(repo, "v2", "r2"))
    assert live(repo) == "r2"
    # A pod of r1 (a canary's stable side, a rollout's old pods) still loads r1's files.
    assert (pinned(repo, "r1") / "m" / "1" / "model.py").read_text() == "v1"
    assert (pinned(repo, "r2") / "m" / "1" / "model.py").read_text() == "v2"
    assert [p.name for p in pinned(repo, "r1").iterdir()] == ["m"]  # Triton lists only m


def test_a_lost_pin_is_made_again_by_a_sync_at_the_same_revision(repo: Path) -> None:
    sync_model(request(repo, "v1", "r1"))
    (pinned(repo, "r1") / "m").unlink()
    again = sync_model(request(repo, "v1", "r1"))
    assert not again.changed and (pinned(repo, "r1") / "m" / "1" / "model.py").exists()


def test_a_repaired_revision_moves_its_pin_to_the_fresh_copy(repo: Path) -> None:
    sync_model(request(repo, "v1", "r1"))
    (repo / "m" / "1" / "model.py").write_text("tampered, and longer")
    sync_model(request(repo, "v1", "r1"))
    assert (pinned(repo, "r1") / "m").resolve().name == "r1.1"


def test_a_revision_still_served_is_kept_and_pins_of_collected_ones_go(repo: Path) -> None:
    sync_model(request(repo, "v1", "r1"))
    sync_model(request(repo, "v2", "r2"))
    third = sync_model(request(repo, "v3", "r3", keep=("r1",)))
    assert third.collected == ()  # r1 is the stable revision of a canary of r2
    assert (pinned(repo, "r1") / "m" / "1" / "model.py").read_text() == "v1"
    fourth = sync_model(request(repo, "v4", "r4"))
    assert fourth.collected == ("r1", "r2")
    assert not pinned(repo, "r1").exists() and not pinned(repo, "r2").exists()
    assert (pinned(repo, "r3") / "m").exists()


def test_remove_takes_the_model_and_its_revisions(repo: Path) -> None:
    sync_model(request(repo, "v1", "r1"))
    assert remove_model(layout_for(repo), "m") is True
    assert not (repo / "m").is_symlink() and not (repo / "m").exists()
    assert Repository(layout_for(repo)).revision_names("m") == []
    assert not pinned(repo, "r1").exists()
    assert remove_model(layout_for(repo), "m") is False


def test_a_second_sync_of_the_model_waits_for_the_lock_then_gives_up(repo: Path) -> None:
    sync_model(request(repo, "v1", "r1"))
    lock = Path(layout_for(repo).lock_path("m"))
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(LockBusy, match="still holds"):
            sync_model(request(repo, "v2", "r2", lock_timeout=0.3))
    assert live(repo) == "r1"


def _fds_on(path: Path) -> int:
    return sum(1 for fd in Path("/proc/self/fd").iterdir() if fd.resolve() == path)


def test_the_lock_holds_across_a_remove_that_deletes_its_file(repo: Path) -> None:
    """``--remove`` deletes locks/<model>.lock while holding it. A sync already
    waiting on that file and one started after the remove must still take turns,
    or the second's staging clean-up deletes the first's files mid-copy."""
    r = Repository(layout_for(repo))
    r.ensure_dirs()
    lock = Path(r.layout.lock_path("m"))
    inside: list[tuple[float, float]] = []

    def sync_holding_the_lock() -> None:
        with r.lock("m", 10):
            entered = time.monotonic()
            time.sleep(0.4)  # the work done under the lock
            inside.append((entered, time.monotonic()))

    with r.lock("m", 10):  # the remove
        waiter = threading.Thread(target=sync_holding_the_lock)
        waiter.start()
        deadline = time.monotonic() + 10
        while _fds_on(lock) < 2:  # the waiter has the old file open
            assert time.monotonic() < deadline, "the waiter never opened the lock file"
            time.sleep(0.01)
        lock.unlink()
    newcomer = threading.Thread(target=sync_holding_the_lock)
    newcomer.start()
    waiter.join(10)
    newcomer.join(10)
    (_, first_out), (second_in, _) = sorted(inside)
    assert first_out <= second_in, f"both held the lock at once: {inside}"


def test_a_revision_that_lost_files_under_the_sync_is_never_published(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_model(request(repo, "v1", "r1"))
    finish = Staging.finish

    def finish_then_lose_a_file(self: Staging, manifest: object) -> None:
        finish(self, manifest)  # type: ignore[arg-type]
        (self.root / "1" / "model.py").unlink()  # what a racing clean-up did

    monkeypatch.setattr(Staging, "finish", finish_then_lose_a_file)
    with pytest.raises(SyncError, match=r"incomplete \(1 of 2 files .*1/model.py \(missing\)"):
        sync_model(request(repo, "v2", "r2"))
    assert live(repo) == "r1" and (repo / "m" / "1" / "model.py").read_text() == "v1"
    assert Repository(layout_for(repo)).revision_names("m") == ["r1"]


def test_a_revision_that_cannot_be_pinned_is_not_published(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The volume out of inodes just before the pin (tests/chaos/test_sync_faults.py
    finds it on a real tmpfs): the sync fails with the live revision unchanged, not
    "failed" with the new revision already live; the rerun publishes it, no fetch."""
    sync_model(request(repo, "v1", "r1"))
    pin = Repository.pin

    def disk_full(self: Repository, model: str, revision: str, dirname: str) -> None:
        raise LocalStorageError("disk full while pinning: No space left on device")

    monkeypatch.setattr(Repository, "pin", disk_full)
    with pytest.raises(LocalStorageError, match="disk full while pinning"):
        sync_model(request(repo, "v2", "r2"))
    assert live(repo) == "r1" and (repo / "m" / "1" / "model.py").read_text() == "v1"
    monkeypatch.setattr(Repository, "pin", pin)
    rerun = sync_model(request(repo, "v2", "r2"))
    assert rerun.changed and rerun.fetched_bytes == 0 and live(repo) == "r2"
    assert (pinned(repo, "r2") / "m" / "1" / "model.py").read_text() == "v2"


def test_the_state_lives_beside_the_repository(repo: Path) -> None:
    layout = layout_for(repo)
    assert Path(layout.state) == repo.parent / ".tritonfleet" / "repository"
    assert not layout.state_inside_repository
    chosen = layout_for(repo, repo.parent / "state")
    assert Path(chosen.state) == repo.parent / "state"


# --- the command's --revision ------------------------------------------------------------


def sync_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(model_doc("m")))
    args = ["sync", "-f", str(manifest), "--repository", str(tmp_path / "v" / "repository")]
    rc = main([*args, *extra])
    return rc, capsys.readouterr().err


def computed_revision() -> str:
    return render_model(TritonModel.from_object(model_doc("m"))).revision


def test_the_sync_publishes_under_the_revision_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = sync_command(tmp_path, capsys, "--revision", computed_revision())
    assert rc == 0 and "level=warning" not in err
    config = tmp_path / "v" / "repository" / "m" / "config.pbtxt"
    assert computed_revision() in config.read_text()


def test_a_revision_that_differs_from_the_sync_s_own_wins_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sync image that renders differently from the operator: the operator's revision
    is what the loader waits for on every pod, so it is published under that one."""
    rc, err = sync_command(tmp_path, capsys, "--revision", "fromoperator")
    assert rc == 0
    assert "level=warning" in err and "revision differs" in err
    assert "given=fromoperator" in err and f"computed={computed_revision()}" in err
    config = (tmp_path / "v" / "repository" / "m" / "config.pbtxt").read_text()
    assert 'string_value: "fromoperator"' in config


def test_without_a_revision_the_sync_computes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = sync_command(tmp_path, capsys)
    assert rc == 0 and "level=warning" not in err
    published = (tmp_path / "v" / "repository" / "m" / "config.pbtxt").read_text()
    assert f'string_value: "{computed_revision()}"' in published
