//! The istiod source: caches the certificate, renews at half-life, retries with backoff.
//! Knows nothing of gRPC; the [`CaClient`] does the talking.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh::WorkloadCerts;
use mesh::certs::{CertError, parse_pem_certs};
use tokio::time::Instant;

use super::{SourceContext, publish};
use crate::ca_client::{CaClient, CaError};
use crate::config::IstiodConfig;
use crate::csr;
use crate::roots::{self, MeshRoots};
use crate::rotation::{Backoff, renew_at};

/// Why one renewal attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("no usable mesh root file yet (see the earlier error)")]
    NoRoots,
    #[error("cannot generate key/CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("CA answer rejected: {0}")]
    Invalid(#[from] CertError),
}

impl RenewError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            RenewError::NoRoots => "root_cert_unavailable",
            RenewError::Csr(_) => "csr",
            RenewError::Ca(e) => e.reason(),
            RenewError::Invalid(e) => e.reason(),
        }
    }
}

/// Runs the istiod source until shutdown.
pub async fn run(cfg: IstiodConfig, watch_interval: Duration, mut ctx: SourceContext) {
    let cfg = Arc::new(cfg);
    let mut roots_rx =
        roots::watch(cfg.root_cert.clone(), watch_interval, ctx.metrics.clone()).await;
    let mut client: Option<CaClient> = None;
    let mut backoff = Backoff::default();
    let mut next_attempt = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_attempt) => {}
            changed = roots_rx.changed() => {
                if changed.is_err() { return; }
                let roots = roots_rx.borrow_and_update().clone();
                if let (Some(roots), Some(current)) = (roots, ctx.store.current()) {
                    // New trust roots reach SDS clients now, not at the next renewal.
                    tracing::info!(fingerprint = %roots.fingerprint, "mesh roots changed; pushing the new ROOTCA");
                    ctx.store.publish(current.certs.with_roots(&roots.certs));
                }
                continue;
            }
            _ = ctx.stopped() => return,
        }
        let roots = roots_rx.borrow_and_update().clone();
        match renew(&cfg, roots.as_deref(), &mut client).await {
            Ok(certs) => {
                let at = renew_at(&certs);
                publish(&ctx.store, &ctx.metrics, certs, "istiod");
                backoff.reset();
                next_attempt = instant_at(at);
            }
            Err(e) => {
                let delay = backoff.next_delay();
                let holding = ctx
                    .store
                    .current()
                    .filter(|p| p.certs.is_valid_at(SystemTime::now()))
                    .map(|p| p.certs.serial.clone());
                tracing::error!(
                    reason = e.reason(),
                    retry_in = ?delay,
                    still_serving = holding.as_deref().unwrap_or("nothing"),
                    "certificate renewal failed: {e}"
                );
                ctx.metrics.error(e.reason());
                next_attempt = Instant::now() + delay;
            }
        }
    }
}

/// One attempt: fresh key + CSR, sign, validate the answer against what we asked for.
async fn renew(
    cfg: &Arc<IstiodConfig>,
    roots: Option<&MeshRoots>,
    client: &mut Option<CaClient>,
) -> Result<WorkloadCerts, RenewError> {
    let roots = roots.ok_or(RenewError::NoRoots)?;
    if !client.as_ref().is_some_and(|c| c.trusts(roots)) {
        *client = Some(CaClient::new(cfg.clone(), roots)?);
    }
    let ca = client.as_ref().expect("client set above");
    let key = csr::generate(&cfg.identity)?;
    let pems = ca.sign(key.csr_pem).await?;
    let mut chain = Vec::new();
    for pem in &pems {
        chain.extend(parse_pem_certs(pem, "CA response")?);
    }
    Ok(WorkloadCerts::validate(
        &chain,
        &key.key_pem,
        &roots.certs,
        Some(&cfg.identity),
        SystemTime::now(),
    )?)
}

fn instant_at(t: SystemTime) -> Instant {
    Instant::now() + t.duration_since(SystemTime::now()).unwrap_or_default()
}
