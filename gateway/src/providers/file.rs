//! Standalone provider: a YAML file or a directory of them, polled for changes.
//!
//! Each poll hashes the content; a change is parsed into a [`Snapshot`] and sent on a
//! watch channel. A source that cannot be parsed is sent as [`ParseErrors`] once; the
//! consumer keeps its last good configuration.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::{ParseErrors, Update};
use crate::api::{Snapshot, envoy_gateway, gateway_api, gloo, istio, istio_gateway};

/// Largest configuration accepted, all files together (a runaway ConfigMap volume or a
/// wrong path must not make the gateway read gigabytes).
pub const DEFAULT_MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// A file the configuration was read from, with its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path as found.
    pub path: PathBuf,
    /// UTF-8 content.
    pub content: String,
}

/// Reads the config path: one YAML file, or every `*.yaml`/`*.yml`/`*.json` file in a
/// directory (not recursive; names starting with `.` are skipped, as Kubernetes
/// ConfigMap volumes keep their internals in `..data`). Sorted by name.
pub fn read_sources(path: &Path, max_bytes: u64) -> Result<Vec<SourceFile>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let paths = if meta.is_dir() {
        config_files_in(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let mut total = 0u64;
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        if total > max_bytes {
            return Err(format!(
                "{}: configuration is larger than the {max_bytes}-byte limit (--max-config-bytes)",
                p.display()
            ));
        }
        let content = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        out.push(SourceFile { path: p, content });
    }
    Ok(out)
}

fn config_files_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_config = [".yaml", ".yml", ".json"].iter().any(|s| name.ends_with(s));
        let p = entry.path();
        if !name.starts_with('.') && is_config && p.is_file() {
            paths.push(p);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Parses every YAML document of every source into typed objects.
pub fn parse(sources: &[SourceFile]) -> Result<Snapshot, ParseErrors> {
    let mut out = Snapshot::default();
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
        Err(ParseErrors(errors))
    }
}

/// Parses a YAML string (all documents), for tests and `validate`.
pub fn parse_str(yaml: &str) -> Result<Snapshot, ParseErrors> {
    parse(&[SourceFile {
        path: PathBuf::from("<inline>"),
        content: yaml.to_string(),
    }])
}

