//! Istio mutual TLS to mesh upstreams, the way an Istio client does it: the gateway's
//! SDS certificate as client certificate, the server chain verified against ROOTCA, the
//! server's URI SAN checked against the expected SPIFFE identities, SNI
//! `outbound_.<port>_._.<fqdn>`, ALPN `istio-http/1.1` or `istio-h2` plus `istio` (only `istio`
//! for raw TCP).

use std::sync::Arc;

use super::MeshCreds;
use crate::ir::MeshTarget;
use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// ALPN protocols offered, as Istio clients offer them.
pub fn alpn(target: &MeshTarget) -> Vec<Vec<u8>> {
    if target.tcp {
        return vec![b"istio".to_vec()];
    }
    let first: &[u8] = if target.http2 {
        b"istio-h2"
    } else {
        b"istio-http/1.1"
    };
    vec![first.to_vec(), b"istio".to_vec()]
}

/// The upstream presented a certificate for someone else.
#[derive(Debug, thiserror::Error)]
#[error("upstream identity mismatch: expected {expected}, got {got}")]
pub struct IdentityMismatch {
    /// What we accept.
    pub expected: String,
    /// What the server's URI SAN said.
    pub got: String,
}

/// A server verifier that checks the chain against `roots` (webpki) while ignoring the DNS
/// name, then the peer's name by its own rule (a SPIFFE id for the mesh, subjectAltNames
/// for BackendTLSPolicy).
pub struct ChainThen {
    roots: Arc<WebPkiServerVerifier>,
    check: NameCheck,
}

/// The name rule of a [`ChainThen`] verifier.
type NameCheck = Box<dyn Fn(&CertificateDer<'_>) -> Result<(), Error> + Send + Sync>;

impl std::fmt::Debug for ChainThen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainThen").finish_non_exhaustive()
    }
}

impl ChainThen {
    /// Chain by `roots`, then name by `check`.
    pub fn new(
        roots: Arc<WebPkiServerVerifier>,
        check: impl Fn(&CertificateDer<'_>) -> Result<(), Error> + Send + Sync + 'static,
    ) -> Arc<ChainThen> {
        Arc::new(ChainThen {
            roots,
            check: Box::new(check),
        })
    }
}

impl ServerCertVerifier for ChainThen {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // webpki checks the chain before the name; these certificates are named otherwise,
        // so a name mismatch here means the chain itself verified.
        let placeholder = ServerName::try_from("chain-only.invalid").expect("static name");
        match self
            .roots
            .verify_server_cert(end_entity, intermediates, &placeholder, ocsp, now)
        {
            Ok(_)
            | Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {}
            Err(e) => return Err(e),
        }
        (self.check)(end_entity).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.roots.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.roots.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.roots.supported_verify_schemes()
    }
}

/// Istio's secure naming: the server's SPIFFE id (URI SAN) must be one of `identities`.
fn spiffe_identity(
    identities: Vec<String>,
) -> impl Fn(&CertificateDer<'_>) -> Result<(), Error> + Send + Sync + 'static {
    move |end_entity| {
        let got = mesh::certs::identity_of(end_entity).map_err(|e| {
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        let got = got.to_string();
        if identities.contains(&got) {
            return Ok(());
        }
        Err(Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(IdentityMismatch {
                expected: identities.join(" or "),
                got,
            })),
        )))
    }
}

/// Always presents the gateway's current mesh certificate.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The client config for `target` with `creds`: built once per (target, credentials
/// version) by the upstream pool, never per connection.
///
/// Resumption is on (rustls' in-memory ticket cache): sidecars resume TLS 1.3 sessions, so
/// a new pooled connection skips the certificate exchange. The cache belongs to this
/// config, so after a rotation the new config starts empty and no resumed session can
/// present the old certificate.
pub fn client_config(creds: &MeshCreds, target: &MeshTarget) -> Arc<rustls::ClientConfig> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(ChainThen::new(
            creds.roots.clone(),
            spiffe_identity(target.identities.clone()),
        ))
        .with_client_cert_resolver(Arc::new(ClientCert(creds.key.clone())));
    config.alpn_protocols = alpn(target);
    config.resumption = rustls::client::Resumption::in_memory_sessions(256);
    Arc::new(config)
}
