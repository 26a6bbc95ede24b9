//! Talks to istiod's certificate service. Knows nothing of rotation.
//!
//! [`CertificateAuthority`] is what the rotation manager
//! ([`source::istiod`](crate::source::istiod)) sees of a CA: "issue me a certificate".
//! [`IstiodCa`] is that over gRPC ([`CaClient`]); tests put an in-process CA behind it.

use std::error::Error as _;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use mesh::WorkloadCerts;
use mesh::ca::{IstioCertificateRequest, IstioCertificateServiceClient};
use mesh::certs::{CertError, parse_pem_certs};
use mesh::consts::CLUSTER_ID_HEADER;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::auth::{TokenError, TokenFile};
use crate::config::IstiodConfig;
use crate::csr;
use crate::roots::MeshRoots;

/// Issues the workload's certificates.
pub trait CertificateAuthority: Send {
    /// One attempt: a fresh key, signed by the CA, validated against `roots` and the
    /// identity asked for.
    fn issue(
        &mut self,
        roots: &MeshRoots,
    ) -> impl Future<Output = Result<WorkloadCerts, IssueError>> + Send;
}

/// Why one issuance attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("no usable mesh root file yet (see the earlier error)")]
    NoRoots,
    #[error("cannot generate key/CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("CA answer rejected: {0}")]
    Invalid(#[from] CertError),
}

impl IssueError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            IssueError::NoRoots => "root_cert_unavailable",
            IssueError::Csr(_) => "csr",
            IssueError::Ca(e) => e.reason(),
            IssueError::Invalid(e) => e.reason(),
        }
    }
}

/// istiod's CA over gRPC: a fresh key and CSR per attempt, the answer checked against
/// what was asked for; the channel is rebuilt when the mesh roots change.
#[derive(Debug)]
pub struct IstiodCa {
    cfg: Arc<IstiodConfig>,
    /// The channel for the current roots; `None` until the first attempt.
    client: Option<CaClient>,
}

impl IstiodCa {
    /// A CA at `cfg.ca_addr`; connects on the first attempt.
    pub fn new(cfg: Arc<IstiodConfig>) -> Self {
        IstiodCa { cfg, client: None }
    }
}

impl CertificateAuthority for IstiodCa {
    async fn issue(&mut self, roots: &MeshRoots) -> Result<WorkloadCerts, IssueError> {
        if !self.client.as_ref().is_some_and(|c| c.trusts(roots)) {
            self.client = Some(CaClient::new(self.cfg.clone(), roots)?);
        }
        let ca = self.client.as_ref().expect("client set above");
        let key = csr::generate(&self.cfg.identity)?;
        let pems = ca.sign(key.csr_pem).await?;
        let mut chain = Vec::new();
        for pem in &pems {
            chain.extend(parse_pem_certs(pem, "CA response")?);
        }
        Ok(WorkloadCerts::validate(
            &chain,
            &key.key_pem,
            &roots.certs,
            Some(&self.cfg.identity),
            SystemTime::now(),
        )?)
    }
}

/// Why a CA call failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("invalid CA request header {name:?}: {reason}")]
    Header { name: String, reason: String },
    #[error("invalid CA address {addr:?}: {reason}")]
    Endpoint { addr: String, reason: String },
    #[error("CA {addr} answered {code:?}: {message}")]
    Rpc {
        addr: String,
        code: tonic::Code,
        message: String,
        reason: &'static str,
    },
    #[error("CA {0} returned an empty certificate chain")]
    EmptyChain(String),
}

