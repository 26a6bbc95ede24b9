//! SDS client: subscribes to `default` (certificate + key) and `ROOTCA` on the agent's
//! unix socket, validates each pair before using it, ACKs what it uses and NACKs what it
//! refuses. The last good credentials survive an agent restart; the client reconnects
//! with backoff.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mesh::consts::{SDS_DEFAULT, SDS_ROOTCA, SECRET_TYPE_URL};
use mesh::sds::{decode_secret, inline_bytes};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{CredsError, MeshCreds, MeshIdentity, build_creds};
use crate::observe::metrics::Metrics;

/// SDS client settings.
#[derive(Debug, Clone)]
pub struct SdsClientConfig {
    /// The agent's unix socket.
    pub socket: PathBuf,
}

/// First and largest reconnect delays.
const RECONNECT_INITIAL: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(15);

/// Keeps `identity` fed from SDS for as long as the gateway runs.
pub async fn run(cfg: SdsClientConfig, identity: Arc<MeshIdentity>, metrics: Arc<Metrics>) {
    let mut delay = RECONNECT_INITIAL;
    loop {
        match stream_once(&cfg.socket, &identity, &metrics).await {
            Ok(()) => {
                tracing::warn!(socket = %cfg.socket.display(), "SDS stream closed by the agent; reconnecting")
            }
            Err(e) => {
                tracing::warn!(socket = %cfg.socket.display(), retry_in = ?delay, holding = identity.current().map(|c| c.certs.serial.clone()).unwrap_or_default(), "SDS unavailable: {e}")
            }
        }
        metrics.sds_reconnects.inc();
        tokio::time::sleep(delay.mul_f64(0.8 + fastrand::f64() * 0.4)).await;
        // A stream that delivered something was healthy: start the backoff over.
        delay = if identity
            .current()
            .is_some_and(|c| c.received.elapsed() < delay * 4)
        {
            RECONNECT_INITIAL
        } else {
            (delay * 2).min(RECONNECT_MAX)
        };
    }
}

fn request(version: &str, nonce: &str, error: Option<String>) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_string(),
        resource_names: vec![SDS_DEFAULT.to_string(), SDS_ROOTCA.to_string()],
        type_url: SECRET_TYPE_URL.to_string(),
        response_nonce: nonce.to_string(),
        error_detail: error.map(|message| envoy_types::pb::google::rpc::Status {
            code: 3,
            message,
            details: vec![],
        }),
        ..Default::default()
    }
}

async fn stream_once(
    socket: &Path,
    identity: &MeshIdentity,
    metrics: &Metrics,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut client = mesh::sds::connect_unix(socket).await?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(request("", "", None)).await?;
    let mut inbound = client
        .stream_secrets(ReceiverStream::new(rx))
        .await?
        .into_inner();
    // The version we last accepted: what an ACK or NACK reports.
    let mut accepted = identity
        .current()
        .map(|c| c.version.clone())
        .unwrap_or_default();
    while let Some(resp) = inbound.message().await? {
        match creds_from(&resp) {
            Ok(creds) => {
                tracing::info!(identity = %creds.certs.identity, serial = %creds.certs.serial, version = %resp.version_info, "mesh identity loaded from SDS");
                metrics.sds_updates.inc();
                identity.set(creds);
                accepted = resp.version_info.clone();
                tx.send(request(&accepted, &resp.nonce, None)).await?;
            }
            Err(e) => {
                tracing::error!(version = %resp.version_info, "refusing SDS update (NACK), keeping the previous identity: {e}");
                metrics.sds_rejections.inc();
                tx.send(request(&accepted, &resp.nonce, Some(e.to_string())))
                    .await?;
            }
        }
    }
    Ok(())
}

fn creds_from(resp: &DiscoveryResponse) -> Result<MeshCreds, CredsError> {
    let mut cert: Option<(String, String)> = None;
    let mut roots: Option<String> = None;
    for any in &resp.resources {
        let s = decode_secret(any).map_err(|e| CredsError::Secret {
            name: "?".into(),
            reason: e.to_string(),
        })?;
        let text = |b: Option<&[u8]>, what: &str| {
            b.map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or_else(|| CredsError::Secret {
                    name: s.name.clone(),
                    reason: format!("{what} is not inline"),
                })
        };
        match &s.r#type {
            Some(secret::Type::TlsCertificate(t)) => {
                cert = Some((
                    text(
                        inline_bytes(t.certificate_chain.as_ref()),
                        "certificate_chain",
                    )?,
                    text(inline_bytes(t.private_key.as_ref()), "private_key")?,
                ));
            }
            Some(secret::Type::ValidationContext(v)) => {
                roots = Some(text(inline_bytes(v.trusted_ca.as_ref()), "trusted_ca")?);
            }
            _ => {}
        }
    }
    let (chain, key) = cert.ok_or(CredsError::Missing(SDS_DEFAULT))?;
    let roots = roots.ok_or(CredsError::Missing(SDS_ROOTCA))?;
    build_creds(&chain, &key, &roots, resp.version_info.clone())
}
