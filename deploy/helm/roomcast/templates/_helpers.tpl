{{/* The release's resource name: the release name, unless it already says roomcast. */}}
{{- define "roomcast.fullname" -}}
{{- if contains "roomcast" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-roomcast" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "roomcast.selectorLabels" -}}
app.kubernetes.io/name: roomcast
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "roomcast.labels" -}}
{{ include "roomcast.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The Secret with the auth keys and URLs: the user's, or the chart's own. */}}
{{- define "roomcast.secretName" -}}
{{- default (printf "%s-secrets" (include "roomcast.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Refuses values that cannot run: closed by default needs authentication. */}}
{{- define "roomcast.validate" -}}
{{- if and (not .Values.auth.existingSecret) (not .Values.auth.jwtHs256Secret) (not .Values.auth.serviceTokens) -}}
{{- fail "roomcast refuses a public listener without authentication: set auth.jwtHs256Secret or auth.serviceTokens, or auth.existingSecret (a Secret with ROOMCAST_AUTH__* keys)" -}}
{{- end -}}
{{- $instances := ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled -}}
{{- if and (gt (int $instances) 1) (not .Values.redisUrl) (not .Values.auth.existingSecret) -}}
{{- fail "more than one instance needs redisUrl (the instances exchange messages through Redis)" -}}
{{- end -}}
{{- end -}}
