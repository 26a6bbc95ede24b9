//! A TLS client that reports which certificate a server presents, verifying the chain
//! against given roots. Mesh certificates carry only a URI SAN, so a hostname mismatch
//! is the one error tolerated; everything else (untrusted, expired) fails.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

#[derive(Debug)]
struct Capture {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        *self.seen.lock().unwrap() = Some(end_entity.clone().into_owned());
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Handshakes with `addr` trusting `roots_pem`; returns the server's leaf certificate.
pub async fn peer_leaf(
    addr: SocketAddr,
    roots_pem: &str,
) -> anyhow::Result<CertificateDer<'static>> {
    crate::install_crypto();
    let mut roots = RootCertStore::empty();
    for cert in mesh::certs::parse_pem_certs(roots_pem, "roots")? {
        roots.add(cert)?;
    }
    let verifier = Arc::new(Capture {
        inner: WebPkiServerVerifier::builder(Arc::new(roots)).build()?,
        seen: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("workload.mesh.invalid")?;
    let _tls = connector.connect(name, tcp).await?;
    let leaf = verifier.seen.lock().unwrap().clone();
    leaf.ok_or_else(|| anyhow::anyhow!("server presented no certificate"))
}
