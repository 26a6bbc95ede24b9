//! TLS to non-mesh backends (BackendTLSPolicy, DestinationRule `SIMPLE`/`MUTUAL`): the
//! client config per target, built once, verifying the chain against the policy's CAs (or
//! the system's) and the name against the policy's hostname or subjectAltNames, and
//! presenting the policy's client certificate if it has one.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::identity::mesh_tls::ChainThen;
use crate::ir::{SanMatch, TlsTarget};

/// Why a backend TLS config could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{policy}: {reason}")]
pub struct BackendTlsError {
    /// The policy (kind and name).
    pub policy: String,
    /// What went wrong.
    pub reason: String,
}

/// The machine's trust store, read once.
fn system_roots() -> &'static rustls::RootCertStore {
    static ROOTS: OnceLock<rustls::RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        tracing::info!(added, "system CA certificates loaded for backend TLS");
        store
    })
}

/// The client config for a backend TLS target.
pub fn client_config(t: &TlsTarget) -> Result<Arc<rustls::ClientConfig>, BackendTlsError> {
    let fail = |reason: String| BackendTlsError {
        policy: t.policy.clone(),
        reason,
    };
    if let Some(why) = &t.unavailable {
        return Err(fail(why.clone()));
    }
    let roots = if t.system_roots {
        system_roots().clone()
    } else {
        let mut store = rustls::RootCertStore::empty();
        for c in &t.ca_certs {
            store
                .add(CertificateDer::from(c.0.clone()))
                .map_err(|e| fail(format!("CA certificate: {e}")))?;
        }
        store
    };
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| fail(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if t.insecure_skip_verify {
        Arc::new(AnyCertificate(provider))
    } else if t.subject_alt_names.is_empty() {
        webpki
    } else {
        ChainThen::new(webpki, san_check(t.subject_alt_names.clone()))
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &t.client_cert {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain = c.chain.iter().map(|d| CertificateDer::from(d.0.clone()));
            let key: PrivateKeyDer<'static> = c.key.0.clone_key();
            builder
                .with_client_auth_cert(chain.collect(), key)
                .map_err(|e| fail(format!("client certificate from {}: {e}", c.source)))?
        }
    };
    config.alpn_protocols = if t.http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// With subjectAltNames the name is checked by them (Gateway API: the hostname is then
/// only the SNI).
fn san_check(
    sans: Vec<SanMatch>,
) -> impl Fn(&CertificateDer<'_>) -> Result<(), Error> + Send + Sync + 'static {
    move |end_entity| {
        let names = cert_sans(end_entity);
        let matched = sans.iter().any(|want| match want {
            SanMatch::Hostname(h) => names.dns.iter().any(|d| d.eq_ignore_ascii_case(h)),
            SanMatch::Uri(u) => names.uris.iter().any(|x| x == u),
        });
        if matched {
            return Ok(());
        }
        let mismatch = SanMismatch {
            presented: names.dns.iter().chain(&names.uris).cloned().collect(),
            wanted: sans
                .iter()
                .map(|s| match s {
                    SanMatch::Hostname(h) | SanMatch::Uri(h) => h.clone(),
                })
                .collect(),
        };
        Err(Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(mismatch)),
        )))
    }
}

/// The backend's certificate carries none of the subjectAltNames the policy wants.
#[derive(Debug, thiserror::Error)]
#[error(
    "the backend's certificate names {presented:?} but the policy's subjectAltNames want one of {wanted:?}"
)]
pub struct SanMismatch {
    /// DNS names and URIs of the certificate.
    pub presented: Vec<String>,
    /// The policy's subjectAltNames.
    pub wanted: Vec<String>,
}

/// `insecureSkipVerify`: any certificate is accepted; the handshake's signatures are
/// still checked, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A sentence for a failed backend handshake: a subjectAltName mismatch names both
/// sides; rustls says the rest.
pub fn describe_handshake_failure(e: &std::io::Error) -> String {
    let tls = e.get_ref().and_then(|i| i.downcast_ref::<Error>());
    match tls {
        Some(Error::InvalidCertificate(CertificateError::Other(o))) => o.0.to_string(),
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

/// DNS names and URIs of a certificate's subjectAltName extension.
#[derive(Default)]
struct Sans {
    dns: Vec<String>,
    uris: Vec<String>,
}

fn cert_sans(der: &CertificateDer<'_>) -> Sans {
    use x509_parser::extensions::GeneralName;
    let mut out = Sans::default();
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return out;
    };
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => out.dns.push(d.to_string()),
                GeneralName::URI(u) => out.uris.push(u.to_string()),
                _ => {}
            }
        }
    }
    out
}
