//! meshgate edge proxy: Kubernetes Gateway API routing on hyper 1, tokio and rustls.
//!
//! Pipeline: [`resources`] (Gateway API + core objects, serde) -> [`translate`] ->
//! [`routing::Table`] (validated, immutable) -> [`proxy`] (request path). The
//! [`provider`] watches the config path and swaps tables atomically; [`admin`] exposes
//! readiness, the compiled table and [`metrics`].

pub mod access_log;
pub mod admin;
pub mod config;
pub mod mesh_tls;
pub mod metrics;
pub mod provider;
pub mod proxy;
pub mod resources;
pub mod routing;
pub mod sds;
pub mod server;
pub mod tls;
pub mod translate;
pub mod upstream;

/// Installs rustls' ring crypto provider for the process (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Initializes the gateway's own logs on stderr (access logs go to stdout).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let _ = b.json().try_init();
    } else {
        let _ = b.try_init();
    }
}
