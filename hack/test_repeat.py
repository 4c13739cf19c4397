"""Run a pytest selection several times and say which tests failed in which run.

``make test-repeat N=3 TIER=integration`` calls this. A test that fails in one run
of three is a flake to fix, not to retry: the summary lists every such test with
the runs it failed in and the first line of its failure, so flakiness shows up
before CI finds it. Exit status 1 when any run had a failure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".test-repeat"


def _failures(report: Path) -> dict[str, str]:
    """test id -> first line of its failure or error, from a JUnit XML report."""
    if not report.exists():
        return {"<session>": "pytest wrote no report (crashed or interrupted)"}
    failed: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - our own file
        for child in case:
            if child.tag in ("failure", "error"):
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                message = (child.get("message") or child.text or "").strip().splitlines()
                failed[name] = message[0][:200] if message else child.tag
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("paths", nargs="+", help="what to run, then -- and pytest flags")
    args, extra = parser.parse_known_args(argv)
    pytest_args = [a for a in args.paths if a != "--"] + [a for a in extra if a != "--"]
    OUT.mkdir(exist_ok=True)
    by_test: dict[str, list[int]] = defaultdict(list)
    first_message: dict[str, str] = {}
    summary = []
    for run in range(1, args.runs + 1):
        report = OUT / f"run-{run}.xml"
        report.unlink(missing_ok=True)
        started = time.monotonic()
        print(f"[test-repeat] run {run}/{args.runs}: pytest {' '.join(pytest_args)}", flush=True)
        rc = subprocess.call(
            [sys.executable, "-m", "pytest", *pytest_args, f"--junitxml={report}", "-q"],
            cwd=ROOT,
        )
        elapsed = time.monotonic() - started
        failed = _failures(report)
        for name, message in failed.items():
            by_test[name].append(run)
            first_message.setdefault(name, message)
        summary.append(f"run {run}: exit {rc}, {len(failed)} failed, {elapsed:.0f} s")
    print("\n[test-repeat] " + "\n[test-repeat] ".join(summary))
    if not by_test:
        print(f"[test-repeat] every test passed in all {args.runs} runs")
        return 0
    print(f"[test-repeat] {len(by_test)} test(s) failed at least once:")
    for name, runs in sorted(by_test.items()):
        print(f"  {name}  (runs {', '.join(map(str, runs))}): {first_message[name]}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
