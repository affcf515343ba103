{{- define "modelswap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelswap.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "modelswap.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelswap.labels" -}}
app.kubernetes.io/name: {{ include "modelswap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "modelswap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelswap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelswap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelswap.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the agent's init step and its sidecar: registry, model, credentials. */}}
{{- define "modelswap.agentEnv" -}}
- name: MODELSWAP_REGISTRY
  value: {{ .Values.registry.url | quote }}
- name: MODELSWAP_DEST
  value: /models
- name: MODELSWAP_POINTER
  value: {{ .Values.pointer | quote }}
- name: MODELSWAP_KEEP
  value: {{ .Values.agent.keep | quote }}
- name: MODELSWAP_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- with .Values.registry.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.registry.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.registry.azureAccount }}
- name: AZURE_STORAGE_ACCOUNT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.agent.onSwap.url }}
- name: MODELSWAP_ON_SWAP_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.agent.onSwap.urlSecret.name }}
- name: MODELSWAP_ON_SWAP_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.agent.onSwap.urlSecret.name }}
      key: {{ .Values.agent.onSwap.urlSecret.key | default "url" }}
{{- end }}
{{- if .Values.agent.refreshToken.secretName }}
- name: MODELSWAP_REFRESH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.agent.refreshToken.secretName }}
      key: {{ .Values.agent.refreshToken.key | default "token" }}
{{- end }}
{{- if or .Values.agent.trustKeys.secretName .Values.agent.trustKeys.configMapName }}
- name: MODELSWAP_TRUST_KEY
  value: /etc/modelswap/trust
{{- end }}
{{- with .Values.agent.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "modelswap.agentMounts" -}}
- name: models
  mountPath: /models
{{- if or .Values.agent.trustKeys.secretName .Values.agent.trustKeys.configMapName }}
- name: trust-keys
  mountPath: /etc/modelswap/trust
  readOnly: true
{{- end }}
{{- end -}}

{{- define "modelswap.agentEnvFrom" -}}
{{- with .Values.registry.existingSecret }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end -}}

{{- define "modelswap.agentArgs" -}}
- agent
- {{ .Values.model | quote }}
- --host=0.0.0.0
- --port={{ .Values.agent.port }}
- --interval={{ .Values.agent.interval }}
{{- if or .Values.agent.report .Values.rollouts.enabled }}
- --report
{{- end }}
{{- if .Values.rollouts.enabled }}
{{- /* the judge's live metrics: the loader's own endpoints, or the server's /metrics */}}
{{- if .Values.server.loaderHealthPort }}
- --loader-url=http://127.0.0.1:{{ .Values.server.loaderHealthPort }}/health
{{- end }}
{{- with (.Values.rollouts.metricsUrl | default (ternary (printf "http://127.0.0.1:%v/metrics" .Values.server.loaderHealthPort) "" (gt (int .Values.server.loaderHealthPort) 0))) }}
- --metrics-url={{ . }}
{{- end }}
{{- end }}
{{- include "modelswap.serverArgs" . }}
{{- range .Values.agent.reload }}
- --reload={{ . }}
{{- end }}
{{- with .Values.agent.serverModel }}
- --server-model={{ . }}
{{- end }}
{{- if .Values.agent.onSwap.command }}
- --on-swap-command={{ join " " .Values.agent.onSwap.command }}
{{- end }}
{{- range .Values.agent.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "modelswap.agentProbes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: agent-http}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: agent-http}
  periodSeconds: 5
{{- end -}}

{{- /* what the init container's first sync and the sidecar both need */}}
{{- define "modelswap.serverArgs" -}}
{{- with .Values.agent.tfservingDir }}
- --tfserving-dir={{ . }}
{{- end }}
{{- end -}}
