//! Istio's certificate service, `istio.v1.auth.IstioCertificateService`.
//!
//! The messages mirror istio/api `security/v1alpha1/ca.proto` field for field; the
//! client is the unary call a generated stub would make. Written out by hand because
//! it is three fields and one method, and it keeps protoc out of the build.

use tonic::codegen::http::uri::PathAndQuery;

/// The gRPC service name.
pub const SERVICE: &str = "istio.v1.auth.IstioCertificateService";
/// Path of the one method, `CreateCertificate`.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// A certificate signing request to the mesh CA.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded PKCS#10 certificate signing request.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// Optional request metadata (e.g. impersonation); unused by this agent.
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<prost_types::Struct>,
}

/// The signed certificate chain: leaf first, root last.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// PEM certificates.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// Client for `IstioCertificateService` over any tonic transport.
#[derive(Debug, Clone)]
pub struct IstioCertificateServiceClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> IstioCertificateServiceClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    /// Wraps a transport (usually a `tonic::transport::Channel`).
    pub fn new(inner: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    /// Calls `CreateCertificate`.
    pub async fn create_certificate(
        &mut self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        self.inner.ready().await.map_err(|e| {
            tonic::Status::unavailable(format!("CA channel not ready: {}", e.into()))
        })?;
        let codec = tonic_prost::ProstCodec::default();
        let path = PathAndQuery::from_static(CREATE_CERTIFICATE_PATH);
        self.inner.unary(request, path, codec).await
    }
}
