//! TCPRoutes and TLSRoutes -> the connection routes of TCP and TLS listeners: parentRefs
//! and allowedRoutes as for HTTP routes (the same [`attachment`](super::attachment)
//! code), SNI hostnames intersected with the listener's, backends resolved like any
//! backendRef. A listener (TCP) or an SNI hostname (TLS) is served by one route: the
//! oldest, as Gateway API resolves conflicts; the others are told why in a warning.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::attachment::{self, intersect};
use super::backends::{self, RuleCtx};
use super::listeners::{Gateways, validate_hostname};
use super::{Findings, Index, TranslateOptions};
use crate::api::gateway_api::{HttpRoute, HttpRouteSpec, L4RouteRule, ObjectMeta, ParentReference};
use crate::api::{ObjectKey, Snapshot, Unsupported};
use crate::ir::{self, HostPattern};

/// Connection routes per (port, listener), then per SNI hostname.
pub type PendingL4 = BTreeMap<(u16, String), BTreeMap<String, ir::L4Route>>;

/// A TCPRoute or TLSRoute, as attachment needs it.
pub struct L4Source<'a> {
    /// `TCPRoute` or `TLSRoute` (or a dialect's kind).
    pub kind: &'static str,
    /// Its metadata.
    pub meta: &'a ObjectMeta,
    /// Its parents.
    pub parent_refs: &'a [ParentReference],
    /// SNI hostnames (TLSRoute).
    pub hostnames: &'a [String],
    /// Its rules.
    pub rules: &'a [L4RouteRule],
    /// Spec fields meshgate does not implement.
    pub unsupported: &'a Unsupported,
}

/// Attaches every TCPRoute and TLSRoute, oldest first.
pub fn attach_l4_routes(
    snap: &Snapshot,
    index: &Index<'_>,
    opts: &TranslateOptions,
    gateways: &mut Gateways,
    f: &mut Findings,
) {
    let mut sources: Vec<L4Source<'_>> = snap
        .tcp_routes
        .iter()
        .map(|r| L4Source {
            kind: "TCPRoute",
            meta: &r.metadata,
            parent_refs: &r.spec.parent_refs,
            hostnames: &[],
            rules: &r.spec.rules,
            unsupported: &r.spec.unsupported,
        })
        .chain(snap.tls_routes.iter().map(|r| L4Source {
            kind: "TLSRoute",
            meta: &r.metadata,
            parent_refs: &r.spec.parent_refs,
            hostnames: &r.spec.hostnames,
            rules: &r.spec.rules,
            unsupported: &r.spec.unsupported,
        }))
        .collect();
    sources.sort_by_key(|s| (s.meta.creation_timestamp.clone(), s.meta.key()));
    for s in &sources {
        attach(snap, index, opts, s, gateways, f);
    }
}

fn attach(
    snap: &Snapshot,
    index: &Index<'_>,
    opts: &TranslateOptions,
    src: &L4Source<'_>,
    gateways: &mut Gateways,
    f: &mut Findings,
) {
    let obj = format!("{} {}", src.kind, src.meta.key());
    let errors_before = f.errors.len();
    f.unsupported(&format!("{obj} spec"), src.unsupported);
    let hostnames = hostnames(src, &obj, f);
    f.unresolved.clear();
    let backends = rule_backends(snap, index, opts, src, &obj, f);
    let unresolved = std::mem::take(&mut f.unresolved);
    let invalid = f.errors.get(errors_before).cloned();
    // Attachment reads parentRefs and the namespace only; an HTTPRoute shell carries them.
    let shell = HttpRoute {
        metadata: src.meta.clone(),
        spec: HttpRouteSpec {
            parent_refs: src.parent_refs.to_vec(),
            ..Default::default()
        },
    };
    let checked = attachment::Checked {
        hostnames: &hostnames,
        invalid: invalid.as_deref(),
        partially: None,
        unresolved: &unresolved,
    };
    let parents = attachment::parents(snap, &shell, gateways, (src.kind, &obj), &checked, f);
    let backends = Arc::new(backends);
    let total_weight = backends.iter().map(|b| b.weight).sum();
    for l in parents {
        for rh in &hostnames {
            let Some(host) = intersect(&l.hostname, rh) else {
                continue;
            };
            let routes = gateways
                .l4_pending
                .entry((l.port, l.full_name()))
                .or_default();
            match routes.get(&host.to_string()) {
                Some(older) => f.warnings.push(format!(
                    "{obj}: listener {} host {host} is already served by the older {}; not \
                     attached there",
                    l.full_name(),
                    older.route
                )),
                None => {
                    routes.insert(
                        host.to_string(),
                        ir::L4Route {
                            hostname: host.clone(),
                            route: obj.clone(),
                            backends: backends.clone(),
                            total_weight,
                        },
                    );
                }
            }
        }
    }
}

