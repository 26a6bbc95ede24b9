//! VirtualServices bound to this pod's Istio Gateways -> route entries. HTTP rules keep
//! Istio's order (first match wins: declaration order within a VirtualService, creation
//! order between VirtualServices for one host); `tcp` rules serve TCP (and terminated
//! TLS) servers by port; `tls` rules pass TLS through by SNI.

//!
//! - [`http`]: `http[]` entries: rule bodies in HTTPRoute's shape, Istio's rewrite.
//! - [`matches`]: `match[]` -> route matches (Istio's string prefix, `ignoreUriCase`).
//! - [`l4`]: `tcp[]` by server port, `tls[]` by SNI.

mod http;
mod l4;
mod matches;

use std::cmp::Reverse;
use std::sync::Arc;

use super::gateway::{KIND, Redirects};
use crate::api::gateway_api::HttpBackendRef;
use crate::api::istio_gateway::{Destination, VirtualService};
use crate::api::{ObjectKey, Snapshot};
use crate::ir::{self, HostPattern, PathMatch, Protocol, RouteMatch};
use crate::translate::attachment::namespace_allowed;
use crate::translate::backends::{self, RuleCtx};
use crate::translate::listeners::{Gateways, ListenerInfo, validate_hostname};
use crate::translate::rules::{Pending, PrecedenceKey};
use crate::translate::{Findings, Index, TranslateOptions};

use http::{add_http, compile_http};
pub(crate) use http::{retry_on_codes, weight, with_retried_failures, with_string_prefix_rewrite};
use l4::{add_tcp, add_tls, compile_l4, tcp_entries, tls_entries};

/// Attaches every bound VirtualService, oldest first, and the httpsRedirect servers'
/// redirects.
pub fn attach(
    snap: &Snapshot,
    index: &Index<'_>,
    opts: &TranslateOptions,
    redirects: &Redirects,
    gateways: &mut Gateways,
    f: &mut Findings,
) {
    for l in &redirects.0 {
        https_redirect(l, gateways);
    }
    let mut vss: Vec<&VirtualService> = snap.virtual_services.iter().collect();
    vss.sort_by_key(|v| (v.metadata.creation_timestamp.clone(), v.metadata.key()));
    for vs in vss {
        attach_one(snap, index, opts, vs, gateways, f);
    }
}

fn attach_one(
    snap: &Snapshot,
    index: &Index<'_>,
    opts: &TranslateOptions,
    vs: &VirtualService,
    gateways: &mut Gateways,
    f: &mut Findings,
) {
    let obj = format!("VirtualService {}", vs.metadata.key());
    let ns = vs.metadata.ns();
    let before = f.errors.len();
    f.unresolved.clear();
    f.unsupported(&format!("{obj} spec"), &vs.spec.unsupported);
    let bound: Vec<String> = vs
        .spec
        .gateways
        .iter()
        .filter(|g| *g != "mesh")
        .map(|g| match g.split_once('/') {
            Some(_) => g.clone(),
            None => format!("{ns}/{g}"),
        })
        .collect();
    if bound.is_empty() {
        f.warnings.push(format!(
            "{obj}: gateways names no Gateway (only the mesh's sidecars); not served here"
        ));
        return;
    }
    let listeners: Vec<std::sync::Arc<ListenerInfo>> = gateways
        .listeners
        .iter()
        .filter(|l| bound.contains(&l.gateway) && l.kinds.contains(&KIND))
        .filter(|l| namespace_allowed(snap, l, ns))
        .filter(|l| exported(vs, opts, l))
        .cloned()
        .collect();
    let hosts = vs_hosts(vs, opts, &obj, f);
    // Istio names a cluster with the server's own port number, not the one listened on.
    let mut ports: Vec<u16> = listeners.iter().map(|l| l.declared_port).collect();
    ports.sort_unstable();
    ports.dedup();
    let rc = RuleCtx {
        snap,
        index,
        meta: &vs.metadata,
        opts,
        kind: KIND,
        rate_limit: None,
        l4: false,
        server_port: ports.first().copied(),
    };
    let first = compile(&rc, vs, &obj, f);
    // A destination that takes the server's port names another cluster on each port.
    let mut others = Vec::new();
    if ports.len() > 1 && vs_destinations(vs).any(|d| takes_server_port(&rc, d)) {
        for &port in &ports[1..] {
            let rc = RuleCtx {
                server_port: Some(port),
                ..rc.clone()
            };
            let mut scratch = Findings::default();
            others.push((port, compile(&rc, vs, &obj, &mut scratch)));
            for (reason, why) in scratch.unresolved {
                if !f.unresolved.iter().any(|(_, w)| *w == why) {
                    f.unresolved.push((reason, why));
                }
            }
        }
    }
    // Istio objects have no Gateway API conditions: unresolved destinations (their
    // share of requests gets a 503 `NC`, or a 500 for a reason of the gateway's own) are
    // reported as warnings.
    for (_, why) in std::mem::take(&mut f.unresolved) {
        f.warnings.push(why);
    }
    if f.errors.len() > before {
        // Serving part of what its author wrote could send traffic where they did not
        // mean it to go: an invalid VirtualService is left out whole.
        return;
    }
    if listeners.is_empty() {
        f.warnings.push(format!(
            "{obj}: none of its gateways {bound:?} has a server this pod serves whose hosts \
             allow namespace {ns:?} (or its exportTo hides it from the gateway); not served"
        ));
        return;
    }
    for l in &listeners {
        let c = others
            .iter()
            .find(|(p, _)| *p == l.declared_port)
            .map_or(&first, |(_, c)| c);
        match l.protocol {
            Protocol::Http | Protocol::Https => add_http(l, &hosts, &c.http, vs, gateways),
            Protocol::Tcp => add_tcp(l, &c.tcp, &obj, gateways, f),
            Protocol::Tls => add_tls(l, &c.tls, &c.tcp, &obj, gateways, f),
        }
    }
}

