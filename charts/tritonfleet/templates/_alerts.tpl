{{/* The alert rules, as Prometheus rule groups. prometheusrule.yaml wraps them in a
     PrometheusRule; the same text loads into a plain Prometheus as a rules file (the
     chart tests do that). Runbooks: docs/operations.md, one section per alert. */}}
{{- define "tritonfleet.alertGroups" -}}
{{- $r := .Values.metrics.prometheusRule -}}
{{- $runbook := $r.runbookBaseUrl -}}
groups:
  - name: tritonfleet-models
    rules:
      - alert: TritonfleetModelNotReady
        # Scaled to zero on purpose is not an outage; a model still loading is, after a while.
        expr: tritonfleet_model_condition{condition="Ready", reason!="ScaledToZero"} < 1
        for: {{ $r.notReadyFor }}
        labels: {severity: warning}
        annotations:
          summary: '{{"{{"}} $labels.kind {{"}}"}} {{"{{"}} $labels.namespace {{"}}"}}/{{"{{"}} $labels.name {{"}}"}} is not Ready'
          description: 'Ready is not True ({{"{{"}} $labels.reason {{"}}"}}) for {{ $r.notReadyFor }}. `kubectl describe {{"{{"}} $labels.kind {{"}}"}} -n {{"{{"}} $labels.namespace {{"}}"}} {{"{{"}} $labels.name {{"}}"}}` says why.'
          runbook_url: {{ printf "%stritonfleetmodelnotready" $runbook }}
      - alert: TritonfleetModelNotLoaded
        expr: tritonfleet_model_condition{condition="Loaded", reason!="ScaledToZero"} < 1
        for: {{ $r.notLoadedFor }}
        labels: {severity: warning}
        annotations:
          summary: '{{"{{"}} $labels.namespace {{"}}"}}/{{"{{"}} $labels.name {{"}}"}} is not loaded on every Triton pod'
          description: 'Loaded is not True ({{"{{"}} $labels.reason {{"}}"}}); status.pods names the pods and Triton''s error.'
          runbook_url: {{ printf "%stritonfleetmodelnotloaded" $runbook }}
      - alert: TritonfleetSyncFailing
        expr: tritonfleet_model_condition{condition="Synced"} == 0
        for: {{ $r.syncFailingFor }}
        labels: {severity: warning}
        annotations:
          summary: 'the model files of {{"{{"}} $labels.namespace {{"}}"}}/{{"{{"}} $labels.name {{"}}"}} do not sync'
          description: 'Synced is False ({{"{{"}} $labels.reason {{"}}"}}): the previous revision keeps serving; the sync Job''s logs say why.'
          runbook_url: {{ printf "%stritonfleetsyncfailing" $runbook }}
      - alert: TritonfleetQueueTimeOverTarget
        # The HPA adds replicas while it can: this holds when it cannot (max reached, no GPUs).
        expr: |
          max by (namespace, model) (tritonfleet_queue_time_seconds)
            > on (namespace, model) group_left
          max by (namespace, model) (tritonfleet_model_queue_time_target_seconds)
        for: {{ $r.queueTimeOverTargetFor }}
        labels: {severity: warning}
        annotations:
          summary: 'queue time of {{"{{"}} $labels.namespace {{"}}"}}/{{"{{"}} $labels.model {{"}}"}} above its target'
          description: 'Triton''s mean queue time is {{"{{"}} $value | humanizeDuration {{"}}"}}, over serving.autoscaling.queueTimeTargetMs for {{ $r.queueTimeOverTargetFor }}.'
          runbook_url: {{ printf "%stritonfleetqueuetimeovertarget" $runbook }}
  - name: tritonfleet-gateway
    rules:
      - alert: TritonfleetFailingOver
        # mode_hosted is a model sent to the provider on purpose.
        expr: sum by (model, reason) (rate(tritonfleet_gateway_failovers_total{reason!="mode_hosted"}[5m])) > 0
        for: {{ $r.failingOverFor }}
        labels: {severity: warning}
        annotations:
          summary: 'requests for {{"{{"}} $labels.model {{"}}"}} go to the hosted provider ({{"{{"}} $labels.reason {{"}}"}})'
          description: 'The gateway fails over at {{"{{"}} $value | humanize {{"}}"}}/s: Triton is not serving this model, and each request costs the provider''s price.'
          runbook_url: {{ printf "%stritonfleetfailingover" $runbook }}
      - alert: TritonfleetBreakerOpen
        expr: max by (model, backend, pod) (tritonfleet_gateway_breaker_state) == 2
        for: {{ $r.breakerOpenFor }}
        labels: {severity: warning}
        annotations:
          summary: 'circuit breaker open for {{"{{"}} $labels.model {{"}}"}} ({{"{{"}} $labels.backend {{"}}"}}, pod {{"{{"}} $labels.pod {{"}}"}})'
          description: 'The gateway stopped sending to it after repeated failures; it probes again on its own.'
          runbook_url: {{ printf "%stritonfleetbreakeropen" $runbook }}
  - name: tritonfleet-operator
    rules:
      - alert: TritonfleetReconcileErrors
        expr: sum by (kind, reason) (rate(tritonfleet_reconcile_errors_total[5m])) > 0
        for: {{ $r.reconcileErrorsFor }}
        labels: {severity: warning}
        annotations:
          summary: 'the operator fails to reconcile {{"{{"}} $labels.kind {{"}}"}} ({{"{{"}} $labels.reason {{"}}"}})'
          description: 'Reconciles keep failing; the operator''s log names the objects and the API server''s answer.'
          runbook_url: {{ printf "%stritonfleetreconcileerrors" $runbook }}
{{- end -}}
