//! TLS to non-mesh backends (BackendTLSPolicy): the client config per target, built once,
//! verifying the chain against the policy's CAs (or the system's) and the name against the
//! policy's hostname or subjectAltNames.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::{CertificateError, Error};
use rustls_pki_types::CertificateDer;

use crate::identity::mesh_tls::ChainThen;
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
        let verifier = ChainThen::new(webpki, san_check(t.subject_alt_names.clone()));
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth()
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
            Ok(())
        } else {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
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
