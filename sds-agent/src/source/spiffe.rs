//! The SPIFFE source: the Workload API (a SPIRE agent) through the `spiffe` crate's
//! `X509Source`, which keeps its own stream and reconnects; we republish on each update.

use std::time::{Duration, SystemTime};

use mesh::WorkloadCerts;
use mesh::certs::CertError;
use rustls_pki_types::CertificateDer;
use spiffe::X509Source;

use super::{SourceContext, publish};
use crate::rotation::Backoff;

/// Runs the SPIFFE source until shutdown.
pub async fn run(endpoint: String, mut ctx: SourceContext) {
    let mut backoff = Backoff::default();
    loop {
        let build = X509Source::builder()
            .endpoint(&endpoint)
            .initial_sync_timeout(Duration::from_secs(30))
            .build();
        let source = tokio::select! {
            s = build => s,
            _ = ctx.stopped() => return,
        };
        let source = match source {
            Ok(s) => s,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::error!(reason = "workload_api", %endpoint, retry_in = ?delay, "cannot get an X.509 SVID from the Workload API: {e}");
                ctx.metrics.error("workload_api");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = ctx.stopped() => return,
                }
            }
        };
        backoff.reset();
        let mut updates = source.updated();
        loop {
            match convert(&source) {
                Ok(certs) => publish(&ctx.store, &ctx.metrics, certs, "spiffe"),
                Err(e) => {
                    tracing::warn!(reason = e.reason(), "Workload API SVID not usable: {e}");
                    ctx.metrics.error(e.reason());
                }
            }
            tokio::select! {
                u = updates.changed() => if u.is_err() { break },
                _ = ctx.stopped() => { source.shutdown().await; return; }
            }
        }
        tracing::warn!(%endpoint, "Workload API source closed; reconnecting");
    }
}

fn convert(source: &X509Source) -> Result<WorkloadCerts, CertError> {
    let svid = source
        .svid()
        .map_err(|e| CertError::Key(format!("no SVID: {e}")))?;
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key_pem = mesh::certs::pkcs8_pem(svid.private_key().as_bytes());
    let td = svid.spiffe_id().trust_domain();
    let bundle = source
        .try_bundle_for_trust_domain(td)
        .ok_or_else(|| CertError::UntrustedRoot(format!("no bundle for trust domain {td}")))?;
    let roots: Vec<CertificateDer<'static>> = bundle
        .authorities()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    WorkloadCerts::validate(&chain, &key_pem, &roots, None, SystemTime::now())
}
