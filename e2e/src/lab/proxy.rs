//! The gateway pod's istio-proxy in the sidecar variant (Envoy Gateway + Istio layout):
//! a real Envoy fed by gateway-init's capture, shaped like an Istio sidecar's:
//!
//! - `virtualOutbound` on `0.0.0.0:15001`: the `original_dst` listener filter recovers where
//!   the gateway was connecting; HTTP to the mesh port goes out over Istio mutual TLS
//!   (certificate `default` and root `ROOTCA` over SDS from the pod's own sds-agent, SNI
//!   `outbound_.<port>_._.<host>`, ALPN `istio-http/1.1`, server SAN checked against the
//!   expected service accounts); anything else passes through untouched.
//! - `virtualInbound` on `0.0.0.0:15006`: passthrough to the original destination from
//!   `127.0.0.6`, as Istio's `InboundPassthroughCluster` does. Edge ports must never land
//!   here; if they did, the gateway would see `127.0.0.6` instead of the client.

use std::path::Path;

use mesh::Identity;

use crate::envoy::{sds_cluster_yaml, sds_config_yaml};
use crate::sidecar::{CAPTURE_INBOUND_PORT, ORIGINAL_DST_FILTER, PROXY_ADMIN_PORT};

/// Istio's source address for inbound passthrough connections.
pub const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6";

/// The bootstrap for the gateway pod's istio-proxy: mesh port `port` of `host` (FQDN),
/// whose endpoints run as one of `upstream_identities`.
pub fn gateway_proxy_bootstrap(
    identity: &Identity,
    host: &str,
    port: u16,
    upstream_identities: &[Identity],
    sds_socket: &Path,
) -> String {
    let outbound = mesh::consts::OUTBOUND_CAPTURE_PORT;
    let cluster = format!("outbound|{port}||{host}");
    let sans: String = upstream_identities
        .iter()
        .map(|id| format!("\n                - san_type: URI\n                  matcher: {{ exact: \"{id}\" }}"))
        .collect();
    format!(
        r#"{header}static_resources:
  listeners:
  - name: virtualOutbound
    stat_prefix: virtualOutbound
    address:
      socket_address: {{ address: 0.0.0.0, port_value: {outbound} }}
    listener_filters:{ORIGINAL_DST_FILTER}
    filter_chains:
    - name: "0.0.0.0_{port}"
      filter_chain_match:
        destination_port: {port}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: "outbound_0.0.0.0_{port}"
          codec_type: AUTO
          use_remote_address: false
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                text_format_source:
                  inline_string: "[outbound] %REQ(:METHOD)% %REQ(:AUTHORITY)%%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% upstream=%UPSTREAM_HOST% peer=%UPSTREAM_PEER_URI_SAN%\n"
          route_config:
            name: "{port}"
            virtual_hosts:
            - name: "{host}:{port}"
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: "{cluster}", timeout: 0s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
    default_filter_chain:
      name: PassthroughFilterChain
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: PassthroughCluster
          cluster: PassthroughCluster
  - name: virtualInbound
    stat_prefix: virtualInbound
    address:
      socket_address: {{ address: 0.0.0.0, port_value: {CAPTURE_INBOUND_PORT} }}
    listener_filters:{ORIGINAL_DST_FILTER}
    filter_chains:
    - name: inbound-passthrough
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: InboundPassthroughClusterIpv4
          cluster: InboundPassthroughClusterIpv4
  clusters:
  - name: "{cluster}"
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 10s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: "outbound_.{port}_._.{host}"
        common_tls_context:
          alpn_protocols: ["istio-http/1.1", "istio", "http/1.1"]
          tls_certificate_sds_secret_configs:
          - name: default
{sds_default}          combined_validation_context:
            default_validation_context:
              match_typed_subject_alt_names:{sans}
            validation_context_sds_secret_config:
              name: ROOTCA
{sds_root}  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 10s
  - name: InboundPassthroughClusterIpv4
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 10s
    upstream_bind_config:
      source_address: {{ address: {INBOUND_PASSTHROUGH_SOURCE}, port_value: 0 }}
{sds_cluster}"#,
        sds_default = sds_config_yaml(12),
        sds_root = sds_config_yaml(14),
        sds_cluster = sds_cluster_yaml(sds_socket),
        header = crate::envoy::sidecar_node_and_admin_yaml(identity, PROXY_ADMIN_PORT),
    )
}
