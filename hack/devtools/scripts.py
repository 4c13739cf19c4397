"""Running the project's install/build scripts (hack/*/install.sh, hack/image/build.sh)
from the dev tooling: their progress streams to stderr while they run, their result
is the last line they print on stdout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_script(script: Path, tail_lines: int = 40) -> tuple[int, list[str], list[str]]:
    """Run ``bash script``: (exit code, its non-empty stdout lines, its last stderr lines)."""
    proc = subprocess.Popen(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    tail: list[str] = []
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:  # stream progress while it runs
        sys.stderr.write(line)
        sys.stderr.flush()
        tail = [*tail, line.rstrip()][-tail_lines:]
    out = proc.stdout.read()
    return proc.wait(), [ln for ln in out.splitlines() if ln.strip()], tail
