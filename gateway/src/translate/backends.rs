//! backendRefs -> backends: Services, their EndpointSlices and Pods, and the upstream TLS
//! each endpoint gets (mesh mTLS or plaintext) with the identities it must present.

use std::collections::BTreeMap;

use std::sync::Arc;

use serde::Serialize;

use super::attachment::GATEWAY_GROUP;
use super::grants::{self, Reference};
use super::status::Reason;
use super::{Findings, Index, TranslateOptions, backend_tls, endpoints, filters};
use crate::api::gateway_api::{HttpBackendRef, ObjectMeta};
use crate::api::{self, ObjectKey, Snapshot};
use crate::ir::{
    Backend, BackendPolicy, BackendTarget, Endpoint, MeshTarget, TlsTarget, Transport,
};

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

/// What resolving a rule's references needs.
#[derive(Clone)]
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
    /// The route's local rate limits (BackendTrafficPolicy), if any.
    pub rate_limit: Option<std::sync::Arc<crate::ir::RateLimit>>,
    /// A connection route (TCP, TLS): mesh upstreams get ALPN `istio` only.
    pub l4: bool,
    /// The Istio server port being compiled for: a VirtualService destination without
    /// `port` whose Service has not exactly one takes it (Istio's cluster name).
    pub server_port: Option<u16>,
}

/// Compiles a rule's backendRefs (with their filters); references that do not resolve
/// are recorded in `f.unresolved` with the spec's reason.
pub fn compile_backend_refs(
    rc: &RuleCtx<'_>,
    refs: &[HttpBackendRef],
    ctx: &dyn std::fmt::Display,
    f: &mut Findings,
) -> Vec<Backend> {
    let mut backends = Vec::with_capacity(refs.len());
    for (bi, b) in refs.iter().enumerate() {
        let bctx = super::Ctx::BackendRef(ctx, bi);
        let bfilters = filters::compile_filters(rc, &b.filters, &bctx, f);
        let refused = f.refused_filter.take();
        if bfilters.redirect.is_some() {
            f.errors.push(format!(
                "{bctx}: RequestRedirect is not allowed on a backendRef"
            ));
        }
        // A preflight is answered before a backend is chosen, so a backend's CORS policy
        // could never apply to it: refused rather than half applied.
        if bfilters.cors.is_some() {
            f.errors.push(format!(
                "{bctx}: CORS is not supported on a backendRef (set it on the rule)"
            ));
        }
        if let Some(mut backend) = backend(rc, b, &bctx, f) {
            backend.filters = bfilters;
            if let Some(why) = refused {
                backend.target = crate::ir::BackendTarget::Unresolvable(why);
            }
            backends.push(backend);
        }
    }
    backends
}

/// Istio's protocol selection by port name (`<protocol>[-<suffix>]`, case ignored): `grpc`
/// and `http2` ride HTTP/2; `grpc-web`, a protocol of its own, rides HTTP/1.1.
fn h2_by_port_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name.starts_with("grpc-web") {
        return false;
    }
    matches!(name.split('-').next(), Some("grpc" | "http2"))
}

/// Resolves one backendRef (an unresolved one answers 500 and is recorded).
pub fn backend(
    rc: &RuleCtx<'_>,
    b: &HttpBackendRef,
    bctx: &dyn std::fmt::Display,
    f: &mut Findings,
) -> Option<Backend> {
    if b.port.is_none() && b.kind.as_deref().unwrap_or("Service") == "Service" {
        f.errors
            .push(format!("{bctx}: port is required for a Service"));
        return None;
    }
    let (policy, resolved, service_host) = resolve_memoised(rc, b);
    let (name, http2, target) = match resolved {
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
        policy,
        service_host,
        subset: None,
    })
}

