{{/* Names, labels and the few values computed in more than one template. */}}

{{- define "kurable.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kurable.fullname" -}}
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

{{- define "kurable.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kurable.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kurable
{{- end }}

{{- define "kurable.operatorSelector" -}}
app.kubernetes.io/name: {{ include "kurable.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kurable.etcdSelector" -}}
app.kubernetes.io/name: {{ include "kurable.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: etcd
{{- end }}

{{- define "kurable.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kurable.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Replicas > 1 run as kopf peers: one active, the others on hot standby. */}}
{{- define "kurable.peering" -}}
{{- if and (gt (int .Values.replicas) 1) .Values.peering.enabled }}{{ default (include "kurable.fullname" .) .Values.peering.name }}{{ end }}
{{- end }}

{{- define "kurable.etcdBundled" -}}
{{- if not .Values.etcd.endpoints }}true{{ end }}
{{- end }}

{{- define "kurable.etcdName" -}}
{{- printf "%s-etcd" (include "kurable.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The endpoints Kurable's clients use: the given ones, else every member of the
     bundled etcd by name (the client moves to the next when the one in use fails). */}}
{{- define "kurable.etcdEndpoints" -}}
{{- if .Values.etcd.endpoints }}
{{- join "," .Values.etcd.endpoints }}
{{- else }}
{{- $name := include "kurable.etcdName" . }}
{{- $scheme := ternary "https" "http" .Values.etcd.tls.enabled }}
{{- $urls := list }}
{{- range $i := until (int .Values.etcd.replicas) }}
{{- $urls = append $urls (printf "%s://%s-%d.%s-peers.%s.svc:2379" $scheme $name $i $name $.Release.Namespace) }}
{{- end }}
{{- join "," $urls }}
{{- end }}
{{- end }}

{{/* Whether Kurable's clients present a client certificate / log in: always for the
     bundled etcd with tls/auth on; for an existing etcd when a Secret is named. */}}
{{- define "kurable.etcdClientTLS" -}}
{{- if include "kurable.etcdBundled" . }}{{ if .Values.etcd.tls.enabled }}true{{ end }}{{ else if .Values.etcd.tls.clientSecret }}true{{ end }}
{{- end }}

{{- define "kurable.etcdClientAuth" -}}
{{- if include "kurable.etcdBundled" . }}{{ if .Values.etcd.auth.enabled }}true{{ end }}{{ else if .Values.etcd.auth.existingSecret }}true{{ end }}
{{- end }}

{{- define "kurable.etcdBackupSelector" -}}
app.kubernetes.io/name: {{ include "kurable.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: etcd-backup
{{- end }}

{{- define "kurable.etcdServerSecret" -}}
{{- default (printf "%s-server-tls" (include "kurable.etcdName" .)) .Values.etcd.tls.serverSecret }}
{{- end }}

{{- define "kurable.etcdClientSecret" -}}
{{- default (printf "%s-client-tls" (include "kurable.etcdName" .)) .Values.etcd.tls.clientSecret }}
{{- end }}

{{- define "kurable.etcdAuthSecret" -}}
{{- default (printf "%s-auth" (include "kurable.etcdName" .)) .Values.etcd.auth.existingSecret }}
{{- end }}

{{/* Environment of an etcd client container (operator, endpoint, init and backup
     containers); `user` and `passwordKey` say who logs in (root for set-up and backups). */}}
{{- define "kurable.etcdClientEnv" -}}
{{- $ := .root -}}
- name: KURABLE_ETCD_ENDPOINTS
  value: {{ include "kurable.etcdEndpoints" $ | quote }}
- name: KURABLE_ETCD_PREFIX
  value: {{ $.Values.etcd.prefix | quote }}
{{- if include "kurable.etcdClientTLS" $ }}
- name: KURABLE_ETCD_CACERT
  value: /etc/kurable/etcd-tls/ca.crt
- name: KURABLE_ETCD_CERT
  value: /etc/kurable/etcd-tls/tls.crt
- name: KURABLE_ETCD_KEY
  value: /etc/kurable/etcd-tls/tls.key
{{- end }}
{{- if include "kurable.etcdClientAuth" $ }}
- name: KURABLE_ETCD_USER
  value: {{ .user | default $.Values.etcd.auth.user | quote }}
- name: KURABLE_ETCD_PASSWORD_FILE
  value: /etc/kurable/etcd-auth/{{ .passwordKey | default "password" }}
{{- end }}
{{- end }}

{{- define "kurable.etcdClientMounts" -}}
{{- if include "kurable.etcdClientTLS" . }}
- name: etcd-tls
  mountPath: /etc/kurable/etcd-tls
  readOnly: true
{{- end }}
{{- if include "kurable.etcdClientAuth" . }}
- name: etcd-auth
  mountPath: /etc/kurable/etcd-auth
  readOnly: true
{{- end }}
{{- end }}

{{/* `keys`: the keys of the auth Secret this pod may read (root's only where needed). */}}
{{- define "kurable.etcdClientVolumes" -}}
{{- $ := .root }}
{{- if include "kurable.etcdClientTLS" $ }}
- name: etcd-tls
  secret:
    secretName: {{ include "kurable.etcdClientSecret" $ }}
    defaultMode: 0440
{{- end }}
{{- if include "kurable.etcdClientAuth" $ }}
- name: etcd-auth
  secret:
    secretName: {{ include "kurable.etcdAuthSecret" $ }}
    defaultMode: 0440
    items:
      {{- range .keys }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}
{{- end }}

{{- define "kurable.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "kurable.endpointName" -}}
{{- printf "%s-endpoint" (include "kurable.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kurable.endpointSelector" -}}
app.kubernetes.io/name: {{ include "kurable.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: endpoint
{{- end }}

{{- define "kurable.endpointServiceAccountName" -}}
{{- if .Values.endpoint.serviceAccount.create }}
{{- default (include "kurable.endpointName" .) .Values.endpoint.serviceAccount.name }}
{{- else }}
{{- required "endpoint.serviceAccount.name is required when endpoint.serviceAccount.create is false" .Values.endpoint.serviceAccount.name }}
{{- end }}
{{- end }}
