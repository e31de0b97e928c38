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
{{- if gt (int .Values.replicas) 1 }}{{ default (include "kurable.fullname" .) .Values.peering.name }}{{ end }}
{{- end }}

{{- define "kurable.etcdBundled" -}}
{{- if not .Values.etcd.endpoints }}true{{ end }}
{{- end }}

{{- define "kurable.etcdName" -}}
{{- printf "%s-etcd" (include "kurable.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* host:port list the operator connects to (it uses the first; the bundled
     etcd's client Service balances over its members). */}}
{{- define "kurable.etcdEndpoints" -}}
{{- if .Values.etcd.endpoints }}
{{- join "," .Values.etcd.endpoints }}
{{- else }}
{{- printf "%s.%s.svc:2379" (include "kurable.etcdName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "kurable.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
