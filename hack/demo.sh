#!/usr/bin/env bash
# `make demo`: tritonfleet as a user meets it, on this machine, every part real.
#
#  1. the local Kubernetes testbed (real control plane, fake GPU nodes), the
#     tritonfleet image built from the Dockerfile (podman) and the local pod
#     runner, which plays kubelet: the operator's, the gateway's and the sync
#     Jobs' pods run as containers of that image, Triton's as local tritonserver
#     processes, each on its own loopback pod IP;
#  2. `helm install` of the chart: the operator and the gateway run as pods;
#  3. the runnable samples applied (a python-backend LLM with failover to a
#     local stand-in for a hosted OpenAI-compatible API, its streaming twin and
#     a RAG ensemble), with progress until every model is Ready;
#  4. a chat completion through the gateway with the openai SDK;
#  5. a burst of clients: queue time rises and the real HPA adds replicas;
#  6. Triton killed under load: the hosted API answers, no request fails.
# Everything is left running; `make demo-down` stops it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
DEMO_DIR="$ROOT/.demo"
SYSTEM_NS=tritonfleet
NS=tritonfleet-demo
HOSTED_PORT=${DEMO_HOSTED_PORT:-18900}
HOSTED_KEY="sk-demo-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
mkdir -p "$DEMO_DIR"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
started() { [[ -f "$DEMO_DIR/$1.pid" ]] && kill -0 "$(cat "$DEMO_DIR/$1.pid")" 2>/dev/null; }

step "Starting the Kubernetes testbed (the first run builds the binaries: minutes on 2 cores)"
KUBECONFIG="$(hack/testbed/up.sh)"
export KUBECONFIG
source hack/testbed/versions.env
CACHE="${TRITONFLEET_CACHE:-$HOME/.cache/tritonfleet}"
export PATH="$CACHE/bin/kubectl-$KUBE_VERSION:$CACHE/bin/helm-$HELM_VERSION:$PATH"
hack/triton/install.sh >/dev/null
run kubectl get nodes -L nvidia.com/gpu.product

step "Building the tritonfleet image from the Dockerfile (podman; cached by a hash of its inputs)"
IMAGE="$(hack/image/build.sh)"
export CONTAINERS_CONF="$ROOT/hack/image/containers.conf"
run podman images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$IMAGE"

step "Starting the local pod runner (plays kubelet: our pods as containers of the image, Triton as processes)"
if ! started runner; then
    setsid "$BIN/python" -m hack.devtools.pod_runner --kubeconfig "$KUBECONFIG" \
        --project-image "$IMAGE" >"$DEMO_DIR/runner.log" 2>&1 &
    echo $! >"$DEMO_DIR/runner.pid"
fi
echo "pod runner pid $(cat "$DEMO_DIR/runner.pid"), log $DEMO_DIR/runner.log"

step "Starting a local stand-in for a hosted OpenAI-compatible API (the failover target)"
if ! started hosted; then
    setsid "$BIN/python" -m hack.devtools.hosted_api --port "$HOSTED_PORT" --api-key "$HOSTED_KEY" \
        >"$DEMO_DIR/hosted.log" 2>&1 &
    echo $! >"$DEMO_DIR/hosted.pid"
    echo "$HOSTED_KEY" >"$DEMO_DIR/hosted.key"
fi
HOSTED_KEY="$(cat "$DEMO_DIR/hosted.key")"
echo "hosted API on http://127.0.0.1:$HOSTED_PORT/v1"

step "helm install tritonfleet (operator and gateway run as pods)"
# CRDs applied earlier by hand (e.g. by the test suite) are not helm's to adopt.
crds=true
for crd in tritonmodels.tritonfleet.io modelensembles.tritonfleet.io; do
    if kubectl get crd "$crd" >/dev/null 2>&1 && [[ "$(kubectl get crd "$crd" \
        -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}')" != tritonfleet ]]; then
        crds=false
    fi
done
if [[ $crds == false ]]; then
    echo "(the CRDs exist and are not this release's: applying them from crds/ instead)"
    kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
fi
run helm upgrade --install tritonfleet charts/tritonfleet -n "$SYSTEM_NS" --create-namespace \
    --set crds.enabled=$crds \
    --set image.repository=tritonfleet/tritonfleet --set image.tag=demo \
    --set gateway.replicaCount=1 --set operator.reconcileIntervalSeconds=10 \
    --set 'operator.podNetworks={127.0.0.0/8}' \
    --set externalMetrics.scaleDownStabilizationSeconds=60 \
    --wait --timeout 180s
