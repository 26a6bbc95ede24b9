//! Certificate sources. Each publishes validated certificates into the [`Store`](crate::store::Store)
//! and never exits while the agent runs: failures are logged, counted and retried.

pub mod files;
pub mod istiod;
pub mod spiffe;

use std::sync::Arc;
use std::time::SystemTime;

use mesh::WorkloadCerts;
use mesh::certs::unix_secs;

use crate::metrics::Metrics;
use crate::store::Store;

/// Publishes `certs` and records it in metrics and the log.
pub(crate) fn publish(store: &Store, metrics: &Metrics, certs: WorkloadCerts, source: &str) {
    metrics.cert_expiry.set(unix_secs(certs.not_after));
    metrics.rotations.inc();
    let expires_in = certs
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tracing::info!(
        source,
        identity = %certs.identity,
        serial = %certs.serial,
        expires_in = %humantime::format_duration(std::time::Duration::from_secs(expires_in.as_secs())),
        "new workload certificate"
    );
    let version = store.publish(certs);
    tracing::debug!(version, "published");
}

/// Shared handles every source needs.
#[derive(Clone)]
pub struct SourceContext {
    /// Where certificates go.
    pub store: Store,
    /// Error and rotation counters.
    pub metrics: Arc<Metrics>,
    /// Flips to true on shutdown.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl SourceContext {
    /// Resolves when shutdown begins.
    pub async fn stopped(&mut self) {
        let _ = self.shutdown.wait_for(|s| *s).await;
    }
}
