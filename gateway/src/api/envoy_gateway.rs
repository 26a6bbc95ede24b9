//! Envoy Gateway `gateway.envoyproxy.io/v1alpha1` BackendTrafficPolicy (the local rate
//! limit subset, `rateLimit.type: Local`) and ClientTrafficPolicy (the PROXY protocol).
//!
//! Derived by hand from Envoy Gateway's published API for the fields this gateway
//! implements; every struct flattens an [`Unsupported`] map, so any other field
//! (`retry`, `circuitBreaker`, `rateLimit.global`...) is reported by name.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Unsupported;

/// Spec of a BackendTrafficPolicy; kube derives [`BackendTrafficPolicy`].
#[derive(CustomResource, Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "gateway.envoyproxy.io",
    version = "v1alpha1",
    kind = "BackendTrafficPolicy",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct BackendTrafficPolicySpec {
    /// Gateways or HTTPRoutes in the policy's namespace.
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The older single-target form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `LocalPolicyTargetReferenceWithSectionName`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetReference {
    /// `gateway.networking.k8s.io`.
    #[serde(default)]
    pub group: String,
    /// `Gateway` or `HTTPRoute`.
    #[serde(default)]
    pub kind: String,
    /// Name, in the policy's namespace.
    #[serde(default)]
    pub name: String,
    /// Fields not implemented here (`sectionName`).
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `RateLimitSpec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// `Local` (`Global` is reported unsupported).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The local limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalRateLimit>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `LocalRateLimit`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRateLimit {
    /// Limits, each with the requests it applies to.
    #[serde(default)]
    pub rules: Vec<RateLimitRule>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `RateLimitRule`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitRule {
    /// Which requests count (any selector matching); none means every request.
    #[serde(default)]
    pub client_selectors: Vec<RateLimitSelectCondition>,
    /// The limit.
    #[serde(default)]
    pub limit: RateLimitValue,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `RateLimitSelectCondition`: every condition given must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSelectCondition {
    /// Header matches.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// Client address range.
    #[serde(
        default,
        rename = "sourceCIDR",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_cidr: Option<SourceMatch>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `HeaderMatch`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// `Exact` (default), `RegularExpression` (`Distinct` needs a global limit).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Header name.
    #[serde(default)]
    pub name: String,
    /// Value (absent: the header must be present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Match when the header does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invert: Option<bool>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `SourceMatch`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceMatch {
    /// `Exact` (default) (`Distinct` needs a global limit).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// CIDR, e.g. `10.0.0.0/8`.
    #[serde(default)]
    pub value: String,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `RateLimitValue`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitValue {
    /// Requests per unit.
    #[serde(default)]
    pub requests: u64,
    /// `Second`, `Minute`, `Hour`, `Day`.
    #[serde(default)]
    pub unit: String,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// Spec of a ClientTrafficPolicy (Envoy Gateway `v1alpha1`): how the gateway treats its
/// downstream connections. The subset implemented: the PROXY protocol. Kube derives
/// [`ClientTrafficPolicy`].
#[derive(CustomResource, Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "gateway.envoyproxy.io",
    version = "v1alpha1",
    kind = "ClientTrafficPolicy",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct ClientTrafficPolicySpec {
    /// Gateways (optionally one listener, by `sectionName`) in the policy's namespace.
    #[serde(default)]
    pub target_refs: Vec<ListenerTargetReference>,
    /// The older single-target form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ListenerTargetReference>,
    /// PROXY protocol v1/v2 required before anything else on the targeted ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolSettings>,
    /// The older switch for the same (required PROXY protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_proxy_protocol: Option<bool>,
    /// HTTP/1 settings (`http10`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1: Option<Http1Settings>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `LocalPolicyTargetReferenceWithSectionName` for a Gateway.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTargetReference {
    /// `gateway.networking.k8s.io`.
    #[serde(default)]
    pub group: String,
    /// `Gateway`.
    #[serde(default)]
    pub kind: String,
    /// Name, in the policy's namespace.
    #[serde(default)]
    pub name: String,
    /// One listener of the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// `HTTP1Settings`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Http1Settings {
    /// Accept HTTP/1.0 requests (refused with 426 otherwise, as Envoy refuses them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http10: Option<Http10Settings>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `HTTP10Settings`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Http10Settings {
    /// Give a request without Host the listener's first hostname (not implemented: only
    /// `false` is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_default_host: Option<bool>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}

/// `ProxyProtocolSettings`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyProtocolSettings {
    /// Also accept connections that start without a PROXY header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// Fields not implemented here.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(skip)]
    pub unsupported: Unsupported,
}
