{{/* Names, labels and images shared by every template. */}}

{{- define "mce.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mce.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mce.operatorName" -}}{{ include "mce.fullname" . | trunc 54 | trimSuffix "-" }}-operator{{- end -}}
{{- define "mce.agentName" -}}{{ include "mce.fullname" . | trunc 57 | trimSuffix "-" }}-agent{{- end -}}

{{- define "mce.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "mce.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mce-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "mce.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mce.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mce.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "mce.priorityClass" -}}
{{- $pc := index .root.Values.priorityClasses .which -}}
{{- if $pc.name -}}{{ $pc.name }}{{- else if .root.Values.priorityClasses.create -}}{{ include "mce.fullname" .root | trunc 50 | trimSuffix "-" }}-{{ .which }}{{- end -}}
{{- end -}}

{{/* The agent's user name, as the API server sees requests made with its service-account token. */}}
{{- define "mce.agentUser" -}}system:serviceaccount:{{ .Release.Namespace }}:{{ include "mce.agentName" . }}{{- end -}}

{{/* The operator's user name, as the API server sees requests made with its service-account token. */}}
{{- define "mce.operatorUser" -}}system:serviceaccount:{{ .Release.Namespace }}:{{ include "mce.operatorName" . }}{{- end -}}

{{/* The quarantine placeholder's image: operator/kube/actions.ts's quarantineImage (chart-static checks they agree). */}}
{{- define "mce.quarantineImage" -}}registry.k8s.io/pause:3.10{{- end -}}