/// A VirtualService's rules compiled for one server port.
struct Compiled {
    http: Vec<http::HttpRule>,
    tcp: Vec<l4::L4Rule>,
    tls: Vec<l4::L4Rule>,
}

fn compile(rc: &RuleCtx<'_>, vs: &VirtualService, obj: &str, f: &mut Findings) -> Compiled {
    let http = compile_http(rc, vs, obj, f);
    let l4_rc = RuleCtx {
        l4: true,
        ..rc.clone()
    };
    Compiled {
        http,
        tcp: compile_l4(&l4_rc, &tcp_entries(&vs.spec), obj, "tcp", f),
        tls: compile_l4(&l4_rc, &tls_entries(&vs.spec), obj, "tls", f),
    }
}

/// Every destination a VirtualService names: routes and mirrors.
fn vs_destinations(vs: &VirtualService) -> impl Iterator<Item = &Destination> {
    let http = vs.spec.http.iter().flat_map(|h| {
        let routes = h.route.iter().map(|r| &r.destination);
        let mirrors = h.mirrors.iter().map(|m| &m.destination);
        routes.chain(h.mirror.iter()).chain(mirrors)
    });
    let tcp = vs.spec.tcp.iter().flat_map(|t| &t.route);
    let tls = vs.spec.tls.iter().flat_map(|t| &t.route);
    http.chain(tcp.chain(tls).map(|r| &r.destination))
}

/// Whether a destination's cluster port is the server's (Istio's
/// `GetDestinationCluster`): no `port`, and its Service has not exactly one.
fn takes_server_port(rc: &RuleCtx<'_>, d: &Destination) -> bool {
    d.port.is_none()
        && service_of(rc, &d.host).is_ok_and(|(name, ns)| only_port(rc.index, &ns, &name).is_none())
}

/// Whether `exportTo` lets the gateway proxy see the VirtualService: the proxy lives in
/// the pod's namespace (`--pod-namespace`), else the bound Istio Gateway's.
fn exported(vs: &VirtualService, opts: &TranslateOptions, l: &ListenerInfo) -> bool {
    let gw_ns = l.gateway.split('/').next().unwrap_or_default();
    let viewer = opts.pod_namespace.as_deref().unwrap_or(gw_ns);
    let own = vs.metadata.ns();
    let to = &vs.spec.export_to;
    to.is_empty()
        || to
            .iter()
            .any(|e| e == "*" || (e == "." && own == viewer) || e == viewer)
}

