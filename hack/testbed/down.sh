#!/usr/bin/env bash
# Stop the local Kubernetes testbed and remove its state (<repo>/.testbed/:
# etcd data, certificates, logs, kubeconfig, PV directories). The built
# binaries in ${TRITONFLEET_CACHE:-~/.cache/tritonfleet} are kept.
#
#   hack/testbed/down.sh        (make testbed-down)
#
# Env: TESTBED_NAME, TESTBED_DIR (as for up.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ! -d "$TESTBED_DIR" ]]; then
  tb_say "no testbed state in $TESTBED_DIR; nothing to do"
  exit 0
fi
if [[ ! -f "$TESTBED_MARKER" && -n "$(ls -A "$TESTBED_DIR")" ]]; then
  tb_die "$TESTBED_DIR was not created by hack/testbed/up.sh (no $(basename "$TESTBED_MARKER")); refusing to delete it"
fi

if [[ -z "${TESTBED_LOCK_HELD:-}" ]]; then
  exec 8>"$TESTBED_DIR/.lock"
  if ! flock -n 8; then
    tb_say "another up.sh/down.sh holds $TESTBED_DIR/.lock; waiting..."
    flock 8
  fi
fi

t0=$(date +%s)
if [[ -f "$TESTBED_CLUSTER_DIR/kwok.yaml" && -x "$KWOKCTL_BIN" ]]; then
  tb_say "deleting kwok cluster '$TESTBED_NAME'..."
  "$KWOKCTL_BIN" --name "$TESTBED_NAME" delete cluster --kubeconfig "$TESTBED_KUBECONFIG" 8>&- 2>&1 \
    | tb_format_kwokctl_log >&2 || tb_say "kwokctl delete cluster failed; killing the processes directly"
fi

# Whatever kwokctl did not stop (crashed kwokctl, deleted pid files, ...).
tb_stop_cluster_processes || tb_die "could not stop the processes of cluster '$TESTBED_NAME'"

# Containers a pod runner of this testbed left running (it died without stopping them):
# hack/devtools/pod_runner.py labels them with a hash of the testbed's state directory.
if [[ "$(id -u)" == 0 ]] && command -v podman >/dev/null 2>&1; then
  runner_id=$(printf '%s' "$(cd "$TESTBED_DIR" && pwd -P)" | sha256sum | cut -c1-12)
  export CONTAINERS_CONF="${CONTAINERS_CONF:-$TESTBED_REPO/hack/image/containers.conf}"
  left=$(podman ps --all --quiet --filter "label=io.tritonfleet.pod-runner=$runner_id" 2>/dev/null || true)
  if [[ -n "$left" ]]; then
    tb_say "removing $(wc -w <<<"$left") container(s) a pod runner left behind"
    # shellcheck disable=SC2086  # one id per word
    podman rm --force --time=0 $left >/dev/null 2>&1 || true
  fi
fi

if [[ -n "${TESTBED_KEEP_DIR:-}" ]]; then
  # Called from up.sh to recreate the cluster: keep the directory and its lock.
  find "$TESTBED_DIR" -mindepth 1 -maxdepth 1 ! -name .lock ! -name .gitignore ! -name .sessions \
    ! -name "$(basename "$TESTBED_MARKER")" \
    -exec rm -rf {} +
else
  rm -rf "$TESTBED_DIR"
fi
tb_say "testbed '$TESTBED_NAME' stopped and its state in $TESTBED_DIR removed in $(( $(date +%s) - t0 ))s (binaries kept in $TESTBED_BIN_ROOT)"
