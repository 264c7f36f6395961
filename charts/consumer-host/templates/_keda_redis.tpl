{{/*
The KEDA Redis trigger, read from the broker URL when it is given inline (keda.redis.type and
keda.redis.address override): redis, redis-sentinel or redis-cluster from `?sentinel=` and
`?cluster=true`, with `-streams` for the redis+streams:// schemes; the addresses are the URL's
hosts (the sentinels, or the cluster's seed nodes), the Sentinel master its `sentinel=`.
*/}}
{{- define "consumer-host.kedaRedisType" -}}
{{- $redis := .Values.keda.redis -}}
{{- if $redis.type -}}
{{ $redis.type }}
{{- else -}}
{{- $url := .Values.broker.url | default "" -}}
{{- $kind := "redis" -}}
{{- if regexMatch "[?&]sentinel=" $url -}}
{{- $kind = "redis-sentinel" -}}
{{- else if regexMatch "[?&]cluster=(true|1|yes|on)" $url -}}
{{- $kind = "redis-cluster" -}}
{{- end -}}
{{- if regexMatch "^rediss?\\+streams://" $url -}}
{{- $kind = printf "%s-streams" $kind -}}
{{- end -}}
{{ $kind }}
{{- end -}}
{{- end }}

{{- define "consumer-host.kedaRedisAddress" -}}
{{- $url := .Values.broker.url | default "" -}}
{{- $fromUrl := "" -}}
{{- if regexMatch "^rediss?(\\+streams)?://" $url -}}
{{- $fromUrl = regexReplaceAll "^[^:]+://([^@/]*@)?([^/?#]*).*$" $url "${2}" -}}
{{- end -}}
{{ required "keda.redis.address is required (host:port, or the broker URL inline)" (.Values.keda.redis.address | default $fromUrl) }}
{{- end }}

{{- define "consumer-host.kedaRedisMaster" -}}
{{- $url := .Values.broker.url | default "" -}}
{{- $fromUrl := "" -}}
{{- if regexMatch "[?&]sentinel=" $url -}}
{{- $fromUrl = regexReplaceAll "^.*[?&]sentinel=([^&#]*).*$" $url "${1}" -}}
{{- end -}}
{{ required "keda.redis.sentinelMaster is required for redis-sentinel" (.Values.keda.redis.sentinelMaster | default $fromUrl) }}
{{- end }}

{{- define "consumer-host.kedaRedisTrigger" -}}
{{- $redis := .Values.keda.redis -}}
{{- $type := include "consumer-host.kedaRedisType" . -}}
{{- $streams := hasSuffix "-streams" $type -}}
{{- $tls := or $redis.enableTLS (regexMatch "^rediss" (.Values.broker.url | default "")) -}}
- type: {{ $type }}
  metadata:
    {{- if or (hasPrefix "redis-sentinel" $type) (hasPrefix "redis-cluster" $type) }}
    addresses: {{ include "consumer-host.kedaRedisAddress" . | quote }}
    {{- else }}
    address: {{ include "consumer-host.kedaRedisAddress" . | quote }}
    {{- end }}
    {{- if hasPrefix "redis-sentinel" $type }}
    sentinelMaster: {{ include "consumer-host.kedaRedisMaster" . | quote }}
    {{- end }}
    {{- if $streams }}
    stream: {{ required "keda.redis.listName is required (the stream)" $redis.listName | quote }}
    consumerGroup: {{ $redis.consumerGroup | default $redis.listName | quote }}
    pendingEntriesCount: {{ $redis.listLength | toString | quote }}
    {{- else }}
    listName: {{ required "keda.redis.listName is required" $redis.listName | quote }}
    listLength: {{ $redis.listLength | toString | quote }}
    activationListLength: {{ $redis.activationListLength | toString | quote }}
    {{- end }}
    {{- if not (hasPrefix "redis-cluster" $type) }}
    databaseIndex: {{ $redis.databaseIndex | toString | quote }}
    {{- end }}
    enableTLS: {{ $tls | toString | quote }}
{{- end }}
