{{/*
One Deployment (and Service when it has ports) of the project's image.
Params: root, name, module, sa, ports (list of {name, port}), env (YAML list string),
probe ({path, port} or nil).
*/}}
{{- define "cs.workload" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  labels:
    {{- include "cs.labels" $root | nindent 4 }}
    app.kubernetes.io/name: {{ .name }}
spec:
  replicas: 1
  {{- if .singleton }}
  # One instance at a time: the operator's reconciler is not sharded.
  strategy: {type: Recreate}
  {{- end }}
  selector:
    matchLabels: {app.kubernetes.io/name: {{ .name }}}
  template:
    metadata:
      labels:
        {{- include "cs.labels" $root | nindent 8 }}
        app.kubernetes.io/name: {{ .name }}
    spec:
      {{- if .sa }}
      serviceAccountName: {{ .sa }}
      {{- else }}
      automountServiceAccountToken: false
      {{- end }}
      {{- include "cs.podSecurity" $root | nindent 6 }}
      containers:
        - name: {{ .name }}
          image: {{ include "cs.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ .module | quote }}]
          {{- include "cs.containerSecurity" $root | nindent 10 }}
          env:
            {{- include "cs.secretEnv" $root | nindent 12 }}
            {{- .env | nindent 12 }}
          {{- if .ports }}
          ports:
            {{- range .ports }}
            - {name: {{ .name }}, containerPort: {{ .port }}}
            {{- end }}
          {{- end }}
          {{- if .probe }}
          readinessProbe:
            httpGet: {path: {{ .probe.path }}, port: {{ .probe.port }}}
            periodSeconds: 5
          livenessProbe:
            httpGet: {path: {{ default .probe.path .probe.live }}, port: {{ .probe.port }}}
            periodSeconds: 20
            failureThreshold: 6
          {{- end }}
          resources: {{- toYaml $root.Values.operator.resources | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
      volumes:
        - {name: tmp, emptyDir: {}}
{{- if .ports }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  labels: {{- include "cs.labels" $root | nindent 4 }}
spec:
  {{- if .nodePort }}
  type: NodePort
  {{- end }}
  selector: {app.kubernetes.io/name: {{ .name }}}
  ports:
    {{- range .ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .port }}
      {{- if and $.nodePort (eq .name "http") }}
      nodePort: {{ $.nodePort }}
      {{- end }}
    {{- end }}
{{- end }}
{{- end -}}
