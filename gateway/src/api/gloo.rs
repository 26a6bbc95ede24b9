//! Gloo Edge `gateway.solo.io/v1` VirtualService and Gateway and `gloo.solo.io/v1`
//! Upstream: the subset a user migrating from Gloo Edge needs.
//!
//! Derived by hand from Gloo Edge's published API for the fields this gateway
//! implements, in their API spelling; every struct flattens an [`Unsupported`] map, so an
//! option we do not implement (`options.extauth`, `options.ratelimit`...) is reported by
//! name.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Unsupported;

/// Spec of a Gloo VirtualService; kube derives [`GlooVirtualService`].
#[derive(CustomResource, Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "gateway.solo.io",
    version = "v1",
    kind = "VirtualService",
    root = "GlooVirtualService",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct GlooVirtualServiceSpec {
    /// Domains and routes.
    #[serde(default)]
    pub virtual_host: VirtualHost,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `VirtualHost`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHost {
    /// Hosts (`*` for any).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Routes, first match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `Route`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Any of these selects the route; none matches every request.
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    /// Where matched requests go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_action: Option<RouteAction>,
    /// A redirect instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_action: Option<RedirectAction>,
    /// Rewrites, timeout, retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<RouteOptions>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `Matcher`: one of `prefix`, `exact`, `regex`, plus headers, query and methods.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    /// String prefix of the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Expression over the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<HeaderMatcher>,
    /// Query parameter conditions.
    #[serde(default)]
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// Methods (any of).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path case sensitivity (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_sensitive: Option<bool>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `HeaderMatcher`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatcher {
    /// Header name.
    pub name: String,
    /// Value (empty: presence).
    #[serde(default)]
    pub value: String,
    /// `value` is a regex.
    #[serde(default)]
    pub regex: bool,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `QueryParameterMatcher`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryParameterMatcher {
    /// Parameter name.
    pub name: String,
    /// Value (empty: presence).
    #[serde(default)]
    pub value: String,
    /// `value` is a regex.
    #[serde(default)]
    pub regex: bool,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `RouteAction`: `single` or `multi`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteAction {
    /// One destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single: Option<GlooDestination>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi: Option<MultiDestination>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `MultiDestination`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct MultiDestination {
    /// Weighted destinations.
    #[serde(default)]
    pub destinations: Vec<WeightedDestination>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `WeightedDestination`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct WeightedDestination {
    /// Relative weight.
    #[serde(default)]
    pub weight: u32,
    /// Where.
    pub destination: GlooDestination,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `Destination`: an Upstream or a Kubernetes Service.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlooDestination {
    /// An Upstream by reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<ResourceRef>,
    /// A Service and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeDestination>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `ResourceRef`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct ResourceRef {
    /// Name.
    pub name: String,
    /// Namespace (default: the VirtualService's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `KubernetesServiceDestination`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct KubeDestination {
    /// The Service.
    #[serde(rename = "ref")]
    pub service: ResourceRef,
    /// Its port.
    pub port: u32,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `RedirectAction`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedirectAction {
    /// New host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_redirect: Option<String>,
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_redirect: Option<String>,
    /// Redirect to https.
    #[serde(default)]
    pub https_redirect: bool,
    /// `MOVED_PERMANENTLY` (default), `FOUND`, `SEE_OTHER`, `TEMPORARY_REDIRECT`,
    /// `PERMANENT_REDIRECT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<String>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `RouteOptions` (the subset implemented).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteOptions {
    /// Replaces the matched prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// New Host header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    /// Whole-request timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `RetryPolicy`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Envoy retry conditions (`5xx`, `gateway-error`, `connect-failure`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    /// Retries after the first attempt.
    #[serde(default)]
    pub num_retries: u32,
    /// Timeout of each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Spec of a Gloo Gateway: an HTTP listener on `bindPort` serving VirtualServices.
#[derive(CustomResource, Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "gateway.solo.io",
    version = "v1",
    kind = "Gateway",
    root = "GlooGateway",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct GlooGatewaySpec {
    /// Port.
    pub bind_port: u32,
    /// TLS (not supported here).
    #[serde(default)]
    pub ssl: bool,
    /// Which VirtualServices it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_gateway: Option<HttpGateway>,
    /// Listen address: `::` or `0.0.0.0` (the gateway's `--bind-address` applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<String>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `HttpGateway`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpGateway {
    /// Only these VirtualServices (default: all).
    #[serde(default)]
    pub virtual_services: Vec<ResourceRef>,
    /// Only VirtualServices in these namespaces (`*`: all).
    #[serde(default)]
    pub virtual_service_namespaces: Vec<String>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Spec of a Gloo Upstream; kube derives [`Upstream`].
#[derive(CustomResource, Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[kube(group = "gloo.solo.io", version = "v1", kind = "Upstream", namespaced)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// A Kubernetes Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeUpstream>,
    /// Fixed addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#static: Option<StaticUpstream>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `kube` Upstream.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeUpstream {
    /// Service name.
    pub service_name: String,
    /// Service namespace.
    pub service_namespace: String,
    /// Service port.
    pub service_port: u32,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `static` Upstream.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct StaticUpstream {
    /// Addresses.
    #[serde(default)]
    pub hosts: Vec<StaticHost>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// One static address.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct StaticHost {
    /// IP or DNS name.
    pub addr: String,
    /// Port.
    pub port: u32,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}
