//! Envoy SDS resources built from [`WorkloadCerts`].

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::google::protobuf::Any;

use crate::certs::WorkloadCerts;
use crate::consts::{SDS_DEFAULT, SDS_GLOO_SERVER_CERT, SDS_GLOO_VALIDATION_CONTEXT, SDS_ROOTCA};

/// What an SDS resource name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// The workload certificate chain and key (`default`, `istio_server_cert`).
    Certificate,
    /// The trusted roots (`ROOTCA`, `istio_validation_context`).
    Validation,
}

/// Every resource name this project serves.
pub const RESOURCE_NAMES: [&str; 4] = [
    SDS_DEFAULT,
    SDS_ROOTCA,
    SDS_GLOO_SERVER_CERT,
    SDS_GLOO_VALIDATION_CONTEXT,
];

/// Maps a resource name to what it refers to, `None` if unknown.
pub fn resource_kind(name: &str) -> Option<ResourceKind> {
    match name {
        SDS_DEFAULT | SDS_GLOO_SERVER_CERT => Some(ResourceKind::Certificate),
        SDS_ROOTCA | SDS_GLOO_VALIDATION_CONTEXT => Some(ResourceKind::Validation),
        _ => None,
    }
}

fn inline(pem: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineBytes(pem.as_bytes().to_vec())),
        ..Default::default()
    })
}

/// The secret named `name` (which must be known) for `certs`.
pub fn secret(name: &str, kind: ResourceKind, certs: &WorkloadCerts) -> Secret {
    let r#type = match kind {
        ResourceKind::Certificate => secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(&certs.chain_pem),
            private_key: inline(&certs.key_pem),
            ..Default::default()
        }),
        ResourceKind::Validation => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(&certs.roots_pem),
            ..Default::default()
        }),
    };
    Secret {
        name: name.to_string(),
        r#type: Some(r#type),
    }
}

/// [`secret`] packed as a `google.protobuf.Any` for a discovery response.
pub fn secret_any(name: &str, kind: ResourceKind, certs: &WorkloadCerts) -> Any {
    envoy_types::pb::google::protobuf::Any {
        type_url: crate::consts::SECRET_TYPE_URL.to_string(),
        value: prost::Message::encode_to_vec(&secret(name, kind, certs)),
    }
}

/// Why a discovery-response resource is not a usable secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("resource type {0} is not an SDS Secret")]
    WrongType(String),
    #[error("malformed Secret: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Decodes a discovery-response resource into a [`Secret`].
pub fn decode_secret(any: &Any) -> Result<Secret, SecretError> {
    if any.type_url != crate::consts::SECRET_TYPE_URL {
        return Err(SecretError::WrongType(any.type_url.clone()));
    }
    Ok(prost::Message::decode(any.value.as_slice())?)
}

/// Inline bytes of a data source, if inline.
pub fn inline_bytes(ds: Option<&DataSource>) -> Option<&[u8]> {
    match ds?.specifier.as_ref()? {
        Specifier::InlineBytes(b) => Some(b),
        Specifier::InlineString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Connects an SDS client to a server on a unix socket (the sds-agent's).
pub async fn connect_unix(
    socket: &std::path::Path,
) -> Result<
    envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient<
        tonic::transport::Channel,
    >,
    tonic::transport::Error,
>{
    let path = socket.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = tonic::transport::Endpoint::from_static("http://sds.local")
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await?;
    Ok(envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient::new(channel))
}
