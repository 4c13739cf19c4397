# Shared settings for hack/testbed/{up,down}.sh. Source it; do not run it.
# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts sourcing this file

TESTBED_HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TESTBED_REPO=$(cd "$TESTBED_HACK_DIR/../.." && pwd)
# shellcheck source=versions.env
source "$TESTBED_HACK_DIR/versions.env"

TESTBED_NAME=${TESTBED_NAME:-tritonfleet}
# All state of one testbed lives here (kwokctl workdir, kubeconfig, PV dirs).
# Another TESTBED_NAME gets its own directory by default (.testbed-<name>), so a
# second testbed never shares, or removes, the default one's state.
if [[ $TESTBED_NAME == tritonfleet ]]; then
  TESTBED_DIR=${TESTBED_DIR:-$TESTBED_REPO/.testbed}
else
  TESTBED_DIR=${TESTBED_DIR:-$TESTBED_REPO/.testbed-$TESTBED_NAME}
fi
TESTBED_CACHE=${TRITONFLEET_CACHE:-$HOME/.cache/tritonfleet}
TESTBED_BIN_ROOT=$TESTBED_CACHE/bin

export KWOK_WORKDIR=$TESTBED_DIR/kwok
TESTBED_CLUSTER_DIR=$KWOK_WORKDIR/clusters/$TESTBED_NAME

# Loopback networks of this testbed. Several testbeds run on one machine at
# once, and their local pod runners bind Service cluster IPs and pod IPs for
# real, so each testbed gets its own pair: index 0 for the default name,
# otherwise 1 + (sum of the name's bytes) % 31 (hack/devtools/testbed.py
# computes the same), or TESTBED_NET_INDEX (0..31).
#   Services:          127.<96+i>.0.0/16 (kube-apiserver --service-cluster-ip-range)
#   local-runner pods: 127.<1+i>.0.0/16  (ConfigMap kube-system/tritonfleet-local-runner, podCIDR)
if [[ -n ${TESTBED_NET_INDEX:-} ]]; then
  TESTBED_NET_INDEX=$((TESTBED_NET_INDEX % 32))
elif [[ $TESTBED_NAME == tritonfleet ]]; then
  TESTBED_NET_INDEX=0
else
  TESTBED_NET_INDEX=$(( $(printf %s "$TESTBED_NAME" | od -An -tu1 | awk '{for (i = 1; i <= NF; i++) s += $i} END {print s + 0}') % 31 + 1 ))
fi
TESTBED_SERVICE_CIDR=127.$((96 + TESTBED_NET_INDEX)).0.0/16
TESTBED_RUNNER_POD_CIDR=127.$((1 + TESTBED_NET_INDEX)).0.0/16
# Control-plane ports of this testbed: 21000 + 10 x index, six of them (up.sh).
TESTBED_PORT_BASE=$((21000 + 10 * TESTBED_NET_INDEX))
TESTBED_KUBECONFIG=$TESTBED_DIR/kubeconfig
TESTBED_VOLUMES_DIR=$TESTBED_DIR/volumes
# Marker proving a directory was created by up.sh (down.sh only deletes such dirs).
TESTBED_MARKER=$TESTBED_DIR/.tritonfleet-testbed

KUBE_APISERVER_BIN=$TESTBED_BIN_ROOT/kube-apiserver-$KUBE_VERSION/kube-apiserver
KUBE_CONTROLLER_MANAGER_BIN=$TESTBED_BIN_ROOT/kube-controller-manager-$KUBE_VERSION/kube-controller-manager
KUBE_SCHEDULER_BIN=$TESTBED_BIN_ROOT/kube-scheduler-$KUBE_VERSION/kube-scheduler
KUBECTL_BIN=$TESTBED_BIN_ROOT/kubectl-$KUBE_VERSION/kubectl
ETCD_BIN=$TESTBED_BIN_ROOT/etcd-$ETCD_VERSION/etcd
KWOK_BIN=$TESTBED_BIN_ROOT/kwok-$KWOK_VERSION/kwok
KWOK_STAGES_DIR=$TESTBED_BIN_ROOT/kwok-$KWOK_VERSION/stages
KWOKCTL_BIN=$TESTBED_BIN_ROOT/kwokctl-$KWOK_VERSION/kwokctl
HELM_BIN=$TESTBED_BIN_ROOT/helm-$HELM_VERSION/helm

# Our binaries first; kwokctl itself only uses the explicit *Binary paths.
PATH="$(dirname "$KWOKCTL_BIN"):$(dirname "$KUBECTL_BIN"):$(dirname "$HELM_BIN"):$PATH"
export PATH

tb_say() { printf '[testbed] %s\n' "$*" >&2; }
tb_die() { tb_say "ERROR: $*"; exit 1; }

tb_kubectl() { "$KUBECTL_BIN" --kubeconfig "$TESTBED_KUBECONFIG" "$@"; }

# PIDs of processes started for this cluster: kwokctl execs every component
# through a symlink in <cluster dir>/bin/, so argv[0] identifies them exactly
# (an engineer's `tail -f <cluster dir>/logs/...` is not matched).
tb_cluster_pids() {
  local p args
  for p in /proc/[0-9]*; do
    { mapfile -d '' -n 1 args <"$p/cmdline"; } 2>/dev/null || continue
    [[ ${#args[@]} -gt 0 && "${args[0]}" == "$TESTBED_CLUSTER_DIR/bin/"* ]] || continue
    echo "${p#/proc/}"
  done
}

# Succeeds when the API server answers /readyz with our kubeconfig.
tb_apiserver_ready() {
  [[ -f "$TESTBED_KUBECONFIG" && -x "$KUBECTL_BIN" ]] || return 1
  tb_kubectl get --raw /readyz --request-timeout=3s >/dev/null 2>&1
}

# kwokctl logs JSON when not on a terminal; keep "LEVEL message (elapsed)".
tb_format_kwokctl_log() {
  sed -u -E \
    -e 's/^\{.*"level":"([A-Z]+)".*"msg":"([^"]*)"(.*"human":"([^"]*)")?.*$/[kwokctl] \1 \2 \4/' \
    -e 't' -e 's/^/[kwokctl] /'
}

# Stop every process of this cluster: SIGTERM, up to 5 s grace, then SIGKILL.
# (kube-apiserver may ignore SIGTERM for a long time once etcd is gone.)
tb_stop_cluster_processes() {
  local pids _
  pids=$(tb_cluster_pids)
  [[ -z "$pids" ]] && return 0
  tb_say "stopping processes of cluster '$TESTBED_NAME': $(echo $pids)"
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 25); do
    pids=$(tb_cluster_pids)
    [[ -z "$pids" ]] && return 0
    sleep 0.2
  done
  tb_say "killing (SIGKILL) processes that ignored SIGTERM: $(echo $pids)"
  kill -KILL $pids 2>/dev/null || true
  for _ in $(seq 1 25); do
    pids=$(tb_cluster_pids)
    [[ -z "$pids" ]] && return 0
    sleep 0.2
  done
  tb_say "processes of cluster '$TESTBED_NAME' are still running: $(echo $pids)"
  return 1
}
