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

{{/* Checks the values that only make sense together. */}}
{{- define "sluice.check" -}}
{{- if not (has .Values.webhook.certificate (list "executor" "cert-manager" "secret")) }}
{{- fail (printf "webhook.certificate must be executor, cert-manager or secret, got %q" .Values.webhook.certificate) }}
{{- end }}
{{- range .Values.watchNamespaces }}
{{- if or (eq . $.Release.Namespace) (eq . "kube-system") }}
{{- fail (printf "watchNamespaces: %q cannot be watched: Sluice's own namespace and kube-system are never admitted, so the executor can always be repaired" .) }}
{{- end }}
{{- end }}
{{- if and .Values.watchNamespaces (eq .Values.webhook.certificate "executor") }}
{{- fail "watchNamespaces: the executor has no cluster-wide permission to write the webhook configurations' caBundle; set webhook.certificate to cert-manager or secret" }}
{{- end }}
{{- if and (eq .Values.webhook.certificate "secret") (not .Values.webhook.caBundle) }}
{{- fail "webhook.certificate secret needs webhook.caBundle (the base64 PEM of the CA that signed the Secret sluice-webhook)" }}
{{- end }}
{{- if and .Values.webhook.caBundle (not (contains "-----BEGIN CERTIFICATE-----" (b64dec .Values.webhook.caBundle))) }}
{{- fail "webhook.caBundle must be the base64 of a PEM certificate (-----BEGIN CERTIFICATE-----)" }}
{{- end }}
{{- end }}

{{/* The executor's rules on what it releases: workloads, traffic, Rollouts. */}}
{{- define "sluice.executorRules" -}}
- apiGroups: [sluice.dev]
  resources: [rollouts]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [sluice.dev]
  resources: [rollouts/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [list, watch, create, patch]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, patch]
- apiGroups: [apps]
  resources: [controllerrevisions]
  verbs: [get]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [get, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end }}