run kubectl get pods -n "$SYSTEM_NS" -o wide
run podman ps --filter label=io.kubernetes.pod.namespace="$SYSTEM_NS" \
    --format 'table {{.Names}}\t{{.Image}}\t{{.Status}}'

step "Applying the runnable samples, toy-llm with failover to the hosted API"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl create secret generic hosted-api-key -n "$NS" --from-literal=api-key="$HOSTED_KEY" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
run kubectl apply -n "$NS" -f manifests/samples/runnable/
# 50 ms per token, so a burst of clients queues up and the HPA has work to do.
run kubectl patch tritonmodel toy-llm -n "$NS" --type=merge -p "{\"spec\": {
    \"config\": {\"parameters\": {\"token_delay_ms\": \"50\"}},
    \"failover\": {\"provider\": {\"baseUrl\": \"http://127.0.0.1:$HOSTED_PORT/v1\",
      \"model\": \"toy-hosted\", \"apiKeySecret\": {\"name\": \"hosted-api-key\", \"key\": \"api-key\"}}}}}"

step "Waiting for every model to be synced, loaded on every replica and Ready"
deadline=$(( $(date +%s) + 420 ))
while :; do
    not_ready=$(kubectl get tritonmodels,modelensembles -n "$NS" \
        -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}' \
        | tr ' ' '\n' | grep -v '=True$' | grep -c . || true)
    printf '\r  %s not Ready yet  ' "$not_ready"
    [[ $not_ready -eq 0 ]] && break
    if (( $(date +%s) > deadline )); then
        echo; kubectl get tritonmodels,modelensembles -n "$NS" -o wide
        echo "timed out; see $DEMO_DIR/runner.log and kubectl describe tritonmodels -n $NS" >&2
        exit 1
    fi
    sleep 3
done
echo
run kubectl get tritonmodels,modelensembles -n "$NS" -o wide
run kubectl get tritonmodel toy-llm -n "$NS" -o jsonpath='{range .status.pods[*]}{.name} {.ip} {.state} {.revision}{"\n"}{end}'

GATEWAY="$(kubectl get service tritonfleet-gateway -n "$SYSTEM_NS" -o jsonpath='{.spec.clusterIP}:{.spec.ports[0].port}')"
# /metrics has a port of its own (the Service's `metrics` port), apart from the API.
GATEWAY_METRICS="$(kubectl get service tritonfleet-gateway -n "$SYSTEM_NS" -o jsonpath='{.spec.clusterIP}:{.spec.ports[?(@.name=="metrics")].port}')"
echo "$GATEWAY" >"$DEMO_DIR/gateway.addr"

step "A chat completion through the gateway, with the openai SDK"
"$BIN/python" - "$GATEWAY" <<'EOF'
import sys, time
from openai import OpenAI

client = OpenAI(base_url=f"http://{sys.argv[1]}/v1", api_key="unused", max_retries=0)
for _ in range(60):  # the gateway lists models every 2 s
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="toy_llm", max_tokens=6,
            messages=[{"role": "user", "content": "tritonfleet serves every replica"}])
        break
    except Exception:
        time.sleep(1)
answer = raw.parse()
print(f"$ client.chat.completions.create(model='toy_llm', ...)")
print(f"  answer: {answer.choices[0].message.content!r}")
print(f"  answered by: {raw.headers['x-tritonfleet-backend']}  usage: {answer.usage}")
EOF

step "A burst of clients: queue time rises and the real HPA adds toy-llm replicas"
run kubectl get apiservice v1beta1.external.metrics.k8s.io
RAW="/apis/external.metrics.k8s.io/v1beta1/namespaces/$NS/tritonfleet_queue_time_seconds?labelSelector=model%3Dtoy_llm"
# The operator needs two scrapes of a new pod before it has a value ("no data" is an error, never 0).
for _ in $(seq 1 30); do kubectl get --raw "$RAW" >/dev/null 2>&1 && break; sleep 1; done
run kubectl get --raw "$RAW" || true
echo
"$BIN/python" - "$GATEWAY" "$NS" <<'EOF'
import subprocess, sys, threading, time
from openai import OpenAI

gateway, ns = sys.argv[1], sys.argv[2]
stop = threading.Event()