fn add_object(out: &mut Snapshot, value: serde_yaml::Value) -> Result<(), String> {
    let field = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let kind = field("kind").ok_or("object has no kind")?;
    let api_version = field("apiVersion").unwrap_or_default();
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>")
        .to_string();
    let ctx = |e: serde_yaml::Error| format!("{kind} {name}: {e}");
    let (group, _) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    match (group, kind.as_str()) {
        (_, "List") => {
            let items = value.get("items").and_then(|i| i.as_sequence()).cloned();
            for item in items.unwrap_or_default() {
                add_object(out, item)?;
            }
        }
        ("gateway.networking.k8s.io", "Gateway") => out
            .gateways
            .push(typed::<gateway_api::Gateway>(with_metadata(value)).map_err(ctx)?),
        ("gateway.networking.k8s.io", "HTTPRoute") => out
            .http_routes
            .push(typed::<gateway_api::HttpRoute>(with_metadata(value)).map_err(ctx)?),
        ("gateway.networking.k8s.io", "GRPCRoute") => out
            .grpc_routes
            .push(typed::<gateway_api::GrpcRoute>(with_metadata(value)).map_err(ctx)?),
        ("gateway.networking.k8s.io", "TCPRoute") => out
            .tcp_routes
            .push(typed::<gateway_api::TcpRoute>(with_version(value, "v1alpha2")).map_err(ctx)?),
        ("gateway.networking.k8s.io", "TLSRoute") => out
            .tls_routes
            .push(typed::<gateway_api::TlsRoute>(with_version(value, "v1")).map_err(ctx)?),
        ("gateway.networking.k8s.io", "BackendTLSPolicy") => out
            .backend_tls_policies
            .push(typed::<gateway_api::BackendTlsPolicy>(with_metadata(value)).map_err(ctx)?),
        ("gateway.networking.k8s.io", "ReferenceGrant") => out
            .reference_grants
            .push(typed::<gateway_api::ReferenceGrant>(with_metadata(value)).map_err(ctx)?),
        ("gateway.envoyproxy.io", "ClientTrafficPolicy") => out
            .client_traffic_policies
            .push(typed::<envoy_gateway::ClientTrafficPolicy>(with_metadata(value)).map_err(ctx)?),
        ("gateway.envoyproxy.io", "BackendTrafficPolicy") => out
            .backend_traffic_policies
            .push(typed::<envoy_gateway::BackendTrafficPolicy>(with_metadata(value)).map_err(ctx)?),
        ("security.istio.io", "AuthorizationPolicy") => {
            let mut v = with_metadata(value);
            v["apiVersion"] = "security.istio.io/v1".into();
            out.authorization_policies
                .push(typed::<istio::AuthorizationPolicy>(v).map_err(ctx)?)
        }
        ("gateway.solo.io", "VirtualService") => out
            .gloo_virtual_services
            .push(typed::<gloo::GlooVirtualService>(with_metadata(value)).map_err(ctx)?),
        ("gateway.solo.io", "Gateway") => out
            .gloo_gateways
            .push(typed::<gloo::GlooGateway>(with_metadata(value)).map_err(ctx)?),
        ("gloo.solo.io", "Upstream") => out
            .gloo_upstreams
            .push(typed::<gloo::Upstream>(with_metadata(value)).map_err(ctx)?),
        ("networking.istio.io", "Gateway") => {
            let mut v = with_metadata(value);
            v["apiVersion"] = "networking.istio.io/v1".into();
            out.istio_gateways
                .push(typed::<istio_gateway::IstioGateway>(v).map_err(ctx)?)
        }
        ("networking.istio.io", "VirtualService") => {
            let mut v = with_metadata(value);
            v["apiVersion"] = "networking.istio.io/v1".into();
            out.virtual_services
                .push(typed::<istio_gateway::VirtualService>(v).map_err(ctx)?)
        }
        ("networking.istio.io", "DestinationRule") => {
            let mut v = with_metadata(value);
            // v1beta1 and v1alpha3 carry v1's schema; kube's derive expects v1.
            v["apiVersion"] = "networking.istio.io/v1".into();
            out.destination_rules
                .push(typed::<istio::DestinationRule>(v).map_err(ctx)?)
        }
        ("", "Secret") => out.secrets.push(typed(value).map_err(ctx)?),
        ("", "ConfigMap") => out.config_maps.push(typed(value).map_err(ctx)?),
        ("", "Service") => out.services.push(typed(value).map_err(ctx)?),
        ("discovery.k8s.io", "EndpointSlice") => {
            out.endpoint_slices.push(typed(value).map_err(ctx)?)
        }
        ("", "Pod") => out.pods.push(typed(value).map_err(ctx)?),
        ("", "Namespace") => out.namespaces.push(typed(value).map_err(ctx)?),
        _ => out.ignored.push(format!("{api_version} {kind} {name}")),
    }
    Ok(())
}

fn typed<T: serde::de::DeserializeOwned>(v: serde_yaml::Value) -> Result<T, serde_yaml::Error> {
    serde_yaml::from_value(v)
}

/// Adds an empty `metadata` to an object that has none: kube's derived root types require
/// the field, while the standalone files have always allowed leaving it out.
/// [`with_metadata`], with the apiVersion kube's derive expects: the versions a kind is
/// served as (TLSRoute `v1alpha2` and `v1`) carry the same fields here.
fn with_version(value: serde_yaml::Value, version: &str) -> serde_yaml::Value {
    let mut v = with_metadata(value);
    v["apiVersion"] = format!("gateway.networking.k8s.io/{version}").into();
    v
}

