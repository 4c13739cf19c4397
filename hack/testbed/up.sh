#!/usr/bin/env bash
# Start (or reuse) the local Kubernetes testbed: a kwokctl "binary runtime"
# cluster made of locally built etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok, with 4 fake GPU nodes, 2 fake CPU nodes, a default
# StorageClass and a pool of static hostPath PersistentVolumes.
#
#   hack/testbed/up.sh          (make testbed-up)
#
# Env: TESTBED_NAME (default tritonfleet), TESTBED_DIR (default <repo>/.testbed),
#      TESTBED_PVS (number of static PVs, default 24), TRITONFLEET_CACHE,
#      TESTBED_TIMEOUT (seconds to wait for readiness, default 180),
#      TESTBED_HPA_SYNC_PERIOD (kube-controller-manager HPA sync period, default 15s),
#      TESTBED_LOCAL_RUNNER_IMAGES (comma-separated image prefixes whose pods get
#        the tritonfleet.io/local-runner=true label; default none).
# Prints the kubeconfig path at the end; see hack/testbed/README.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TESTBED_PVS=${TESTBED_PVS:-24}
TESTBED_TIMEOUT=${TESTBED_TIMEOUT:-180}
TESTBED_HPA_SYNC_PERIOD=${TESTBED_HPA_SYNC_PERIOD:-15s}
TESTBED_LOCAL_RUNNER_IMAGES=${TESTBED_LOCAL_RUNNER_IMAGES:-}
GPU_NODES=4
CPU_NODES=2
NODE_COUNT=$((GPU_NODES + CPU_NODES))
LOCAL_RUNNER_LABEL=tritonfleet.io/local-runner
# Every address the testbed hands out is loopback (127.0.0.0/8): fake pods,
# nodes and Services never lead a client to a private or public address
# (TESTBED_SERVICE_CIDR and TESTBED_RUNNER_POD_CIDR: see lib.sh).