/// A backendRef's DestinationRule policy and resolution, memoised per translation: the
/// rules of 10k routes mostly name the same few Services, and resolving one walks its
/// EndpointSlices, Pods and identities. Everything the result depends on is in the key
/// (route kind and namespace for grants and h2c, the reference, L4 or not).
fn resolve_memoised(rc: &RuleCtx<'_>, b: &HttpBackendRef) -> Memoised {
    // Normalised as resolution reads the reference (absent group, kind and namespace
    // are the core group, Service and the route's namespace).
    let key = {
        let mut key = rc.index.resolved_key.borrow_mut();
        key.clear();
        // Pushed, not formatted: `write!` costs more than the lookup it keys.
        for part in [
            rc.kind,
            rc.meta.ns(),
            b.group.as_deref().unwrap_or(""),
            b.kind.as_deref().unwrap_or("Service"),
            b.namespace.as_deref().unwrap_or(rc.meta.ns()),
            &b.name,
        ] {
            key.push_str(part);
            key.push('\0');
        }
        let port = b.port.unwrap_or(0).to_le_bytes();
        key.push(char::from(port[0]));
        key.push(char::from(port[1]));
        key.push(if rc.l4 { '4' } else { '7' });
        if let Some(hit) = rc.index.resolved.borrow().get(key.as_str()) {
            return hit.clone();
        }
        key.clone()
    };
    let policy = destination_rule(rc, b).map(|a| a.policy);
    let resolved = resolve_backend(rc, b, policy.as_deref());
    let is_service = b.group.as_deref().unwrap_or("").is_empty()
        && b.kind.as_deref().unwrap_or("Service") == "Service";
    let ns = b.namespace.as_deref().unwrap_or(rc.meta.ns());
    let domain = &rc.opts.cluster_domain;
    let service_host = is_service.then(|| format!("{}.{ns}.svc.{domain}", b.name).into());
    let out = (policy, resolved, service_host);
    rc.index.resolved.borrow_mut().insert(key, out.clone());
    out
}

/// A memoised resolution: the DestinationRule policy, the result, and the Service's host
/// when the reference is to a Service.
pub type Memoised = (
    Option<Arc<BackendPolicy>>,
    Result<Resolved, Unresolved>,
    Option<Arc<str>>,
);

/// The DestinationRule that applies to a Service backendRef, if any.
fn destination_rule(
    rc: &RuleCtx<'_>,
    b: &HttpBackendRef,
) -> Option<super::policies::destination_rule::Applied> {
    if b.group.as_deref().is_some_and(|g| !g.is_empty())
        || b.kind.as_deref().unwrap_or("Service") != "Service"
    {
        return None;
    }
    let ns = b.namespace.as_deref().unwrap_or(rc.meta.ns());
    rc.index.destination_rules.lookup(
        &rc.index.gateway_namespace,
        ns,
        &b.name,
        b.port.unwrap_or(0),
        &rc.opts.cluster_domain,
    )
}

/// A resolved backendRef: (display name, speak h2c, target).
pub type Resolved = (Arc<str>, bool, BackendTarget);
/// An unresolved one: (display name, the spec's reason, why).
pub type Unresolved = (Arc<str>, Reason, String);