fn with_metadata(mut value: serde_yaml::Value) -> serde_yaml::Value {
    if let Some(map) = value.as_mapping_mut()
        && !map.contains_key("metadata")
    {
        map.insert("metadata".into(), serde_yaml::Mapping::new().into());
    }
    value
}

/// Reads and parses a path once (what `gateway validate` and each poll do).
pub fn load(path: &Path, max_bytes: u64) -> Update {
    let sources = read_sources(path, max_bytes).map_err(|e| ParseErrors(vec![e]))?;
    parse(&sources)
}

/// Watches one config path (file or directory) by polling its content.
pub struct FileProvider {
    /// File or directory to read.
    path: PathBuf,
    /// Size cap for all files together.
    max_bytes: u64,
    /// Hash of the last content seen (good or bad), so a bad change is reported once.
    last_seen: Option<u64>,
}

impl FileProvider {
    /// A provider for `path`; nothing is read until [`FileProvider::poll`].
    pub fn new(path: PathBuf, max_bytes: u64) -> FileProvider {
        FileProvider {
            path,
            max_bytes,
            last_seen: None,
        }
    }

    /// The path watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the path; returns an update when the content changed since the last poll.
    pub fn poll(&mut self) -> Option<Update> {
        let sources = read_sources(&self.path, self.max_bytes);
        let mut h = DefaultHasher::new();
        match &sources {
            Ok(s) => s.iter().for_each(|f| (&f.path, &f.content).hash(&mut h)),
            Err(e) => e.hash(&mut h),
        }
        let fingerprint = h.finish();
        if self.last_seen == Some(fingerprint) {
            return None;
        }
        self.last_seen = Some(fingerprint);
        Some(
            sources
                .map_err(|e| ParseErrors(vec![e]))
                .and_then(|s| parse(&s)),
        )
    }

    /// Polls every `interval` forever, sending each change (blocking file reads run on the
    /// blocking pool). Returns when the receiver is gone.
    pub async fn run(mut self, tx: watch::Sender<Option<Update>>, interval: Duration) {
        loop {
            let polled = tokio::task::spawn_blocking(move || {
                let update = self.poll();
                (self, update)
            })
            .await;
            let Ok((provider, update)) = polled else {
                tracing::error!("config provider task failed");
                return;
            };
            self = provider;
            if let Some(update) = update
                && tx.send(Some(update)).is_err()
            {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ObjectKey;

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
    fn backend_tls_policy_reads_well_known_ca_certificates_as_the_spec_spells_it() {
        let snap = parse_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\n\
             metadata: {name: p}\nspec:\n  targetRefs: [{group: \"\", kind: Service, name: s}]\n  \
             validation: {wellKnownCACertificates: System, hostname: s.test}\n",
        )
        .unwrap();
        let v = &snap.backend_tls_policies[0].spec.validation;
        assert_eq!(v.well_known_ca_certificates.as_deref(), Some("System"));
    }

    #[test]
    fn creation_timestamp_that_is_not_rfc3339_is_rejected_naming_the_route() {
        let errors = parse_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, creationTimestamp: yesterday}\nspec: {}\n",
        )
        .unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert!(
            errors.0[0].starts_with("<inline> document 0: HTTPRoute r: "),
            "{errors:?}"
        );
    }

    #[test]
    fn config_over_the_size_cap_is_rejected_naming_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x".repeat(2048)).unwrap();
        let err = read_sources(dir.path(), 1024).unwrap_err();
        assert!(
            err.ends_with(
                "a.yaml: configuration is larger than the 1024-byte limit (--max-config-bytes)"
            ),
            "{err}"
        );
    }

    #[test]
    fn core_objects_are_k8s_openapi_types_and_unknown_kinds_are_listed() {
        let res = parse_str(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {tls.crt: aGk=}\n---\n\
             apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
        )
        .unwrap();
        let data = res.secrets[0].data.as_ref().unwrap();
        assert_eq!(data["tls.crt"].0, b"hi");
        assert_eq!(res.ignored, ["example.com/v1 Widget w"]);
    }
}
