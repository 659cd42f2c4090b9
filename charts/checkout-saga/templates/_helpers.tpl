{{- define "cs.name" -}}checkout-saga{{- end -}}
{{- define "cs.secret" -}}{{ default (printf "%s-secrets" (include "cs.name" .)) .Values.secrets.existingSecret }}{{- end -}}
{{- define "cs.namespace" -}}{{ default .Release.Namespace .Values.checkoutNamespace }}{{- end -}}
{{- define "cs.labels" -}}
app.kubernetes.io/part-of: checkout-saga
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "cs.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}
{{- define "cs.secretEnv" -}}
- name: SERVICE_TOKENS
  valueFrom: {secretKeyRef: {name: {{ include "cs.secret" . }}, key: service-tokens}}
{{- end -}}
{{- define "cs.natsSecret" -}}{{ default (printf "%s-nats-users" (include "cs.name" .)) .Values.nats.existingSecret }}{{- end -}}
{{/* A workload's own NATS user and password (params: root, user). */}}
{{- define "cs.natsEnv" -}}
- {name: NATS_USER, value: {{ .user | quote }}}
- name: NATS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "cs.natsSecret" .root }}, key: {{ .user | quote }}}}
{{- end -}}
{{- define "cs.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  seccompProfile: {type: RuntimeDefault}
{{- end -}}
{{- define "cs.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: ["ALL"]}
{{- end -}}