/// Resolves a backendRef whose DestinationRule policy (the port's, or a subset's) is `dr`.
pub(super) fn resolve_backend(
    rc: &RuleCtx<'_>,
    b: &HttpBackendRef,
    dr: Option<&BackendPolicy>,
) -> Result<Resolved, Unresolved> {
    let (snap, index, meta, opts) = (rc.snap, rc.index, rc.meta, rc.opts);
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    let ns = b.namespace.as_deref().unwrap_or(meta.ns());
    let port = b.port.unwrap_or(0);
    // Shared by every rule with this reference (memoised): a copy is a reference count.
    let name: Arc<str> = format!("{kind} {ns}/{}:{port}", b.name).into();
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
    // Istio and Gloo route to any namespace's Services (Istio's visibility is exportTo's
    // business, which applies to sidecars); ReferenceGrants are Gateway API's rule.
    let dialect = [super::istio::gateway::KIND, super::gloo::KIND].contains(&rc.kind);
    if !dialect && !grants::permitted(snap, &grant) {
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
    let Ok((mut mode, annotated)) = mesh_policy(svc, opts) else {
        let why = format!("Service {skey} has an invalid meshgate.io annotation");
        return fail(Reason::BackendNotFound, why);
    };
    // A DestinationRule's tls.mode wins over BackendTLSPolicy, annotations and auto-mTLS.
    let dr_mode = dr.and_then(|p| p.tls_mode.as_deref());
    match dr_mode {
        Some("ISTIO_MUTUAL") => mode = UpstreamTls::IstioMutual,
        Some("DISABLE") => mode = UpstreamTls::Disable,
        _ => {}
    }
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
    // gRPC always rides HTTP/2; for HTTPRoutes the Service's appProtocol decides, and
    // without one the port's name as Istio reads it.
    let http2 = rc.kind == "GRPCRoute"
        || match sport.app_protocol.as_deref() {
            Some(p) => matches!(p, "kubernetes.io/h2c" | "h2c" | "http2" | "grpc"),
            None => h2_by_port_name(sport.name.as_deref().unwrap_or("")),
        };
    let fqdn = format!("{}.{ns}.svc.{}", b.name, opts.cluster_domain);
    let mesh_target = |identities: Vec<String>| {
        (mode != UpstreamTls::Disable).then(|| {
            Arc::new(MeshTarget {
                sni: MeshTarget::sni_for(port, &fqdn),
                identities,
                http2: http2 && !rc.l4,
                tcp: rc.l4,
            })
        })
    };
    // Secure naming: without the annotation, the identities are the service accounts of
    // the Pods behind the Service; with no Pod known (the file provider, or a Service
    // without selector), the Service's own name as service account.
    let fallback = || identities(&[b.name.as_str()], ns, opts).unwrap_or_default();
    let port_name = sport.name.clone().unwrap_or_default();
    let spec = svc.spec.as_ref();
    let external = match (
        spec.and_then(|s| s.type_.as_deref()),
        spec.and_then(|s| s.external_name.clone()),
    ) {
        (Some("ExternalName"), Some(ext)) => Some(ext),
        _ => None,
    };
    // A DestinationRule's SIMPLE or MUTUAL, else a BackendTLSPolicy, outranks the
    // annotations and auto-mTLS.
    let policy_tls = if dr_mode.is_some() {
        let sni = external.as_deref().unwrap_or(&fqdn);
        let origination = dr.and_then(|p| p.tls_origination.as_deref());
        origination.map(|t| Transport::Tls(finish_origination(t, sni, http2 && !rc.l4)))
    } else {
        match backend_tls::for_service(snap, index, ns, &b.name, &port_name, http2) {
            Some(Ok(t)) => Some(Transport::Tls(t)),
            Some(Err(why)) => return fail(Reason::BackendNotFound, why),
            None => None,
        }
    };
    let choose = |target: Option<&Arc<MeshTarget>>, labels: &BTreeMap<String, String>| {
        policy_tls
            .clone()
            .unwrap_or_else(|| mode.transport(target, labels))
    };
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
        let endpoints: Arc<[Endpoint]> = picked
            .endpoints
            .into_iter()
            .map(|(address, labels, workload)| Endpoint {
                address,
                transport: choose(target.as_ref(), &labels),
                labels,
                workload,
            })
            .collect();
        return Ok((name, http2, BackendTarget::Endpoints(endpoints)));
    }
    let mesh_target = mesh_target(annotated.unwrap_or_else(fallback));
    let host = external.unwrap_or(fqdn);
    // No endpoint labels to look at: only istio-mutual sends mTLS to a DNS backend.
    let transport = choose(mesh_target.as_ref(), &BTreeMap::new());
    let target = BackendTarget::Dns {
        host,
        port,
        transport,
    };
    Ok((name, http2, target))
}

