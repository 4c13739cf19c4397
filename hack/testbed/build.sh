#!/usr/bin/env bash
# Build the testbed's binaries from Go modules into a version-keyed cache
# outside the repository:
#
#   ${TRITONFLEET_CACHE:-$HOME/.cache/tritonfleet}/bin/<component>-<version>/<binary>
#
# Components: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
# (k8s.io/kubernetes via ./go.mod), etcd (./etcd/go.mod), kwok, kwokctl
# (sigs.k8s.io/kwok) and helm (helm.sh/helm/v3). A component whose binary
# exists is skipped, so a warm run takes well under a second. Binaries are
# written under a temporary name and renamed into place, so an interrupted build
# never leaves something that looks finished.
#
# Usage: hack/testbed/build.sh [component...]     (default: all)
# Env:   TRITONFLEET_CACHE  cache root (default ~/.cache/tritonfleet)
#        GO                 go binary (default: `go` on PATH, else /usr/local/go/bin/go)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE=${TRITONFLEET_CACHE:-$HOME/.cache/tritonfleet}
BIN_ROOT=$CACHE/bin
LOG_DIR=$CACHE/logs

ALL_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwokctl helm)

say() { printf '[testbed] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

component_version() {
  case "$1" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl) echo "$KUBE_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kwok|kwokctl) echo "$KWOK_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    *) die "unknown component '$1' (known: ${ALL_COMPONENTS[*]})" ;;
  esac
}

component_path() { echo "$BIN_ROOT/$1-$(component_version "$1")/$1"; }

components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=("${ALL_COMPONENTS[@]}")

# Fast path: everything is cached -> no Go, no lock, no network.
missing=()
for c in "${components[@]}"; do
  [[ -x "$(component_path "$c")" ]] || missing+=("$c")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  say "all components cached"
  echo "[testbed] bin dir: $BIN_ROOT" >&2
  exit 0
fi

# --- toolchain -------------------------------------------------------------
GO=${GO:-}
if [[ -z "$GO" ]]; then
  if command -v go >/dev/null 2>&1; then GO=$(command -v go)
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else die "no Go toolchain found (need Go >= $GO_MIN_VERSION on PATH or at /usr/local/go/bin/go); cannot build: ${missing[*]}"
  fi
fi
[[ -x "$GO" || -x "$(command -v "$GO" 2>/dev/null)" ]] || die "Go toolchain '$GO' not found; cannot build: ${missing[*]}"
go_version=$("$GO" env GOVERSION 2>/dev/null | sed 's/^go//') || true
[[ -n "$go_version" ]] || die "'$GO env GOVERSION' failed; need Go >= $GO_MIN_VERSION to build: ${missing[*]}"
if ! printf '%s\n%s\n' "$GO_MIN_VERSION" "$go_version" | sort -V -C; then
  die "Go $go_version at $GO is too old; need >= $GO_MIN_VERSION to build: ${missing[*]}"
fi
# Never let a go.mod `toolchain` line trigger a toolchain download; stamping
# VCS info would run git on the surrounding checkout for the etcd module.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"

# Consistency between versions.env and the go.mod files.
grep -qE "^require k8s.io/kubernetes ${KUBE_VERSION}\$" "$HERE/go.mod" \
  || die "hack/testbed/go.mod does not require k8s.io/kubernetes $KUBE_VERSION (versions.env)"
if grep -E '^\s+k8s.io/[a-z0-9-]+ => k8s.io/[a-z0-9-]+ v' "$HERE/go.mod" | grep -vq " ${KUBE_STAGING_VERSION}\$"; then
  die "hack/testbed/go.mod has k8s.io staging replaces not at $KUBE_STAGING_VERSION (versions.env)"
fi
grep -qE "go.etcd.io/etcd/server/v3 ${ETCD_VERSION}\$" "$HERE/etcd/go.mod" \
  || die "hack/testbed/etcd/go.mod does not require go.etcd.io/etcd/server/v3 $ETCD_VERSION (versions.env)"

mkdir -p "$BIN_ROOT" "$LOG_DIR"
# Serialise concurrent builds (several engineers / test sessions on one machine).
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
  say "another build holds $CACHE/.build.lock; waiting..."
  flock 9
fi

kube_ldflags() {
  local minor date pkg flags="-s -w"
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  date=$(cd "$HERE" && "$GO" list -m -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes 2>/dev/null || true)
  # kwokctl parses `<binary> --version`, so the version must be stamped.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit="
    [[ -n "$date" ]] && flags+=" -X $pkg.buildDate=$date"
  done
  echo "$flags"
}

# build_one <component> <tmp-output-file>: writes the binary to the tmp path.
build_one() {
  local c=$1 out=$2 gobin
  case "$c" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl)
      (cd "$HERE" && "$GO" build -trimpath -ldflags "$(kube_ldflags)" -o "$out" "k8s.io/kubernetes/cmd/$c") ;;
    etcd)
      (cd "$HERE/etcd" && "$GO" build -trimpath -ldflags "-s -w" -o "$out" .) ;;
    kwok|kwokctl|helm)
      gobin=$(mktemp -d "$(dirname "$out")/.gobin.XXXXXX")
      local pkg ldflags="-s -w"
      case "$c" in
        kwok|kwokctl) pkg="sigs.k8s.io/kwok/cmd/$c@$KWOK_VERSION" ;;
        helm) pkg="helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
              ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" ;;
      esac
      (cd "$gobin" && GOBIN="$gobin" "$GO" install -trimpath -ldflags "$ldflags" "$pkg") \
        && mv -f "$gobin/$c" "$out"
      local rc=$?
      rm -rf "$gobin"
      return $rc ;;
  esac
}

total_start=$(date +%s)
for c in "${missing[@]}"; do
  v=$(component_version "$c")
  dest=$(component_path "$c")
  [[ -x "$dest" ]] && continue   # built meanwhile by a concurrent build
  dir=$(dirname "$dest")
  mkdir -p "$dir"
  log="$LOG_DIR/$c-$v.log"
  case "$c" in
    kube-apiserver|kube-controller-manager|kwok|helm) hint=" (takes minutes on 2 cores when the Go build cache is cold)" ;;
    *) hint="" ;;
  esac
  say "building $c $v$hint..."
  start=$(date +%s)
  tmp="$dir/.$c.partial.$$"
  # Leftovers of an interrupted build (we hold the lock, so nobody else's).
  rm -rf "$dir"/.gobin.* "$dir"/.*.partial.*
  if ! build_one "$c" "$tmp" >"$log" 2>&1; then
    rm -f "$tmp"
    say "FAILED to build $c $v (log: $log); last lines:"
    tail -n 40 "$log" | sed 's/^/    /' >&2
    exit 1
  fi
  if [[ "$c" == kwok ]]; then
    # kwok's default Node/Pod Stage manifests, used by up.sh to derive the
    # testbed's stages (see README: local-runner pods).
    stages_src="$("$GO" env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
    rm -rf "$dir/stages" && mkdir -p "$dir/stages"
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
             pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      [[ -f "$stages_src/$f" ]] || { rm -f "$tmp"; die "kwok stage manifest $stages_src/$f not found"; }
      install -m 0644 "$stages_src/$f" "$dir/stages/"
    done
  fi
  chmod 0755 "$tmp"
  mv -f "$tmp" "$dest"
  say "built $c $v in $(( $(date +%s) - start ))s -> $dest"
done
say "build finished in $(( $(date +%s) - total_start ))s"
echo "[testbed] bin dir: $BIN_ROOT" >&2
