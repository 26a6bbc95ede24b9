//! An "httpbin pod" made of real processes: httpbin (gunicorn) on loopback behind a real
//! Envoy acting as its istio-proxy, whose workload certificate (`default`) and mesh root
//! (`ROOTCA`) come over SDS from a real `sds-agent` talking to the test CA.
//!
//! Envoy's inbound listener is shaped like Istio's sidecar `virtualInbound` listener:
//! a TLS inspector picks the filter chain; the mTLS chain matches only Istio's ALPN
//! (`istio-http/1.0`, `istio-http/1.1`, `istio-h2`), requires a client certificate
//! validated against `ROOTCA`, and its connection manager appends to
//! `X-Forwarded-Client-Cert` (`APPEND_FORWARD`, subject + URI + DNS). A second mTLS
//! chain matches Istio's TCP ALPN (`istio`, no HTTP ALPN) and proxies bytes to the app,
//! logging the peer's URI SAN. STRICT has only those chains; PERMISSIVE adds a plaintext
//! (`raw_buffer`) chain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh::Identity;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::agent::start_agent;
use crate::ca::TestCa;
use crate::envoy::{sds_cluster_yaml, sds_config_yaml};
use crate::process::{ChildGuard, free_port, wait_for_port};
use crate::tls::LeafRecorder;
use crate::tools::tool;

/// The ALPN values an Istio sidecar's inbound mTLS HTTP chain matches on.
pub const ISTIO_HTTP_ALPN: [&str; 3] = ["istio-http/1.0", "istio-http/1.1", "istio-h2"];

/// How long each part may take to come up.
const STARTUP: Duration = Duration::from_secs(30);

/// The inbound policy, as `PeerAuthentication` `mtls.mode` sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundPolicy {
    /// mTLS only: one filter chain, Istio ALPN + client certificate required.
    Strict,
    /// mTLS (by Istio ALPN) or plaintext.
    Permissive,
}

/// A running httpbin pod. Dropping it kills Envoy, the agent and httpbin (in that order).
pub struct HttpbinPod {
    /// Envoy's inbound listener (what the gateway connects to).
    pub inbound: SocketAddr,
    /// The pod's workload identity (the sidecar's certificate URI SAN).
    pub identity: Identity,
    /// The inbound policy Envoy was configured with.
    pub policy: InboundPolicy,
    /// httpbin itself, plaintext on loopback (bypasses the sidecar).
    pub httpbin: SocketAddr,
    /// The pod's sds-agent admin server (`/ready`, `/certs`, `/metrics`).
    pub agent_admin: SocketAddr,
    /// Envoy's admin server.
    pub envoy_admin: SocketAddr,
    /// The agent's SDS socket Envoy reads from.
    pub sds_socket: PathBuf,
    /// This pod's directory (bootstrap, logs, token, root).
    pub dir: PathBuf,
    /// The Envoy bootstrap in use.
    pub bootstrap: String,
    envoy: ChildGuard,
    agent: ChildGuard,
    /// httpbin, when this pod runs it (not when it fronts another app).
    httpbin_process: Option<ChildGuard>,
}

impl HttpbinPod {
    /// Starts httpbin, an sds-agent for `identity` against `ca` (certificate lifetime
    /// `secret_ttl`, e.g. `"24h"` or `"5s"`), and Envoy with an inbound listener shaped like
    /// Istio's. Returns once Envoy's inbound listener serves TLS with the agent's certificate.
    /// Everything lives in a fresh subdirectory of `dir`.
    pub async fn start(
        dir: &Path,
        ca: &TestCa,
        identity: Identity,
        policy: InboundPolicy,
        secret_ttl: &str,
    ) -> HttpbinPod {
        Self::start_with_app(dir, ca, identity, policy, secret_ttl, None, 1).await
    }

    /// Like [`HttpbinPod::start`], but the sidecar fronts the app already listening on
    /// `app` (e.g. a benchmark upstream) instead of a new httpbin, with `workers` Envoy
    /// worker threads (`--concurrency`; Istio's sidecars default to 2).
    pub async fn start_in_front_of(
        dir: &Path,
        ca: &TestCa,
        identity: Identity,
        policy: InboundPolicy,
        secret_ttl: &str,
        app: SocketAddr,
        workers: u32,
    ) -> HttpbinPod {
        Self::start_with_app(dir, ca, identity, policy, secret_ttl, Some(app), workers).await
    }

