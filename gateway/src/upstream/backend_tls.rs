//! TLS to non-mesh backends (BackendTLSPolicy): the client config per target, built once,
//! verifying the chain against the policy's CAs (or the system's) and the name against the
//! policy's hostname or subjectAltNames.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::ir::{SanMatch, TlsTarget};

/// Why a backend TLS config could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[error("BackendTLSPolicy {policy}: {reason}")]
pub struct BackendTlsError {
    /// The policy.
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
        tracing::info!(added, "system CA certificates loaded for BackendTLSPolicy");
        store
    })
}

/// The client config for a backend TLS target.
pub fn client_config(t: &TlsTarget) -> Result<Arc<rustls::ClientConfig>, BackendTlsError> {
    let fail = |reason: String| BackendTlsError {
        policy: t.policy.clone(),
        reason,
    };
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
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| fail(e.to_string()))?;
    let mut config = if t.subject_alt_names.is_empty() {
        builder.with_webpki_verifier(webpki).with_no_client_auth()
    } else {
        let verifier = SanVerifier {
            chain: webpki,
            sans: t.subject_alt_names.clone(),
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    config.alpn_protocols = if t.http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// With subjectAltNames, the chain is verified as usual and the name by those SANs
/// (Gateway API: the hostname is then only the SNI).
#[derive(Debug)]
struct SanVerifier {
    chain: Arc<WebPkiServerVerifier>,
    sans: Vec<SanMatch>,
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // webpki checks the chain before the name; a name error means the chain passed.
        let placeholder = ServerName::try_from("backend-tls.invalid").expect("static name");
        match self
            .chain
            .verify_server_cert(end_entity, intermediates, &placeholder, ocsp, now)
        {
            Ok(_)
            | Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {}
            Err(e) => return Err(e),
        }
        let names = cert_sans(end_entity);
        let matched = self.sans.iter().any(|want| match want {
            SanMatch::Hostname(h) => names.dns.iter().any(|d| d.eq_ignore_ascii_case(h)),
            SanMatch::Uri(u) => names.uris.iter().any(|x| x == u),
        });
        if matched {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
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
