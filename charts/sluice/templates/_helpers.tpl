{{/* Labels of every object of one service. */}}
{{- define "sluice.labels" -}}
app.kubernetes.io/name: {{ . }}
app.kubernetes.io/part-of: sluice
{{- end }}

{{/* The image every container runs. */}}
{{- define "sluice.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The pod's security context: the restricted Pod Security Standard. */}}
{{- define "sluice.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The container's security context. */}}
{{- define "sluice.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* Probes on the admin port; with mutual TLS the kubelet, which has no
     client certificate, can only check that the ports accept connections. */}}
{{- define "sluice.probes" -}}
{{- if .Values.tls.enabled }}
livenessProbe:
  tcpSocket:
    port: admin
  periodSeconds: 10
readinessProbe:
  tcpSocket:
    port: grpc
  periodSeconds: 5
{{- else }}
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 10
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 5
{{- end }}
{{- end }}

{{/* TLS environment, mounts and volume of service `.name`. */}}
{{- define "sluice.tlsEnv" -}}
{{- if .Values.tls.enabled }}
- name: SLUICE_TLS_CERT
  value: /etc/sluice/tls/tls.crt
- name: SLUICE_TLS_KEY
  value: /etc/sluice/tls/tls.key
- name: SLUICE_TLS_CLIENT_CA
  value: /etc/sluice/tls/ca.crt
- name: SLUICE_TLS_CA
  value: /etc/sluice/tls/ca.crt
{{- end }}
{{- end }}
