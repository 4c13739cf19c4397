#!/usr/bin/env bash
# The Kubernetes policy scanner (checkov) over what an installation creates:
#   1. the chart rendered with its defaults, and with every optional part on;
#   2. the objects the operator creates for every sample model (`tritonfleet render
#      --objects`: repository claim, ConfigMap, sync Job, Deployment, Service, HPA).
# Run by `make lint`. Every finding is fixed, or accepted on purpose: in the chart by
# checkov.io/skip annotations on the resource, for the operator's objects by
# SKIP_CHILDREN below; docs/operations.md ("Security scanner findings") says why for each.
#
# checkov pins much of its own stack, so it lives in a venv of its own in the cache
# (built with uv on first use, like the project's venv). Never talks to the network
# while scanning (--skip-download).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CHECKOV_VERSION=3.3.30
CACHE=${TRITONFLEET_CACHE:-$HOME/.cache/tritonfleet}
TOOL=$CACHE/tools/checkov-$CHECKOV_VERSION
HELM=${HELM:-$(ls "$CACHE"/bin/helm-*/helm 2>/dev/null | head -1)}
BIN=$ROOT/.venv/bin

# Accepted for the operator's objects (docs/operations.md, "Security scanner findings"):
SKIP_CHILDREN=(
  CKV_K8S_10 CKV_K8S_11 CKV_K8S_12 CKV_K8S_13  # requests/limits: serving.resources or triton.defaultResources
  CKV_K8S_15 CKV_K8S_43                         # images by tag, pulled IfNotPresent: the model's choice
  CKV_K8S_40                                    # UID 1000: NVIDIA's triton-server user, shared with the sync Jobs
  CKV_K8S_35                                    # S3 keys as env: how boto3 reads them, in a short Job
  CKV2_K8S_6                                    # NetworkPolicy per namespace: an example in the docs
)

say() { printf '[scan] %s\n' "$*" >&2; }
if [[ ! -x "$HELM" ]]; then  # build just helm (cached afterwards), as the tests would
  "$ROOT/hack/testbed/build.sh" helm
  HELM=$(ls "$CACHE"/bin/helm-*/helm | head -1)
fi
if [[ ! -x "$TOOL/bin/checkov" ]]; then
  say "installing checkov $CHECKOV_VERSION into $TOOL"
  mkdir -p "$(dirname "$TOOL")"
  "$BIN/uv" venv --quiet --python python3 "$TOOL.partial.$$"
  "$BIN/uv" pip install --quiet --python "$TOOL.partial.$$/bin/python" "checkov==$CHECKOV_VERSION"
  mv "$TOOL.partial.$$" "$TOOL" 2>/dev/null || rm -rf "$TOOL.partial.$$"  # another won the race
fi

out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
export HELM_CACHE_HOME="$out/helm" HELM_CONFIG_HOME="$out/helm" HELM_DATA_HOME="$out/helm"
template() { "$HELM" template tritonfleet "$ROOT/charts/tritonfleet" -n tritonfleet-system --kube-version 1.34.0 "$@"; }
template > "$out/chart-defaults.yaml"
template --set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true \
  --set metrics.prometheusRule.enabled=true --set metrics.dashboard.enabled=true \
  --set gateway.ingress.enabled=true --set 'gateway.ingress.hosts[0].host=llm.example.com' \
  --set gateway.httpRoute.enabled=true --set 'gateway.httpRoute.parentRefs[0].name=public' \
  --set externalMetrics.certificate.source=certManager \
  --set 'operator.watchNamespaces={ml}' --set operator.replicaCount=2 > "$out/chart-everything.yaml"
"$BIN/tritonfleet" render -n ml --objects -f "$ROOT/manifests/samples" \
  -f "$ROOT/manifests/samples/runnable" > "$out/operator-objects.yaml"

status=0
scan() {
  local file=$1; shift
  if "$TOOL/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
      -o cli -f "$file" "$@" > "$out/report.txt" 2>&1; then
    say "$(basename "$file"): $(grep -m1 'Passed checks' "$out/report.txt" || echo 'no findings')"
  else
    say "$(basename "$file"): findings"; cat "$out/report.txt" >&2; status=1
  fi
}
scan "$out/chart-defaults.yaml"
scan "$out/chart-everything.yaml"
scan "$out/operator-objects.yaml" --skip-check "$(IFS=,; echo "${SKIP_CHILDREN[*]}")"
exit $status