t0=${EPOCHREALTIME//[.,]/}
elapsed() { local d=$(( (${EPOCHREALTIME//[.,]/} - t0) / 100000 )); echo "$((d / 10)).$((d % 10))s"; }

# --- binaries ----------------------------------------------------------------
"$TESTBED_HACK_DIR/build.sh"

ensure_openssl() {
  command -v openssl >/dev/null 2>&1 && return 0
  tb_say "openssl not found: installing the Debian package 'openssl' with apt-get"
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null \
    || tb_die "could not install openssl with apt-get; install it and re-run"
}

mkdir -p "$TESTBED_DIR"
touch "$TESTBED_MARKER"
# Keep git from ever seeing the state directory.
[[ -f "$TESTBED_DIR/.gitignore" ]] || printf '# created by hack/testbed/up.sh\n*\n' >"$TESTBED_DIR/.gitignore"

exec 8>"$TESTBED_DIR/.lock"
if ! flock -n 8; then
  tb_say "another up.sh/down.sh holds $TESTBED_DIR/.lock; waiting..."
  flock 8
fi

nodes_ready_count() {
  tb_kubectl get nodes -l tritonfleet.io/testbed=true --request-timeout=5s \
    -o jsonpath='{range .items[*]}{range .status.conditions[?(@.type=="Ready")]}{.status}{"\n"}{end}{end}' 2>/dev/null \
    | grep -c '^True$' || true
}

# --- reuse --------------------------------------------------------------------
service_cidr() {
  tb_kubectl get servicecidr kubernetes --request-timeout=5s -o jsonpath='{.spec.cidrs[0]}' 2>/dev/null || true
}
if [[ -f "$TESTBED_CLUSTER_DIR/kwok.yaml" ]]; then
  if tb_apiserver_ready && [[ $(nodes_ready_count) -eq $NODE_COUNT ]] \
      && [[ $(service_cidr) == "$TESTBED_SERVICE_CIDR" ]]; then
    tb_say "cluster '$TESTBED_NAME' is already running and healthy; reusing it"
    tb_say "kubeconfig: $TESTBED_KUBECONFIG"
    echo "$TESTBED_KUBECONFIG"
    exit 0
  fi
  tb_say "cluster '$TESTBED_NAME' exists in $TESTBED_CLUSTER_DIR but is not healthy (or has another Service range than $TESTBED_SERVICE_CIDR); recreating it"
  TESTBED_LOCK_HELD=1 TESTBED_KEEP_DIR=1 "$TESTBED_HACK_DIR/down.sh" 8>&-
fi
# Processes left over from a cluster directory that was deleted by hand.
if [[ -n "$(tb_cluster_pids)" ]]; then
  tb_say "found stray processes of a previous '$TESTBED_NAME' cluster"
  tb_stop_cluster_processes || tb_die "could not stop them"
fi

# --- front-proxy (aggregation layer) PKI -----------------------------------------
# kwokctl points --proxy-client-cert-file at its admin cert and sets no
# --requestheader-* flags, so an aggregated API server could not authenticate
# the kube-apiserver's proxied requests. Give it a real front-proxy CA.
ensure_openssl
FP_DIR=$TESTBED_DIR/pki/front-proxy
if [[ ! -s "$FP_DIR/front-proxy-client.crt" ]]; then
  rm -rf "$FP_DIR"; mkdir -p "$FP_DIR"
  (
    cd "$FP_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout front-proxy-ca.key -out front-proxy-ca.crt -days 3650 \
      -subj "/CN=tritonfleet-front-proxy-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout front-proxy-client.key -out front-proxy-client.csr -subj "/CN=front-proxy-client"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
      -CAcreateserial -out front-proxy-client.crt -days 3650 -extfile client.ext
    rm -f front-proxy-client.csr client.ext front-proxy-ca.srl
  ) >"$TESTBED_DIR/openssl.log" 2>&1 || { cat "$TESTBED_DIR/openssl.log" >&2; tb_die "generating front-proxy certificates failed"; }
fi

# --- kwokctl configuration -----------------------------------------------------------
# kwok's default stages (from the pinned kwok module, copied by build.sh), with
# one extra selector on every Pod stage so that pods labelled
# tritonfleet.io/local-runner=true are never touched by kwok: no Running/Ready
# status, no pod IP, no completion, no final deletion. The real scheduler still
# binds them; a local runner (the e2e harness) owns their status and deletion.
[[ -d "$KWOK_STAGES_DIR" ]] || tb_die "kwok stage manifests missing in $KWOK_STAGES_DIR (re-run hack/testbed/build.sh after deleting $(dirname "$KWOK_BIN"))"
render_stages() {
  local f
  for f in node-initialize node-heartbeat-with-lease pod-ready pod-complete pod-delete; do
    echo "---"
    if [[ $f == pod-* ]]; then
      awk -v label="$LOCAL_RUNNER_LABEL" '
        { print }
        /^    matchExpressions:[[:space:]]*$/ && !done {
          printf "    - key: %c.metadata.labels[\"%s\"]%c\n", 39, label, 39
          print  "      operator: NotIn"
          print  "      values:"
          printf "      - %ctrue%c\n", 39, 39
          done = 1
        }
        END { if (!done) exit 3 }' "$KWOK_STAGES_DIR/$f.yaml" \
        || tb_die "could not add the local-runner selector to kwok stage $f"
    else
      cat "$KWOK_STAGES_DIR/$f.yaml"
    fi
  done
}

KWOKCTL_CONFIG=$TESTBED_DIR/kwokctl.yaml
{
  cat <<EOF
# Generated by hack/testbed/up.sh -- do not edit.
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  kubeVersion: $KUBE_VERSION
  etcdVersion: ${ETCD_VERSION#v}
  kwokVersion: $KWOK_VERSION
  # Only local binaries: nothing is downloaded.
  etcdBinary: $ETCD_BIN
  kubeApiserverBinary: $KUBE_APISERVER_BIN
  kubeControllerManagerBinary: $KUBE_CONTROLLER_MANAGER_BIN
  kubeSchedulerBinary: $KUBE_SCHEDULER_BIN
  kubectlBinary: $KUBECTL_BIN
  kwokControllerBinary: $KWOK_BIN
  quietPull: true
  securePort: true
  # Fixed ports per testbed, below kwokctl's own pick (free ports from 32767 down)
  # and below Linux's ephemeral range: a component restarted by the chaos suite
  # finds its port free again, never taken by another testbed starting meanwhile.
  kubeApiserverPort: $((TESTBED_PORT_BASE))
  etcdPort: $((TESTBED_PORT_BASE + 1))
  etcdPeerPort: $((TESTBED_PORT_BASE + 2))
  kubeControllerManagerPort: $((TESTBED_PORT_BASE + 3))
  kubeSchedulerPort: $((TESTBED_PORT_BASE + 4))
  kwokControllerPort: $((TESTBED_PORT_BASE + 5))
  kubeAuthorization: true
  kubeAdmission: true
  cacheDir: $KWOK_WORKDIR/cache
componentsPatches:
- name: kube-apiserver
  extraArgs:
  # Aggregation layer: dial the APIService's Service by its ClusterIP (routing
  # to Endpoints is off: Endpoints reject loopback pod IPs, and the ClusterIP is
  # loopback, served by the local pod runner playing kube-proxy), and
  # authenticate to aggregated API servers with a dedicated front-proxy cert.
  - {key: enable-aggregator-routing, value: "false"}
  # Reach "kubelets" (kubectl logs/exec) by the nodes' loopback InternalIP, never by
  # resolving their hostnames through the machine's DNS server.
  - {key: kubelet-preferred-address-types, value: "InternalIP"}
  # Loopback Service range: ClusterIPs are local addresses nothing but the
  # local pod runner listens on (never a private-range address).
  # (no "override": kwokctl sets no such flag, and override of an unset key drops it)
  - {key: service-cluster-ip-range, value: "$TESTBED_SERVICE_CIDR"}
  - {key: requestheader-client-ca-file, value: "$FP_DIR/front-proxy-ca.crt"}
  - {key: requestheader-allowed-names, value: front-proxy-client}
  - {key: requestheader-username-headers, value: X-Remote-User}
  - {key: requestheader-group-headers, value: X-Remote-Group}
  - {key: requestheader-extra-headers-prefix, value: X-Remote-Extra-}
  - {key: proxy-client-cert-file, value: "$FP_DIR/front-proxy-client.crt", override: true}
  - {key: proxy-client-key-file, value: "$FP_DIR/front-proxy-client.key", override: true}
  # MutatingAdmissionPolicy (beta, off by default): used by local-runner-policy.yaml.
  - {key: feature-gates, value: MutatingAdmissionPolicy=true}
  - {key: runtime-config, value: admissionregistration.k8s.io/v1beta1=true}
- name: kube-controller-manager
  extraArgs:
  # (no "override": kwokctl sets no such flag, and override of an unset key drops it)
  - {key: service-cluster-ip-range, value: "$TESTBED_SERVICE_CIDR"}
  - {key: horizontal-pod-autoscaler-sync-period, value: "$TESTBED_HPA_SYNC_PERIOD"}
- name: kwok-controller
  extraArgs:
  # Manage only nodes annotated kwok.x-k8s.io/node=fake, so that other
  # (e.g. harness-registered) nodes can coexist.
  - {key: manage-all-nodes, value: "false", override: true}
  - {key: manage-nodes-with-annotation-selector, value: kwok.x-k8s.io/node=fake}
EOF
  render_stages
} >"$KWOKCTL_CONFIG"

# --- create the cluster ---------------------------------------------------------------
tb_say "creating kwok cluster '$TESTBED_NAME' (state: $TESTBED_CLUSTER_DIR)..."
rm -f "$TESTBED_KUBECONFIG"
if ! "$KWOKCTL_BIN" --name "$TESTBED_NAME" --config "$KWOKCTL_CONFIG" \
      create cluster --runtime binary --kubeconfig "$TESTBED_KUBECONFIG" --timeout 5m \
      8>&- 2>&1 | tb_format_kwokctl_log >&2; then
  tb_say "kwokctl create cluster failed; component logs:"
  for l in "$TESTBED_CLUSTER_DIR"/logs/*.log; do
    [[ -f "$l" ]] || continue
    echo "---- $l (tail)" >&2; tail -n 15 "$l" >&2
  done
  tb_die "could not create the cluster (state left in $TESTBED_CLUSTER_DIR; run hack/testbed/down.sh to clean up)"
fi
[[ -s "$TESTBED_KUBECONFIG" ]] || cp "$TESTBED_CLUSTER_DIR/kubeconfig.yaml" "$TESTBED_KUBECONFIG"
tb_kubectl config use-context "kwok-$TESTBED_NAME" >/dev/null 2>&1 || true

wait_until() { # wait_until <what> <timeout-seconds> <command...>
  local what=$1 timeout=$2 deadline; shift 2
  deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= deadline )); then
      tb_die "timed out after ${timeout}s waiting for $what (logs: $TESTBED_CLUSTER_DIR/logs/)"
    fi
    sleep 0.5
  done
}
wait_until "the API server to be ready (/readyz)" "$TESTBED_TIMEOUT" tb_apiserver_ready
tb_say "API server ready after $(elapsed)"

# --- nodes ------------------------------------------------------------------------------
node_manifest() { # node_manifest <name> <kind: gpu|cpu> <index>
  local name=$1 kind=$2 idx=$3
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: $name
    type: kwok
    tritonfleet.io/testbed: "true"
    tritonfleet.io/node-kind: $kind
EOF
  if [[ $kind == gpu ]]; then
    cat <<EOF
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB
    nvidia.com/gpu.count: "8"
spec:
  podCIDR: 127.244.$idx.0/24
  taints:
  - {key: nvidia.com/gpu, value: present, effect: NoSchedule}
status:
  addresses: [{type: InternalIP, address: 127.240.0.$((idx + 10))}, {type: Hostname, address: $name}]
  capacity: &res {cpu: "64", memory: 512Gi, pods: "110", ephemeral-storage: 1Ti, nvidia.com/gpu: "8"}
  allocatable: *res
EOF
  else
    cat <<EOF
spec:
  podCIDR: 127.244.$idx.0/24
status:
  addresses: [{type: InternalIP, address: 127.240.0.$((idx + 10))}, {type: Hostname, address: $name}]
  capacity: &res {cpu: "16", memory: 64Gi, pods: "110", ephemeral-storage: 1Ti}
  allocatable: *res
EOF
  fi
}
{
  # Each node gets its own pod CIDR (kwok allocates pod IPs from it) and InternalIP.
  for i in $(seq 0 $((GPU_NODES - 1))); do node_manifest "gpu-node-$i" gpu "$i"; done
  for i in $(seq 0 $((CPU_NODES - 1))); do node_manifest "cpu-node-$i" cpu "$((100 + i))"; done
} >"$TESTBED_DIR/nodes.yaml"
# `create` (not apply): a node's status is only taken from the object at creation.
tb_kubectl create -f "$TESTBED_DIR/nodes.yaml" >/dev/null

# --- storage ----------------------------------------------------------------------------------
{
  cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: tritonfleet-local
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
  labels:
    tritonfleet.io/testbed: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
reclaimPolicy: Retain
EOF
  for i in $(seq 0 $((TESTBED_PVS - 1))); do
    n=$(printf 'pv-%02d' "$i")
    mkdir -p "$TESTBED_VOLUMES_DIR/$n"
    cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $n
  labels:
    tritonfleet.io/testbed: "true"
spec:
  storageClassName: tritonfleet-local
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  volumeMode: Filesystem
  hostPath:
    path: "$TESTBED_VOLUMES_DIR/$n"
    type: Directory
EOF
  done
} >"$TESTBED_DIR/storage.yaml"
tb_kubectl apply -f "$TESTBED_DIR/storage.yaml" >/dev/null

# --- local-runner admission policy ----------------------------------------------------------
# Pods whose image starts with a prefix listed in this ConfigMap get the
# local-runner label at creation (see local-runner-policy.yaml).
tb_kubectl -n kube-system create configmap tritonfleet-local-runner \
  --from-literal=imagePrefixes="$TESTBED_LOCAL_RUNNER_IMAGES" \
  --from-literal=podCIDR="$TESTBED_RUNNER_POD_CIDR" --dry-run=client -o yaml \
  | tb_kubectl apply -f - >/dev/null
tb_kubectl apply -f "$TESTBED_HACK_DIR/local-runner-policy.yaml" >/dev/null

# --- readiness ------------------------------------------------------------------------------
all_nodes_ready() { [[ $(nodes_ready_count) -eq $NODE_COUNT ]]; }
wait_until "$NODE_COUNT nodes to become Ready" "$TESTBED_TIMEOUT" all_nodes_ready
tb_say "$NODE_COUNT nodes Ready after $(elapsed)"
wait_until "the 'default' service account in namespace default" "$TESTBED_TIMEOUT" \
  tb_kubectl get serviceaccount default -n default
pvs_available() {
  local n
  n=$(tb_kubectl get pv -l tritonfleet.io/testbed=true -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' \
      | grep -cE '^(Available|Bound)$' || true)
  [[ $n -ge $TESTBED_PVS ]]
}
wait_until "$TESTBED_PVS PersistentVolumes to become Available" "$TESTBED_TIMEOUT" pvs_available

port=$(sed -n 's#^ *server: https://[^:]*:\([0-9]*\).*#\1#p' "$TESTBED_KUBECONFIG" | head -n1)
tb_say "cluster '$TESTBED_NAME' ready in $(elapsed): kube-apiserver https://127.0.0.1:$port, $NODE_COUNT nodes, $TESTBED_PVS PVs, Services $TESTBED_SERVICE_CIDR, local-runner pods $TESTBED_RUNNER_POD_CIDR"
tb_say "kubeconfig: $TESTBED_KUBECONFIG"
tb_say "  export KUBECONFIG=$TESTBED_KUBECONFIG PATH=$(dirname "$KUBECTL_BIN"):$(dirname "$HELM_BIN"):\$PATH"
echo "$TESTBED_KUBECONFIG"
