//! What the lab's gateways are configured with: Gateway API resources as files (the same
//! kinds the gateway reads from Kubernetes) and edge certificates made by openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::netns::check;
use super::{HTTPBIN_PORT, Pod};

/// Hostnames the lab routes.
pub mod hosts {
    /// Plain HTTP to httpbin v1 (canary header, 90/10 split and path rewrite live here too).
    pub const HTTPBIN: &str = "httpbin.example.com";
    /// Plain HTTP to httpbin v2 (host routing).
    pub const ECHO: &str = "echo.example.com";
    /// HTTPS (TLS terminated at the edge); HTTP to it redirects.
    pub const SECURE: &str = "secure.example.com";
    /// HTTPS with client certificates required (MUTUAL).
    pub const MTLS: &str = "mtls.example.com";
    /// A second HTTPS listener on the same port as [`SECURE`], with its own route: a
    /// request whose TLS handshake chose it but whose Host names [`SECURE`] is misdirected.
    pub const PUBLIC: &str = "public.example.com";
    /// What the path-rewrite route rewrites the Host header to.
    pub const REWRITTEN: &str = "httpbin.default.svc.cluster.local";
    /// An Istio Gateway server + VirtualService (the sidecar-layout gateway), on the HTTP
    /// edge port beside the Gateway API listener.
    pub const WEBAPP: &str = "webapp.istioinaction.io";
    /// A Gloo Edge VirtualService to the Upstream `default-httpbin-8000` (sidecar layout).
    pub const GLOO: &str = "gloo.example.com";
    /// An HTTPRoute with a local rate limit (sidecar layout).
    pub const RATE_LIMITED: &str = "ratelimit.example.com";
    /// An HTTPRoute behind an AuthorizationPolicy that denies the client pod's address.
    pub const AUTHZ: &str = "authz.example.com";
    /// The Istio walkthrough's second HTTPS host (its own certificate, chosen by SNI).
    pub const CATALOG: &str = "catalog.istioinaction.io";
    /// The Istio walkthrough's TLS passthrough host (the upstream's own certificate).
    pub const SNI_PASSTHROUGH: &str = "simple-sni-1.istioinaction.io";
}

/// The local rate limit on [`hosts::RATE_LIMITED`], requests per second.
pub const RATE_LIMIT_PER_SECOND: u64 = 100;

/// The native gateway pod's labels: Istio's ingress gateway label, which the
/// walkthrough's Istio Gateways select.
pub const NATIVE_POD_LABELS: &str = "istio=ingressgateway,app=gateway-proxy";

/// The sidecar-layout gateway pod's labels, which the lab's Istio Gateway selects.
pub const GATEWAY_POD_LABELS: &str = "istio=ingressgateway,app=gateway-sidecar";

/// What the sidecar-layout gateway serves beside the common objects (its file config):
/// the seed walkthroughs' Istio Gateway + VirtualService for [`hosts::WEBAPP`] on the HTTP
/// edge port and Gloo's VirtualService + Upstream for [`hosts::GLOO`], both to httpbin;
/// a route with a local rate limit ([`hosts::RATE_LIMITED`]) and one behind an
/// AuthorizationPolicy denying the client pod's address ([`hosts::AUTHZ`]).
pub fn sidecar_extras(client: std::net::Ipv4Addr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: coolstore-gateway, namespace: istioinaction}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
    - port: {{number: {http}, name: http, protocol: HTTP}}
      hosts: ["*/{webapp}"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: webapp-vs-from-gw, namespace: istioinaction}}
spec:
  hosts: [{webapp}]
  gateways: [coolstore-gateway]
  http:
    - route:
        - destination: {{host: httpbin.default.svc.cluster.local, port: {{number: {port}}}}}
---
apiVersion: gloo.solo.io/v1
kind: Upstream
metadata: {{name: default-httpbin-{port}, namespace: gloo-system}}
spec:
  kube: {{serviceName: httpbin, serviceNamespace: default, servicePort: {port}}}
