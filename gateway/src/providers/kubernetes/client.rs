//! The kube client, and discovery of which kinds the API server has installed.

use std::path::Path;

use kube::api::{ApiResource, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::ProviderError;

/// Builds a client from `kubeconfig`, or infers one (in-cluster service account first,
/// then `$KUBECONFIG` and `~/.kube/config`, as kube-rs does).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, ProviderError> {
    let source = kubeconfig
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "inferred".into());
    let fail = |message: String| ProviderError::Client {
        source_of_config: source.clone(),
        message,
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| fail(e.to_string()))?
        }
        None => Config::infer().await.map_err(|e| fail(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| fail(e.to_string()))
}

/// A kind the provider watches, as `group Kind` and the versions it may be served at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindRef {
    /// API group ("" for core).
    pub group: &'static str,
    /// Versions in order of preference: the first one discovery shows served is watched.
    /// The first of all is the one the Rust type is derived for; objects of the others
    /// carry the same schema and are decoded as that one.
    pub versions: &'static [&'static str],
    /// Kind.
    pub kind: &'static str,
}

impl KindRef {
    const fn new(
        group: &'static str,
        versions: &'static [&'static str],
        kind: &'static str,
    ) -> Self {
        KindRef {
            group,
            versions,
            kind,
        }
    }

    /// The `apiVersion` the Rust type of this kind expects.
    pub fn typed_api_version(&self) -> String {
        let v = self.versions[0];
        match self.group {
            "" => v.to_string(),
            g => format!("{g}/{v}"),
        }
    }
}

impl std::fmt::Display for KindRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let versions = self.versions.join("|");
        match self.group {
            "" => write!(f, "{versions} {}", self.kind),
            g => write!(f, "{g}/{versions} {}", self.kind),
        }
    }
}

const GW: &str = "gateway.networking.k8s.io";

/// Gateway API GatewayClass.
pub const GATEWAY_CLASS: KindRef = KindRef::new(GW, &["v1"], "GatewayClass");
/// Gateway API Gateway.
pub const GATEWAY: KindRef = KindRef::new(GW, &["v1"], "Gateway");
/// Gateway API HTTPRoute.
pub const HTTP_ROUTE: KindRef = KindRef::new(GW, &["v1"], "HTTPRoute");
/// Gateway API TCPRoute (`v1` in v1.6's standard channel; `v1alpha2` before).
pub const TCP_ROUTE: KindRef = KindRef::new(GW, &["v1", "v1alpha2"], "TCPRoute");
/// Gateway API TLSRoute (`v1` in v1.6; older releases serve `v1alpha3` or `v1alpha2`).
pub const TLS_ROUTE: KindRef = KindRef::new(GW, &["v1", "v1alpha3", "v1alpha2"], "TLSRoute");
/// Gateway API GRPCRoute.
pub const GRPC_ROUTE: KindRef = KindRef::new(GW, &["v1"], "GRPCRoute");
/// Gateway API ReferenceGrant (v1.6 serves it as v1beta1; v1 preferred when served).
pub const REFERENCE_GRANT: KindRef = KindRef::new(GW, &["v1beta1", "v1"], "ReferenceGrant");
/// Gateway API BackendTLSPolicy (v1 since Gateway API v1.4; v1alpha3 before).
pub const BACKEND_TLS_POLICY: KindRef = KindRef::new(GW, &["v1", "v1alpha3"], "BackendTLSPolicy");
/// Istio Gateway (v1, v1beta1 and v1alpha3 carry one schema).
pub const ISTIO_GATEWAY: KindRef = KindRef::new(
    "networking.istio.io",
    &["v1", "v1beta1", "v1alpha3"],
    "Gateway",
);
/// Istio VirtualService (v1, v1beta1 and v1alpha3 carry one schema).
pub const VIRTUAL_SERVICE: KindRef = KindRef::new(
    "networking.istio.io",
    &["v1", "v1beta1", "v1alpha3"],
    "VirtualService",
);
/// Gloo Edge VirtualService.
pub const GLOO_VIRTUAL_SERVICE: KindRef =
    KindRef::new("gateway.solo.io", &["v1"], "VirtualService");
/// Gloo Edge Gateway.
pub const GLOO_GATEWAY: KindRef = KindRef::new("gateway.solo.io", &["v1"], "Gateway");
/// Gloo Edge Upstream.
pub const GLOO_UPSTREAM: KindRef = KindRef::new("gloo.solo.io", &["v1"], "Upstream");
/// Istio DestinationRule (v1, v1beta1 and v1alpha3 carry one schema).
pub const DESTINATION_RULE: KindRef = KindRef::new(
    "networking.istio.io",
    &["v1", "v1beta1", "v1alpha3"],
    "DestinationRule",
);
/// Istio AuthorizationPolicy (v1 and v1beta1 carry one schema).
pub const AUTHORIZATION_POLICY: KindRef = KindRef::new(
    "security.istio.io",
    &["v1", "v1beta1"],
    "AuthorizationPolicy",
);
/// Envoy Gateway BackendTrafficPolicy (local rate limits).
pub const BACKEND_TRAFFIC_POLICY: KindRef = KindRef::new(
    "gateway.envoyproxy.io",
    &["v1alpha1"],
    "BackendTrafficPolicy",
);
/// Envoy Gateway ClientTrafficPolicy (the PROXY protocol).
pub const CLIENT_TRAFFIC_POLICY: KindRef = KindRef::new(
    "gateway.envoyproxy.io",
    &["v1alpha1"],
    "ClientTrafficPolicy",
);
/// Namespace.
pub const NAMESPACE: KindRef = KindRef::new("", &["v1"], "Namespace");
/// Service.
pub const SERVICE: KindRef = KindRef::new("", &["v1"], "Service");
/// EndpointSlice.
pub const ENDPOINT_SLICE: KindRef = KindRef::new("discovery.k8s.io", &["v1"], "EndpointSlice");
/// Pod.
pub const POD: KindRef = KindRef::new("", &["v1"], "Pod");
/// Secret.
pub const SECRET: KindRef = KindRef::new("", &["v1"], "Secret");
/// ConfigMap.
pub const CONFIG_MAP: KindRef = KindRef::new("", &["v1"], "ConfigMap");

/// Looks a kind up in discovery: the resource of the first of its versions that is
/// served, `None` when the API server serves none of them (a CRD not installed), an
/// error when discovery itself failed.
pub async fn discover(client: &Client, kind: KindRef) -> Result<Option<ApiResource>, kube::Error> {
    for version in kind.versions {
        let gvk = GroupVersionKind::gvk(kind.group, version, kind.kind);
        match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((ar, _caps)) => return Ok(Some(ar)),
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(kube::Error::Discovery(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
