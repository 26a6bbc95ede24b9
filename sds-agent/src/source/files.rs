//! The files source: a directory with `cert-chain.pem`, `key.pem`, `root-cert.pem`
//! (istio-proxy's `OUTPUT_CERTS` layout), polled. A set is published only when the key
//! matches the leaf, so a torn write (new cert, old key) is never served.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mesh::WorkloadCerts;
use mesh::certs::{CertError, parse_pem_certs, sha256_hex};

use super::{SourceContext, publish};

/// File names inside the directory.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// Private key file name.
pub const KEY: &str = "key.pem";
/// Root file name.
pub const ROOT_CERT: &str = "root-cert.pem";

/// Why the directory's contents were not published.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir}: {source}")]
    Invalid { dir: PathBuf, source: CertError },
}

impl FilesError {
    fn reason(&self) -> &'static str {
        match self {
            FilesError::Read { .. } => "files_unreadable",
            FilesError::Invalid { source, .. } => source.reason(),
        }
    }
}

/// Runs the files source until shutdown.
pub async fn run(dir: PathBuf, interval: Duration, mut ctx: SourceContext) {
    let mut last_seen: Option<String> = None;
    loop {
        match read_all(&dir).await {
            Ok(texts) => {
                let digest = sha256_hex(texts.join("\0").as_bytes());
                if last_seen.as_deref() != Some(&digest) {
                    last_seen = Some(digest);
                    match build(&dir, &texts) {
                        Ok(certs) => publish(&ctx.store, &ctx.metrics, certs, "files"),
                        Err(e) => {
                            tracing::warn!(
                                reason = e.reason(),
                                "not publishing certificates: {e}; waiting for the next change"
                            );
                            ctx.metrics.error(e.reason());
                        }
                    }
                }
            }
            Err(e) => {
                let marker = format!("error:{e}");
                if last_seen.as_deref() != Some(&marker) {
                    tracing::warn!(reason = e.reason(), "{e}");
                    ctx.metrics.error(e.reason());
                    last_seen = Some(marker);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = ctx.stopped() => return,
        }
    }
}

async fn read_all(dir: &Path) -> Result<[String; 3], FilesError> {
    let read = |name: &str| {
        let path = dir.join(name);
        async move {
            tokio::fs::read_to_string(&path)
                .await
                .map_err(|source| FilesError::Read { path, source })
        }
    };
    Ok([
        read(CERT_CHAIN).await?,
        read(KEY).await?,
        read(ROOT_CERT).await?,
    ])
}

fn build(dir: &Path, [chain, key, root]: &[String; 3]) -> Result<WorkloadCerts, FilesError> {
    let invalid = |source| FilesError::Invalid {
        dir: dir.to_path_buf(),
        source,
    };
    let chain = parse_pem_certs(chain, CERT_CHAIN).map_err(invalid)?;
    let roots = parse_pem_certs(root, ROOT_CERT).map_err(invalid)?;
    WorkloadCerts::validate(&chain, key, &roots, None, SystemTime::now()).map_err(invalid)
}
