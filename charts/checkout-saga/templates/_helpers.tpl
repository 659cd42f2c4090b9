{{- define "cs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-<name>", or the release alone when it already contains the name. */}}
{{- define "cs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "cs.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's object name (params: root, component). cs.validate keeps it within 63. */}}
{{- define "cs.component" -}}
{{- printf "%s-%s" (include "cs.fullname" .root) .component -}}
{{- end -}}

{{- define "cs.namespace" -}}{{ default .Release.Namespace .Values.checkoutNamespace }}{{- end -}}

{{- define "cs.labels" -}}
app.kubernetes.io/name: {{ include "cs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: checkout-saga
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* What a component's Deployment and Service select on (params: root, component). */}}
{{- define "cs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cs.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cs.image" -}}{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}{{- end -}}

{{- define "cs.secret" -}}{{ default (include "cs.fullname" .) .Values.secrets.existingSecret }}{{- end -}}
{{- define "cs.natsSecret" -}}{{ default (printf "%s-nats-users" (include "cs.fullname" .)) .Values.nats.existingSecret }}{{- end -}}

{{- define "cs.redisUrl" -}}
{{- .Values.external.redisUrl | default (printf "redis://%s:6379/0" (include "cs.component" (dict "root" . "component" "redis"))) -}}
{{- end -}}
{{- define "cs.natsUrl" -}}
{{- .Values.external.natsUrl | default (printf "nats://%s:4222" (include "cs.component" (dict "root" . "component" "nats"))) -}}
{{- end -}}
{{- define "cs.sandboxUrl" -}}http://{{ include "cs.component" (dict "root" . "component" "midtrans-sandbox") }}:18900{{- end -}}
{{- define "cs.snapUrl" -}}
{{- .Values.midtrans.snapUrl | default (ternary (include "cs.sandboxUrl" .) "https://app.sandbox.midtrans.com" .Values.midtrans.sandbox.enabled) -}}
{{- end -}}
{{- define "cs.coreUrl" -}}
{{- .Values.midtrans.coreUrl | default (ternary (include "cs.sandboxUrl" .) "https://api.sandbox.midtrans.com" .Values.midtrans.sandbox.enabled) -}}
{{- end -}}

{{- define "cs.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .runAsUser }}
  runAsGroup: {{ .runAsUser }}
  seccompProfile: {type: RuntimeDefault}
{{- end -}}
{{- define "cs.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: ["ALL"]}
{{- end -}}

{{/*
Values that are refused before anything is rendered (values.schema.json checks
types and ranges; these are the rules that span several values).
*/}}
{{- define "cs.validate" -}}
{{- $fullname := include "cs.fullname" . -}}
{{- if gt (len $fullname) 46 -}}
{{- fail (printf "the names of this release start with %q (%d characters), which leaves no room for the component names (at most 46): use a shorter release name or set fullnameOverride" $fullname (len $fullname)) -}}
{{- end -}}
{{- if and .Values.dev.enabled .Values.nats.existingSecret -}}
{{- fail "nats.existingSecret is for an external NATS: the dev NATS server uses the chart's own generated users (set dev.enabled=false)" -}}
{{- end -}}
{{- /*
What a running system needs is checked when installing, upgrading or templating;
`helm lint` (neither install nor upgrade) checks the chart with its defaults.
*/ -}}
{{- if or .Release.IsInstall .Release.IsUpgrade -}}
{{- if not .Values.dev.enabled -}}
{{- if not (or .Values.external.postgres.url .Values.secrets.existingSecret) -}}
{{- fail "dev.enabled is false, so the database is yours: set external.postgres.url (or the key database-url of secrets.existingSecret); for a development install use -f values-dev.yaml" -}}
{{- end -}}
{{- if not .Values.external.redisUrl -}}
{{- fail "dev.enabled is false, so Redis is yours: set external.redisUrl (redis://host:6379/0); for a development install use -f values-dev.yaml" -}}
{{- end -}}
{{- if not .Values.external.natsUrl -}}
{{- fail "dev.enabled is false, so NATS is yours: set external.natsUrl (nats://host:4222); for a development install use -f values-dev.yaml" -}}
{{- end -}}
{{- end -}}
{{- if not (or .Values.midtrans.sandbox.enabled .Values.secrets.midtransServerKey .Values.secrets.existingSecret) -}}
{{- fail "midtrans.sandbox.enabled is false, so payments go to Midtrans: set secrets.midtransServerKey (or the key midtrans-server-key of secrets.existingSecret); for the in-cluster sandbox use -f values-dev.yaml" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The content of the chart's Secret (or, with secrets.existingSecret, what the cluster
holds in that Secret), as JSON. Generated values are looked up from the Secret of an
earlier install so that `helm upgrade` keeps them; computed once per render.
*/}}
{{- define "cs.secretData" -}}
{{- if not (hasKey .Values "__csSecretData") -}}
{{- $data := dict -}}
{{- if .Values.secrets.existingSecret -}}
{{- range $key, $value := (lookup "v1" "Secret" .Release.Namespace .Values.secrets.existingSecret).data | default dict -}}
{{- $_ := set $data $key ($value | b64dec) -}}
{{- end -}}
{{- else -}}
{{- $old := dict -}}
{{- range $key, $value := (lookup "v1" "Secret" .Release.Namespace (include "cs.fullname" .)).data | default dict -}}
{{- $_ := set $old $key ($value | b64dec) -}}
{{- end -}}
{{- $dbUrl := .Values.external.postgres.url -}}
{{- if not $dbUrl -}}
{{- $dbUrl = printf "postgresql://saga:%s@%s:5432/checkout" (include "cs.postgresPassword" . | urlquery) (include "cs.component" (dict "root" . "component" "postgres")) -}}
{{- end -}}
{{- $_ := set $data "database-url" $dbUrl -}}
{{- $_ := set $data "service-tokens" (.Values.secrets.serviceTokens | default (get $old "service-tokens") | default (randAlphaNum 40)) -}}
{{- $_ := set $data "signing-keys" (.Values.secrets.signingKeys | default (get $old "signing-keys") | default (genPrivateKey "ed25519")) -}}
{{- if .Values.secrets.midtransServerKey -}}
{{- $_ := set $data "midtrans-server-key" .Values.secrets.midtransServerKey -}}
{{- else if .Values.midtrans.sandbox.enabled -}}
{{- /* Only a sandbox key is generated; a real one is never taken from an old sandbox install. */ -}}
{{- $_ := set $data "midtrans-server-key" (get $old "midtrans-server-key" | default (printf "SB-Mid-server-%s" (randAlphaNum 24))) -}}
{{- end -}}
{{- end -}}
{{- $_ := set .Values "__csSecretData" $data -}}
{{- end -}}
{{- .Values.__csSecretData | toJson -}}
{{- end -}}

{{/* The dev Postgres password: given, or generated once and kept. */}}
{{- define "cs.postgresPassword" -}}
{{- if not (hasKey .Values "__csPostgresPassword") -}}
{{- $old := (lookup "v1" "Secret" .Release.Namespace (include "cs.component" (dict "root" . "component" "postgres"))).data | default dict -}}
{{- $password := .Values.dev.postgresPassword | default (get $old "password" | b64dec) | default (randAlphaNum 32) -}}
{{- $_ := set .Values "__csPostgresPassword" $password -}}
{{- end -}}
{{- .Values.__csPostgresPassword -}}
{{- end -}}

{{/*
The NATS users' passwords (JSON): with nats.existingSecret what the cluster holds
there, else generated once and kept (looked up from the chart's own Secret).
*/}}
{{- define "cs.natsPasswords" -}}
{{- if not (hasKey .Values "__csNatsPasswords") -}}
{{- $existing := (lookup "v1" "Secret" .Release.Namespace (include "cs.natsSecret" .)).data | default dict -}}
{{- $passwords := dict -}}
{{- range $user, $_ := .Files.Get "files/nats-permissions.json" | fromJson -}}
{{- if hasKey $existing $user -}}
{{- $_ := set $passwords $user (index $existing $user | b64dec) -}}
{{- else if not $.Values.nats.existingSecret -}}
{{- $_ := set $passwords $user (randAlphaNum 32) -}}
{{- end -}}
{{- end -}}
{{- $_ := set .Values "__csNatsPasswords" $passwords -}}
{{- end -}}
{{- .Values.__csNatsPasswords | toJson -}}
{{- end -}}

{{/* The dev NATS server's config: the users, their passwords and permissions (JSON). */}}
{{- define "cs.natsConfig" -}}
{{- $passwords := include "cs.natsPasswords" . | fromJson -}}
{{- $users := list -}}
{{- range $user, $perms := .Files.Get "files/nats-permissions.json" | fromJson -}}
{{- $users = append $users (dict "user" $user "password" (get $passwords $user) "permissions" $perms) -}}
{{- end -}}
{{- dict "port" 4222 "http_port" 8222 "jetstream" (dict "store_dir" "/data") "authorization" (dict "users" $users) | toPrettyJson | replace "\\u003e" ">" -}}
{{- end -}}

{{/*
A component's own ServiceAccount and the rules it needs on the Checkouts (params:
root, component, rules): a Role in the checkout namespace, or a ClusterRole
(named with the namespace, like the operator's) with operator.watchAllNamespaces.
*/}}
{{- define "cs.access" -}}
{{- $root := .root -}}
{{- $account := include "cs.component" . -}}
{{- $clusterWide := $root.Values.operator.watchAllNamespaces -}}
{{- $kind := ternary "ClusterRole" "Role" $clusterWide -}}
{{- $role := ternary (printf "%s-%s" $root.Release.Namespace $account) $account $clusterWide -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $account }}
  labels:
    {{- include "cs.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $kind }}
metadata:
  name: {{ $role }}
  {{- if not $clusterWide }}
  namespace: {{ include "cs.namespace" $root }}
  {{- end }}
  labels: {{- include "cs.labels" $root | nindent 4 }}
rules: {{- toYaml .rules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $kind }}Binding
metadata:
  name: {{ $role }}
  {{- if not $clusterWide }}
  namespace: {{ include "cs.namespace" $root }}
  {{- end }}
  labels: {{- include "cs.labels" $root | nindent 4 }}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: {{ $kind }}, name: {{ $role }}}
subjects:
  - {kind: ServiceAccount, name: {{ $account }}, namespace: {{ $root.Release.Namespace }}}
{{- end -}}
