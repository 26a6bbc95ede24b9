//! Istio's certificate service, `istio.v1.auth.IstioCertificateService`.
//!
//! Generated at build time from `proto/istio/security/v1alpha1/ca.proto` (istio/api's
//! definition): the messages, the client the sds-agent uses, and the server trait the
//! test CA implements.

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("istio.v1.auth");
}

pub use generated::istio_certificate_service_client::IstioCertificateServiceClient;
pub use generated::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
pub use generated::{IstioCertificateRequest, IstioCertificateResponse};

/// The gRPC service name.
pub const SERVICE: &str = "istio.v1.auth.IstioCertificateService";
/// Path of the one method, `CreateCertificate`.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The generated messages keep the published field numbers: csr=1,
    /// validity_duration=3, metadata=4; cert_chain=1.
    #[test]
    fn messages_use_the_published_field_numbers() {
        let request = IstioCertificateRequest {
            csr: "C".into(),
            validity_duration: 5,
            metadata: Some(prost_types::Struct::default()),
        };
        // tag 1 (len) "C", tag 3 (varint) 5, tag 4 (len) empty.
        assert_eq!(request.encode_to_vec(), [0x0a, 1, b'C', 0x18, 5, 0x22, 0]);
        let response = IstioCertificateResponse {
            cert_chain: vec!["L".into(), "R".into()],
        };
        assert_eq!(response.encode_to_vec(), [0x0a, 1, b'L', 0x0a, 1, b'R']);
    }

    #[test]
    fn service_name_matches_the_generated_server() {
        use tonic::server::NamedService;
        assert_eq!(
            <IstioCertificateServiceServer<Never> as NamedService>::NAME,
            SERVICE
        );
    }

    /// A CA that never answers; only its type is needed.
    struct Never;

    #[tonic::async_trait]
    impl IstioCertificateService for Never {}
}
