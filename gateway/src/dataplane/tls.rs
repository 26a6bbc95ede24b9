//! rustls server configs for HTTPS listeners, built once per configuration from DER.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;

use crate::ir::{MinVersion, TlsServer, ValidationMode};

/// A listener's server config: its certificate, client validation, versions, ALPN.
pub fn server_config(t: &TlsServer) -> Result<ServerConfig, String> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match t.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_protocol_versions(versions);
    let builder = match &t.client_validation {
        Some(v) => {
            let mut store = rustls::RootCertStore::empty();
            for c in &v.ca_certs {
                store
                    .add(CertificateDer::from(c.0.clone()))
                    .map_err(|e| format!("invalid client CA certificate: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(store));
            let verifier = match v.mode {
                ValidationMode::AllowValidOnly => verifier,
                ValidationMode::AllowInsecureFallback => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = t
        .cert_chain
        .iter()
        .map(|c| CertificateDer::from(c.0.clone()))
        .collect();
    let mut config = builder
        .with_single_cert(chain, t.key.0.clone_key())
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
