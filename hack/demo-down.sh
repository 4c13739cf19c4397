#!/usr/bin/env bash
# `make demo-down`: stop what `make demo` left running (tritonserver, the testbed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -f "$ROOT/.demo/triton.pid" ]]; then
    kill -- "-$(cat "$ROOT/.demo/triton.pid")" 2>/dev/null || true
    rm -f "$ROOT/.demo/triton.pid"
fi
"$ROOT/hack/testbed/down.sh"
rm -rf "$ROOT/.demo"
