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
{{- define "fedauthz.grpcTlsDir" -}}/etc/fedauthz/tls/grpc{{- end }}
{{- define "fedauthz.grpcClientCADir" -}}/etc/fedauthz/tls/grpc-client-ca{{- end }}
{{- define "fedauthz.adminTlsDir" -}}/etc/fedauthz/tls/admin{{- end }}

{{/* The TLS values the chart cannot honour; renders nothing (deployment.yaml includes it, so
the rules hold with existingConfigMap too). */}}
{{- define "fedauthz.validateTls" -}}
{{- with .Values.tls }}
{{- if and .grpc.enabled (not .grpc.secretName) }}
{{- fail "tls.grpc.secretName: name the kubernetes.io/tls Secret (tls.crt, tls.key) when tls.grpc.enabled" }}
{{- end }}
{{- if and .admin.enabled (not .admin.secretName) }}
{{- fail "tls.admin.secretName: name the kubernetes.io/tls Secret (tls.crt, tls.key) when tls.admin.enabled" }}
{{- end }}
{{- if and .grpc.clientCA.secretName (not .grpc.enabled) }}
{{- fail "tls.grpc.clientCA.secretName: client certificates need tls.grpc.enabled" }}
{{- end }}
{{- if and (or .grpc.clientCA.allowedIdentities.uris .grpc.clientCA.allowedIdentities.dnsNames) (not .grpc.clientCA.secretName) }}
{{- fail "tls.grpc.clientCA.allowedIdentities: an allow-list needs client certificates (tls.grpc.clientCA.secretName)" }}
{{- end }}
{{- if and .grpc.enabled $.Values.istio.meshMtls }}
{{- fail "tls.grpc.enabled and istio.meshMtls: choose one; the sidecars already encrypt, and Istio cannot see the gRPC inside app TLS" }}
{{- end }}
{{- if and .grpc.enabled (eq $.Values.probes.type "grpc") }}
{{- fail "tls.grpc.enabled with probes.type grpc: the kubelet's gRPC probe speaks no TLS; use probes.type http" }}
{{- end }}
{{- end }}
{{- end }}

{{/* server.tls or server.admin_tls for a listener whose Secret is mounted at `dir`. */}}
{{- define "fedauthz.tlsConfig" -}}
{{- $tls := dict "certificate_file" (printf "%s/tls.crt" .dir) "private_key_file" (printf "%s/tls.key" .dir) }}
{{- with .clientCA }}
{{- if .secretName }}
{{- $allowed := dict "uris" .allowedIdentities.uris "dns_names" .allowedIdentities.dnsNames }}
{{- $_ := set $tls "client_certificates" (dict "ca_file" (printf "%s/%s" $.caDir .key) "mode" .mode "allowed_identities" $allowed) }}
{{- end }}
{{- end }}
{{- toYaml $tls }}
{{- end }}

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
{{- if or (hasKey $server "tls") (hasKey $server "admin_tls") (hasKey $server "mesh_mtls") }}
{{- fail "config.server.tls/admin_tls/mesh_mtls: the chart sets them; use tls.grpc, tls.admin and istio.meshMtls instead" }}
{{- end }}
{{- include "fedauthz.validateTls" . }}
{{- $_ := set $server "grpc_listen" (include "fedauthz.listen" (dict "host" .Values.listenAddress "port" .Values.ports.grpc)) }}
{{- $_ := set $server "admin_listen" (include "fedauthz.listen" (dict "host" .Values.listenAddress "port" .Values.ports.admin)) }}
{{- if .Values.tls.grpc.enabled }}
{{- $_ := set $server "tls" (include "fedauthz.tlsConfig" (dict "dir" (include "fedauthz.grpcTlsDir" .) "caDir" (include "fedauthz.grpcClientCADir" .) "clientCA" .Values.tls.grpc.clientCA) | fromYaml) }}
{{- end }}
{{- if .Values.tls.admin.enabled }}
{{- $_ := set $server "admin_tls" (include "fedauthz.tlsConfig" (dict "dir" (include "fedauthz.adminTlsDir" .)) | fromYaml) }}
{{- end }}
{{- if .Values.istio.meshMtls }}
{{- $_ := set $server "mesh_mtls" true }}
{{- end }}
{{- with (get $server "http") }}
{{- if hasKey . "listen" }}
{{- fail "config.server.http.listen: the chart sets it; use ports.http instead" }}
{{- end }}
{{- $_ := set . "listen" (include "fedauthz.listen" (dict "host" $.Values.listenAddress "port" $.Values.ports.http)) }}
{{- end }}
{{- $_ := set $config "server" $server }}
{{- with (get $config "mint") }}
{{- $publish := default (dict) (get . "publish") }}
{{- if hasKey $publish "listen" }}
{{- fail "config.mint.publish.listen: the chart sets it; use ports.publish instead" }}
{{- end }}
{{- $_ := set $publish "listen" (include "fedauthz.listen" (dict "host" $.Values.listenAddress "port" $.Values.ports.publish)) }}
{{- $_ := set . "publish" $publish }}
{{- end }}
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
