{{/*
The prefix of every object's name: the release name when it already holds the chart's name,
"<release>-gatehouse" otherwise. 40 characters at most, so that the longest name,
"<prefix>-control-plane-headless", stays within Kubernetes' 63.
*/}}
{{- define "gatehouse.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gatehouse.controlPlane.name" -}}
{{- printf "%s-control-plane" (include "gatehouse.fullname" .) -}}
{{- end -}}

{{- define "gatehouse.dataPlane.name" -}}
{{- printf "%s-data-plane" (include "gatehouse.fullname" .) -}}
{{- end -}}

{{- define "gatehouse.redis.name" -}}
{{- printf "%s-redis" (include "gatehouse.fullname" .) -}}
{{- end -}}

{{/*
Labels on every object: the selector labels of its part (when it belongs to one) and the
release's. Called with (dict "root" $) or (dict "root" $ "part" "control-plane").
*/}}
{{- define "gatehouse.labels" -}}
{{- if .part }}
app.kubernetes.io/name: {{ .part }}
{{- end }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: gatehouse
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
The labels that select one part's pods: app.kubernetes.io/name is the part (control-plane,
data-plane, redis), as in deploy/kubernetes, so that dashboards and alerts written for those
manifests match; the instance keeps two releases in one namespace apart.
Called with (dict "root" $ "part" "control-plane").
*/}}
{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ .part }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* The image both planes run: by digest when one is given, else by tag (never latest). */}}
{{- define "gatehouse.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: latest is refused (it names no release: machines that cached different images would run different ones); name a release, or leave it empty for the chart's appVersion" -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
A TOML value from a values scalar or list: strings as JSON strings (a subset of TOML's basic
strings), numbers and booleans as written. Helm reads every number as a float; toJson prints
whole ones without a fraction, which the binaries' integer keys need.
*/}}
{{- define "gatehouse.toml.value" -}}
{{- if kindIs "string" . -}}
{{- toJson . -}}
{{- else if kindIs "bool" . -}}
{{- ternary "true" "false" . -}}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- toJson . -}}
{{- else if kindIs "slice" . -}}
[{{ range $i, $item := . }}{{ if $i }}, {{ end }}{{ include "gatehouse.toml.value" $item }}{{ end }}]
{{- else -}}
{{- fail (printf "a configuration value must be a string, number, boolean or list of them, not %s" (kindOf .)) -}}
{{- end -}}
{{- end -}}

{{/*
One TOML table of scalar keys, from a values map; nothing when the map is empty.
Called with (dict "table" "cache" "keys" .Values.dataPlane.cache "from" "dataPlane.cache").
*/}}
{{- define "gatehouse.toml.table" -}}
{{- if .keys }}

