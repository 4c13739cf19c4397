"""The testbed's fault helpers that need no cluster: when a killed control-plane
component counts as gone (``Testbed.restart_component`` waits for it before
starting the new one on the same port), and the openai load's slicing."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from hack.devtools.openai_load import Answer, Load, summary
from hack.devtools.testbed import _pid_running, wait_for


def test_a_killed_unreaped_process_is_not_running_though_its_pid_exists() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _pid_running(child.pid)
        child.send_signal(signal.SIGKILL)
        # Not reaped yet: a zombie, as kwokctl's detached components stay.
        wait_for(lambda: not _pid_running(child.pid), timeout=10, interval=0.02,
                 what="the killed child to count as gone")  # fmt: skip
    finally:
        child.kill()
        child.wait()
    assert not _pid_running(child.pid)


def test_a_stopped_process_is_still_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{child.pid}/stat")
        wait_for(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T", timeout=10,
                 interval=0.02, what="the child stopped")  # fmt: skip
        assert _pid_running(child.pid)
    finally:
        child.kill()
        child.wait()


def test_load_slices_answers_by_time_and_model_and_summarises_failures() -> None:
    load = Load("http://127.0.0.1:1/v1", "token")
    load.answers += [
        Answer(1.0, 0.1, "a", "triton", "pod-a"),
        Answer(2.0, 0.3, "b", "error", None, "APIStatusError: 503"),
        Answer(3.0, 0.2, "a", "hosted", None),
    ]
    assert [a.ended for a in load.between(1.5, 3.5)] == [2.0, 3.0]
    assert [a.ended for a in load.between(0, 10, "a")] == [1.0, 3.0]
    assert [a.model for a in load.failures()] == ["b"]
    assert summary(load.answers) == "n=3 failed=1 p50=200ms max=300ms"
    assert summary([]) == "n=0"
