//! rustls server configs for HTTPS listeners, built once per configuration from DER.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

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
            let verifier = WebPkiClientVerifier::builder(Arc::new(store))
                .build()
                .map_err(|e| format!("client CA: {e}"))?;
            match v.mode {
                ValidationMode::AllowValidOnly => builder.with_client_cert_verifier(verifier),
                ValidationMode::AllowInsecureFallback => {
                    builder.with_client_cert_verifier(Arc::new(InsecureFallback(verifier)))
                }
            }
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

/// `AllowInsecureFallback`: client certificates are requested, but a connection without
/// one, or with one that does not verify, is accepted all the same (Gateway API: "allows
/// any HTTPS traffic"); the Gateway says so in its `InsecureFrontendValidationMode`
/// condition.
#[derive(Debug)]
struct InsecureFallback(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for InsecureFallback {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(e) = self.0.verify_client_cert(end_entity, intermediates, now) {
            tracing::debug!(error = %e, "client certificate not valid; accepted (AllowInsecureFallback)");
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
