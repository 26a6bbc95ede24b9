//! `tcp[]` entries serve TCP (and terminated TLS) servers by port; `tls[]` entries pass
//! TLS through by SNI.

use std::sync::Arc;

use super::{apply_subset, backend_ref, weight};
use crate::api::istio_gateway::{RouteDestination, VirtualServiceSpec};
use crate::ir::{self, HostPattern};
use crate::translate::Findings;
use crate::translate::attachment::intersect;
use crate::translate::backends::{self, RuleCtx};
use crate::translate::listeners::{Gateways, ListenerInfo, validate_hostname};

/// One `tcp[]` or `tls[]` entry: its SNI hosts (tls), ports, and backends.
pub(super) struct L4Rule {
    sni: Vec<HostPattern>,
    ports: Vec<u16>,
    backends: Arc<Vec<ir::Backend>>,
}

/// A `tcp[]` or `tls[]` entry in one shape: its matches (SNI hosts, port), its
/// destinations and the fields meshgate does not implement.
pub(super) struct L4Entry<'a> {
    matches: Vec<(Vec<String>, Option<u32>)>,
    route: &'a [RouteDestination],
    unsupported: &'a crate::api::Unsupported,
}

pub(super) fn tcp_entries(spec: &VirtualServiceSpec) -> Vec<L4Entry<'_>> {
    spec.tcp
        .iter()
        .map(|t| L4Entry {
            matches: t.matches.iter().map(|m| (Vec::new(), m.port)).collect(),
            route: &t.route,
            unsupported: &t.unsupported,
        })
        .collect()
}

pub(super) fn tls_entries(spec: &VirtualServiceSpec) -> Vec<L4Entry<'_>> {
    spec.tls
        .iter()
        .map(|t| L4Entry {
            matches: t
                .matches
                .iter()
                .map(|m| (m.sni_hosts.clone(), m.port))
                .collect(),
            route: &t.route,
            unsupported: &t.unsupported,
        })
        .collect()
}

pub(super) fn compile_l4(
    rc: &RuleCtx<'_>,
    entries: &[L4Entry<'_>],
    obj: &str,
    field: &str,
    f: &mut Findings,
) -> Vec<L4Rule> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (matches, route, unsupported) = (&e.matches, e.route, e.unsupported);
        let ctx = format!("{obj} {field}[{i}]");
        f.unsupported(&ctx, unsupported);
        let mut sni = Vec::new();
        let mut ports = Vec::new();
        for (hosts, port) in matches {
            for h in hosts {
                match validate_hostname(h) {
                    Ok(p) => sni.push(p),
                    Err(e) => f.errors.push(format!("{ctx}.match sniHosts {h:?}: {e}")),
                }
            }
            ports.extend(port.and_then(|p| u16::try_from(p).ok()));
        }
        if field == "tls" && sni.is_empty() {
            f.errors
                .push(format!("{ctx}: match[].sniHosts is required"));
        }
        let mut backends = Vec::new();
        for (di, d) in route.iter().enumerate() {
            let dctx = format!("{ctx}.route[{di}]");
            let Some(mut b) = backend_ref(rc, &d.destination, &dctx, &mut f.errors) else {
                continue;
            };
            b.weight = Some(weight(d.weight, route.iter().map(|r| r.weight)));
            if let Some(mut backend) = backends::backend(rc, &b, &dctx, f) {
                apply_subset(rc, &mut backend, &d.destination, f);
                backends.push(backend);
            }
        }
        out.push(L4Rule {
            sni,
            ports,
            backends: Arc::new(backends),
        });
    }
    out
}

fn l4_route(hostname: HostPattern, obj: &str, r: &L4Rule) -> ir::L4Route {
    ir::L4Route {
        hostname,
        route: obj.to_string(),
        backends: r.backends.clone(),
        total_weight: r.backends.iter().map(|b| b.weight).sum(),
    }
}

/// The first `tcp[]` entry whose ports include the listener's serves it.
pub(super) fn add_tcp(
    l: &ListenerInfo,
    tcp: &[L4Rule],
    obj: &str,
    gateways: &mut Gateways,
    f: &mut Findings,
) {
    let Some(r) = tcp
        .iter()
        .find(|r| r.ports.is_empty() || r.ports.contains(&l.declared_port))
    else {
        return;
    };
    insert_l4(l, l4_route(HostPattern::Any, obj, r), gateways, f);
}

/// TLS servers: passthrough ones by the `tls[]` entries' SNI hosts; terminated ones like
/// TCP servers.
pub(super) fn add_tls(
    l: &ListenerInfo,
    tls: &[L4Rule],
    tcp: &[L4Rule],
    obj: &str,
    gateways: &mut Gateways,
    f: &mut Findings,
) {
    let terminated = gateways
        .ports
        .get(&l.port)
        .and_then(|p| p.listeners.iter().find(|x| x.name == l.full_name()))
        .is_some_and(|x| x.tls.is_some());
    if terminated {
        return add_tcp(l, tcp, obj, gateways, f);
    }
    for r in tls
        .iter()
        .filter(|r| r.ports.is_empty() || r.ports.contains(&l.declared_port))
    {
        for sni in &r.sni {
            if let Some(host) = intersect(&l.hostname, sni) {
                insert_l4(l, l4_route(host, obj, r), gateways, f);
            }
        }
    }
}

fn insert_l4(l: &ListenerInfo, route: ir::L4Route, gateways: &mut Gateways, f: &mut Findings) {
    let routes = gateways
        .l4_pending
        .entry((l.port, l.full_name()))
        .or_default();
    let key = route.hostname.to_string();
    match routes.get(&key) {
        Some(older) if older.route != route.route => f.warnings.push(format!(
            "{}: listener {} host {key} is already served by the older {}; not attached there",
            route.route,
            l.full_name(),
            older.route
        )),
        Some(_) => {}
        None => {
            routes.insert(key, route);
        }
    }
}
