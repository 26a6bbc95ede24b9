//! The gateway's mesh identity: credentials from the sds-agent ([`sds`]), validated and
//! built once per SDS version, published lock-free to the upstream connectors, and the
//! Istio mTLS client side ([`mesh_tls`]) that uses them.

pub mod mesh_tls;
pub mod sds;

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use mesh::WorkloadCerts;
use mesh::certs::parse_pem_certs;
use rustls::client::WebPkiServerVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;

/// Credentials for mesh mTLS, built once per SDS version.
pub struct MeshCreds {
    /// The validated certificate (identity, serial, validity, hashes).
    pub certs: WorkloadCerts,
    /// Client certificate and signing key for rustls.
    pub key: Arc<CertifiedKey>,
    /// Verifies upstream chains against ROOTCA (names are checked by SPIFFE id instead).
    pub roots: Arc<WebPkiServerVerifier>,
    /// SDS version these came from.
    pub version: String,
    /// When they arrived.
    pub received: std::time::Instant,
}

impl std::fmt::Debug for MeshCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCreds")
            .field("certs", &self.certs)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The current mesh credentials; read lock-free on every upstream handshake.
#[derive(Default)]
pub struct MeshIdentity {
    current: ArcSwapOption<MeshCreds>,
}

impl MeshIdentity {
    /// The credentials in use, if any arrived yet.
    pub fn current(&self) -> Option<Arc<MeshCreds>> {
        self.current.load_full()
    }

    /// Whether usable (unexpired) credentials are loaded.
    pub fn is_ready(&self) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|c| c.certs.is_valid_at(SystemTime::now()))
    }

    /// Replaces the credentials (new handshakes use them at once).
    pub fn set(&self, creds: MeshCreds) {
        self.current.store(Some(Arc::new(creds)));
    }
}

/// Why an SDS version was refused (sent back as a NACK).
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("SDS response carries no {0} secret")]
    Missing(&'static str),
    #[error("secret {name}: {reason}")]
    Secret { name: String, reason: String },
    #[error(transparent)]
    Cert(#[from] mesh::certs::CertError),
    #[error("rustls rejected the credentials: {0}")]
    Rustls(String),
}

/// Builds credentials from certificate chain + key + roots PEM.
pub fn build_creds(
    chain_pem: &str,
    key_pem: &str,
    roots_pem: &str,
    version: String,
) -> Result<MeshCreds, CredsError> {
    let chain = parse_pem_certs(chain_pem, "SDS default certificate chain")?;
    let roots = parse_pem_certs(roots_pem, "SDS ROOTCA")?;
    let certs = WorkloadCerts::validate(&chain, key_pem, &roots, None, SystemTime::now())?;
    let key_der = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| CredsError::Rustls(e.to_string()))?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| CredsError::Rustls(e.to_string()))?;
    let key = Arc::new(CertifiedKey::new(chain.clone(), signing));
    let mut store = rustls::RootCertStore::empty();
    for r in &roots {
        store
            .add(r.clone())
            .map_err(|e| CredsError::Rustls(e.to_string()))?;
    }
    let roots = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map_err(|e| CredsError::Rustls(e.to_string()))?;
    Ok(MeshCreds {
        certs,
        key,
        roots,
        version,
        received: std::time::Instant::now(),
    })
}
