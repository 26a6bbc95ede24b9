//! The objects the gateway is configured with, in their Kubernetes shapes.
//!
//! Gateway API v1.6 kinds are kube `CustomResource`s derived here ([`gateway_api`]); core
//! objects (Secret, ConfigMap, Service, EndpointSlice, Pod) are k8s-openapi's own types.
//! Providers fill a [`Snapshot`]; `translate` reads it and nothing else.

pub mod envoy_gateway;
pub mod gateway_api;
pub mod gloo;
pub mod istio;
pub mod istio_gateway;
mod meta;

pub use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
pub use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
pub use meta::{ObjectKey, Unsupported};

/// Label on an EndpointSlice naming the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Every object a provider currently knows, typed; what `translate` compiles.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Gateway API Gateways.
    pub gateways: Vec<gateway_api::Gateway>,
    /// Gateway API HTTPRoutes.
    pub http_routes: Vec<gateway_api::HttpRoute>,
    /// Gateway API GRPCRoutes.
    pub grpc_routes: Vec<gateway_api::GrpcRoute>,
    /// Gateway API TCPRoutes.
    pub tcp_routes: Vec<gateway_api::TcpRoute>,
    /// Gateway API TLSRoutes.
    pub tls_routes: Vec<gateway_api::TlsRoute>,
    /// Gateway API BackendTLSPolicies.
    pub backend_tls_policies: Vec<gateway_api::BackendTlsPolicy>,
    /// Gateway API ReferenceGrants (cross-namespace references).
    pub reference_grants: Vec<gateway_api::ReferenceGrant>,
    /// Envoy Gateway ClientTrafficPolicies (PROXY protocol).
    pub client_traffic_policies: Vec<envoy_gateway::ClientTrafficPolicy>,
    /// Envoy Gateway BackendTrafficPolicies (local rate limits).
    pub backend_traffic_policies: Vec<envoy_gateway::BackendTrafficPolicy>,
    /// Istio AuthorizationPolicies (v1 or v1beta1).
    pub authorization_policies: Vec<istio::AuthorizationPolicy>,
    /// Istio Gateways (any of v1, v1beta1, v1alpha3).
    pub istio_gateways: Vec<istio_gateway::IstioGateway>,
    /// Istio VirtualServices (any of v1, v1beta1, v1alpha3).
    pub virtual_services: Vec<istio_gateway::VirtualService>,
    /// Gloo Edge Gateways (`gateway.solo.io/v1`).
    pub gloo_gateways: Vec<gloo::GlooGateway>,
    /// Gloo Edge VirtualServices (`gateway.solo.io/v1`).
    pub gloo_virtual_services: Vec<gloo::GlooVirtualService>,
    /// Gloo Edge Upstreams (`gloo.solo.io/v1`).
    pub gloo_upstreams: Vec<gloo::Upstream>,
    /// Istio DestinationRules (any of v1, v1beta1, v1alpha3).
    pub destination_rules: Vec<istio::DestinationRule>,
    /// Secrets (listener certificates, client CAs).
    pub secrets: Vec<Secret>,
    /// ConfigMaps (client CA bundles).
    pub config_maps: Vec<ConfigMap>,
    /// Services (backend ports, appProtocol, mesh annotations).
    pub services: Vec<Service>,
    /// EndpointSlices (backend addresses).
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Namespaces (labels, for `allowedRoutes` selectors).
    pub namespaces: Vec<Namespace>,
    /// Pods behind endpoints (labels such as `security.istio.io/tlsMode`).
    pub pods: Vec<Pod>,
    /// Objects of kinds the gateway does not read, as `apiVersion kind name`.
    pub ignored: Vec<String>,
    /// `pods` holds every Pod of the cluster (a Kubernetes watch), so an endpoint whose
    /// Pod is absent is not known yet and is held back. False for files, where Pods are
    /// listed only when a test or user wants their labels.
    pub pods_complete: bool,
}
