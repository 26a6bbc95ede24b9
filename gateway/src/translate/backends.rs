//! backendRefs -> backends: Services, their EndpointSlices and Pods, and the upstream TLS
//! each endpoint gets (mesh mTLS or plaintext) with the identities it must present.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::{Findings, Index, TranslateOptions, endpoints, filters};
use crate::api::gateway_api::{HttpBackendRef, HttpRouteRule, ObjectMeta};
use crate::api::{self, ObjectKey, Snapshot};
use crate::ir::{Backend, BackendTarget, Endpoint, MeshTarget, Transport};

/// Service annotation: upstream TLS mode of this Service (`auto`, `istio-mutual`, `disable`).
pub const UPSTREAM_TLS_ANNOTATION: &str = "meshgate.io/upstream-tls";
/// Service annotation: service accounts (names in the Service's namespace, or SPIFFE ids)
/// the Service's workloads run as; mesh mTLS accepts only these identities.
pub const SERVICE_ACCOUNTS_ANNOTATION: &str = "meshgate.io/service-accounts";

/// Upstream TLS mode of a backend (global default, or per Service by annotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    /// mTLS to endpoints labelled `security.istio.io/tlsMode=istio`, plaintext to the rest.
    Auto,
    /// Always mTLS (`ISTIO_MUTUAL`).
    IstioMutual,
    /// Always plaintext (`DISABLE`).
    Disable,
}

impl UpstreamTls {
    /// Parses an annotation value; accepts Istio's spellings too.
    pub fn parse(s: &str) -> Option<UpstreamTls> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "auto" => Some(UpstreamTls::Auto),
            "istio-mutual" => Some(UpstreamTls::IstioMutual),
            "disable" => Some(UpstreamTls::Disable),
            _ => None,
        }
    }

    /// The transport for one endpoint: the mode says whether to use mTLS, the endpoint's
    /// `security.istio.io/tlsMode` label decides for `auto`.
    pub fn transport(
        self,
        target: Option<&Arc<MeshTarget>>,
        labels: &BTreeMap<String, String>,
    ) -> Transport {
        let in_mesh = labels
            .get(mesh::consts::TLS_MODE_LABEL)
            .is_some_and(|v| v == "istio");
        match (self, target) {
            (UpstreamTls::IstioMutual, Some(t)) => Transport::Mesh(t.clone()),
            (UpstreamTls::Auto, Some(t)) if in_mesh => Transport::Mesh(t.clone()),
            _ => Transport::Plaintext,
        }
    }
}

fn annotations(meta: &ObjectMeta) -> Option<&BTreeMap<String, String>> {
    meta.annotations.as_ref()
}

/// The Service's upstream TLS mode, and the identities its workloads may present when
/// the service-accounts annotation names them (an override of secure naming).
fn mesh_policy(
    svc: &api::Service,
    opts: &TranslateOptions,
) -> Result<(UpstreamTls, Option<Vec<String>>), String> {
    let ns = svc.metadata.ns();
    let ctx = format!("Service {}", svc.metadata.key());
    let ann = annotations(&svc.metadata);
    let mode = match ann.and_then(|a| a.get(UPSTREAM_TLS_ANNOTATION)) {
        None => opts.upstream_tls,
        Some(v) => UpstreamTls::parse(v).ok_or_else(|| {
            format!("{ctx}: annotation {UPSTREAM_TLS_ANNOTATION}: {v:?} is not one of auto, istio-mutual, disable")
        })?,
    };
    let Some(v) = ann.and_then(|a| a.get(SERVICE_ACCOUNTS_ANNOTATION)) else {
        return Ok((mode, None));
    };
    let accounts: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let ids = identities(&accounts, ns, opts)
        .map_err(|e| format!("{ctx}: annotation {SERVICE_ACCOUNTS_ANNOTATION}: {e}"))?;
    if ids.is_empty() {
        return Err(format!(
            "{ctx}: annotation {SERVICE_ACCOUNTS_ANNOTATION} names no service account"
        ));
    }
    Ok((mode, Some(ids)))
}