    async fn start_with_app(
        dir: &Path,
        ca: &TestCa,
        identity: Identity,
        policy: InboundPolicy,
        secret_ttl: &str,
        app: Option<SocketAddr>,
        workers: u32,
    ) -> HttpbinPod {
        crate::install_crypto();
        let dir = tempfile::Builder::new()
            .prefix("pod-")
            .tempdir_in(dir)
            .expect("pod dir")
            .keep();

        let (httpbin_process, httpbin) = match app {
            Some(addr) => (None, addr),
            None => {
                let (process, addr) = start_httpbin(&dir).await;
                (Some(process), addr)
            }
        };
        let (agent, agent_admin, sds_socket) = start_agent(&dir, ca, &identity, secret_ttl).await;

        let mut last_failure = String::new();
        for attempt in 1..=3 {
            let bootstrap = bootstrap_yaml(&identity, policy, httpbin, &sds_socket);
            match start_envoy(&dir, attempt, &bootstrap, workers).await {
                Ok((envoy, envoy_admin, inbound)) => {
                    let pod = HttpbinPod {
                        inbound,
                        identity,
                        policy,
                        httpbin,
                        agent_admin,
                        envoy_admin,
                        sds_socket,
                        dir,
                        bootstrap,
                        envoy,
                        agent,
                        httpbin_process,
                    };
                    pod.wait_serving(&ca.root_pem()).await;
                    return pod;
                }
                Err(e) => last_failure = e,
            }
        }
        panic!(
            "envoy (httpbin sidecar) did not come up:\n{last_failure}\nagent log:\n{}",
            agent.output()
        );
    }

    /// Envoy's log so far (includes its access log).
    pub fn envoy_log(&self) -> String {
        self.envoy.output()
    }

    /// The sds-agent's log so far.
    pub fn agent_log(&self) -> String {
        self.agent.output()
    }

    /// httpbin's (gunicorn's) log so far.
    pub fn httpbin_log(&self) -> String {
        self.httpbin_process
            .as_ref()
            .map(|p| p.output())
            .unwrap_or_default()
    }

    /// Envoy's pid (e.g. to check it is still running).
    pub fn envoy_pid(&self) -> u32 {
        self.envoy.pid()
    }

    /// One Envoy counter or gauge (`0` if absent), e.g.
    /// `listener.<inbound>.ssl.connection_error`.
    pub async fn envoy_stat(&self, name: &str) -> u64 {
        let (_, body) = crate::http::get(self.envoy_admin, "/stats")
            .await
            .unwrap_or_default();
        crate::envoy::stat_value(&body, name)
    }

    /// One statistic of the inbound listener (`listener.virtualInbound.<suffix>`), e.g.
    /// `no_filter_chain_match`, `ssl.fail_verify_no_cert` (the start-up probe counts one),
    /// `ssl.fail_verify_error`, `downstream_cx_total`.
    pub async fn inbound_stat(&self, suffix: &str) -> u64 {
        self.envoy_stat(&format!("listener.virtualInbound.{suffix}"))
            .await
    }

