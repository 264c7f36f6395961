{{- define "consumer-host.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "consumer-host.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "consumer-host.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "consumer-host.selectorLabels" -}}
app.kubernetes.io/name: {{ include "consumer-host.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "consumer-host.labels" -}}
helm.sh/chart: {{ include "consumer-host.chart" . }}
{{ include "consumer-host.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "consumer-host.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "consumer-host.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "consumer-host.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret and key the broker URL is read from. */}}
{{- define "consumer-host.brokerSecretName" -}}
{{- default (printf "%s-broker" (include "consumer-host.fullname" .)) .Values.broker.existingSecret.name }}
{{- end }}
{{- define "consumer-host.brokerSecretKey" -}}
{{- if .Values.broker.existingSecret.name }}{{ .Values.broker.existingSecret.key }}{{ else }}broker-url{{ end }}
{{- end }}

{{/* Grace period: explicit, or drain + preStop + 10 s of slack for closing connections. */}}
{{- define "consumer-host.gracePeriod" -}}
{{- $budget := add (int .Values.drainTimeout) (int .Values.preStopSleep) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $budget 10 }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The most replicas that can run at once: decides whether a PodDisruptionBudget makes sense. */}}
{{- define "consumer-host.maxReplicas" -}}
{{- if .Values.keda.enabled }}{{ int .Values.keda.maxReplicaCount }}
{{- else if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.maxReplicas }}
{{- else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{/* Fail early, with the reason, on values that cannot work together. */}}
{{- define "consumer-host.validate" -}}
{{- if not .Values.app }}
{{- fail "set app: the APP argument of `consumer-host run` (package.module:attr or path/app.py)" }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are mutually exclusive (KEDA manages its own HPA)" }}
{{- end }}
{{- if and .Values.keda.enabled (not (or .Values.keda.rabbitmq.enabled .Values.keda.redis.enabled)) }}
{{- fail "keda.enabled needs keda.rabbitmq.enabled or keda.redis.enabled" }}
{{- end }}
{{- $budget := add (int .Values.drainTimeout) (int .Values.preStopSleep) }}
{{- if le (int (include "consumer-host.gracePeriod" .)) (int $budget) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed drainTimeout + preStopSleep (%d), or the kubelet kills consumers mid-drain" (int (include "consumer-host.gracePeriod" .)) (int $budget)) }}
{{- end }}
{{- if and (not .Values.broker.url) (not .Values.broker.existingSecret.name) }}
{{- fail "set broker.existingSecret.name (preferred) or broker.url" }}
{{- end }}
{{- if and .Values.broker.url .Values.broker.existingSecret.name }}
{{- fail "set broker.existingSecret.name or broker.url, not both" }}
{{- end }}
{{- end }}