---
apiVersion: gateway.solo.io/v1
kind: VirtualService
metadata: {{name: default, namespace: gloo-system}}
spec:
  virtualHost:
    domains: [{gloo}]
    routes:
      - matchers: [{{prefix: /}}]
        routeAction:
          single:
            upstream: {{name: default-httpbin-{port}, namespace: gloo-system}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: limited, namespace: default}}
spec:
  parentRefs: [{{name: gateway-proxy, namespace: gateway-system, sectionName: http}}]
  hostnames: [{limited}]
  rules: [{{backendRefs: [{{name: httpbin, port: {port}}}]}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: limited, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: limited}}]
  rateLimit:
    type: Local
    local:
      rules: [{{limit: {{requests: {per_second}, unit: Second}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: authz, namespace: default}}
spec:
  parentRefs: [{{name: gateway-proxy, namespace: gateway-system, sectionName: http}}]
  hostnames: [{authz}]
  rules: [{{backendRefs: [{{name: httpbin, port: {port}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-client-pod, namespace: gateway-system}}
spec:
  selector: {{matchLabels: {{app: gateway-sidecar}}}}
  action: DENY
  rules:
    - from: [{{source: {{ipBlocks: ["{client}/32"]}}}}]
      to: [{{operation: {{hosts: [{authz}]}}}}]
"#,
        limited = hosts::RATE_LIMITED,
        authz = hosts::AUTHZ,
        per_second = RATE_LIMIT_PER_SECOND,
        http = super::HTTP_PORT,
        port = HTTPBIN_PORT,
        webapp = hosts::WEBAPP,
        gloo = hosts::GLOO,
    )
}

/// Edge certificates made with openssl: a server CA, the server certificate for
/// [`hosts::SECURE`], [`hosts::MTLS`] and [`hosts::PUBLIC`], a client CA with one client certificate, and a
/// client certificate from the server CA (which the MUTUAL listener must refuse).
#[derive(Debug, Clone)]
pub struct EdgeCerts {
    /// The CA curl trusts (`--cacert`).
    pub server_ca: PathBuf,
    /// Server certificate chain, PEM.
    pub server_cert: PathBuf,
    /// Server key, PEM.
    pub server_key: PathBuf,
    /// The CA the MUTUAL listener trusts for client certificates.
    pub client_ca: PathBuf,
    /// A client certificate signed by the client CA.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A client certificate (clientAuth) from a CA the MUTUAL listener does not trust.
    pub rogue_cert: PathBuf,
    /// Its key.
    pub rogue_key: PathBuf,
    /// The Istio walkthrough's `webapp-credential` certificate (server CA).
    pub webapp_cert: PathBuf,
    /// Its key.
    pub webapp_key: PathBuf,
    /// The walkthrough's `catalog-credential` certificate (server CA).
    pub catalog_cert: PathBuf,
    /// Its key.
    pub catalog_key: PathBuf,
    /// The CA of the TLS upstream behind SNI passthrough (the gateway never holds it).
    pub upstream_ca: PathBuf,
    /// That upstream's own certificate for [`hosts::SNI_PASSTHROUGH`].
    pub sni_upstream_cert: PathBuf,
    /// Its key.
    pub sni_upstream_key: PathBuf,
}

/// Key pair and certificate `<name>.{key,crt}` for `CN=cn` signed by CA `<ca>`: a server
/// certificate for the DNS names in `san`, else a client certificate.
fn leaf(dir: &Path, name: &str, ca: &str, cn: &str, san: Option<&str>) -> anyhow::Result<()> {
    let ext_file = format!("{name}.ext");
    let ext = match san {
        Some(san) => format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n"),
        None => "extendedKeyUsage=clientAuth\n".to_string(),
    };
    std::fs::write(dir.join(&ext_file), ext)?;
    let (key, csr, crt, subj) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("/CN={cn}"),
    );
    let mut args = vec!["req"];
    args.extend(CURVE);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
    openssl(dir, &args)?;
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "30",
            "-extfile",
            &ext_file,
        ],
    )
}

/// openssl's arguments for a new P-256 key, unencrypted.
const CURVE: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running openssl: is it installed? (scripts/install-tools installs it)")?;
    check(&out, &format!("openssl {}", args.join(" "))).map(|_| ())
}