impl CaError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            CaError::Token(_) => "token_unreadable",
            CaError::Header { .. } | CaError::Endpoint { .. } => "config",
            CaError::Rpc { reason, .. } => reason,
            CaError::EmptyChain(_) => "invalid_response",
        }
    }

    fn from_status(addr: &str, status: tonic::Status) -> Self {
        // Transport errors hide the useful part (refused, untrusted) in the source chain.
        let mut message = status.message().to_string();
        let mut source = status.source();
        while let Some(e) = source {
            let text = e.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            source = e.source();
        }
        let lower = message.to_ascii_lowercase();
        let reason = match status.code() {
            tonic::Code::Unauthenticated => "unauthenticated",
            tonic::Code::PermissionDenied => "permission_denied",
            tonic::Code::InvalidArgument => "rejected",
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => "timeout",
            _ if lower.contains("certificate") || lower.contains("unknownissuer") => "ca_untrusted",
            tonic::Code::Unavailable | tonic::Code::Unknown => "ca_unreachable",
            _ => "ca_error",
        };
        CaError::Rpc {
            addr: addr.to_string(),
            code: status.code(),
            message,
            reason,
        }
    }
}

/// A client for one CA address, trusting one set of mesh roots.
#[derive(Debug, Clone)]
pub struct CaClient {
    client: IstioCertificateServiceClient<Channel>,
    cfg: Arc<IstiodConfig>,
    token: TokenFile,
    /// Fingerprint of the roots this channel trusts; a new root file means a new client.
    roots_fingerprint: String,
}

impl CaClient {
    /// Builds a lazily-connecting TLS channel to the CA that trusts only `roots`.
    pub fn new(cfg: Arc<IstiodConfig>, roots: &MeshRoots) -> Result<Self, CaError> {
        let endpoint_err = |reason: String| CaError::Endpoint {
            addr: cfg.ca_addr.clone(),
            reason,
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&roots.pem))
            .domain_name(cfg.ca_server_name.clone());
        let channel = Endpoint::from_shared(format!("https://{}", cfg.ca_addr))
            .map_err(|e| endpoint_err(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| endpoint_err(e.to_string()))?
            // The CSR and the answer are small writes: never hold them for a delayed ACK
            // (tonic's default today, stated here because the latency depends on it).
            .tcp_nodelay(true)
            .connect_timeout(cfg.request_timeout)
            .timeout(cfg.request_timeout)
            .connect_lazy();
        Ok(CaClient {
            client: IstioCertificateServiceClient::new(channel),
            token: TokenFile::new(cfg.token_file.clone()),
            roots_fingerprint: roots.fingerprint.clone(),
            cfg,
        })
    }

    /// Whether this client was built for `roots`.
    pub fn trusts(&self, roots: &MeshRoots) -> bool {
        self.roots_fingerprint == roots.fingerprint
    }

    /// Sends a CSR; returns the PEM chain as the CA sent it (leaf first).
    pub async fn sign(&self, csr_pem: String) -> Result<Vec<String>, CaError> {
        let token = self.token.token().await?;
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem,
            validity_duration: self.cfg.secret_ttl.as_secs() as i64,
            metadata: None,
        });
        request.set_timeout(self.cfg.request_timeout);
        let md = request.metadata_mut();
        let bad = |name: &str, reason: String| CaError::Header {
            name: name.to_string(),
            reason,
        };
        md.insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|e| bad("authorization", e.to_string()))?,
        );
        md.insert(
            CLUSTER_ID_HEADER,
            MetadataValue::try_from(self.cfg.cluster_id.as_str())
                .map_err(|e| bad(CLUSTER_ID_HEADER, e.to_string()))?,
        );
        for (name, value) in &self.cfg.extra_headers {
            let key =
                MetadataKey::from_bytes(name.as_bytes()).map_err(|e| bad(name, e.to_string()))?;
            let value =
                MetadataValue::try_from(value.as_str()).map_err(|e| bad(name, e.to_string()))?;
            md.insert(key, value);
        }
        let response = self
            .client
            .clone()
            .create_certificate(request)
            .await
            .map_err(|s| CaError::from_status(&self.cfg.ca_addr, s))?;
        let chain = response.into_inner().cert_chain;
        if chain.is_empty() {
            return Err(CaError::EmptyChain(self.cfg.ca_addr.clone()));
        }
        Ok(chain)
    }
}
