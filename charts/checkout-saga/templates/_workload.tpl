{{/*
One Deployment (and a Service when it has ports) of the project's image.
Params:
  root, component (object name suffix and component label), module (python -m),
  sa (ServiceAccount suffix, or "" for none),
  secretEnv (list of [variable, key of the chart's Secret]: only what its config reads),
  natsUser (its NATS user, or ""), env (list of {name, value}),
  ports (list of {name, port}), probe ({path, live, port}), resources,
  nodePort (0: ClusterIP), singleton (Recreate instead of a rolling update),
  tag (the image tag, default image.tag),
  noService (ports for probes only),
  stateDir (a writable emptyDir of 1Gi mounted there: kept across container restarts).
The pod template's checksum/secrets annotation is a hash of every secret value the
pod reads, so a changed secret rolls the pods that use it (and only those).
*/}}
{{- define "cs.workload" -}}
{{- $root := .root -}}
{{- $name := include "cs.component" . -}}
{{- $secret := include "cs.secret" $root -}}
{{- $data := include "cs.secretData" $root | fromJson -}}
{{- $used := dict -}}
{{- range .secretEnv }}
{{- $_ := set $used (index . 1) (get $data (index . 1)) }}
{{- end }}
{{- with .natsUser }}
{{- $_ := set $used (printf "nats:%s" .) (get (include "cs.natsPasswords" $root | fromJson) .) }}
{{- end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "cs.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  replicas: 1
  {{- if .singleton }}
  # One instance at a time: the operator's reconciler is not sharded.
  strategy: {type: Recreate}
  {{- end }}
  selector:
    matchLabels:
      {{- include "cs.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "cs.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
      annotations:
        checksum/secrets: {{ toJson $used | sha256sum }}
    spec:
      {{- if .sa }}
      serviceAccountName: {{ include "cs.component" (dict "root" $root "component" .sa) }}
      {{- else }}
      automountServiceAccountToken: false
      {{- end }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- include "cs.podSecurity" (dict "runAsUser" 10001) | nindent 6 }}
      containers:
        - name: {{ .component }}
          image: {{ ternary (printf "%s:%s" $root.Values.image.repository (toString .tag)) (include "cs.image" $root) (not (empty .tag)) }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ .module | quote }}]
          {{- include "cs.containerSecurity" $root | nindent 10 }}
          env:
            {{- range .secretEnv }}
            - name: {{ index . 0 }}
              valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ index . 1 }}}}
            {{- end }}
            {{- with .natsUser }}
            - {name: NATS_USER, value: {{ . | quote }}}
            - name: NATS_PASSWORD
              valueFrom: {secretKeyRef: {name: {{ include "cs.natsSecret" $root }}, key: {{ . | quote }}}}
            {{- end }}
            {{- range .env }}
            - {name: {{ .name }}, value: {{ .value | toString | quote }}}
            {{- end }}
          {{- if .ports }}
          ports:
            {{- range .ports }}
            - {name: {{ .name }}, containerPort: {{ .port }}}
            {{- end }}
          {{- end }}
          readinessProbe:
            httpGet: {path: {{ .probe.path }}, port: {{ .probe.port }}}
            periodSeconds: 5
          livenessProbe:
            httpGet: {path: {{ default .probe.path .probe.live }}, port: {{ .probe.port }}}
            initialDelaySeconds: 10
            periodSeconds: 20
            failureThreshold: 6
          resources: {{- toYaml .resources | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            {{- with .stateDir }}
            - {name: state, mountPath: {{ . | quote }}}
            {{- end }}
      volumes:
        - {name: tmp, emptyDir: {sizeLimit: 64Mi}}
        {{- if .stateDir }}
        - {name: state, emptyDir: {sizeLimit: 1Gi}}
        {{- end }}
{{- if and .ports (not .noService) }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "cs.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  type: {{ ternary "NodePort" "ClusterIP" (gt (int .nodePort) 0) }}
  selector:
    {{- include "cs.selectorLabels" . | nindent 4 }}
  ports:
    {{- range .ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .port }}
      {{- if and (gt (int $.nodePort) 0) (eq .name "http") }}
      nodePort: {{ $.nodePort }}
      {{- end }}
    {{- end }}
{{- end }}
{{- end -}}
