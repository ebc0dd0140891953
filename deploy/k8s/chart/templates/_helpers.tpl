{{/* Labels of every object: (dict "root" $ "name" "gateway") */}}
{{- define "mmgateway.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: mmgateway
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{/* What selectors match: the component and the release. */}}
{{- define "mmgateway.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/* An image reference: (dict "root" $ "image" .Values.images.gateway) */}}
{{- define "mmgateway.image" -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end }}

{{/* The security context of every container but vLLM's. */}}
{{- define "mmgateway.hardened" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* A non-root pod: the user id. */}}
{{- define "mmgateway.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Scheduling fields of a pod spec from a values section. */}}
{{- define "mmgateway.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "mmgateway.pullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Whether the Prometheus Operator objects are rendered. */}}
{{- define "mmgateway.monitoring" -}}
{{- $mode := .Values.monitoring.enabled -}}
{{- if eq (toString $mode) "auto" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end -}}
{{- else if $mode -}}
true
{{- end -}}
{{- end }}

{{/* The Redis the gateways share, host:port, or nothing. */}}
{{- define "mmgateway.redisHost" -}}
{{- if .Values.redis.host -}}
{{ .Values.redis.host }}
{{- else if .Values.redis.enabled -}}
redis
{{- end -}}
{{- end }}

{{/* The vLLM pods' model: the profile's unless set. */}}
{{- define "mmgateway.vllmProfile" -}}
{{- $profile := index .Values.vllm.profiles .Values.vllm.profile -}}
{{- if not $profile -}}
{{- fail (printf "vllm.profile: %q is not one of vllm.profiles (%s)" .Values.vllm.profile (keys .Values.vllm.profiles | sortAlpha | join ", ")) -}}
{{- end -}}
{{- toYaml $profile -}}
{{- end }}

{{/* The gateway's config.yaml: the values' config plus the groups of what the chart runs. */}}
{{- define "mmgateway.gatewayConfig" -}}
{{- $config := deepCopy .Values.gateway.config -}}
{{- $groups := list -}}
{{- $names := list -}}
{{- range ($config.model_list | default list) }}{{ $names = append $names .model_name }}{{ end -}}
{{- $perPod := int .Values.gateway.maxParallelRequestsPerPod -}}
{{- with .Values.gateway.groups -}}
{{- if and $.Values.vllm.enabled .vision (not (has .vision $names)) -}}
{{- $groups = append $groups (dict "model_name" .vision "litellm_params" (dict "model" (printf "hosted_vllm/%s" $.Values.vllm.servedModelName) "api_base" "http://vllm-headless:8000/v1" "timeout" 300 "stream_timeout" 120 "max_parallel_requests" $perPod) "model_info" (dict "id" "vllm" "supports_vision" true "per_pod" true)) -}}
{{- end -}}
{{- if and $.Values.transcription.enabled .transcription (not (has .transcription $names)) -}}
{{- $groups = append $groups (dict "model_name" .transcription "litellm_params" (dict "model" (printf "hosted_vllm/%s" $.Values.transcription.servedModelName) "api_base" "http://whisper-headless:8000/v1" "timeout" 300 "max_parallel_requests" $perPod) "model_info" (dict "id" "whisper" "per_pod" true)) -}}
{{- end -}}
{{- if and $.Values.video.enabled .videoSessions (not (has .videoSessions $names)) -}}
{{/* Each video session as a model: the video service answers with the caller's own key (forwarded). */}}
{{- $groups = append $groups (dict "model_name" .videoSessions "litellm_params" (dict "model" (printf "openai/%s" .videoSessions) "api_base" "http://video:8080/v1" "forward_client_authorization" true "timeout" 300) "model_info" (dict "id" "video-sessions")) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $config "model_list" (concat $groups ($config.model_list | default list)) -}}
{{- $redis := include "mmgateway.redisHost" . -}}
{{- $router := $config.router_settings | default dict -}}
{{- if and $redis (not $router.redis_host) (not $router.redis_url) -}}
{{- $_ := set $router "redis_host" $redis -}}
{{- $_ := set $router "redis_port" (int .Values.redis.port) -}}
{{- end -}}
{{- $_ := set $config "router_settings" $router -}}
{{- $final := list -}}
{{- range $config.model_list }}{{ $final = append $final .model_name }}{{ end -}}
{{- range ($router.fallbacks | default list) -}}
{{- range $from, $to := . -}}
{{- range $to -}}
{{- if not (has . $final) -}}
{{- fail (printf "gateway.config.router_settings.fallbacks: %s falls back to %q, which is no group of the gateway's config (is the part that serves it disabled?)" $from .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .Values.video.enabled -}}
{{- $settings := $config.gateway_settings | default dict -}}
{{- $keys := $settings.api_keys | default list -}}
{{- $models := list .Values.video.visionModel .Values.video.chatModel -}}
{{- if .Values.video.embeddingModel }}{{ $models = append $models .Values.video.embeddingModel }}{{ end -}}
{{- if and .Values.transcription.enabled .Values.gateway.groups.transcription }}{{ $models = append $models .Values.gateway.groups.transcription }}{{ end -}}
{{- $present := false -}}
{{- range $keys }}{{ if eq (toString .name) "video-service" }}{{ $present = true }}{{ end }}{{ end -}}
{{- if not $present -}}
{{- $keys = append $keys (dict "key" "os.environ/VIDEO_SERVICE_KEY" "name" "video-service" "models" $models) -}}
{{- end -}}
{{- $_ := set $settings "api_keys" $keys -}}
{{- $_ := set $config "gateway_settings" $settings -}}
{{- end -}}
{{- toYaml $config -}}
{{- end }}

{{/* The environment the video API and the video workers share. */}}
{{- define "mmgateway.videoEnv" -}}
{{- $v := .Values.video -}}
- name: VIDEO_GATEWAY_URL
  value: http://gateway:4000/v1
- name: VIDEO_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.gateway }}
      key: VIDEO_SERVICE_KEY
- name: VIDEO_VISION_MODEL
  value: {{ $v.visionModel | quote }}
- name: VIDEO_CHAT_MODEL
  value: {{ $v.chatModel | quote }}
{{- with $v.embeddingModel }}
- name: VIDEO_EMBEDDING_MODEL
  value: {{ . | quote }}
{{- end }}
{{- if and .Values.transcription.enabled .Values.gateway.groups.transcription }}
- name: VIDEO_TRANSCRIPTION_MODEL
  value: {{ .Values.gateway.groups.transcription | quote }}
{{- end }}
{{- if eq $v.engine "temporal" }}
- name: VIDEO_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.video }}
      key: VIDEO_DATABASE_URL
- name: VIDEO_TEMPORAL_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.video }}
      key: VIDEO_TEMPORAL_API_KEY
      optional: true
{{- end }}
{{- range $name, $value := $v.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* A NetworkPolicy peer: every pod of one namespace. */}}
{{- define "mmgateway.fromNamespace" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ . }}
{{- end }}