/// The VirtualService's hosts; a short name is the Service FQDN in its namespace.
fn vs_hosts(
    vs: &VirtualService,
    opts: &TranslateOptions,
    obj: &str,
    f: &mut Findings,
) -> Vec<HostPattern> {
    let mut out = Vec::new();
    for (i, h) in vs.spec.hosts.iter().enumerate() {
        let full = if h != "*" && !h.contains('.') {
            format!("{h}.{}.svc.{}", vs.metadata.ns(), opts.cluster_domain)
        } else {
            h.clone()
        };
        if full == "*" {
            out.push(HostPattern::Any);
            continue;
        }
        match validate_hostname(&full) {
            Ok(p) => out.push(p),
            Err(e) => f.errors.push(format!("{obj} hosts[{i}] {h:?}: {e}")),
        }
    }
    if out.is_empty() {
        f.errors.push(format!("{obj}: hosts is empty"));
    }
    out
}

/// A destination as a Service backendRef: short names in the VirtualService's
/// namespace, `name.namespace.svc.<domain>` FQDNs; without `port`, the Service's only
/// port or else the server's, as Istio names the cluster.
pub(super) fn backend_ref(
    rc: &RuleCtx<'_>,
    d: &Destination,
    ctx: &str,
    errors: &mut Vec<String>,
) -> Option<HttpBackendRef> {
    for k in d.unsupported.keys() {
        errors.push(format!(
            "{ctx}.destination: field {k:?} is not supported by meshgate"
        ));
    }
    let (name, ns) = match service_of(rc, &d.host) {
        Ok(s) => s,
        Err(e) => {
            errors.push(format!("{ctx}.destination.host {:?} {e}", d.host));
            return None;
        }
    };
    let port = match &d.port {
        Some(p) => match u16::try_from(p.number) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                errors.push(format!(
                    "{ctx}.destination.port.number {} is not a port (1-65535)",
                    p.number
                ));
                return None;
            }
        },
        // Istio's cluster: the Service's only port, else the server's. One the Service
        // does not have names no cluster (503 `NC`, `apply_subset`).
        None => only_port(rc.index, &ns, &name).or(rc.server_port),
    };
    if port.is_none() {
        errors.push(format!(
            "{ctx}.destination.port is required: Service {ns}/{name} is unknown or has \
             several ports, and no server of the VirtualService's gateways gives one"
        ));
        return None;
    }
    Some(HttpBackendRef {
        name,
        namespace: Some(ns),
        port,
        ..Default::default()
    })
}

/// A destination host's Service (name, namespace), or why it names none of this
/// cluster's.
fn service_of(rc: &RuleCtx<'_>, host: &str) -> Result<(String, String), String> {
    let suffix = format!(".svc.{}", rc.opts.cluster_domain);
    if !host.contains('.') {
        Ok((host.to_string(), rc.meta.ns().to_string()))
    } else if let Some((name, ns)) = host.strip_suffix(&suffix).and_then(|r| r.split_once('.')) {
        Ok((name.to_string(), ns.to_string()))
    } else {
        Err(format!(
            "is not a Service of this cluster (a short name or <name>.<namespace>{suffix}; \
             ServiceEntry hosts are not supported)"
        ))
    }
}

/// Whether the Service of a backend (`name.namespace.svc...` host, `...:port` name)
/// exists with that port: Istio has a cluster for it. Unresolved otherwise for a reason
/// of the gateway's own (an invalid annotation, a BackendTLSPolicy), it keeps its 500.
fn service_port_exists(index: &Index<'_>, host: Option<&str>, name: &str) -> bool {
    let Some((svc, ns)) = host
        .and_then(|h| h.split_once('.'))
        .and_then(|(svc, rest)| Some((svc, rest.split_once('.')?.0)))
    else {
        return false;
    };
    let port: Option<i32> = name.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    index.services.get(&format!("{ns}/{svc}")).is_some_and(|s| {
        let ports = s.spec.as_ref().and_then(|s| s.ports.as_ref());
        ports.is_some_and(|ps| ps.iter().any(|p| Some(p.port) == port))
    })
}