    /// Waits until the inbound listener completes a TLS handshake (Istio ALPN) presenting a
    /// certificate for this pod's identity, chained to the CA's root.
    async fn wait_serving(&self, root_pem: &str) {
        let deadline = Instant::now() + STARTUP;
        loop {
            let last = match probe_server_leaf(self.inbound, root_pem).await {
                Ok(leaf) => match mesh::certs::identity_of(&leaf) {
                    Ok(id) if id == self.identity => return,
                    Ok(id) => format!("presented {id}, expected {}", self.identity),
                    Err(e) => format!("leaf without identity: {e}"),
                },
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "sidecar inbound {} never served the agent's certificate: {last}\nenvoy log:\n{}\nagent log:\n{}",
                self.inbound,
                self.envoy_log(),
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn start_httpbin(dir: &Path) -> (ChildGuard, SocketAddr) {
    let mut last = String::new();
    for _ in 0..3 {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut cmd = Command::new(tool("gunicorn"));
        cmd.args(["-b", &addr.to_string(), "-w", "2", "--access-logfile", "-"])
            .arg("httpbin:app");
        let mut process = ChildGuard::spawn("httpbin", cmd, dir.join("httpbin.log"));
        let deadline = Instant::now() + STARTUP;
        while process.is_running() && Instant::now() < deadline {
            if let Ok((200, _)) = crate::http::get(addr, "/status/200").await {
                return (process, addr);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        last = process.output();
        process.kill();
    }
    panic!("httpbin (gunicorn) did not come up; log:\n{last}");
}

/// Starts Envoy with admin and inbound listener on ports the kernel picks (no races with
/// parallel tests); returns it with the bound admin and inbound addresses once it is live.
async fn start_envoy(
    dir: &Path,
    attempt: u32,
    bootstrap: &str,
    workers: u32,
) -> Result<(ChildGuard, SocketAddr, SocketAddr), String> {
    let cfg = dir.join("envoy.yaml");
    std::fs::write(&cfg, bootstrap).expect("write envoy bootstrap");
    let admin_path = dir.join(format!("envoy-admin-{attempt}.addr"));
    let mut cmd = Command::new(tool("envoy"));
    cmd.arg("-c")
        .arg(&cfg)
        .arg("--admin-address-path")
        .arg(&admin_path)
        .arg("--concurrency")
        .arg(workers.to_string())
        .args(["--use-dynamic-base-id", "--log-level", "info"]);
    let mut envoy = ChildGuard::spawn("envoy-sidecar", cmd, dir.join("envoy.log"));
    let deadline = Instant::now() + STARTUP;
    let fail = |envoy: &mut ChildGuard, why: &str| {
        let log = envoy.output();
        envoy.kill();
        Err(format!("attempt {attempt}: {why}; envoy log:\n{log}"))
    };
    // Admin address, written by Envoy once bound.
    let admin = loop {
        if let Some(a) = std::fs::read_to_string(&admin_path)
            .ok()
            .and_then(|s| s.trim().parse::<SocketAddr>().ok())
        {
            break a;
        }
        if !envoy.is_running() || Instant::now() > deadline {
            return fail(&mut envoy, "admin never came up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if !wait_for_port(admin, Duration::from_secs(5)).await {
        return fail(&mut envoy, "admin address not accepting");
    }
    // Live (static listeners with SDS secrets are warm) and the inbound listener bound.
    loop {
        let live = matches!(crate::http::get(admin, "/ready").await, Ok((200, _)));
        if live && let Some(inbound) = inbound_address(admin).await {
            return Ok((envoy, admin, inbound));
        }
        if !envoy.is_running() || Instant::now() > deadline {
            return fail(&mut envoy, "inbound listener never became active");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bound address of the `virtualInbound` listener, from admin `/listeners`
/// (text form: `virtualInbound::127.0.0.1:PORT`), once it is active.
async fn inbound_address(admin: SocketAddr) -> Option<SocketAddr> {
    let (_, stats) = crate::http::get(
        admin,
        "/stats?filter=^listener_manager.total_listeners_active$",
    )
    .await
    .ok()?;
    let active: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("listener_manager.total_listeners_active: "))
        .and_then(|v| v.trim().parse().ok())?;
    if active < 1 {
        return None;
    }
    let (code, body) = crate::http::get(admin, "/listeners").await.ok()?;
    if code != 200 {
        return None;
    }
    body.lines().find_map(|l| {
        let addr: SocketAddr = l.strip_prefix("virtualInbound::")?.trim().parse().ok()?;
        (addr.port() != 0).then_some(addr)
    })
}

/// The Envoy bootstrap for an httpbin sidecar: `virtualInbound` listener on an
/// ephemeral loopback port, `inbound|<port>||` cluster to httpbin, `sds-grpc` to the agent.
pub fn bootstrap_yaml(
    identity: &Identity,
    policy: InboundPolicy,
    httpbin: SocketAddr,
    sds_socket: &Path,
) -> String {
    inbound_bootstrap(identity, policy, httpbin, sds_socket, None, None)
}

/// Where a captured sidecar listens: Istio's inbound capture port and admin port.
pub const CAPTURE_INBOUND_PORT: u16 = mesh::consts::INBOUND_CAPTURE_PORT;
/// The istio-proxy's admin port (Envoy's default in Istio).
pub const PROXY_ADMIN_PORT: u16 = 15000;

/// The bootstrap of a sidecar that iptables feeds (gateway-init in sidecar mode):
/// `virtualInbound` on `0.0.0.0:15006` with the `original_dst` listener filter, its mTLS
/// chain matching the app's port as the original destination, admin on `127.0.0.1:15000`.
pub fn capture_bootstrap_yaml(
    identity: &Identity,
    policy: InboundPolicy,
    app: SocketAddr,
    sds_socket: &Path,
) -> String {
    inbound_bootstrap(identity, policy, app, sds_socket, Some(app.port()), None)
}

/// Where a sidecar sends its spans: Envoy's OpenTelemetry tracer, as Istio configures it
/// for an OpenTelemetry tracing provider.
#[derive(Debug, Clone)]
pub struct SidecarTracing {
    /// The OTLP/gRPC collector.
    pub collector: SocketAddr,
    /// `service.name` of the sidecar's spans (Istio uses `<app>.<namespace>`).
    pub service_name: String,
}

/// [`capture_bootstrap_yaml`] with the inbound connection manager tracing to a collector:
/// one SERVER span per request, a child of the caller's `traceparent`/B3 context whose
/// sampled flag it follows (every request is a candidate, `random_sampling: 100`, so the
/// caller's decision is the one that counts).
pub fn traced_capture_bootstrap_yaml(
    identity: &Identity,
    policy: InboundPolicy,
    app: SocketAddr,
    sds_socket: &Path,
    tracing: &SidecarTracing,
) -> String {
    inbound_bootstrap(
        identity,
        policy,
        app,
        sds_socket,
        Some(app.port()),
        Some(tracing),
    )
}

/// `captured_port`: `None` listens on an ephemeral loopback port (tests connect to it
/// directly); `Some(port)` is the iptables-fed shape described at [`capture_bootstrap_yaml`].
fn inbound_bootstrap(
    identity: &Identity,
    policy: InboundPolicy,
    httpbin: SocketAddr,
    sds_socket: &Path,
    captured_port: Option<u16>,
    tracing: Option<&SidecarTracing>,
) -> String {
    let port = httpbin.port();
    let cluster = format!("inbound|{port}||");
    let hcm = http_connection_manager(&cluster, port, tracing);
    let alpn = ISTIO_HTTP_ALPN
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let dest_match = match captured_port {
        Some(p) => format!("\n        destination_port: {p}"),
        None => String::new(),
    };
    let (admin_port, listen_ip, listen_port, original_dst) = match captured_port {
        Some(_) => (
            PROXY_ADMIN_PORT,
            "0.0.0.0",
            CAPTURE_INBOUND_PORT,
            ORIGINAL_DST_FILTER,
        ),
        None => (0, "127.0.0.1", 0, ""),
    };
    let tls = format!(
        r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_params:
              tls_minimum_protocol_version: TLSv1_2
              tls_maximum_protocol_version: TLSv1_3
            alpn_protocols: [h2, http/1.1]
            tls_certificate_sds_secret_configs:
            - name: default
{sds_default}            combined_validation_context:
              default_validation_context: {{}}
              validation_context_sds_secret_config:
                name: ROOTCA
{sds_root}"#,
        sds_default = sds_config_yaml(14),
        sds_root = sds_config_yaml(16),
    );
    // Istio's TCP chain: mTLS without an HTTP ALPN (`istio`), bytes to the app.
    let mut chains = format!(
        r#"    - name: "0.0.0.0_{port}"
      filter_chain_match:{dest_match}
        transport_protocol: tls
        application_protocols: [{alpn}]
{tls}      filters:
{hcm}    - name: "0.0.0.0_{port}-tcp"
      filter_chain_match:{dest_match}
        transport_protocol: tls
        application_protocols: ["istio-peer-exchange", "istio"]
{tls}      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: "inbound_tcp_{port}"
          cluster: "{cluster}"
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                text_format_source:
                  inline_string: "tcp-inbound peer=%DOWNSTREAM_PEER_URI_SAN% received=%BYTES_RECEIVED% sent=%BYTES_SENT%\n"
"#
    );
    if policy == InboundPolicy::Permissive {
        chains.push_str(&format!(
            r#"    - name: "0.0.0.0_{port}-plaintext"
      filter_chain_match:{dest_match}
        transport_protocol: raw_buffer
      filters:
{hcm}"#
        ));
    }
    format!(
        r#"{header}static_resources:
  listeners:
  - name: virtualInbound
    stat_prefix: virtualInbound
    address:
      socket_address: {{ address: {listen_ip}, port_value: {listen_port} }}
    listener_filters:{original_dst}
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
    listener_filters_timeout: 5s
    continue_on_listener_filters_timeout: true
    filter_chains:
{chains}  clusters:
  - name: "{cluster}"
    type: STATIC
    connect_timeout: 10s
    load_assignment:
      cluster_name: "{cluster}"
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {ip}, port_value: {port} }}
{sds_cluster}{collector}"#,
        ip = httpbin.ip(),
        sds_cluster = sds_cluster_yaml(sds_socket),
        collector = tracing.map(collector_cluster_yaml).unwrap_or_default(),
        header = crate::envoy::sidecar_node_and_admin_yaml(identity, admin_port),
    )
}

/// The listener filter that restores the pre-REDIRECT destination (`SO_ORIGINAL_DST`).
pub const ORIGINAL_DST_FILTER: &str = r#"
    - name: envoy.filters.listener.original_dst
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"#;

/// The OTLP collector as a cluster (gRPC: HTTP/2).
fn collector_cluster_yaml(t: &SidecarTracing) -> String {
    format!(
        r#"  - name: {OTEL_CLUSTER}
    type: STATIC
    connect_timeout: 5s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: {OTEL_CLUSTER}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {ip}, port_value: {port} }}
"#,
        ip = t.collector.ip(),
        port = t.collector.port(),
    )
}

/// The collector's cluster name in a traced sidecar.
const OTEL_CLUSTER: &str = "opentelemetry-collector";

/// The connection manager's `tracing` block for [`SidecarTracing`].
fn tracing_yaml(t: &SidecarTracing) -> String {
    format!(
        r#"          tracing:
            random_sampling: {{ value: 100 }}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service:
                  envoy_grpc: {{ cluster_name: {OTEL_CLUSTER} }}
                  timeout: 5s
                service_name: "{service}"
"#,
        service = t.service_name
    )
}

/// The inbound HTTP connection manager, as Istio configures it for a sidecar.
fn http_connection_manager(cluster: &str, port: u16, tracing: Option<&SidecarTracing>) -> String {
    let tracing = tracing.map(tracing_yaml).unwrap_or_default();
    format!(
        r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: "inbound_0.0.0.0_{port}"
          codec_type: AUTO
          forward_client_cert_details: APPEND_FORWARD
          set_current_client_cert_details: {{ subject: true, uri: true, dns: true }}
          use_remote_address: false
          normalize_path: true
          server_name: istio-envoy
{tracing}          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                text_format_source:
                  inline_string: "[inbound] %REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% sni=%REQUESTED_SERVER_NAME% tls=%DOWNSTREAM_TLS_VERSION% peer=%DOWNSTREAM_PEER_URI_SAN% xfcc=%REQ(X-FORWARDED-CLIENT-CERT)%\n"
          route_config:
            name: "inbound|{port}||"
            validate_clusters: false
            virtual_hosts:
            - name: "inbound|http|{port}"
              domains: ["*"]
              routes:
              - name: default
                match: {{ prefix: "/" }}
                route:
                  cluster: "{cluster}"
                  timeout: 0s
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

/// A TLS 1.3 handshake offering `istio-http/1.1` without a client certificate: the server
/// sends its certificate before it sees that we have none, so this sees the sidecar's leaf
/// (the sidecar then refuses the connection for lack of a client certificate).
async fn probe_server_leaf(
    addr: SocketAddr,
    root_pem: &str,
) -> anyhow::Result<CertificateDer<'static>> {
    let verifier = LeafRecorder::new(&mesh::certs::parse_pem_certs(root_pem, "roots")?)?;
    let mut config =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
    config.alpn_protocols = vec![b"istio-http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name =
        ServerName::try_from("outbound_.80_._.httpbin.default.svc.cluster.local")?.to_owned();
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut tls = connector.connect(name, tcp).await?;
        // Read until the sidecar refuses us (no client certificate), so it has finished
        // with this connection (and counted `ssl.fail_verify_no_cert`) before we return.
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
        )
        .await;
        Ok::<_, std::io::Error>(())
    };
    let result = tokio::time::timeout(Duration::from_secs(5), handshake).await;
    match (verifier.leaf(), result) {
        (Some(leaf), Ok(Ok(()))) => Ok(leaf),
        (_, Ok(Err(e))) => Err(anyhow::anyhow!("handshake failed: {e}")),
        (_, Err(_)) => Err(anyhow::anyhow!("handshake timed out")),
        (None, Ok(Ok(()))) => Err(anyhow::anyhow!("server presented no certificate")),
    }
}
