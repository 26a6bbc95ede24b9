//! Kubernetes objects the gateway is configured with, in their Kubernetes shapes.
//!
//! Gateway API (`gateway.networking.k8s.io/v1`) `Gateway` and `HTTPRoute` are kube
//! `CustomResource`s: the spec structs below derive the root objects (with k8s-openapi's
//! `ObjectMeta`) and their CRDs, so a Kubernetes provider can watch them later. Core
//! `Secret`, `ConfigMap`, `Service`, `EndpointSlice` and `Pod` (labels only) are plain serde
//! types shaped exactly like the API objects (apiVersion/kind/metadata/...), reading only
//! the fields the gateway uses. Enumerations are kept as strings here; `translate`
//! validates them and names the object and field at fault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label on an EndpointSlice naming the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Metadata of the Gateway API objects (k8s-openapi's, as kube's derive generates it).
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as GatewayApiMeta;

/// Where an object lives: its namespace (`default` when absent) and `namespace/name` key.
pub trait ObjectKey {
    /// The namespace, defaulting to `default`.
    fn ns(&self) -> &str;
    /// The name, empty when absent.
    fn name(&self) -> &str;
    /// `namespace/name`.
    fn key(&self) -> String {
        format!("{}/{}", self.ns(), self.name())
    }
}

impl ObjectKey for GatewayApiMeta {
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// Metadata of the core objects (the subset the gateway reads).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CoreMeta {
    /// Object name.
    #[serde(default)]
    pub name: String,
    /// Namespace; `default` when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Creation time (RFC 3339); read (and type-checked) but unused for core objects.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

impl ObjectKey for CoreMeta {
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
    fn name(&self) -> &str {
        &self.name
    }
}

// ---------------------------------------------------------------- Gateway

/// Spec of the `gateway.networking.k8s.io/v1` Gateway; kube derives [`Gateway`] (metadata
/// and spec) and its CRD from it.
#[derive(CustomResource, Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "Gateway",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default)]
    pub gateway_class_name: String,
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub name: String,
    #[serde(default)]
    pub hostname: Option<String>,
    pub port: u16,
    pub protocol: String,
    #[serde(default)]
    pub tls: Option<GatewayTlsConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTlsConfig {
    /// `Terminate` (default) or `Passthrough` (not supported).
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub certificate_refs: Vec<ObjectReference>,
    /// Implementation-specific options; `meshgate.io/min-tls-version` is read.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Client certificate validation (MUTUAL TLS).
    #[serde(default)]
    pub frontend_validation: Option<FrontendValidation>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrontendValidation {
    #[serde(default)]
    pub ca_certificate_refs: Vec<ObjectReference>,
}

/// A reference to an object by group/kind/namespace/name (SecretObjectReference and friends).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

// ---------------------------------------------------------------- HTTPRoute

/// Spec of the `gateway.networking.k8s.io/v1` HTTPRoute; kube derives [`HttpRoute`]
/// (metadata and spec) and its CRD from it.
#[derive(CustomResource, Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    root = "HttpRoute",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default)]
    pub section_name: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    #[serde(default)]
    pub timeouts: Option<HttpRouteTimeouts>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    #[serde(default)]
    pub path: Option<HttpPathMatch>,
    #[serde(default)]
    pub headers: Vec<HttpValueMatch>,
    #[serde(default)]
    pub query_params: Vec<HttpValueMatch>,
    #[serde(default)]
    pub method: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathMatch {
    /// Exact, PathPrefix (default) or RegularExpression.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

/// Header or query parameter match.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpValueMatch {
    /// Exact (default) or RegularExpression.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub request_header_modifier: Option<HeaderModifier>,
    #[serde(default)]
    pub response_header_modifier: Option<HeaderModifier>,
    #[serde(default)]
    pub request_redirect: Option<RequestRedirect>,
    #[serde(default)]
    pub url_rewrite: Option<UrlRewrite>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    #[serde(default)]
    pub set: Vec<HttpHeader>,
    #[serde(default)]
    pub add: Vec<HttpHeader>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRedirect {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<PathModifier>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub status_code: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlRewrite {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathModifier {
    /// ReplaceFullPath or ReplacePrefixMatch.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub replace_full_path: Option<String>,
    #[serde(default)]
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackendRef {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    #[serde(default)]
    pub request: Option<String>,
    #[serde(default)]
    pub backend_request: Option<String>,
}

// ---------------------------------------------------------------- core/v1 and discovery/v1

/// `v1` Secret (`kubernetes.io/tls` for certificates, or holding `ca.crt`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    #[serde(default)]
    pub metadata: CoreMeta,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Base64-encoded values.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// Plain values (write-only in Kubernetes, accepted here for convenience).
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
}

/// `v1` ConfigMap.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    #[serde(default)]
    pub metadata: CoreMeta,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// `v1` Service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default)]
    pub metadata: CoreMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub external_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default)]
    pub target_port: Option<serde_yaml::Value>,
    #[serde(default)]
    pub protocol: Option<String>,
    /// `kubernetes.io/h2c` (or `http2`, `grpc`) makes the gateway speak h2c upstream.
    #[serde(default)]
    pub app_protocol: Option<String>,
}

/// `discovery.k8s.io/v1` EndpointSlice.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub metadata: CoreMeta,
    #[serde(default)]
    pub address_type: Option<String>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: EndpointConditions,
    #[serde(default)]
    pub target_ref: Option<ObjectReference>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConditions {
    /// `None` means ready (Kubernetes semantics).
    #[serde(default)]
    pub ready: Option<bool>,
}

/// `v1` Pod; only its metadata (labels such as `security.istio.io/tlsMode`) is read,
/// for endpoints whose `targetRef` names it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Pod {
    #[serde(default)]
    pub metadata: CoreMeta,
}

// ---------------------------------------------------------------- loading

/// Every object read from the configuration path.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub gateways: Vec<Gateway>,
    pub http_routes: Vec<HttpRoute>,
    pub secrets: Vec<Secret>,
    pub config_maps: Vec<ConfigMap>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub pods: Vec<Pod>,
    /// Kinds that were present but are not used (reported, not fatal).
    pub ignored: Vec<String>,
}

