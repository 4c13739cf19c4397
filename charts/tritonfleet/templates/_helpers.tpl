{{/* Names and labels shared by every template of the chart. */}}

{{- define "tritonfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tritonfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tritonfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tritonfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
A component's topologySpreadConstraints: each one as given, its labelSelector
defaulting to the component's own pods. (dict "constraints" list "selector" the
component's selector labels, as YAML).
*/}}
{{- define "tritonfleet.topologySpread" -}}
{{- $matchLabels := .selector | fromYaml -}}
{{- range .constraints }}
- {{- toYaml (merge (dict) . (dict "labelSelector" (dict "matchLabels" $matchLabels))) | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "tritonfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tritonfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tritonfleet
{{- end -}}

{{- define "tritonfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tritonfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tritonfleet.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when several operator replicas run: the holder of a Lease works, the
     others watch and stand by (leader election); empty for a single replica. */}}
{{- define "tritonfleet.leaderElection" -}}
{{- if gt (int .Values.operator.replicaCount) 1 -}}
true
{{- end -}}
{{- end -}}

{{- define "tritonfleet.labelList" -}}
{{- $out := list -}}
{{- range $k, $v := . -}}
{{- $out = append $out (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* The rules the operator needs inside each namespace it manages (see rbac.yaml). */}}
{{- define "tritonfleet.namespacedRules" }}
- apiGroups: ["tritonfleet.io"]
  resources: ["tritonmodels", "modelensembles"]
  verbs: ["get", "list", "watch", "patch"]
# Pools: watched, their status written; no finalizer of ours (their children go with them).
- apiGroups: ["tritonfleet.io"]
  resources: ["tritonserverpools"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["tritonfleet.io"]
  resources: ["tritonmodels/status", "modelensembles/status", "tritonserverpools/status"]
  verbs: ["get", "patch"]
# Children's owner references block their owner's deletion (blockOwnerDeletion).
- apiGroups: ["tritonfleet.io"]
  resources: ["tritonmodels/finalizers", "modelensembles/finalizers", "tritonserverpools/finalizers"]
  verbs: ["update"]
# (delete: a canary's Deployment goes once the canary is promoted or rolled back)
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The loader finds every Triton pod (IP, readiness) of each model ...
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# ... and sets its readiness gate (tritonfleet.io/loaded) once the model is loaded.
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* The gateway: its own name, labels (component: gateway), ServiceAccount and image. */}}
{{- define "tritonfleet.gateway.fullname" -}}
{{- printf "%s-gateway" (include "tritonfleet.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "tritonfleet.gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tritonfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "tritonfleet.gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tritonfleet.gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tritonfleet
{{- end -}}

{{- define "tritonfleet.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create -}}
{{- default (include "tritonfleet.gateway.fullname" .) .Values.gateway.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.gateway.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tritonfleet.gateway.image" -}}
{{- $repo := default .Values.image.repository .Values.gateway.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.gateway.image.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* Read-only rules of the gateway in each namespace it serves (see gateway-rbac.yaml). */}}
{{- define "tritonfleet.gateway.rules" }}
- apiGroups: ["tritonfleet.io"]
  resources: ["tritonmodels", "modelensembles"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}

{{/* Pull secrets of the sync and cleanup Jobs: sync.imagePullSecrets, else the chart's. */}}
{{- define "tritonfleet.jobPullSecrets" -}}
{{- $names := list -}}
{{- range (default .Values.imagePullSecrets .Values.sync.imagePullSecrets) -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* Whether this release registers v1beta1.external.metrics.k8s.io. Fails, naming the
     owner, when another release or tool holds it and externalMetrics.enabled is true;
     with "auto" it then steps aside. (`helm template` sees no cluster: lookup is empty.) */}}
{{- define "tritonfleet.registersExternalMetrics" -}}
{{- $mode := .Values.externalMetrics.enabled -}}
{{- if or (eq (toString $mode) "true") (eq (toString $mode) "auto") -}}
{{- $existing := lookup "apiregistration.k8s.io/v1" "APIService" "" "v1beta1.external.metrics.k8s.io" -}}
{{- $owner := "" -}}
{{- if $existing -}}
{{- $annotations := $existing.metadata.annotations | default dict -}}
{{- $release := index $annotations "meta.helm.sh/release-name" | default "" -}}
{{- $releaseNs := index $annotations "meta.helm.sh/release-namespace" | default "" -}}
{{- if not (and (eq $release .Release.Name) (eq $releaseNs .Release.Namespace)) -}}
{{- $svc := $existing.spec.service | default dict -}}
{{- if $release -}}
{{- $owner = printf "Helm release %s in namespace %s" $release $releaseNs -}}
{{- else if $svc -}}
{{- $owner = printf "the Service %s/%s (not installed by Helm: KEDA, prometheus-adapter or by hand)" $svc.namespace $svc.name -}}
{{- else -}}
{{- $owner = "the cluster itself (a local APIService)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $owner -}}
true
{{- else if eq (toString $mode) "true" -}}
{{- fail (printf "\n\nexternalMetrics: the APIService v1beta1.external.metrics.k8s.io (the cluster's one external metrics API) is already served by %s.\nA cluster has one; registering tritonfleet's would take it over and break that provider's HPAs.\nChoose one:\n  --set externalMetrics.enabled=false  and serve tritonfleet_queue_time_seconds through that provider (docs/operations.md, \"Coexisting with KEDA or prometheus-adapter\");\n  --set externalMetrics.enabled=auto   to register it only where nobody else does;\n  or remove the other provider's APIService first.\n" $owner) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The helm-generated serving certificate of the external metrics API, as JSON
     {crt, key, ca} (base64 PEM): the Secret's current one (looked up, kept on upgrades)
     or a new self-signed CA and certificate. Generated once per render (memoised in
     the values), so the Secret and the operator pod's checksum annotation agree. */}}
{{- define "tritonfleet.metricsApiTLS" -}}
{{- $cert := .Values.externalMetrics.certificate -}}
{{- if not (hasKey $cert "_generated") -}}
{{- $fullname := include "tritonfleet.fullname" . -}}
{{- $svc := printf "%s-metrics-api" $fullname -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-metrics-api-tls" $fullname) -}}
{{- $data := ($existing | default dict).data | default dict -}}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") -}}
{{- $_ := set $cert "_generated" (dict "crt" (index $data "tls.crt") "key" (index $data "tls.key") "ca" (index $data "ca.crt")) -}}
{{- else -}}
{{- $dns := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) -}}
{{- $ca := genCA (printf "%s-metrics-api-ca" $fullname) (int $cert.validityDays) -}}
{{- $tls := genSignedCert (printf "%s.%s.svc" $svc .Release.Namespace) nil $dns (int $cert.validityDays) $ca -}}
{{- $_ := set $cert "_generated" (dict "crt" ($tls.Cert | b64enc) "key" ($tls.Key | b64enc) "ca" ($ca.Cert | b64enc)) -}}
{{- end -}}
{{- end -}}
{{- toJson (get $cert "_generated") -}}
{{- end -}}

{{/* checkov.io/skip annotations for the policy-scanner findings this chart accepts on
     purpose (docs/operations.md, "Security scanner findings" explains each). Takes
     (dict "root" $ "checks" (list ...)). */}}
{{- define "tritonfleet.scannerExceptions" -}}
{{- $reasons := dict
  "CKV_K8S_11" "no CPU limit: a throttled operator or gateway adds latency to every model; requests reserve its CPU"
  "CKV_K8S_15" "IfNotPresent: the image is pinned by tag or image.digest, set image.pullPolicy to Always to re-pull"
  "CKV_K8S_38" "this pod calls the Kubernetes API with its own least-privilege ServiceAccount"
  "CKV_K8S_43" "pinned by tag; set image.digest to pin by digest"
  "CKV_K8S_8" "a one-shot helm test pod: nothing to probe"
  "CKV_K8S_9" "a one-shot helm test pod: nothing to probe"
  "CKV2_K8S_6" "a short-lived pod that only makes outbound calls (networkPolicy covers the long-running ones)"
-}}
{{- $i := 0 -}}
{{- range .checks -}}
{{- if or (ne . "CKV_K8S_43") (not $.root.Values.image.digest) }}
{{- $i = add1 $i }}
checkov.io/skip{{ $i }}: {{ printf "%s=%s" . (index $reasons .) | quote }}
{{- end -}}
{{- end -}}
{{- end -}}
