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

/// A kind the provider watches, as `group/version Kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindRef {
    /// API group ("" for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
}

impl KindRef {
    const fn new(group: &'static str, version: &'static str, kind: &'static str) -> Self {
        KindRef {
            group,
            version,
            kind,
        }
    }

    fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(self.group, self.version, self.kind)
    }
}

impl std::fmt::Display for KindRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.group {
            "" => write!(f, "{} {}", self.version, self.kind),
            g => write!(f, "{g}/{} {}", self.version, self.kind),
        }
    }
}

const GW: &str = "gateway.networking.k8s.io";

/// Gateway API GatewayClass.
pub const GATEWAY_CLASS: KindRef = KindRef::new(GW, "v1", "GatewayClass");
/// Gateway API Gateway.
pub const GATEWAY: KindRef = KindRef::new(GW, "v1", "Gateway");
/// Gateway API HTTPRoute.
pub const HTTP_ROUTE: KindRef = KindRef::new(GW, "v1", "HTTPRoute");
/// Namespace.
pub const NAMESPACE: KindRef = KindRef::new("", "v1", "Namespace");
/// Service.
pub const SERVICE: KindRef = KindRef::new("", "v1", "Service");
/// EndpointSlice.
pub const ENDPOINT_SLICE: KindRef = KindRef::new("discovery.k8s.io", "v1", "EndpointSlice");
/// Pod.
pub const POD: KindRef = KindRef::new("", "v1", "Pod");
/// Secret.
pub const SECRET: KindRef = KindRef::new("", "v1", "Secret");
/// ConfigMap.
pub const CONFIG_MAP: KindRef = KindRef::new("", "v1", "ConfigMap");

/// Gateway API kinds that are watched for once translate reads them: reported as
/// "installed, not yet served" so a user sees why their GRPCRoute does nothing.
pub const NOT_YET_TRANSLATED: [KindRef; 5] = [
    KindRef::new(GW, "v1", "GRPCRoute"),
    KindRef::new(GW, "v1alpha2", "TLSRoute"),
    KindRef::new(GW, "v1alpha2", "TCPRoute"),
    KindRef::new(GW, "v1beta1", "ReferenceGrant"),
    KindRef::new(GW, "v1", "BackendTLSPolicy"),
];

/// Looks a kind up in discovery: its resource when installed, `None` when the API server
/// does not serve it (a CRD not installed), an error when discovery itself failed.
pub async fn discover(client: &Client, kind: KindRef) -> Result<Option<ApiResource>, kube::Error> {
    match kube::discovery::pinned_kind(client, &kind.gvk()).await {
        Ok((ar, _caps)) => Ok(Some(ar)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