/// A DestinationRule's TLS target for one backend: its `sni`, else `default_sni` (the
/// Service's FQDN, or its externalName), and the backend's protocol.
fn finish_origination(t: &TlsTarget, default_sni: &str, http2: bool) -> Arc<TlsTarget> {
    let mut t = t.clone();
    if t.hostname.is_empty() {
        t.hostname = default_sni.to_ascii_lowercase();
    }
    t.http2 = http2;
    Arc::new(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_select_http2_as_istio_reads_them() {
        for name in ["grpc", "GRPC-api", "http2", "http2-x"] {
            assert!(h2_by_port_name(name), "{name}");
        }
        for name in ["grpc-web", "grpc-web-x", "http", "grpcx", "", "tcp-grpc"] {
            assert!(!h2_by_port_name(name), "{name}");
        }
    }
    use crate::ir::{Backend, Config};
    use crate::providers::file::parse_str;

    const BASE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
        metadata: {name: gw, namespace: default}\n\
        spec: {listeners: [{name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]}\n\
        ---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: apps}\n\
        spec: {ports: [{name: http, port: 80}]}\n\
        ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
        metadata: {name: web-1, namespace: apps, labels: {kubernetes.io/service-name: web}}\n\
        addressType: IPv4\nports: [{name: http, port: 8000}]\nendpoints: [{addresses: [10.0.0.1]}]\n";

    fn route(kind: &str, ns: &str, host: &str) -> String {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\n\
             metadata: {{name: r, namespace: {ns}}}\n\
             spec: {{parentRefs: [{{name: gw, namespace: default}}], hostnames: [{host}], \
             rules: [{{backendRefs: [{{name: web, namespace: apps, port: 80}}]}}]}}\n"
        )
    }

    fn translate(yaml: &str) -> Config {
        let out = super::super::translate(&parse_str(yaml).unwrap(), &TranslateOptions::default());
        out.config
    }

    /// The backend of the first rule on `host`.
    fn backend_of<'c>(c: &'c Config, host: &str) -> &'c Backend {
        let vh = c.ports[&8080].listeners[0]
            .virtual_hosts
            .iter()
            .find(|v| v.hostname.to_string() == host)
            .unwrap_or_else(|| panic!("no virtual host {host}"));
        &vh.routes[0].rule.backends[0]
    }

    #[test]
    fn a_memoised_backend_keeps_reference_grants_per_route_namespace() {
        let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
            metadata: {name: team-a, namespace: apps}\n\
            spec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: team-a}], \
            to: [{group: '', kind: Service}]}\n";
        // The permitted route resolves first: a cache keyed without the route's
        // namespace would hand its result to the next one.
        let yaml = [
            BASE,
            grant,
            &route("HTTPRoute", "team-a", "a.example.com"),
            &route("HTTPRoute", "team-b", "b.example.com"),
        ]
        .concat();
        let c = translate(&yaml);
        assert!(matches!(
            backend_of(&c, "a.example.com").target,
            BackendTarget::Endpoints(_)
        ));
        match &backend_of(&c, "b.example.com").target {
            BackendTarget::Unresolvable(why) => {
                assert!(why.contains("no ReferenceGrant in apps allows it"), "{why}")
            }
            other => panic!("team-b's reference was resolved: {other:?}"),
        }
    }

    #[test]
    fn grpc_and_http_routes_to_one_service_keep_their_own_protocol() {
        let yaml = [
            BASE,
            &route("GRPCRoute", "apps", "grpc.example.com"),
            &route("HTTPRoute", "apps", "http.example.com"),
        ]
        .concat();
        let c = translate(&yaml);
        assert!(backend_of(&c, "grpc.example.com").http2);
        assert!(!backend_of(&c, "http.example.com").http2);
    }

    #[test]
    fn rules_to_one_service_share_its_resolved_endpoints() {
        let yaml = [
            BASE,
            &route("HTTPRoute", "apps", "one.example.com"),
            &route("HTTPRoute", "apps", "two.example.com").replace("name: r,", "name: r2,"),
        ]
        .concat();
        let c = translate(&yaml);
        let eps = |host| match &backend_of(&c, host).target {
            BackendTarget::Endpoints(e) => e.clone(),
            other => panic!("{other:?}"),
        };
        assert!(Arc::ptr_eq(
            &eps("one.example.com"),
            &eps("two.example.com")
        ));
        assert_eq!(
            eps("one.example.com")[0].address.to_string(),
            "10.0.0.1:8000"
        );
    }
}
