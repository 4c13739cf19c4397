{{/* Names and labels shared by every template of the chart. */}}

{{- define "tritonfleet.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tritonfleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tritonfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tritonfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
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
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
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
- apiGroups: ["tritonfleet.io"]
  resources: ["tritonmodels/status", "modelensembles/status"]
  verbs: ["get", "patch"]
- apiGroups: ["tritonfleet.io"]
  resources: ["tritonmodels/finalizers", "modelensembles/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
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
# Read-only: the loader finds every Triton pod (IP, readiness) of each model.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
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
