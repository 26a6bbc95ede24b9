//! Edge TLS: per-listener rustls server configs, chosen by SNI from the ClientHello.
//!
//! Each HTTPS Gateway listener compiles to one [`ListenerTls`] (its certificate, optional
//! client-certificate validation for MUTUAL TLS, minimum version). A port with several
//! listeners picks the config after reading the ClientHello (`LazyConfigAcceptor`), so
//! certificates, client validation and versions can differ per hostname.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

use crate::routing::HostPattern;

/// Listener option naming the minimum TLS version (`1.2` or `1.3`).
pub const MIN_VERSION_OPTION: &str = "meshgate.io/min-tls-version";

/// Minimum TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MinVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

impl std::str::FromStr for MinVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().trim_start_matches("tlsv") {
            "1.2" | "1_2" => Ok(MinVersion::Tls12),
            "1.3" | "1_3" => Ok(MinVersion::Tls13),
            other => Err(format!("TLS version {other:?} is not one of 1.2, 1.3")),
        }
    }
}

/// The TLS server side of one HTTPS listener.
#[derive(Debug)]
pub struct ListenerTls {
    /// Listener hostname; selects this config by SNI.
    pub hostname: HostPattern,
    /// rustls server config (certificate, client verifier, versions, ALPN h2 + http/1.1).
    pub config: Arc<ServerConfig>,
    /// What `/config_dump` shows.
    pub summary: TlsSummary,
}

/// Serializable description of a listener's TLS settings.
#[derive(Debug, Clone, Serialize)]
pub struct TlsSummary {
    pub listener: String,
    pub hostname: String,
    pub certificate: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_ca: Vec<String>,
    pub min_version: MinVersion,
}

/// Picks the listener config for a ClientHello's SNI: the most specific hostname match,
/// else the listener without hostname, else the first one.
pub fn select<'a>(listeners: &'a [ListenerTls], sni: Option<&str>) -> Option<&'a ListenerTls> {
    let sni = sni.map(|s| s.to_ascii_lowercase());
    if let Some(sni) = &sni
        && let Some(l) = listeners.iter().find(|l| l.hostname.matches(sni))
    {
        return Some(l);
    }
    listeners
        .iter()
        .find(|l| l.hostname == HostPattern::Any)
        .or_else(|| listeners.first())
}

/// Parses a PEM certificate chain (leaf first).
pub fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM certificate: {e}"))?;
    if chain.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(chain)
}

/// Parses a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("invalid PEM private key: {e}"))
}

/// Builds a server config: one certificate, optional client CA roots (MUTUAL), min version.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<Vec<CertificateDer<'static>>>,
    min_version: MinVersion,
) -> Result<ServerConfig, String> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_protocol_versions(versions);
    let builder = match client_roots {
        Some(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for c in roots {
                store
                    .add(c)
                    .map_err(|e| format!("invalid client CA certificate: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(store))
                .build()
                .map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
