//! backendRefs -> backends: Services, their EndpointSlices and Pods, and the upstream TLS
//! each endpoint gets (mesh mTLS or plaintext) with the identities it must present.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;

use super::attachment::GATEWAY_GROUP;
use super::grants::{self, Reference};
use super::status::Reason;
use super::{Findings, Index, TranslateOptions, filters};
use crate::api::gateway_api::{HttpBackendRef, ObjectMeta};
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

/// The Service's upstream TLS mode and the identities its workloads may present.
/// Without the service-accounts annotation the expected identity is the Service's own
/// name as service account (`spiffe://<td>/ns/<ns>/sa/<service>`), Kubernetes' usual
/// convention; the annotation overrides it.
fn mesh_policy(
    svc: &api::Service,
    opts: &TranslateOptions,
) -> Result<(UpstreamTls, Vec<String>), String> {
    let ns = svc.metadata.ns();
    let ctx = format!("Service {}", svc.metadata.key());
    let ann = annotations(&svc.metadata);
    let mode = match ann.and_then(|a| a.get(UPSTREAM_TLS_ANNOTATION)) {
        None => opts.upstream_tls,
        Some(v) => UpstreamTls::parse(v).ok_or_else(|| {
            format!("{ctx}: annotation {UPSTREAM_TLS_ANNOTATION}: {v:?} is not one of auto, istio-mutual, disable")
        })?,
    };
    let accounts: Vec<String> = match ann.and_then(|a| a.get(SERVICE_ACCOUNTS_ANNOTATION)) {
        None => vec![svc.metadata.name().to_string()],
        Some(v) => v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    };
    let mut ids = Vec::new();
    for a in accounts {
        let id = if a.starts_with("spiffe://") {
            a.parse::<mesh::Identity>()
        } else {
            mesh::Identity::new(&opts.trust_domain, ns, &a)
        }
        .map_err(|e| format!("{ctx}: annotation {SERVICE_ACCOUNTS_ANNOTATION}: {e}"))?;
        ids.push(id.to_string());
    }
    if ids.is_empty() {
        return Err(format!(
            "{ctx}: annotation {SERVICE_ACCOUNTS_ANNOTATION} names no service account"
        ));
    }
    Ok((mode, ids))
}

/// Reports Services whose mesh annotations are invalid.
pub fn validate_services(snap: &Snapshot, opts: &TranslateOptions, f: &mut Findings) {
    for svc in &snap.services {
        if let Err(e) = mesh_policy(svc, opts) {
            f.errors.push(e);
        }
    }
}

/// What resolving a rule's references needs.
pub struct RuleCtx<'a> {
    /// Every object (ReferenceGrants).
    pub snap: &'a Snapshot,
    /// Objects by key.
    pub index: &'a Index<'a>,
    /// The route's metadata.
    pub meta: &'a ObjectMeta,
    /// Command-line options.
    pub opts: &'a TranslateOptions,
    /// The route kind (`HTTPRoute`, `GRPCRoute`), the `from` of ReferenceGrants.
    pub kind: &'a str,
}

/// Compiles a rule's backendRefs (with their filters); references that do not resolve
/// are recorded in `f.unresolved` with the spec's reason.
pub fn compile_backend_refs(
    rc: &RuleCtx<'_>,
    refs: &[HttpBackendRef],
    ctx: &str,
    f: &mut Findings,
) -> Vec<Backend> {
    let mut backends = Vec::new();
    for (bi, b) in refs.iter().enumerate() {
        let bctx = format!("{ctx} backendRefs[{bi}]");
        let bfilters = filters::compile_filters(rc, &b.filters, &bctx, f);
        if bfilters.redirect.is_some() {
            f.errors.push(format!(
                "{bctx}: RequestRedirect is not allowed on a backendRef"
            ));
        }
        if let Some(mut backend) = backend(rc, b, &bctx, f) {
            backend.filters = bfilters;
            backends.push(backend);
        }
    }
    backends
}

/// Resolves one backendRef (an unresolved one answers 500 and is recorded).
pub fn backend(
    rc: &RuleCtx<'_>,
    b: &HttpBackendRef,
    bctx: &str,
    f: &mut Findings,
) -> Option<Backend> {
    if b.port.is_none() && b.kind.as_deref().unwrap_or("Service") == "Service" {
        f.errors
            .push(format!("{bctx}: port is required for a Service"));
        return None;
    }
    let (name, http2, target) = match resolve_backend(rc, b) {
        Ok(ok) => ok,
        Err((name, reason, why)) => {
            f.unresolved.push((reason, format!("{bctx}: {why}")));
            (name, false, BackendTarget::Unresolvable(why))
        }
    };
    Some(Backend {
        name,
        weight: b.weight.unwrap_or(1),
        http2,
        target,
        filters: Default::default(),
    })
}

