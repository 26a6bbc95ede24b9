//! Istio's well-known names and numbers, and the gateway pod's own, in one place.
//!
//! The chain names, ports and ids follow `istio-iptables` so that an istio-proxy sidecar
//! (sidecar mode) finds the capture it expects.

/// Port the sidecar's inbound listener takes captured inbound connections on.
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
/// Port the sidecar's outbound listener takes captured outbound connections on.
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
/// Istio's HBONE tunnel port: never captured inbound, never sent back to the inbound listener.
pub const INBOUND_TUNNEL_PORT: u16 = 15008;
/// User id the istio-proxy runs as; its own traffic is never captured.
pub const PROXY_UID: u32 = 1337;
/// Group id the istio-proxy runs as; its own traffic is never captured.
pub const PROXY_GID: u32 = 1337;

/// The gateway's edge ports (HTTP, HTTPS): never captured inbound.
pub const EDGE_PORTS: &str = "8080,8443";
/// TCP ports that accept loopback connections only: the gateway's admin port and the
/// sds-agent's admin port.
pub const LOOPBACK_ONLY_PORTS: &str = "19000,15030";

/// Source address the sidecar's inbound passthrough binds to (IPv4); never captured.
pub const INBOUND_PASSTHROUGH_SOURCE_V4: &str = "127.0.0.6/32";
/// Source address the sidecar's inbound passthrough binds to (IPv6); never captured.
pub const INBOUND_PASSTHROUGH_SOURCE_V6: &str = "::6/128";
/// The loopback host address traffic to which is never captured (IPv4).
pub const LOOPBACK_HOST_V4: &str = "127.0.0.1/32";
/// The loopback host address traffic to which is never captured (IPv6).
pub const LOOPBACK_HOST_V6: &str = "::1/128";
/// The loopback interface.
pub const LOOPBACK_INTERFACE: &str = "lo";

/// Pod annotations (read from the downward-API file) that override the options, with
/// the same meanings as in Istio.
pub mod annotation {
    pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
    pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
    pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
    pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
    pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
}
