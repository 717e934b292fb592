{{/* Names, labels and the values every template shares. */}}

{{- define "fedauthz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name when it already contains the chart name. */}}
{{- define "fedauthz.fullname" -}}
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

{{- define "fedauthz.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fedauthz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fedauthz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "fedauthz.labels" -}}
helm.sh/chart: {{ include "fedauthz.chart" . }}
{{ include "fedauthz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: ext-authz
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "fedauthz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fedauthz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "fedauthz.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "fedauthz.configMapName" -}}
{{- default (include "fedauthz.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{/* The Secret mounted at /etc/fedauthz/secrets, or "" when there is none. */}}
{{- define "fedauthz.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if .Values.secretFiles }}
{{- include "fedauthz.fullname" . }}
{{- end }}
{{- end }}

{{/* Paths inside the container; the Dockerfile uses the same (tests/helm.rs compares). */}}
{{- define "fedauthz.configDir" -}}/etc/fedauthz/config{{- end }}
{{- define "fedauthz.configFile" -}}/etc/fedauthz/config/config.yaml{{- end }}
{{- define "fedauthz.secretsDir" -}}/etc/fedauthz/secrets{{- end }}

{{/* host:port for a listener; IPv6 addresses get brackets. */}}
{{- define "fedauthz.listen" -}}
{{- $host := .host }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int .port) }}
{{- else }}
{{- printf "%s:%d" $host (int .port) }}
{{- end }}
{{- end }}

{{/* The configuration file: values.config with the listeners the chart owns. */}}
{{- define "fedauthz.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $server := default (dict) (get $config "server") }}
{{- if or (hasKey $server "grpc_listen") (hasKey $server "admin_listen") }}
{{- fail "config.server.grpc_listen/admin_listen: the chart sets the listeners; use ports.grpc, ports.admin and listenAddress instead" }}
{{- end }}
{{- $_ := set $server "grpc_listen" (include "fedauthz.listen" (dict "host" .Values.listenAddress "port" .Values.ports.grpc)) }}
{{- $_ := set $server "admin_listen" (include "fedauthz.listen" (dict "host" .Values.listenAddress "port" .Values.ports.admin)) }}
{{- $_ := set $config "server" $server }}
{{- toYaml $config }}
{{- end }}

{{/* The Service's in-cluster name. */}}
{{- define "fedauthz.serviceFQDN" -}}
{{- printf "%s.%s.svc.cluster.local" (include "fedauthz.fullname" .) .Release.Namespace }}
{{- end }}

{{/* Topology spread constraints, each with the selector labels unless it has its own. */}}
{{- define "fedauthz.topologySpreadConstraints" -}}
{{- range .Values.topologySpreadConstraints }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "fedauthz.selectorLabels" $ | fromYaml)) }}
{{- end }}
- {{ toYaml $constraint | nindent 2 | trim }}
{{- end }}
{{- end }}
