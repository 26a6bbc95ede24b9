{{/*
Well-known values of the gateway pod, in one place. The binaries use the same
numbers; change them together.
*/}}
{{- define "meshgate.gatewayAdminAddr" -}}127.0.0.1:19000{{- end -}}
{{- define "meshgate.sdsAgentAdminAddr" -}}127.0.0.1:15030{{- end -}}
{{- define "meshgate.loopbackOnlyPorts" -}}19000,15030{{- end -}}
{{- define "meshgate.sdsSocketDir" -}}/var/run/secrets/workload-spiffe-uds{{- end -}}
{{- define "meshgate.sdsSocket" -}}/var/run/secrets/workload-spiffe-uds/socket{{- end -}}
{{- define "meshgate.tokenDir" -}}/var/run/secrets/tokens{{- end -}}
{{- define "meshgate.rootCertDir" -}}/var/run/secrets/istio{{- end -}}
{{- define "meshgate.configDir" -}}/etc/meshgate/{{- end -}}
{{/* Istio's proxy uid: gateway-init exempts it from capture in sidecar mode. */}}
{{- define "meshgate.istioProxyUid" -}}1337{{- end -}}

{{/* Name of the proxy's objects (Deployment, Service, ServiceAccount, ...), as Gloo names them. */}}
{{- define "meshgate.proxyName" -}}gateway-proxy{{- end -}}

