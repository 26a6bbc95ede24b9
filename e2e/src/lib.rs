//! End-to-end helpers: real peers (Envoy, httpbin) and faithful stand-ins for what cannot be
//! installed here (istiod's CA, a SPIRE agent's Workload API).

pub mod agent;
pub mod apiserver;
pub mod ca;
pub mod curl;
pub mod envoy;
pub mod fixtures;
pub mod http;
pub mod lab;
pub mod process;
pub mod sds_client;
pub mod sidecar;
pub mod telemetry;
pub mod testing;
pub mod tls;
pub mod tools;
pub mod workload_api;

/// Installs the project's one rustls crypto provider (ring); safe to call repeatedly.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
