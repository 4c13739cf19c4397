"""``tritonfleet probe``: GET URLs until each answers 200 (with the text asked for).

What the chart's ``helm test`` pod runs against the operator and the gateway; it works
from any debug pod with the tritonfleet image too (the image has no curl).
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

from tritonfleet.cli.codes import EXIT_INVALID, EXIT_OK, EXIT_USAGE


def add_parser(subparsers: Any) -> None:
    probe = subparsers.add_parser(
        "probe",
        help="GET each URL and fail unless it answers 200 (what `helm test` runs)",
        description="GET each URL; exit 1 naming the first that does not answer 200 (or lacks "
        "--expect TEXT) within --timeout.",
    )
    probe.add_argument("urls", nargs="+", metavar="URL")
    probe.add_argument("--expect", action="append", default=[], metavar="URL=TEXT",
                       help="the answer of URL must contain TEXT (repeatable)")  # fmt: skip
    probe.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    probe.set_defaults(func=cmd_probe)


def cmd_probe(args: argparse.Namespace, out: TextIO) -> int:
    expected: dict[str, str] = {}
    for pair in args.expect:
        url, sep, text = pair.partition("=")
        if not sep:
            print(f"error: --expect {pair!r} is not URL=TEXT", file=sys.stderr)
            return EXIT_USAGE
        expected[url] = text
    # Straight to the address: a proxy from the environment is not on the way to a Service.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + args.timeout
    for url in args.urls:
        while True:
            try:
                with opener.open(url, timeout=5) as response:
                    body = response.read().decode(errors="replace")
                want = expected.get(url, "")
                if want in body:
                    print(f"ok {url}", file=out)
                    break
                problem = f"answered without {want!r}"
            except (urllib.error.URLError, OSError) as error:
                problem = str(error)
            if time.monotonic() > deadline:
                print(f"error: {url}: {problem}", file=sys.stderr)
                return EXIT_INVALID
            time.sleep(1)
    return EXIT_OK
