//! The mesh root file (the `istio-ca-root-cert` ConfigMap), watched for changes.
//!
//! Polled rather than inotify-watched: kubelet updates ConfigMaps by swapping a `..data`
//! symlink, which file watches on the old inode miss; a read every second costs nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh::certs::{CertError, parse_pem_certs, sha256_hex};
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// A parsed set of trust roots.
#[derive(Debug)]
pub struct MeshRoots {
    /// The file's text.
    pub pem: String,
    /// Each root, DER.
    pub certs: Vec<CertificateDer<'static>>,
    /// SHA-256 of the file's text, to tell versions apart.
    pub fingerprint: String,
}

/// Why the root file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("cannot read mesh root file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mesh root file {path} is malformed: {source}")]
    Malformed { path: PathBuf, source: CertError },
}

impl RootError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            RootError::Unreadable { .. } => "root_cert_unreadable",
            RootError::Malformed { .. } => "root_cert_malformed",
        }
    }
}

/// Parses root text read from `path`.
pub fn parse(path: &Path, pem: String) -> Result<MeshRoots, RootError> {
    let certs = parse_pem_certs(&pem, "mesh root file").map_err(|source| RootError::Malformed {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(MeshRoots {
        fingerprint: sha256_hex(pem.as_bytes()),
        pem,
        certs,
    })
}

/// Reads `path` once, then keeps polling it; the receiver holds the last good roots
/// (`None` until the first good read).
///
/// A bad or missing file logs one line per distinct problem and counts a metric, and the
/// last good roots stay in use.
pub async fn watch(
    path: PathBuf,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> watch::Receiver<Option<Arc<MeshRoots>>> {
    let (tx, rx) = watch::channel(None);
    let mut last_text: Option<Result<String, String>> = None;
    // The first read happens before returning so the first CA call has its trust anchor.
    check(&path, &mut last_text, &tx, &metrics).await;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = tx.closed() => return,
            }
            check(&path, &mut last_text, &tx, &metrics).await;
        }
    });
    rx
}

/// Reads the file; publishes parsed roots when its text changed.
async fn check(
    path: &Path,
    last_text: &mut Option<Result<String, String>>,
    tx: &watch::Sender<Option<Arc<MeshRoots>>>,
    metrics: &Metrics,
) {
    let read = tokio::fs::read_to_string(path).await;
    let key = read.as_ref().cloned().map_err(|e| e.kind().to_string());
    if last_text.as_ref() == Some(&key) {
        return;
    }
    *last_text = Some(key);
    let result = read
        .map_err(|source| RootError::Unreadable {
            path: path.to_path_buf(),
            source,
        })
        .and_then(|pem| parse(path, pem));
    match result {
        Ok(roots) => {
            tracing::info!(
                path = %path.display(),
                fingerprint = %roots.fingerprint,
                roots = roots.certs.len(),
                "loaded mesh root certificates"
            );
            let _ = tx.send(Some(Arc::new(roots)));
        }
        Err(e) => {
            tracing::error!(reason = e.reason(), "{e}; keeping the last good roots");
            metrics.error(e.reason());
        }
    }
}