impl EdgeCerts {
    /// Makes the certificates in `dir` (P-256 keys, 30 days).
    pub fn make(dir: &Path) -> anyhow::Result<EdgeCerts> {
        std::fs::create_dir_all(dir)?;
        for (name, cn) in [
            ("server-ca", "meshlab edge CA"),
            ("client-ca", "meshlab client CA"),
            ("upstream-ca", "meshlab upstream CA"),
        ] {
            let mut args = vec!["req", "-x509"];
            args.extend(CURVE);
            let (key, crt, subj) = (
                format!("{name}.key"),
                format!("{name}.crt"),
                format!("/CN={cn}"),
            );
            args.extend(["-keyout", &key, "-out", &crt, "-subj", &subj, "-days", "30"]);
            openssl(dir, &args)?;
        }
        let server_san = [hosts::SECURE, hosts::MTLS, hosts::PUBLIC].map(|h| format!("DNS:{h}"));
        let leaves = [
            (
                "server",
                "server-ca",
                hosts::SECURE,
                Some(server_san.join(",")),
            ),
            ("client", "client-ca", "meshlab-client", None),
            ("rogue-client", "server-ca", "meshlab-rogue", None),
            (
                "webapp",
                "server-ca",
                hosts::WEBAPP,
                Some(format!("DNS:{}", hosts::WEBAPP)),
            ),
            (
                "catalog",
                "server-ca",
                hosts::CATALOG,
                Some(format!("DNS:{}", hosts::CATALOG)),
            ),
            (
                "sni-upstream",
                "upstream-ca",
                hosts::SNI_PASSTHROUGH,
                Some(format!("DNS:{}", hosts::SNI_PASSTHROUGH)),
            ),
        ];
        for (name, ca, cn, san) in leaves {
            leaf(dir, name, ca, cn, san.as_deref())?;
        }
        Ok(EdgeCerts {
            server_ca: dir.join("server-ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_ca: dir.join("client-ca.crt"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            rogue_cert: dir.join("rogue-client.crt"),
            rogue_key: dir.join("rogue-client.key"),
            webapp_cert: dir.join("webapp.crt"),
            webapp_key: dir.join("webapp.key"),
            catalog_cert: dir.join("catalog.crt"),
            catalog_key: dir.join("catalog.key"),
            upstream_ca: dir.join("upstream-ca.crt"),
            sni_upstream_cert: dir.join("sni-upstream.crt"),
            sni_upstream_key: dir.join("sni-upstream.key"),
        })
    }
}

/// Indents every line of `text` by `n` spaces (for YAML block scalars).
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// The gateway's resources: Gateway `gateway-system/gateway-proxy` (the chart's name)
/// with listeners on 8080 (HTTP), 8443 (HTTPS, two hostnames with a route each) and 9443
/// (HTTPS, MUTUAL: Gateway API v1.6 validates client certificates per port, in
/// `spec.tls.frontend.perPort`), its Secret and ConfigMap, the routes the scenarios
/// exercise, and the two httpbin Services with their EndpointSlices and Pods (labelled
/// `security.istio.io/tlsMode: istio`, as injected pods are). The same objects seed the
/// lab's API server (the native gateway watches it) and make the sidecar gateway's file.
pub fn gateway_resources(certs: &EdgeCerts, v1: &Pod, v2: &Pod) -> anyhow::Result<String> {
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let server_cert = read(&certs.server_cert)?;
    let server_key = read(&certs.server_key)?;
    let client_ca = read(&certs.client_ca)?;
    let port = HTTPBIN_PORT;
    let mut out = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gateway-proxy, namespace: gateway-system}}
