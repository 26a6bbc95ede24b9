//! `tcp[]` entries serve TCP (and terminated TLS) servers by port; `tls[]` entries pass
//! TLS through by SNI.

use std::sync::Arc;

use super::{apply_subset, backend_ref, weight};
use crate::api::ObjectKey;
use crate::api::istio_gateway::{RouteDestination, VirtualServiceSpec};
use crate::ir::{self, HostPattern};
use crate::translate::Findings;
use crate::translate::attachment::intersect;
use crate::translate::backends::{self, RuleCtx};
use crate::translate::listeners::{Gateways, ListenerInfo, validate_hostname};

/// One `tcp[]` or `tls[]` entry: its matches and backends.
pub(super) struct L4Rule {
    matches: Vec<L4Match>,
    backends: Arc<Vec<ir::Backend>>,
}

/// One match of an entry, as Istio reads it at a gateway (`l4SingleMatch`): the server
/// port (if set) and the gateways (if listed) must be the listener's; `sniHosts` (tls)
/// then pick the hosts. No match at all matches every server.
struct L4Match {
    sni: Vec<HostPattern>,
    port: Option<u16>,
    /// `namespace/name`; empty: every gateway of the VirtualService.
    gateways: Vec<String>,
}

impl L4Rule {
    /// The matches that apply to listener `l`.
    fn matches_for<'a>(&'a self, l: &'a ListenerInfo) -> impl Iterator<Item = &'a L4Match> {
        self.matches.iter().filter(|m| {
            m.port.is_none_or(|p| p == l.declared_port)
                && (m.gateways.is_empty() || m.gateways.contains(&l.gateway))
        })
    }
}

/// Match fields Istio ignores at a gateway (they select sidecar traffic).
const SIDECAR_ONLY: [&str; 3] = ["sourceLabels", "destinationSubnets", "sourceNamespace"];

/// One match in one shape: SNI hosts (tls), port, gateways, fields not implemented.
type RawMatch<'a> = (
    &'a [String],
    Option<u32>,
    &'a [String],
    &'a crate::api::Unsupported,
);

/// A `tcp[]` or `tls[]` entry in one shape: its matches, its destinations and the
/// fields meshgate does not implement.
pub(super) struct L4Entry<'a> {
    matches: Vec<RawMatch<'a>>,
    route: &'a [RouteDestination],
    unsupported: &'a crate::api::Unsupported,
}

pub(super) fn tcp_entries(spec: &VirtualServiceSpec) -> Vec<L4Entry<'_>> {
    spec.tcp
        .iter()
        .map(|t| L4Entry {
            matches: t
                .matches
                .iter()
                .map(|m| (&[][..], m.port, &m.gateways[..], &m.unsupported))
                .collect(),
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
                .map(|m| (&m.sni_hosts[..], m.port, &m.gateways[..], &m.unsupported))
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
        let ctx = format!("{obj} {field}[{i}]");
        f.unsupported(&ctx, e.unsupported);
        let matches: Vec<L4Match> = e
            .matches
            .iter()
            .enumerate()
            .map(|(mi, m)| compile_match(rc, m, &format!("{ctx}.match[{mi}]"), f))
            .collect();
        if field == "tls" && matches.iter().all(|m| m.sni.is_empty()) {
            f.errors
                .push(format!("{ctx}: match[].sniHosts is required"));
        }
        let mut backends = Vec::new();
        for (di, d) in e.route.iter().enumerate() {
            let dctx = format!("{ctx}.route[{di}]");
            let Some(mut b) = backend_ref(rc, &d.destination, &dctx, &mut f.errors) else {
                continue;
            };
            b.weight = Some(weight(d.weight, e.route.iter().map(|r| r.weight)));
            if let Some(mut backend) = backends::backend(rc, &b, &dctx, f) {
                apply_subset(rc, &mut backend, &d.destination, f);
                backends.push(backend);
            }
        }
        out.push(L4Rule {
            // No match: every server of the VirtualService's gateways.
            matches: if matches.is_empty() {
                vec![L4Match {
                    sni: Vec::new(),
                    port: None,
                    gateways: Vec::new(),
                }]
            } else {
                matches
            },
            backends: Arc::new(backends),
        });
    }
    out
}

fn compile_match(rc: &RuleCtx<'_>, m: &RawMatch<'_>, ctx: &str, f: &mut Findings) -> L4Match {
    let (hosts, port, gateways, unsupported) = *m;
    let mut rest = unsupported.clone();
    for name in SIDECAR_ONLY {
        if rest.remove(name).is_some() {
            f.warnings.push(format!(
                "{ctx}: {name} is ignored at a gateway, as Istio ignores it there"
            ));
        }
    }
    f.unsupported(&ctx, &rest);
    let mut sni = Vec::new();
    for h in hosts {
        match validate_hostname(h) {
            Ok(p) => sni.push(p),
            Err(e) => f.errors.push(format!("{ctx} sniHosts {h:?}: {e}")),
        }
    }
    // 0 is the proto's unset, as Istio's l4SingleMatch reads it.
    let port = port
        .filter(|p| *p != 0)
        .and_then(|p| match u16::try_from(p) {
            Ok(p) => Some(p),
            Err(_) => {
                f.errors.push(format!("{ctx}: port {p} is not 1-65535"));
                None
            }
        });
    let ns = rc.meta.ns();
    let gateways = gateways
        .iter()
        .map(|g| match g.split_once('/') {
            Some(_) => g.clone(),
            None => format!("{ns}/{g}"),
        })
        .collect();
    L4Match {
        sni,
        port,
        gateways,
    }
}

fn l4_route(hostname: HostPattern, obj: &str, r: &L4Rule) -> ir::L4Route {
    ir::L4Route {
        hostname,
        route: obj.to_string(),
        backends: r.backends.clone(),
        total_weight: r.backends.iter().map(|b| b.weight).sum(),
    }
}

/// The first `tcp[]` entry with a match for the listener (port, gateways) serves it.
pub(super) fn add_tcp(
    l: &ListenerInfo,
    tcp: &[L4Rule],
    obj: &str,
    gateways: &mut Gateways,
    f: &mut Findings,
) {
    let Some(r) = tcp.iter().find(|r| r.matches_for(l).next().is_some()) else {
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
    for r in tls {
        for sni in r.matches_for(l).flat_map(|m| &m.sni) {
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
