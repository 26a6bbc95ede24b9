//! The Istio dialect: `networking.istio.io` Gateways and VirtualServices compiled into
//! the same port table and IR as Gateway API objects.
//!
//! - [`gateway`]: Gateways whose `selector` matches this pod's labels -> one listener per
//!   server and host, on the gateway Service's `targetPort` when that Service is known
//!   (as Istio does), with SIMPLE / MUTUAL / PASSTHROUGH TLS and `httpsRedirect`.
//! - [`virtual_service`]: VirtualServices bound to those Gateways -> HTTP rules in
//!   declaration order (several VirtualServices for one host merge in creation order, as
//!   Istio merges them), `tcp` routes by port and `tls` routes by SNI.
//!
//! Precedence between dialects: Gateway API listeners are compiled first; an Istio
//! server asking for the same port with another protocol, or the same host on the same
//! port, is refused as conflicted, naming the listener it lost to.

pub mod gateway;
pub mod virtual_service;

/// How Istio objects are named in messages (`Gateway` alone would be ambiguous).
pub fn gateway_name(key: &str) -> String {
    format!("Gateway.networking.istio.io {key}")
}