spec:
  gatewayClassName: meshgate
  tls:
    frontend:
      perPort:
        - port: {mtls_port}
          tls:
            validation:
              caCertificateRefs: [{{kind: ConfigMap, name: client-ca}}]
  listeners:
    - {{name: http, port: 8080, protocol: HTTP, allowedRoutes: {all}}}
    - name: https
      port: 8443
      protocol: HTTPS
      hostname: {secure}
      allowedRoutes: {all}
      tls:
        certificateRefs: [{{name: edge-cert}}]
    - name: https-public
      port: 8443
      protocol: HTTPS
      hostname: {public}
      allowedRoutes: {all}
      tls:
        certificateRefs: [{{name: edge-cert}}]
    - name: https-mtls
      port: {mtls_port}
      protocol: HTTPS
      hostname: {mtls}
      allowedRoutes: {all}
      tls:
        certificateRefs: [{{name: edge-cert}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: httpbin-lab, namespace: default}}
spec:
  parentRefs: [{{name: gateway-proxy, namespace: gateway-system, sectionName: http}}]
  hostnames: [{httpbin}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /httpbin/}}}}]
      filters:
        - type: URLRewrite
          urlRewrite:
            hostname: {rewritten}
            path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}
      backendRefs: [{{name: httpbin, port: {port}}}]
    - matches: [{{headers: [{{name: x-canary, value: "true"}}]}}]
      backendRefs: [{{name: httpbin-v2, port: {port}}}]
    - matches: [{{path: {{type: PathPrefix, value: /split/}}}}]
      filters:
        - type: URLRewrite
          urlRewrite:
            path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}
      backendRefs:
        - {{name: httpbin, port: {port}, weight: 90}}
        - {{name: httpbin-v2, port: {port}, weight: 10}}
    - backendRefs: [{{name: httpbin, port: {port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: echo, namespace: default}}
spec:
  parentRefs: [{{name: gateway-proxy, namespace: gateway-system, sectionName: http}}]
  hostnames: [{echo}]
  rules:
    - backendRefs: [{{name: httpbin-v2, port: {port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: to-https, namespace: default}}
spec:
  parentRefs: [{{name: gateway-proxy, namespace: gateway-system, sectionName: http}}]
  hostnames: [{secure}]
  rules:
    - filters:
        - type: RequestRedirect
          requestRedirect: {{scheme: https, port: 8443, statusCode: 301}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: secure, namespace: default}}
spec:
  parentRefs: [{{name: gateway-proxy, namespace: gateway-system, sectionName: https}}, {{name: gateway-proxy, namespace: gateway-system, sectionName: https-mtls}}]
  hostnames: [{secure}, {mtls}]
  rules:
    - backendRefs: [{{name: httpbin, port: {port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: public, namespace: default}}
spec:
  parentRefs: [{{name: gateway-proxy, namespace: gateway-system, sectionName: https-public}}]
  hostnames: [{public}]
  rules:
    - backendRefs: [{{name: httpbin-v2, port: {port}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: edge-cert, namespace: gateway-system}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{server_cert}  tls.key: |
{server_key}---
apiVersion: v1
kind: ConfigMap
metadata: {{name: client-ca, namespace: gateway-system}}
data:
  ca.crt: |
{client_ca}"#,
        secure = hosts::SECURE,
        mtls = hosts::MTLS,
        public = hosts::PUBLIC,
        all = "{namespaces: {from: All}}",
        mtls_port = super::MTLS_PORT,
        httpbin = hosts::HTTPBIN,
        echo = hosts::ECHO,
        rewritten = hosts::REWRITTEN,
        server_cert = indent(&server_cert, 4),
        server_key = indent(&server_key, 4),
        client_ca = indent(&client_ca, 4),
    );
    for pod in [v1, v2] {
        let (svc, sa, addr) = (pod.service(), pod.identity.service_account(), pod.addr);
        out.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata:
  name: {svc}
  namespace: default
  annotations: {{meshgate.io/service-accounts: {sa}}}
spec: {{ports: [{{name: http, port: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {svc}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {svc}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
  - addresses: ["{addr}"]
    targetRef: {{kind: Pod, name: {pod_name}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: {pod_name}
  namespace: default
  labels: {{app: {svc}, security.istio.io/tlsMode: istio}}
spec:
  serviceAccountName: {sa}
"#,
            pod_name = pod.name,
        ));
    }
    Ok(out)
}

/// The gateway Service of Istio's ingress (ports 80, 443 and 31400 onto the pod's 8080,
/// 8443 and 31400), which decides where the walkthrough's Istio Gateway servers listen.
pub const INGRESS_SERVICE_PORTS: [(u16, u16); 3] = [(80, 8080), (443, 8443), (31400, 31400)];

/// The port of the walkthrough's TCP echo Service (and of socat in its pod).
pub const TCP_ECHO_PORT: u16 = 2701;
/// The port of the TLS upstream behind SNI passthrough (openssl s_server in the echo pod).
pub const SNI_UPSTREAM_PORT: u16 = 8443;
/// The app port of the `webapp` pod (the walkthrough's Service port 8080).
pub const WEBAPP_PORT: u16 = 8080;
/// The app port of the `reviews` pod (Bookinfo's 9080).
pub const REVIEWS_PORT: u16 = 9080;

/// A Service `name` in the pod's namespace with one port (`port` onto `target`) and an
/// EndpointSlice holding `pod`. No `meshgate.io/service-accounts` annotation: the identity
/// comes from the Pod object (Istio's secure naming).
fn service_on(name: &str, (port_name, port, target): (&str, u16, u16), pod: &Pod) -> String {
    let ns = pod.identity.namespace();
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{ports: [{{name: {port_name}, port: {port}, targetPort: {target}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: {ns}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: {port_name}, port: {target}}}]
endpoints:
  - addresses: ["{addr}"]
    targetRef: {{kind: Pod, name: {pod_name}, namespace: {ns}}}
"#,
        addr = pod.addr,
        pod_name = pod.name,
    )
}

/// `pod`'s Pod object with `labels`, running as its service account.
fn pod_object(pod: &Pod, labels: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {}, labels: {labels}}}\n\
         spec: {{serviceAccountName: {}}}\n",
        pod.name,
        pod.identity.namespace(),
        pod.identity.service_account()
    )
}

/// What only the lab's API server holds (the native gateway's objects beyond
/// [`gateway_resources`]): Istio's ingress gateway Service, the walkthrough's Services in
/// `istioinaction` (`webapp` and `catalog` on the webapp pod, `tcp-echo-service` and
/// `simple-tls-service-1` on the echo pod, outside the mesh) and Bookinfo's `reviews`.
pub fn kube_extras(webapp: &Pod, echo: &Pod, reviews: &Pod) -> String {
    let ports: Vec<String> = INGRESS_SERVICE_PORTS
        .iter()
        .map(|(port, target)| format!("{{name: p{port}, port: {port}, targetPort: {target}}}"))
        .collect();
    let mut out = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: istioinaction}}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {{name: gloo-system}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: istio-ingressgateway, namespace: gateway-system}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  ports: [{}]\n",
        ports.join(", ")
    );
    let mesh = |app: &str| format!("{{app: {app}, security.istio.io/tlsMode: istio}}");
    out.push_str(&service_on(
        "webapp",
        ("http", WEBAPP_PORT, WEBAPP_PORT),
        webapp,
    ));
    // catalog is a second Service over the same pod (its own host and certificate at the
    // edge; one workload is enough behind it).
    out.push_str(&service_on("catalog", ("http", 80, WEBAPP_PORT), webapp));
    out.push_str(&pod_object(webapp, &mesh("webapp")));
    out.push_str(&service_on(
        "tcp-echo-service",
        ("tcp", TCP_ECHO_PORT, TCP_ECHO_PORT),
        echo,
    ));
    out.push_str(&service_on(
        "simple-tls-service-1",
        ("tls", 80, SNI_UPSTREAM_PORT),
        echo,
    ));
    // Outside the mesh: no tlsMode label, so `auto` connects in plaintext.
    out.push_str(&pod_object(echo, "{app: tcp-echo}"));
    out.push_str(&service_on(
        "reviews",
        ("http", REVIEWS_PORT, REVIEWS_PORT),
        reviews,
    ));
    out.push_str(&pod_object(reviews, &mesh("reviews")));
    out
}