/// SPIFFE ids of service accounts (names in `ns`, or SPIFFE ids as they are).
fn identities(accounts: &[&str], ns: &str, opts: &TranslateOptions) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for a in accounts {
        let id = if a.starts_with("spiffe://") {
            a.parse::<mesh::Identity>()
        } else {
            mesh::Identity::new(&opts.trust_domain, ns, a)
        }
        .map_err(|e| e.to_string())?;
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// Reports Services whose mesh annotations are invalid.
pub fn validate_services(snap: &Snapshot, opts: &TranslateOptions, f: &mut Findings) {
    for svc in &snap.services {
        if let Err(e) = mesh_policy(svc, opts) {
            f.errors.push(e);
        }
    }
}

/// Compiles a rule's backendRefs (with their filters).
pub fn compile_backend_refs(
    index: &Index<'_>,
    meta: &ObjectMeta,
    rule: &HttpRouteRule,
    ctx: &str,
    opts: &TranslateOptions,
    f: &mut Findings,
) -> Vec<Backend> {
    let mut backends = Vec::new();
    for (bi, b) in rule.backend_refs.iter().enumerate() {
        let bctx = format!("{ctx} backendRefs[{bi}]");
        let bfilters = filters::compile_filters(&b.filters, &bctx, f);
        if bfilters.redirect.is_some() {
            f.errors.push(format!(
                "{bctx}: RequestRedirect is not allowed on a backendRef"
            ));
        }
        if b.port.is_none() && b.kind.as_deref().unwrap_or("Service") == "Service" {
            f.errors
                .push(format!("{bctx}: port is required for a Service"));
            continue;
        }
        let (name, http2, target) = resolve_backend(index, meta, b, opts);
        backends.push(Backend {
            name,
            weight: b.weight.unwrap_or(1),
            http2,
            target,
            filters: bfilters,
        });
    }
    backends
}

/// Resolves a backendRef: (display name, speak h2c, target).
fn resolve_backend(
    index: &Index<'_>,
    meta: &ObjectMeta,
    b: &HttpBackendRef,
    opts: &TranslateOptions,
) -> (String, bool, BackendTarget) {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    let ns = b.namespace.as_deref().unwrap_or(meta.ns());
    let port = b.port.unwrap_or(0);
    let name = format!("{kind} {ns}/{}:{port}", b.name);
    let unresolvable = |why: String| (name.clone(), false, BackendTarget::Unresolvable(why));
    if !group.is_empty() || kind != "Service" {
        return unresolvable(format!(
            "backendRef kind {group}/{kind} is not supported (only core Service)"
        ));
    }
    if ns != meta.ns() {
        return unresolvable(format!(
            "backendRef to Service {ns}/{} crosses namespaces; ReferenceGrant is not supported",
            b.name
        ));
    }
    let skey = format!("{ns}/{}", b.name);
    let Some(svc) = index.services.get(&skey) else {
        return unresolvable(format!("Service {skey} not found"));
    };
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let Some(sport) = ports.iter().find(|p| p.port == i32::from(port)) else {
        return unresolvable(format!("Service {skey} has no port {port}"));
    };
    let http2 = sport
        .app_protocol
        .as_deref()
        .is_some_and(|p| matches!(p, "kubernetes.io/h2c" | "h2c" | "http2" | "grpc"));
    // Validated up front; an invalid policy never reaches here.
    let (mode, annotated) = mesh_policy(svc, opts).unwrap_or((UpstreamTls::Disable, None));
    let fqdn = format!("{}.{ns}.svc.{}", b.name, opts.cluster_domain);
    let mesh_target = |identities: Vec<String>| {
        (mode != UpstreamTls::Disable).then(|| {
            Arc::new(MeshTarget {
                sni: MeshTarget::sni_for(port, &fqdn),
                identities,
                http2,
            })
        })
    };
    // Secure naming: without the annotation, the identities are the service accounts of
    // the Pods behind the Service; with no Pod known (the file provider, or a Service
    // without selector), the Service's own name as service account.
    let fallback = || identities(&[b.name.as_str()], ns, opts).unwrap_or_default();
    let port_name = sport.name.clone().unwrap_or_default();
    if let Some(slices) = index.slices.get(&skey) {
        let picked = endpoints::pick(index, slices, ns, &port_name);
        let ids = annotated.unwrap_or_else(|| {
            let accounts: Vec<&str> = picked.service_accounts.iter().map(String::as_str).collect();
            match identities(&accounts, ns, opts) {
                Ok(ids) if !ids.is_empty() => ids,
                _ => fallback(),
            }
        });
        let target = mesh_target(ids);
        let endpoints = picked
            .endpoints
            .into_iter()
            .map(|(address, labels)| Endpoint {
                address,
                transport: mode.transport(target.as_ref(), &labels),
                labels,
            })
            .collect();
        return (name, http2, BackendTarget::Endpoints(endpoints));
    }
    let mesh_target = mesh_target(annotated.unwrap_or_else(fallback));
    let spec = svc.spec.as_ref();
    let host = match (
        spec.and_then(|s| s.type_.as_deref()),
        spec.and_then(|s| s.external_name.clone()),
    ) {
        (Some("ExternalName"), Some(ext)) => ext,
        _ => fqdn,
    };
    // No endpoint labels to look at: only istio-mutual sends mTLS to a DNS backend.
    let transport = mode.transport(mesh_target.as_ref(), &BTreeMap::new());
    let target = BackendTarget::Dns {
        host,
        port,
        transport,
    };
    (name, http2, target)
}