[{{ .table }}]
{{- range $key, $value := .keys }}
{{- if not (regexMatch "^[a-z0-9_]+$" $key) }}
{{- fail (printf "%s: %q is not a configuration key (lowercase letters, digits and _)" $.from $key) }}
{{- end }}
{{ $key }} = {{ include "gatehouse.toml.value" $value }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The control plane's replicas: one with the memory store, which lives in the process. */}}
{{- define "gatehouse.controlPlane.replicas" -}}
{{- if eq .Values.store.topology "memory" -}}
1
{{- else -}}
{{- .Values.controlPlane.replicas | int -}}
{{- end -}}
{{- end -}}

{{/* The Redis URLs of the chosen topology, as a JSON list. */}}
{{- define "gatehouse.store.urls" -}}
{{- $store := .Values.store -}}
{{- if .Values.developmentRedis.enabled -}}
{{- list (printf "redis://%s:6379/" (include "gatehouse.redis.name" .)) | toJson -}}
{{- else if eq $store.topology "standalone" -}}
{{- compact (list $store.standalone.url) | toJson -}}
{{- else if eq $store.topology "sentinel" -}}
{{- $store.sentinel.urls | default list | toJson -}}
{{- else if eq $store.topology "cluster" -}}
{{- $store.cluster.urls | default list | toJson -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* Whether the control plane mounts the Redis Secret: "true" or "". */}}
{{- define "gatehouse.store.usesSecret" -}}
{{- $secret := .Values.store.secret -}}
{{- if and (ne .Values.store.topology "memory") (not .Values.developmentRedis.enabled) (or $secret.caKey $secret.passwordKey $secret.certKey) -}}
true
{{- end -}}
{{- end -}}

{{/*
Refuses, with one line each, the store values the control plane would refuse at start (or
that would leave it without a store), so that a bad install fails at render time instead of
as a crash loop.
*/}}
{{- define "gatehouse.store.validate" -}}
{{- $store := .Values.store -}}
{{- $topologies := list "memory" "standalone" "sentinel" "cluster" -}}
{{- if not (has $store.topology $topologies) -}}
{{- fail (printf "store.topology: %q is none of memory, standalone, sentinel, cluster" $store.topology) -}}
{{- end -}}
{{- if and .Values.developmentRedis.enabled (ne $store.topology "standalone") -}}
{{- fail (printf "developmentRedis.enabled needs store.topology standalone (it is one plain Redis server), not %s" $store.topology) -}}
{{- end -}}
{{- if ne $store.topology "memory" -}}
{{- $urls := include "gatehouse.store.urls" . | fromJsonArray -}}
{{- if not $urls -}}
{{- $key := dict "standalone" "store.standalone.url" "sentinel" "store.sentinel.urls" "cluster" "store.cluster.urls" -}}
{{- fail (printf "%s must name at least one Redis server for store.topology %s" (get $key $store.topology) $store.topology) -}}
{{- end -}}
{{- $tls := 0 -}}
{{- range $urls -}}
{{- if not (regexMatch "^rediss?://" .) -}}
{{- fail "store: every Redis URL starts with redis:// (plain) or rediss:// (TLS)" -}}
{{- end -}}
{{- if hasPrefix "rediss://" . -}}
{{- $tls = add1 $tls -}}
{{- end -}}
{{- end -}}
{{- if and (ne $tls 0) (ne $tls (len $urls)) -}}
{{- fail "store: the Redis URLs must be all rediss:// or all redis://" -}}
{{- end -}}
{{- if and (include "gatehouse.store.usesSecret" .) (eq $tls 0) (or $store.secret.caKey $store.secret.certKey) -}}
{{- fail "store.secret.caKey and store.secret.certKey need rediss:// URLs (TLS to Redis); for plain redis:// set them to \"\"" -}}
{{- end -}}
{{- if ne (empty $store.secret.certKey) (empty $store.secret.keyKey) -}}
{{- fail "store.secret.certKey and store.secret.keyKey go together (a client certificate and its key)" -}}
{{- end -}}
{{- if and (eq $store.topology "sentinel") (not $store.sentinel.master) -}}
{{- fail "store.sentinel.master must name the master the sentinels watch" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Refuses a drain grace ("25s", "2m") that does not end before Kubernetes kills the pod.
Called with (dict "grace" "25s" "termination" 35 "from" "dataPlane").
*/}}
{{- define "gatehouse.validateGrace" -}}
{{- $grace := toString .grace -}}
{{- $seconds := -1 -}}
{{- if regexMatch "^[0-9]+s$" $grace -}}
{{- $seconds = trimSuffix "s" $grace | atoi -}}
{{- else if regexMatch "^[0-9]+m$" $grace -}}
{{- $seconds = mul (trimSuffix "m" $grace | atoi) 60 -}}
{{- end -}}
{{- if and (ge $seconds 0) (ge $seconds (.termination | int)) -}}
{{- fail (printf "%s.shutdownGrace (%s) must be shorter than %s.terminationGracePeriodSeconds (%v), or the pod is killed mid-drain" .from $grace .from .termination) -}}
{{- end -}}
{{- end -}}

{{/*
control-plane.toml before its virtual proxies: the settings the control plane reads only at
start. Its checksum rolls the pods (see controlPlane.rollOnVirtualProxyChange).
*/}}
{{- define "gatehouse.controlPlane.settings" -}}
{{- include "gatehouse.store.validate" . -}}
{{- $store := .Values.store -}}
# Rendered by the gatehouse Helm chart from its values; every key is in CONFIGURATION.md.
listen = "0.0.0.0:4243"
admin_listen = "0.0.0.0:9902"
health_listen = "0.0.0.0:9903"
shutdown_grace = {{ .Values.controlPlane.shutdownGrace | toString | toJson }}

[store]
{{- if eq $store.topology "memory" }}
# Sessions in the process: one replica, and a restart logs everyone out.
backend = "memory"
{{- else }}
backend = "redis"
topology = {{ $store.topology | toJson }}
{{- $urls := include "gatehouse.store.urls" . | fromJsonArray }}
{{- if eq $store.topology "standalone" }}
redis_url = {{ first $urls | toJson }}
{{- else if eq $store.topology "sentinel" }}
sentinel_urls = {{ include "gatehouse.toml.value" $urls }}
sentinel_master = {{ $store.sentinel.master | toJson }}
{{- else }}
cluster_urls = {{ include "gatehouse.toml.value" $urls }}
{{- end }}
key_prefix = {{ $store.keyPrefix | toJson }}
connect_timeout = {{ $store.connectTimeout | toString | toJson }}
response_timeout = {{ $store.responseTimeout | toString | toJson }}
revocation_stream_max_len = {{ $store.revocationStreamMaxLen | int64 }}
{{- if $store.username }}
username = {{ $store.username | toJson }}
{{- end }}
{{- if include "gatehouse.store.usesSecret" . }}
{{- with $store.secret }}
{{- if .passwordKey }}
password_file = {{ printf "/etc/gatehouse/redis/%s" .passwordKey | toJson }}
{{- end }}
{{- if .caKey }}
tls_ca_file = {{ printf "/etc/gatehouse/redis/%s" .caKey | toJson }}
{{- end }}
{{- if .certKey }}
tls_cert_file = {{ printf "/etc/gatehouse/redis/%s" .certKey | toJson }}
tls_key_file = {{ printf "/etc/gatehouse/redis/%s" .keyKey | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- include "gatehouse.toml.table" (dict "table" "tickets" "keys" .Values.controlPlane.tickets "from" "controlPlane.tickets") }}

[tls]
cert_file = "/etc/gatehouse/tls/tls.crt"
key_file = "/etc/gatehouse/tls/tls.key"
{{- if .Values.tls.controlPlane.clientCASecretName }}
client_ca_file = "/etc/gatehouse/client-ca/ca.crt"
{{- else }}
client_ca_file = "/etc/gatehouse/tls/ca.crt"
{{- end }}

[tls.roles]
admin = {{ include "gatehouse.toml.value" (.Values.tls.roles.admin | default list) }}
node = {{ include "gatehouse.toml.value" (.Values.tls.roles.node | default list) }}
{{- end -}}

{{/* The virtual proxies, as given (TOML text). */}}
{{- define "gatehouse.controlPlane.virtualProxies" -}}
{{- $text := .Values.controlPlane.virtualProxies | default "" -}}
{{- if and (trim $text) (not (regexMatch "^(\\s*(#[^\\n]*)?\\n)*\\s*\\[\\[virtual_proxies\\]\\]" $text)) -}}
{{- fail "controlPlane.virtualProxies: the TOML text must start with a [[virtual_proxies]] table (comments and blank lines aside)" -}}
{{- end -}}
{{- $text -}}
{{- end -}}

{{/* The control-plane endpoints the nodes call, as a JSON list. */}}
{{- define "gatehouse.dataPlane.endpoints" -}}
{{- .Values.dataPlane.controlPlaneEndpoints | default (list (printf "https://%s:4243" (include "gatehouse.controlPlane.name" .))) | toJson -}}
{{- end -}}

{{/* data-plane.toml: the nodes read it only at start, so its checksum always rolls them. */}}
{{- define "gatehouse.dataPlane.config" -}}
{{- $dp := .Values.dataPlane -}}
{{- $endpoints := include "gatehouse.dataPlane.endpoints" . | fromJsonArray -}}
{{- range $endpoints }}
{{- if not (hasPrefix "https://" .) }}
{{- fail (printf "dataPlane.controlPlaneEndpoints: %q is not https:// (the nodes reach the control plane with mutual TLS)" .) }}
{{- end }}
{{- end -}}
# Rendered by the gatehouse Helm chart from its values; every key is in CONFIGURATION.md.
listen = "0.0.0.0:8443"
admin_listen = "0.0.0.0:9901"
shutdown_grace = {{ $dp.shutdownGrace | toString | toJson }}
{{- if $dp.trustedProxies }}
trusted_proxies = {{ include "gatehouse.toml.value" $dp.trustedProxies }}
{{- end }}

[control_plane]
endpoints = {{ include "gatehouse.toml.value" $endpoints }}
ca_file = "/etc/gatehouse/control-plane/ca.crt"
cert_file = "/etc/gatehouse/control-plane/tls.crt"
key_file = "/etc/gatehouse/control-plane/tls.key"
{{- include "gatehouse.toml.table" (dict "table" "cache" "keys" $dp.cache "from" "dataPlane.cache") }}
{{- include "gatehouse.toml.table" (dict "table" "limits" "keys" $dp.limits "from" "dataPlane.limits") }}
{{- include "gatehouse.toml.table" (dict "table" "upstream_tls" "keys" $dp.upstreamTls "from" "dataPlane.upstreamTls") }}
{{- with .Values.forwardAuth }}
{{- if .enabled }}
{{- if not .trustedNetworks }}
{{- fail "forwardAuth.trustedNetworks: name the ingress controllers' networks; a check from anywhere else is refused, and none would be believed" }}
{{- end }}

[forward_auth]
listen = {{ printf "0.0.0.0:%d" (.http.port | int) | toJson }}
tls = {{ .http.tls | default false }}
{{- if .extAuthz.enabled }}
grpc_listen = {{ printf "0.0.0.0:%d" (.extAuthz.port | int) | toJson }}
{{- end }}
trusted_networks = {{ include "gatehouse.toml.value" .trustedNetworks }}
{{- end }}
{{- end }}

[tls]
[[tls.certificates]]
cert_file = "/etc/gatehouse/tls/tls.crt"
key_file = "/etc/gatehouse/tls/tls.key"
{{- end -}}

{{/*
The pod security context and the container's, as in deploy/kubernetes/base: non-root, no
privilege escalation, no capabilities, read-only root filesystem, the runtime's seccomp
profile. Called with the user id.
*/}}
{{- define "gatehouse.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . | int64 }}
runAsGroup: {{ . | int64 }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gatehouse.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The admin token both planes read; the Secret is optional. */}}
{{- define "gatehouse.adminTokenEnv" -}}
# Unlocks PUT /log-level on the admin port; without the Secret, changes are refused.
- name: GATEHOUSE_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.adminToken.secretName | quote }}
      key: {{ .Values.adminToken.key | quote }}
      optional: true
{{- end -}}

{{/* Spreads one part's pods over the machines, as the base does. */}}
{{- define "gatehouse.topologySpread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "gatehouse.selectorLabels" . | nindent 8 }}
{{- end -}}

{{/* control-plane.toml: the settings, then the virtual proxies. */}}
{{- define "gatehouse.controlPlane.config" -}}
{{- include "gatehouse.controlPlane.settings" . }}
{{- with include "gatehouse.controlPlane.virtualProxies" . | trim }}

{{ . }}
{{- end }}
{{- end -}}