/// Narrows a destination's backend to its DestinationRule subset: the endpoints carrying
/// the subset's labels, with the subset's policy. A destination that names no cluster (an
/// unknown Service or port, or a subset no DestinationRule defines) is answered as
/// Istio's Envoy answers it, 503 `NC`, and a subset gets a warning.
pub(super) fn apply_subset(
    rc: &RuleCtx<'_>,
    b: &mut ir::Backend,
    d: &Destination,
    f: &mut Findings,
) {
    if let ir::BackendTarget::Unresolvable(why) = &mut b.target
        && !service_port_exists(rc.index, b.service_host.as_deref(), &b.name)
    {
        b.target = ir::BackendTarget::NoCluster(std::mem::take(why));
    }
    let Some(name) = &d.subset else { return };
    let Some((svc_ns, svc)) = b
        .service_host
        .as_deref()
        .and_then(|h| h.split_once('.'))
        .and_then(|(svc, rest)| Some((rest.split_once('.')?.0, svc)))
    else {
        return;
    };
    let port = b.name.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    let applied = rc.index.destination_rules.lookup(
        &rc.index.gateway_namespace,
        svc_ns,
        svc,
        port.unwrap_or(0),
        &rc.opts.cluster_domain,
    );
    b.subset = Some(name.clone());
    let Some((labels, policy)) = applied.as_ref().and_then(|a| a.subset(name)) else {
        let why = format!(
            "subset {name:?} of {} is not defined by a DestinationRule",
            d.host
        );
        f.warnings
            .push(format!("VirtualService {}: {why}", rc.meta.key()));
        b.target = ir::BackendTarget::NoCluster(why);
        return;
    };
    // A subset with a tls of its own reaches its endpoints its own way.
    let base = applied.as_ref().map(|a| &a.policy);
    if base.is_some_and(|p| {
        (&p.tls_mode, &p.tls_origination) != (&policy.tls_mode, &policy.tls_origination)
    }) {
        let href = HttpBackendRef {
            name: svc.to_string(),
            namespace: Some(svc_ns.to_string()),
            port,
            ..Default::default()
        };
        if let Ok((_, _, target)) = backends::resolve_backend(rc, &href, Some(&policy)) {
            b.target = target;
        }
    }
    if let ir::BackendTarget::Endpoints(eps) = &mut b.target {
        let of_subset = |e: &&ir::Endpoint| labels.iter().all(|(k, v)| e.labels.get(k) == Some(v));
        *eps = eps.iter().filter(of_subset).cloned().collect();
    }
    b.policy = Some(policy);
}

fn only_port(index: &Index<'_>, ns: &str, name: &str) -> Option<u16> {
    let svc = index.services.get(&format!("{ns}/{name}"))?;
    match svc.spec.as_ref()?.ports.as_deref()? {
        [one] => u16::try_from(one.port).ok(),
        _ => None,
    }
}

/// Declaration order as a precedence key (first match wins, as Istio and Gloo have
/// it): creation time, name, rule, match. Rank 3 sorts after every HTTPRoute match, so
/// where both serve one host (Gloo VirtualServices on a Gateway API listener) the
/// HTTPRoutes take precedence.
pub(crate) fn declaration_order(
    meta: &crate::api::gateway_api::ObjectMeta,
    rule: usize,
    mi: usize,
) -> PrecedenceKey {
    (
        3,
        Reverse(0),
        Reverse(0),
        Reverse(false),
        Reverse(0),
        Reverse(0),
        meta.creation_timestamp.clone(),
        meta.key().into(),
        rule,
        mi,
    )
}

/// An httpsRedirect server: every request gets a 301 to https on the same host.
fn https_redirect(l: &ListenerInfo, gateways: &mut Gateways) {
    let id = format!("{}/{}", l.gateway, l.name);
    let rule = Arc::new(ir::Rule {
        route: l.gateway.as_str().into(),
        index: 0,
        id: id.into(),
        filters: ir::Filters {
            redirect: Some(Box::new(ir::Redirect {
                scheme: Some("https".into()),
                hostname: None,
                port: None,
                path: None,
                status: 301,
            })),
            ..Default::default()
        },
        backends: vec![],
        total_weight: 0,
        request_timeout: None,
        backend_request_timeout: None,
        retry: None,
        rate_limit: None,
    });
    let matcher = RouteMatch {
        path: PathMatch::Prefix("/".into()),
        headers: vec![],
        query_params: vec![],
        method: None,
    };
    let host = l.hostname.clone();
    gateways
        .pending
        .entry((l.port, l.full_name()))
        .or_default()
        .entry(host.to_string())
        .or_insert_with(|| (host, Vec::new()))
        .1
        .push(Pending {
            key: (
                0,
                Reverse(0),
                Reverse(0),
                Reverse(false),
                Reverse(0),
                Reverse(0),
                None,
                l.full_name().into(),
                0,
                0,
            ),
            entry: ir::RouteEntry {
                matcher,
                rule,
                rank: 0,
            },
        });
}
