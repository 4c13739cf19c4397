#!/usr/bin/env bash
# `make demo-down`: stop what `make demo` left running: the pod runner (and with
# it every pod process it runs), the hosted API stand-in, the testbed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for what in runner hosted triton; do
    pidfile="$ROOT/.demo/$what.pid"
    [[ -f "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    # SIGTERM first: the runner stops its pods' processes before it exits.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pidfile"
done
"$ROOT/hack/testbed/down.sh"
rm -rf "$ROOT/.demo"