/// A file the configuration was read from, with its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub content: String,
}

/// Reads the config path: one YAML file, or every `*.yaml`/`*.yml`/`*.json` file in a
/// directory (not recursive; names starting with `.` are skipped, as Kubernetes
/// ConfigMap volumes keep their internals in `..data`). Sorted by name.
pub fn read_sources(path: &Path) -> Result<Vec<SourceFile>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut paths = Vec::new();
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let is_config = [".yaml", ".yml", ".json"].iter().any(|s| name.ends_with(s));
            let p = entry.path();
            if is_config && p.is_file() {
                paths.push(p);
            }
        }
        paths.sort();
    } else {
        paths.push(path.to_path_buf());
    }
    paths
        .into_iter()
        .map(|p| {
            let content =
                std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(SourceFile { path: p, content })
        })
        .collect()
}

/// Parses every YAML document of every source into typed objects.
pub fn parse(sources: &[SourceFile]) -> Result<Resources, Vec<String>> {
    let mut out = Resources::default();
    let mut errors = Vec::new();
    for src in sources {
        for (i, doc) in serde_yaml::Deserializer::from_str(&src.content).enumerate() {
            let value = match serde_yaml::Value::deserialize(doc) {
                Ok(v) => v,
                Err(e) => {
                    // The YAML stream cannot be resumed after a syntax error.
                    errors.push(format!("{} document {i}: {e}", src.path.display()));
                    break;
                }
            };
            if value.is_null() {
                continue;
            }
            if let Err(e) = add_object(&mut out, value) {
                errors.push(format!("{} document {i}: {e}", src.path.display()));
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Parses a YAML string (all documents), for tests and `validate`.
pub fn parse_str(yaml: &str) -> Result<Resources, Vec<String>> {
    parse(&[SourceFile {
        path: PathBuf::from("<inline>"),
        content: yaml.to_string(),
    }])
}

fn add_object(out: &mut Resources, value: serde_yaml::Value) -> Result<(), String> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or("object has no kind")?
        .to_string();
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_string();
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>")
        .to_string();
    let ctx = |e: serde_yaml::Error| format!("{kind} {name}: {e}");
    let gateway_api = api_version.starts_with("gateway.networking.k8s.io/");
    match kind.as_str() {
        "List" => {
            let items = value
                .get("items")
                .and_then(|i| i.as_sequence())
                .cloned()
                .unwrap_or_default();
            for item in items {
                add_object(out, item)?;
            }
        }
        "Gateway" if gateway_api => out
            .gateways
            .push(serde_yaml::from_value(with_metadata(value)).map_err(ctx)?),
        "HTTPRoute" if gateway_api => out
            .http_routes
            .push(serde_yaml::from_value(with_metadata(value)).map_err(ctx)?),
        "Secret" => out
            .secrets
            .push(serde_yaml::from_value(value).map_err(ctx)?),
        "ConfigMap" => out
            .config_maps
            .push(serde_yaml::from_value(value).map_err(ctx)?),
        "Service" => out
            .services
            .push(serde_yaml::from_value(value).map_err(ctx)?),
        "EndpointSlice" => out
            .endpoint_slices
            .push(serde_yaml::from_value(value).map_err(ctx)?),
        "Pod" => out.pods.push(serde_yaml::from_value(value).map_err(ctx)?),
        _ => out.ignored.push(format!("{api_version} {kind} {name}")),
    }
    Ok(())
}

/// Adds an empty `metadata` to an object that has none: kube's derived root types require
/// the field, while the standalone files have always allowed leaving it out.
fn with_metadata(mut value: serde_yaml::Value) -> serde_yaml::Value {
    if let Some(map) = value.as_mapping_mut()
        && !map.contains_key("metadata")
    {
        map.insert("metadata".into(), serde_yaml::Mapping::new().into());
    }
    value
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::{CustomResourceExt, Resource};

    use super::*;

    /// Group, kind, version, plural and scope of a generated CRD.
    fn crd_identity(crd: &CustomResourceDefinition) -> Vec<String> {
        let versions: Vec<String> = crd
            .spec
            .versions
            .iter()
            .map(|v| format!("{} served={} storage={}", v.name, v.served, v.storage))
            .collect();
        vec![
            crd.metadata.name.clone().unwrap_or_default(),
            crd.spec.group.clone(),
            crd.spec.names.kind.clone(),
            crd.spec.names.plural.clone(),
            crd.spec.scope.clone(),
            versions.join(","),
        ]
    }

    #[test]
    fn gateway_and_httproute_derive_namespaced_gateway_api_v1_crds() {
        assert_eq!(
            crd_identity(&Gateway::crd()),
            [
                "gateways.gateway.networking.k8s.io",
                "gateway.networking.k8s.io",
                "Gateway",
                "gateways",
                "Namespaced",
                "v1 served=true storage=true",
            ]
        );
        assert_eq!(
            crd_identity(&HttpRoute::crd()),
            [
                "httproutes.gateway.networking.k8s.io",
                "gateway.networking.k8s.io",
                "HTTPRoute",
                "httproutes",
                "Namespaced",
                "v1 served=true storage=true",
            ]
        );
        assert_eq!(Gateway::api_version(&()), "gateway.networking.k8s.io/v1");
        assert_eq!(HttpRoute::api_version(&()), "gateway.networking.k8s.io/v1");
    }

    #[test]
    fn crd_schemas_describe_the_spec_fields_in_their_api_spelling() {
        let schema = |crd: CustomResourceDefinition| {
            let v = &crd.spec.versions[0];
            serde_json::to_value(&v.schema).unwrap()["openAPIV3Schema"]["properties"]["spec"]
                ["properties"]
                .clone()
        };
        let gw = schema(Gateway::crd());
        assert!(gw["gatewayClassName"].is_object(), "{gw:#}");
        assert!(
            gw["listeners"]["items"]["properties"]["tls"].is_object(),
            "{gw:#}"
        );
        let route = schema(HttpRoute::crd());
        let rule = &route["rules"]["items"]["properties"];
        assert!(route["parentRefs"].is_object(), "{route:#}");
        assert!(rule["backendRefs"].is_object(), "{route:#}");
        assert!(
            rule["matches"]["items"]["properties"]["path"]["properties"]["type"].is_object(),
            "{route:#}"
        );
    }

    #[test]
    fn gateway_api_objects_without_metadata_still_parse_into_the_default_namespace() {
        let res = parse_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nspec: {}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nspec: {}\n",
        )
        .unwrap();
        assert_eq!(res.gateways[0].metadata.key(), "default/");
        assert_eq!(res.http_routes[0].metadata.key(), "default/");
    }

    #[test]
    fn creation_timestamp_that_is_not_rfc3339_is_rejected_naming_the_route() {
        let errors = parse_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, creationTimestamp: yesterday}\nspec: {}\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("<inline> document 0: HTTPRoute r: "),
            "{errors:?}"
        );
    }
}