def client_loop():
    client = OpenAI(base_url=f"http://{gateway}/v1", api_key="unused", max_retries=0, timeout=60)
    while not stop.is_set():
        try:
            client.chat.completions.create(
                model="toy_llm", messages=[{"role": "user", "content": "busy"}], max_tokens=4)
        except Exception:
            pass

threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(12)]
for t in threads:
    t.start()
started = time.monotonic()
while time.monotonic() - started < 90:
    time.sleep(5)
    hpa = subprocess.run(["kubectl", "get", "hpa", "tm-toy-llm", "-n", ns, "--no-headers"],
                         capture_output=True, text=True).stdout.split()
    print(f"  {time.monotonic() - started:4.0f}s  queue time/target {hpa[2] if len(hpa) > 2 else '?'}"
          f"  replicas {hpa[5] if len(hpa) > 5 else '?'}", flush=True)
    if len(hpa) > 5 and hpa[5].isdigit() and int(hpa[5]) > 1:
        break
stop.set()
EOF
run kubectl get tritonmodel toy-llm -n "$NS"

step "Killing every toy-llm Triton process under load: the hosted API answers, nothing fails"
"$BIN/python" - "$GATEWAY" "$NS" <<'EOF'
import collections, subprocess, sys, threading, time
from openai import OpenAI

gateway, ns = sys.argv[1], sys.argv[2]
ips = subprocess.run(["kubectl", "get", "pods", "-n", ns, "--field-selector=status.phase=Running",
                      "-l", "app.kubernetes.io/component=inference-server,tritonfleet.io/model=toy-llm",
                      "-o", "jsonpath={.items[*].status.podIP}"], capture_output=True, text=True,
                     check=True).stdout.split()
seen, failed = collections.Counter(), []
stop = threading.Event()

def client_loop(n):
    client = OpenAI(base_url=f"http://{gateway}/v1", api_key="unused", max_retries=0, timeout=30)
    while not stop.is_set():
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="toy_llm", messages=[{"role": "user", "content": f"load {n}"}], max_tokens=4)
            seen[raw.headers["x-tritonfleet-backend"]] += 1
        except Exception as error:
            failed.append(repr(error))
        time.sleep(0.05)

threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(4)]
for t in threads:
    t.start()
time.sleep(2)
print(f"  before the kill: {dict(seen)}")
for ip in ips:
    subprocess.run(["pkill", "-KILL", "-f", "--", f"--http-address={ip}"], check=False)
print(f"  killed tritonserver on {', '.join(ips)} (the runner restarts them, as a kubelet would)")
time.sleep(6)
print(f"  while Triton restarts: {dict(seen)}")
time.sleep(14)
stop.set()
for t in threads:
    t.join()
print(f"  answers by backend: {dict(seen)}; failed requests: {len(failed)}")
for line in failed[:3]:
    print("   ", line)
EOF

cat <<EOF

The demo is left running. Poke at it:
  export KUBECONFIG=$KUBECONFIG PATH=$CACHE/bin/kubectl-$KUBE_VERSION:$CACHE/bin/helm-$HELM_VERSION:\$PATH
  kubectl get tritonmodels,modelensembles -n $NS -o wide
  kubectl describe tritonmodel toy-llm -n $NS        # conditions, status.pods, events
  kubectl get pods -A -o wide                         # 127.1.x.y: real pods; 127.244.x.y: kwok's
  CONTAINERS_CONF=$CONTAINERS_CONF podman ps          # the operator, gateway and Jobs as containers
  .venv/bin/tritonfleet get -n $NS -o wide            # the fleet at a glance
  curl -s http://$GATEWAY_METRICS/metrics | grep tritonfleet_gateway_requests_total
  .venv/bin/python -c "from openai import OpenAI; print(OpenAI(base_url='http://$GATEWAY/v1', api_key='x').chat.completions.create(model='toy_llm', messages=[{'role': 'user', 'content': 'hi'}]).choices[0].message.content)"
Logs: $DEMO_DIR/runner.log, .testbed/pods/<namespace>_<pod>/
Stop it with: make demo-down

The HPA returns toy-llm to 1 replica a minute after the load stops
(kubectl get hpa -n $NS -w); its Autoscaling condition says what the HPA decided
(kubectl describe tritonmodel toy-llm -n $NS). A model with replicas.min 0 and
autoscaling.scaleToZeroAfterSeconds goes to zero when idle and comes back on the
next request through the gateway (README, "Your first model", step 5).
EOF