/// A resolved backendRef: (display name, speak h2c, target).
type Resolved = (String, bool, BackendTarget);
/// An unresolved one: (display name, the spec's reason, why).
type Unresolved = (String, Reason, String);

/// Resolves a backendRef.
fn resolve_backend(rc: &RuleCtx<'_>, b: &HttpBackendRef) -> Result<Resolved, Unresolved> {
    let (snap, index, meta, opts) = (rc.snap, rc.index, rc.meta, rc.opts);
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    let ns = b.namespace.as_deref().unwrap_or(meta.ns());
    let port = b.port.unwrap_or(0);
    let name = format!("{kind} {ns}/{}:{port}", b.name);
    let fail = |reason, why: String| Err((name.clone(), reason, why));
    if !group.is_empty() || kind != "Service" {
        let why = format!("backendRef kind {group}/{kind} is not supported (only core Service)");
        return fail(Reason::InvalidKind, why);
    }
    let grant = Reference {
        from_group: GATEWAY_GROUP,
        from_kind: rc.kind,
        from_namespace: meta.ns(),
        to_group: "",
        to_kind: "Service",
        to_namespace: ns,
        to_name: &b.name,
    };
    if !grants::permitted(snap, &grant) {
        let why = format!(
            "backendRef to Service {ns}/{} crosses namespaces and no ReferenceGrant in {ns} allows it",
            b.name
        );
        return fail(Reason::RefNotPermitted, why);
    }
    let skey = format!("{ns}/{}", b.name);
    let Some(svc) = index.services.get(&skey) else {
        return fail(Reason::BackendNotFound, format!("Service {skey} not found"));
    };
    let Ok((mode, identities)) = mesh_policy(svc, opts) else {
        let why = format!("Service {skey} has an invalid meshgate.io annotation");
        return fail(Reason::BackendNotFound, why);
    };
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let Some(sport) = ports.iter().find(|p| p.port == i32::from(port)) else {
        return fail(
            Reason::BackendNotFound,
            format!("Service {skey} has no port {port}"),
        );
    };
    // gRPC always rides HTTP/2; for HTTPRoutes the Service's appProtocol decides.
    let http2 = rc.kind == "GRPCRoute"
        || sport
            .app_protocol
            .as_deref()
            .is_some_and(|p| matches!(p, "kubernetes.io/h2c" | "h2c" | "http2" | "grpc"));
    let fqdn = format!("{}.{ns}.svc.{}", b.name, opts.cluster_domain);
    let mesh_target = (mode != UpstreamTls::Disable).then(|| {
        Arc::new(MeshTarget {
            sni: MeshTarget::sni_for(port, &fqdn),
            identities,
            http2,
        })
    });
    let port_name = sport.name.clone().unwrap_or_default();
    if let Some(slices) = index.slices.get(&skey) {
        let endpoints = endpoints(index, slices, ns, &port_name, mode, mesh_target.as_ref());
        return Ok((name, http2, BackendTarget::Endpoints(endpoints)));
    }
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
    Ok((name, http2, target))
}

/// Ready endpoints of a Service port from its EndpointSlices, labelled with their Pod's
/// labels when the Pod is known.
fn endpoints(
    index: &Index<'_>,
    slices: &[&api::EndpointSlice],
    ns: &str,
    port_name: &str,
    mode: UpstreamTls,
    mesh_target: Option<&Arc<MeshTarget>>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in slices {
        let target = slice
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok());
        let Some(target) = target else { continue };
        for ep in &slice.endpoints {
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let mut labels = slice.metadata.labels.clone().unwrap_or_default();
            if let Some(t) = &ep.target_ref
                && t.kind.as_deref() == Some("Pod")
            {
                let pkey = format!(
                    "{}/{}",
                    t.namespace.as_deref().unwrap_or(ns),
                    t.name.as_deref().unwrap_or_default()
                );
                if let Some(pod_labels) = index
                    .pods
                    .get(&pkey)
                    .and_then(|p| p.metadata.labels.as_ref())
                {
                    labels.extend(pod_labels.clone());
                }
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    out.push(Endpoint {
                        address: SocketAddr::new(ip, target),
                        transport: mode.transport(mesh_target, &labels),
                        labels: labels.clone(),
                    });
                }
            }
        }
    }
    out.sort_by_key(|e| e.address);
    out.dedup_by_key(|e| e.address);
    out
}
