"""A real small filesystem for the tests that fill one: a tmpfs mounted for the
duration (``mount -t tmpfs`` needs root; without it the test fails, never skips).

Used by tests/integration/test_sync.py and tests/chaos/test_sync_faults.py."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """``mount`` (created) as a tmpfs with ``options`` (e.g. ``size=8m,nr_inodes=256``)."""
    if os.geteuid() != 0:
        pytest.fail(f"this test mounts a tmpfs ({options}), which needs root: run it as root")
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
