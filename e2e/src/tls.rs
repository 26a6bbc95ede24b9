//! A TLS client that reports which certificate a server presents, verifying the chain
//! against given roots. Mesh certificates carry only a URI SAN, so a hostname mismatch
//! is the one error tolerated; everything else (untrusted, expired) fails.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// A server verifier that checks the chain against given roots and records the server's
/// leaf; mesh certificates carry only a URI SAN, so a name mismatch is tolerated (check the
/// identity with [`LeafRecorder::leaf`] and `mesh::certs::identity_of`).
#[derive(Debug)]
pub struct LeafRecorder {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl LeafRecorder {
    /// Trusting `roots` (DER).
    pub fn new(roots: &[CertificateDer<'_>]) -> anyhow::Result<Arc<LeafRecorder>> {
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root.clone().into_owned())?;
        }
        Ok(Arc::new(LeafRecorder {
            inner: WebPkiServerVerifier::builder(Arc::new(store)).build()?,
            seen: Mutex::new(None),
        }))
    }

    /// The last leaf a server presented.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.seen.lock().unwrap().clone()
    }
}

impl ServerCertVerifier for LeafRecorder {
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
    let verifier = LeafRecorder::new(&mesh::certs::parse_pem_certs(roots_pem, "roots")?)?;
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("workload.mesh.invalid")?;
    let _tls = connector.connect(name, tcp).await?;
    verifier
        .leaf()
        .ok_or_else(|| anyhow::anyhow!("server presented no certificate"))
}
