{{/* Chart name, truncated to 63 characters (a label value's limit). */}}
{{- define "prom-mtls-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or <release> when it already contains the chart name. */}}
{{- define "prom-mtls-webhook.fullname" -}}
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

{{- define "prom-mtls-webhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "prom-mtls-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prom-mtls-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "prom-mtls-webhook.labels" -}}
helm.sh/chart: {{ include "prom-mtls-webhook.chart" . }}
{{ include "prom-mtls-webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: admission-webhook
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "prom-mtls-webhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "prom-mtls-webhook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret holding ca.crt, tls.crt and tls.key. One name per certificate mode,
so that switching modes never makes Helm adopt a Secret that cert-manager wrote
(or cert-manager overwrite the chart's).
*/}}
{{- define "prom-mtls-webhook.tlsSecretName" -}}
{{- if .Values.certs.existingSecret }}
{{- .Values.certs.existingSecret }}
{{- else if eq (include "prom-mtls-webhook.certManager" .) "true" }}
{{- printf "%s-cert-manager-tls" (include "prom-mtls-webhook.fullname" .) }}
{{- else }}
{{- printf "%s-tls" (include "prom-mtls-webhook.fullname" .) }}
{{- end }}
{{- end }}

{{/*
"true" when cert-manager issues the serving certificate: certManager.enabled
true, or auto and the cluster serves cert-manager.io/v1 (Argo CD and
`helm template --api-versions` pass the cluster's API versions on).
*/}}
{{- define "prom-mtls-webhook.certManager" -}}
{{- $mode := toString .Values.certManager.enabled }}
{{- /* Settings that cannot hold together, refused rather than half applied. */}}
{{- if and .Values.certs.existingSecret (eq $mode "true") }}
{{- fail "certs.existingSecret and certManager.enabled=true exclude each other: cert-manager would write into your Secret" }}
{{- end }}
{{- if and .Values.certs.existingSecret (not .Values.webhook.caBundle) }}
{{- fail "certs.existingSecret needs webhook.caBundle (the base64 PEM of the CA that signed it): the API server cannot verify the webhook otherwise" }}
{{- end }}
{{- if and .Values.webhook.caBundle (eq $mode "true") }}
{{- fail "webhook.caBundle and certManager.enabled=true exclude each other: cert-manager's cainjector would overwrite the bundle" }}
{{- end }}
{{- if eq $mode "auto" }}
{{- and (.Capabilities.APIVersions.Has "cert-manager.io/v1") (not .Values.certs.existingSecret) (not .Values.webhook.caBundle) }}
{{- else if eq $mode "true" }}
{{- true }}
{{- else if eq $mode "false" }}
{{- false }}
{{- else }}
{{- fail (printf "certManager.enabled must be auto, true or false, not %q" $mode) }}
{{- end }}
{{- end }}

{{/*
The MutatingWebhookConfiguration's name. The API server calls mutating
webhook configurations in the byte order of their names, and Istio's injector
(istio-sidecar-injector[-<rev>], istio-revision-tag-<tag>) reads the
annotations we add only once, so ours must sort before "istio-". Go's string
comparison ("lt") is the same byte order the API server sorts with.
*/}}
{{- define "prom-mtls-webhook.webhookConfigurationName" -}}
{{- $name := .Values.webhook.configurationName | default (printf "00-%s" (include "prom-mtls-webhook.fullname" .)) | trunc 63 | trimSuffix "-" }}
{{- if not (lt $name "istio-") }}
{{- fail (printf "webhook.configurationName %q must sort before \"istio-\" (Istio's injector configurations), e.g. \"00-%s\": the API server calls mutating webhook configurations in name order" $name (include "prom-mtls-webhook.fullname" .)) }}
{{- end }}
{{- $name }}
{{- end }}

{{/* The image reference: digest wins over tag; tag defaults to appVersion. */}}
{{- define "prom-mtls-webhook.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* "true" when the opt-in webhook and the opt-out match condition are rendered. */}}
{{- define "prom-mtls-webhook.matchConditions" -}}
{{- $mode := toString .Values.webhook.matchConditions }}
{{- if eq $mode "auto" }}
{{- semverCompare ">=1.28.0-0" .Capabilities.KubeVersion.Version }}
{{- else if eq $mode "true" }}
{{- true }}
{{- else if eq $mode "false" }}
{{- false }}
{{- else }}
{{- fail (printf "webhook.matchConditions must be auto, true or false, not %q" $mode) }}
{{- end }}
{{- end }}

{{/* The Prometheus pod labels as a label selector string (for --pod-selector). */}}
{{- define "prom-mtls-webhook.podSelector" -}}
{{- $parts := list }}
{{- range $k, $v := .Values.mutation.prometheusPodLabels }}
{{- $parts = append $parts (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $parts }}
{{- end }}

{{/* host:port for a listener; IPv6 addresses get brackets. */}}
{{- define "prom-mtls-webhook.hostPort" -}}
{{- $host := index . 0 }}
{{- if contains ":" $host }}
{{- printf "[%s]:%v" $host (index . 1) }}
{{- else }}
{{- printf "%s:%v" $host (index . 1) }}
{{- end }}
{{- end }}

{{- define "prom-mtls-webhook.terminationGracePeriodSeconds" -}}
{{- $delay := int .Values.shutdownDelaySeconds }}
{{- $drain := int .Values.drainTimeoutSeconds }}
{{- $grace := add $delay $drain 15 }}
{{- if ne (toString .Values.terminationGracePeriodSeconds) "" }}
{{- $grace = int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- if le $grace (add $delay $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed shutdownDelaySeconds + drainTimeoutSeconds (%d + %d), or the kubelet kills the webhook mid-drain" $grace $delay $drain) }}
{{- end }}
{{- $grace }}
{{- end }}

{{/* The host of webhook.url (no port, no IPv6 brackets); empty without a URL. */}}
{{- define "prom-mtls-webhook.urlHost" -}}
{{- with .Values.webhook.url }}
{{- $host := (urlParse .).host }}
{{- if hasPrefix "[" $host }}
{{- $host = regexReplaceAll "^\\[([^]]*)\\].*$" $host "${1}" }}
{{- else }}
{{- $host = regexReplaceAll ":[0-9]+$" $host "" }}
{{- end }}
{{- $host }}
{{- end }}
{{- end }}

{{/* Whether the pods talk to the Kubernetes API: the ordering check, the PeerAuthentication watch, the scrape class they keep. */}}
{{- define "prom-mtls-webhook.usesApi" -}}
{{- or .Values.orderingCheck.enabled (eq .Values.mesh.mtls "watch") (eq .Values.mutation.monitors "scrape-class") }}
{{- end }}

{{/* Fields that every webhook of the configuration shares: (list $root $failurePolicy $caBundle). */}}
{{- define "prom-mtls-webhook.webhookCommon" -}}
{{- $root := index . 0 -}}
{{- $failurePolicy := index . 1 | default $root.Values.webhook.failurePolicy -}}
{{- $caBundle := $root.Values.webhook.caBundle | default (index . 2) -}}
clientConfig:
  {{- with $root.Values.webhook.url }}
  # A webhook outside the cluster (webhook.url).
  url: {{ . | quote }}
  {{- else }}
  service:
    name: {{ include "prom-mtls-webhook.fullname" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: /mutate
    port: {{ $root.Values.service.port }}
  {{- end }}
  {{- with $caBundle }}
  caBundle: {{ . }}
  {{- end }}
sideEffects: None
admissionReviewVersions: ["v1"]
matchPolicy: Equivalent
timeoutSeconds: {{ int $root.Values.webhook.timeoutSeconds }}
failurePolicy: {{ $failurePolicy }}
reinvocationPolicy: {{ $root.Values.webhook.reinvocationPolicy }}
namespaceSelector:
  matchExpressions:
    # Never kube-system, kube-node-lease, nor our own namespace (our own pods
    # must always start, even while the webhook is down).
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- range append $root.Values.webhook.excludeNamespaces $root.Release.Namespace | uniq }}
        - {{ . | quote }}
        {{- end }}
    # A namespace labelled <prefix>inject=disabled is never touched.
    - key: {{ printf "%sinject" $root.Values.mutation.annotationPrefix | quote }}
      operator: NotIn
      values: ["disabled"]
    {{- with $root.Values.webhook.extraNamespaceSelectorExpressions }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
CEL string literals are written '...': label keys and values, and annotation
keys, cannot hold quotes or backslashes (checked here all the same).
*/}}
{{- define "prom-mtls-webhook.celString" -}}
{{- if regexMatch "['\\\\]" . }}
{{- fail (printf "%q cannot be used in a CEL match condition" .) }}
{{- end }}
{{- printf "'%s'" . }}
{{- end }}

{{/*
The container's resources, with limits.memory following from
maxBodyBytesInFlight when empty: 32 MiB besides three times the budget
(peak RSS with the budget full stays under it: tests/server_limits.rs). A
limit set below that is refused: the pod would be OOM-killed under load.
*/}}
{{- define "prom-mtls-webhook.resources" -}}
{{- $resources := deepCopy (.Values.resources | default dict) }}
{{- $limits := get $resources "limits" | default dict }}
{{- $budgetMi := div (add (int64 .Values.maxBodyBytesInFlight) 1048575) 1048576 }}
{{- $neededMi := add 32 (mul 3 $budgetMi) }}
{{- $memory := toString (get $limits "memory" | default "") }}
{{- if not $memory }}
{{- $_ := set $limits "memory" (printf "%dMi" $neededMi) }}
{{- else }}
{{- $mi := 0 }}
{{- if regexMatch "^[0-9]+Mi$" $memory }}
{{- $mi = trimSuffix "Mi" $memory | int64 }}
{{- else if regexMatch "^[0-9]+Gi$" $memory }}
{{- $mi = mul (trimSuffix "Gi" $memory | int64) 1024 }}
{{- else }}
{{- fail (printf "resources.limits.memory %q: write it in Mi or Gi (e.g. %dMi), so that it can be checked against maxBodyBytesInFlight" $memory $neededMi) }}
{{- end }}
{{- if lt $mi $neededMi }}
{{- fail (printf "resources.limits.memory %s is below the %dMi that maxBodyBytesInFlight (%d bytes) needs: lower maxBodyBytesInFlight or raise the limit" $memory $neededMi (int64 .Values.maxBodyBytesInFlight)) }}
{{- end }}
{{- end }}
{{- $_ := set $resources "limits" $limits }}
{{- toYaml $resources }}
{{- end }}
