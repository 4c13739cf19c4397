#!/usr/bin/env bash
# Build the real Prometheus server from its Go module into the project's cache:
#
#   ${TRITONFLEET_CACHE:-$HOME/.cache/tritonfleet}/bin/prometheus-<module version>/prometheus
#
# Used by bench/bench_autoscaling.py, which measures the operator's queue-time
# chain against the same chain through Prometheus (15 s scrape). Only the
# static/file/http service discovery is compiled in (`-tags remove_all_sd`): the
# benchmark writes static_configs, and the cloud SDKs would multiply the build
# time on a small machine. The web UI assets are not embedded (no
# `builtinassets`); the HTTP API, which is all the benchmark uses, is complete.
#
# A cached binary is reused (well under a second, no Go, no network). The build
# is niced, runs under a lock shared with concurrent installs, writes to a
# temporary name and renames into place, so an interrupted build never looks
# finished. The path of the binary is printed last on stdout.
#
# Env: TRITONFLEET_CACHE  cache root (default ~/.cache/tritonfleet)
#      GO                 go binary (default: `go` on PATH, else /usr/local/go/bin/go)
#      GOFLAGS            passed through (e.g. -p=1 on a machine short of memory)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE=${TRITONFLEET_CACHE:-$HOME/.cache/tritonfleet}
DIR=$CACHE/bin/prometheus-$PROMETHEUS_MODULE_VERSION
DEST=$DIR/prometheus
LOG_DIR=$CACHE/logs
LOG=$LOG_DIR/prometheus-$PROMETHEUS_MODULE_VERSION.log

say() { printf '[prometheus] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

if [[ -x "$DEST" ]]; then
  say "prometheus $PROMETHEUS_VERSION cached"
  echo "$DEST"
  exit 0
fi

GO=${GO:-}
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO=$(command -v go)
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else die "no Go toolchain (need Go >= 1.26.7 on PATH or at /usr/local/go/bin/go)"
  fi
fi
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"

mkdir -p "$DIR" "$LOG_DIR"
exec 9>"$CACHE/.prometheus-build.lock"
if ! flock -n 9; then
  say "another build holds $CACHE/.prometheus-build.lock; waiting..."
  flock 9
fi
if [[ -x "$DEST" ]]; then  # built while we waited
  echo "$DEST"
  exit 0
fi

rm -rf "$DIR"/.gobin.*
gobin=$(mktemp -d "$DIR/.gobin.XXXXXX")
trap 'rm -rf "$gobin"' EXIT
pkg=github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION
ldflags="-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"
ldflags+=" -X github.com/prometheus/common/version.Branch=tritonfleet-bench"
say "building prometheus $PROMETHEUS_VERSION ($pkg; takes minutes on 2 cores with a cold Go cache; log: $LOG)..."
start=$(date +%s)
if ! (cd "$gobin" && GOBIN="$gobin" nice -n 10 "$GO" install -trimpath -tags netgo,remove_all_sd \
        -ldflags "$ldflags" "$pkg") >"$LOG" 2>&1; then
  say "FAILED to build prometheus (log: $LOG); last lines:"
  tail -n 40 "$LOG" | sed 's/^/    /' >&2
  exit 1
fi
"$gobin/prometheus" --version >>"$LOG" 2>&1 || die "the built prometheus does not run (log: $LOG)"
mv -f "$gobin/prometheus" "$DEST"
say "built prometheus $PROMETHEUS_VERSION in $(( $(date +%s) - start ))s -> $DEST"
echo "$DEST"
