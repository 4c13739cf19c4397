#!/usr/bin/env bash
# `make demo`: show what tritonfleet does today, on this machine, with real parts.
#
# 1. the local Kubernetes testbed (real control plane, fake GPU nodes);
# 2. the CRDs generated from the API models, applied server-side;
# 3. the samples applied, and a broken object refused by the CRD's CEL rules;
# 4. `tritonfleet render` previewing a config, and refusing a broken one;
# 5. `tritonfleet sync` laying the runnable samples out as a model repository,
#    a real tritonserver loading them, and a request answered.
# The testbed and Triton are left running; `make demo-down` stops both.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
DEMO_DIR="$ROOT/.demo"
NS=tritonfleet-demo
mkdir -p "$DEMO_DIR"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "Starting the Kubernetes testbed (first run builds the binaries; minutes on 2 cores)"
KUBECONFIG="$(hack/testbed/up.sh)"
export KUBECONFIG
source hack/testbed/versions.env
CACHE="${TRITONFLEET_CACHE:-$HOME/.cache/tritonfleet}"
export PATH="$CACHE/bin/kubectl-$KUBE_VERSION:$PATH"
run kubectl get nodes -L nvidia.com/gpu.product

step "Installing the CRDs generated from the API models"
run kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for=condition=Established --timeout=60s \
    crd/tritonmodels.tritonfleet.io crd/modelensembles.tritonfleet.io >/dev/null

step "Applying the samples"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
run kubectl apply -n "$NS" -f manifests/samples/ -f manifests/samples/runnable/
run kubectl get tritonmodels,modelensembles -n "$NS"

step "A broken object is refused at apply time, naming the field"
broken='{"apiVersion":"tritonfleet.io/v1alpha1","kind":"TritonModel","metadata":{"name":"broken"},
 "spec":{"source":{"pvc":{"claimName":"a"},"s3":{"uri":"s3://bucket/m"}},
 "config":{"backend":"python","platform":"onnxruntime_onnx"},"serving":{"replicas":{"min":3,"max":1}}}}'
printf '$ kubectl apply -f broken.yaml\n'
echo "$broken" | kubectl apply -n "$NS" -f - 2>&1 | sed 's/^/  /' || true

step "Previewing what Triton will be given"
run "$BIN/tritonfleet" render -f manifests/samples/tensorrt-llm-plan.yaml
printf '$ tritonfleet render -f broken.yaml\n'
echo "$broken" | "$BIN/tritonfleet" render -f - 2>&1 | sed 's/^/  /' || true

step "Syncing the runnable samples into a model repository"
TRITON="$(hack/triton/install.sh)"
REPO="$DEMO_DIR/models"
mkdir -p "$REPO"
run "$BIN/tritonfleet" sync -f manifests/samples/runnable/ --all --repository "$REPO"

step "Serving them with a real tritonserver (CPU, python backend)"
if [[ -f "$DEMO_DIR/triton.pid" ]] && kill -0 "$(cat "$DEMO_DIR/triton.pid")" 2>/dev/null; then
    kill "$(cat "$DEMO_DIR/triton.pid")" && sleep 1
fi
PORT=18000
setsid "$TRITON" --model-repository="$REPO" --model-control-mode=explicit \
    --load-model=toy_llm --load-model=toy_llm_stream --load-model=toy_rag \
    --http-address=127.0.0.1 --http-port=$PORT --grpc-address=127.0.0.1 --grpc-port=18001 \
    --metrics-address=127.0.0.1 --metrics-port=18002 >"$DEMO_DIR/triton.log" 2>&1 &
echo $! >"$DEMO_DIR/triton.pid"
for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fsS "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null || {
    echo "tritonserver did not become ready; see $DEMO_DIR/triton.log" >&2
    tail -20 "$DEMO_DIR/triton.log" >&2
    exit 1
}
run curl -sS -X POST "http://127.0.0.1:$PORT/v2/repository/index" -d '{}'
echo
run curl -sS "http://127.0.0.1:$PORT/v2/models/toy_llm/generate" \
    -d '{"text_input": "tritonfleet renders configs Triton accepts", "max_tokens": 6}'
echo
run curl -sS "http://127.0.0.1:$PORT/v2/models/toy_rag/generate" -d '{"text_input": "what does triton serve"}'
echo

cat <<EOF

The demo is left running:
  export KUBECONFIG=$KUBECONFIG
  kubectl get tritonmodels -n $NS -o wide
  kubectl explain tritonmodel.spec.serving
  curl -s http://127.0.0.1:$PORT/metrics | grep nv_inference_request_success
Stop it with: make demo-down

Not in the demo yet (see README, "What works today"): the operator reconciling
these objects into GPU Deployments, per-replica loading, autoscaling and the
OpenAI-compatible gateway.
EOF