/// The route's SNI hostnames (`*` when none: a TCPRoute, or a TLSRoute for any SNI).
fn hostnames(src: &L4Source<'_>, obj: &str, f: &mut Findings) -> Vec<HostPattern> {
    let mut out = Vec::new();
    for (i, h) in src.hostnames.iter().enumerate() {
        match validate_hostname(h) {
            Ok(p) => out.push(p),
            Err(e) => f.errors.push(format!("{obj} hostnames[{i}] {h:?}: {e}")),
        }
    }
    if out.is_empty() {
        out.push(HostPattern::Any);
    }
    out
}

/// The backends of the route's one rule.
fn rule_backends(
    snap: &Snapshot,
    index: &Index<'_>,
    opts: &TranslateOptions,
    src: &L4Source<'_>,
    obj: &str,
    f: &mut Findings,
) -> Vec<ir::Backend> {
    let rule = match src.rules {
        [rule] => rule,
        [] => {
            f.errors.push(format!("{obj}: rules is empty"));
            return Vec::new();
        }
        _ => {
            f.errors.push(format!(
                "{obj}: rules has {} entries; a connection is routed by listener and SNI only, \
                 so meshgate takes exactly one rule",
                src.rules.len()
            ));
            return Vec::new();
        }
    };
    let ctx = format!("{obj} rules[0]");
    f.unsupported(&ctx, &rule.unsupported);
    let rc = RuleCtx {
        snap,
        index,
        meta: src.meta,
        opts,
        kind: src.kind,
        rate_limit: None,
        l4: true,
        server_port: None,
    };
    let mut out = Vec::new();
    for (bi, b) in rule.backend_refs.iter().enumerate() {
        let bctx = format!("{ctx} backendRefs[{bi}]");
        f.unsupported(&bctx, &b.unsupported);
        out.extend(backends::backend(&rc, &b.as_http(), &bctx, f));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::providers::file::parse_str;
    use crate::translate::status::{ConditionType as C, Reason};

    #[test]
    fn a_tlsroute_whose_sni_hostnames_miss_the_listener_is_not_accepted_nor_counted() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
            metadata: {name: gw, namespace: default}\n\
            spec: {listeners: [{name: pass, port: 8443, protocol: TLS, \
            hostname: \"*.pass.example.com\", tls: {mode: Passthrough}}]}\n---\n\
            apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\n\
            metadata: {name: other, namespace: default}\n\
            spec: {parentRefs: [{name: gw}], hostnames: [a.other.example.com], \
            rules: [{backendRefs: [{name: echo, port: 9000}]}]}\n";
        let out = super::super::translate(&parse_str(yaml).unwrap(), &Default::default());
        let parent = &out.status.objects["TLSRoute default/other"].parents["default/gw"];
        let c = parent.iter().find(|c| c.kind == C::Accepted).unwrap();
        assert_eq!(
            (c.status, c.reason),
            (false, Reason::NoMatchingListenerHostname)
        );
        let gw = &out.status.objects["Gateway default/gw"];
        assert_eq!(gw.listeners["pass"].attached_routes, 0);
        assert!(out.config.ports[&8443].listeners[0].l4_routes.is_empty());
    }
}