{{- define "meshgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "meshgate.selectorLabels" . }}
{{- end -}}

{{- define "meshgate.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ include "meshgate.proxyName" . }}
{{- end -}}

{{/* "repository:tag" with the global registry, tag and their defaults. Call with (dict "image" X "root" $). */}}
{{- define "meshgate.image" -}}
{{- $g := .root.Values.global.image -}}
{{- $repo := .image.repository -}}
{{- if $g.registry -}}{{- $repo = printf "%s/%s" (trimSuffix "/" $g.registry) $repo -}}{{- end -}}
{{- $tag := .image.tag | default $g.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $repo (toString $tag) -}}
{{- end -}}

{{- define "meshgate.pullPolicy" -}}
{{- .image.pullPolicy | default .root.Values.global.image.pullPolicy -}}
{{- end -}}

{{/* "true" when the pod is in the mesh layout (global.istioIntegration.enabled). */}}
{{- define "meshgate.integration" -}}
{{- if .Values.global.istioIntegration.enabled -}}true{{- end -}}
{{- end -}}

{{/* "native" or "sidecar" when integration is on, "" otherwise. */}}
{{- define "meshgate.mode" -}}
{{- if .Values.global.istioIntegration.enabled -}}{{ .Values.global.istioIntegration.mode }}{{- end -}}
{{- end -}}

{{/* "true" when the pod runs the sds-agent: native integration, or global.istioSDS.enabled. */}}
{{- define "meshgate.sdsAgent" -}}
{{- if or (eq (include "meshgate.mode" .) "native") .Values.global.istioSDS.enabled -}}true{{- end -}}
{{- end -}}

{{/* "true" when the gateway gets the mesh flags (trust domain, upstream TLS mode). */}}
{{- define "meshgate.meshAware" -}}
{{- if or .Values.global.istioIntegration.enabled .Values.global.istioSDS.enabled -}}true{{- end -}}
{{- end -}}

{{/*
The gateway's upstream TLS mode. Native integration: auto when enableAutoMtls, else
disable (per-backend opt-in). Sidecar mode: disable, the injected istio-proxy does
mTLS. SDS only: disable (per-backend opt-in). podTemplate's upstreamTls overrides.
*/}}
{{- define "meshgate.upstreamTls" -}}
{{- $p := .Values.gatewayProxies.gatewayProxy -}}
{{- if $p.upstreamTls -}}
{{- $p.upstreamTls -}}
{{- else if and (eq (include "meshgate.mode" .) "native") .Values.global.istioIntegration.enableAutoMtls -}}
auto
{{- else -}}
disable
{{- end -}}
{{- end -}}

{{/* "true" when the gateway watches the API server (provider.type=kubernetes). */}}
{{- define "meshgate.kubernetes" -}}
{{- if eq .Values.gatewayProxies.gatewayProxy.provider.type "kubernetes" -}}true{{- end -}}
{{- end -}}

{{/* The Gateway the pod serves, "namespace/name". */}}
{{- define "meshgate.gatewayRef" -}}
{{- .Values.gatewayProxies.gatewayProxy.provider.gateway | default (printf "%s/%s" .Release.Namespace (include "meshgate.proxyName" .)) -}}
{{- end -}}

{{/* Namespaces whose Secrets and ConfigMaps the gateway reads, as a list (JSON). */}}
{{- define "meshgate.secretNamespaces" -}}
{{- .Values.rbac.secretNamespaces | default (list .Release.Namespace) | uniq | toJson -}}
{{- end -}}

{{/* Edge ports as "8080,8443". */}}
{{- define "meshgate.edgePorts" -}}
{{- $t := .Values.gatewayProxies.gatewayProxy.podTemplate -}}
{{- printf "%d,%d" (int $t.httpPort) (int $t.httpsPort) -}}
{{- end -}}

{{/* Checks across values that a JSON schema cannot express; fails with a message naming the keys. */}}
{{- define "meshgate.validate" -}}
{{- $p := .Values.gatewayProxies.gatewayProxy -}}
{{- $t := $p.podTemplate -}}
{{- if eq (int $t.httpPort) (int $t.httpsPort) -}}
{{- fail (printf "gatewayProxies.gatewayProxy.podTemplate.httpPort and httpsPort must differ (both are %d)" (int $t.httpPort)) -}}
{{- end -}}
{{- range $port := list (int $t.httpPort) (int $t.httpsPort) -}}
{{- if or (eq $port 19000) (eq $port 15030) (eq $port 15001) (eq $port 15006) (eq $port 15012) -}}
{{- fail (printf "gatewayProxies.gatewayProxy.podTemplate edge port %d collides with a port reserved for the admin servers or the mesh (19000, 15030, 15001, 15006, 15012)" $port) -}}
{{- end -}}
{{- end -}}
{{- if and (eq (include "meshgate.mode" .) "sidecar") (eq (toString (index $t.podSecurityContext "runAsUser" | default "")) (include "meshgate.istioProxyUid" .)) -}}
{{- fail "gatewayProxies.gatewayProxy.podTemplate.podSecurityContext.runAsUser must not be 1337 in sidecar mode: gateway-init exempts Istio's proxy uid 1337 from capture, so the gateway's upstream traffic would bypass the istio-proxy" -}}
{{- end -}}
{{- if and (has $p.upstreamTls (list "auto" "istio-mutual")) (not (include "meshgate.sdsAgent" .)) -}}
{{- fail (printf "gatewayProxies.gatewayProxy.upstreamTls=%s needs the mesh certificates of the sds-agent: set global.istioIntegration.enabled=true (mode native) or global.istioSDS.enabled=true" $p.upstreamTls) -}}
{{- end -}}
{{- $pdb := $p.podDisruptionBudget -}}
{{- if and $pdb.enabled (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "invalid" $pdb.maxUnavailable)) -}}
{{- fail "gatewayProxies.gatewayProxy.podDisruptionBudget: set only one of minAvailable and maxUnavailable (set the other to null)" -}}
{{- end -}}
{{- if and $pdb.enabled (kindIs "invalid" $pdb.minAvailable) (kindIs "invalid" $pdb.maxUnavailable) -}}
{{- fail "gatewayProxies.gatewayProxy.podDisruptionBudget: set one of minAvailable and maxUnavailable, or enabled=false" -}}
{{- end -}}
{{- $hpa := $p.horizontalPodAutoscaler -}}
{{- if and $hpa.enabled (gt (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- fail (printf "gatewayProxies.gatewayProxy.horizontalPodAutoscaler: minReplicas (%d) is greater than maxReplicas (%d)" (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- end -}}
{{- end -}}
