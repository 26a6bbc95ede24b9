//! The mesh's well-known values, in one place.

/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Istio's default cluster id (`ISTIO_META_CLUSTER_ID`).
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";
/// istiod's certificate service address.
pub const DEFAULT_CA_ADDR: &str = "istiod.istio-system.svc:15012";
/// istiod's CA port.
pub const CA_PORT: u16 = 15012;
/// The mesh root distributed by istiod in the `istio-ca-root-cert` ConfigMap.
pub const DEFAULT_ROOT_CERT_PATH: &str = "/var/run/secrets/istio/root-cert.pem";
/// The projected service-account token with audience `istio-ca`.
pub const DEFAULT_TOKEN_PATH: &str = "/var/run/secrets/tokens/istio-token";
/// Where Istio's agent serves SDS; the gateway connects here.
pub const DEFAULT_SDS_SOCKET: &str = "/var/run/secrets/workload-spiffe-uds/socket";
/// Default lifetime requested for workload certificates (Istio's `SECRET_TTL`).
pub const DEFAULT_SECRET_TTL_SECS: u64 = 24 * 60 * 60;

/// Loopback admin address of the sds-agent.
pub const SDS_AGENT_ADMIN_ADDR: &str = "127.0.0.1:15030";
/// Loopback admin address of the gateway.
pub const GATEWAY_ADMIN_ADDR: &str = "127.0.0.1:19000";

/// SDS resource: the workload certificate chain and key.
pub const SDS_DEFAULT: &str = "default";
/// SDS resource: the mesh root as a validation context.
pub const SDS_ROOTCA: &str = "ROOTCA";
/// Gloo's name for [`SDS_DEFAULT`].
pub const SDS_GLOO_SERVER_CERT: &str = "istio_server_cert";
/// Gloo's name for [`SDS_ROOTCA`].
pub const SDS_GLOO_VALIDATION_CONTEXT: &str = "istio_validation_context";
/// Type URL of an SDS resource.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// gRPC metadata carrying the Kubernetes cluster id to istiod.
pub const CLUSTER_ID_HEADER: &str = "clusterid";
/// Prefix of environment variables that become extra CA request headers.
pub const CA_HEADER_ENV_PREFIX: &str = "CA_HEADER_";
/// Header every SPIFFE Workload API request must carry.
pub const WORKLOAD_API_HEADER: &str = "workload.spiffe.io";
/// Header an Istio sidecar uses to tell the upstream who called.
pub const XFCC_HEADER: &str = "x-forwarded-client-cert";

/// uid and gid of the mesh proxy, exempt from capture.
pub const PROXY_UID: u32 = 1337;
/// Sidecar outbound capture port.
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
/// Sidecar inbound capture port.
pub const INBOUND_CAPTURE_PORT: u16 = 15006;

/// Pod label Istio sets on endpoints whose sidecar accepts mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
