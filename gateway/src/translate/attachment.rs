//! Routes -> listeners: parentRefs, allowedRoutes, and hostname intersection. Each
//! attached (listener, hostname) gets the route's rules as pending entries.

use std::collections::HashSet;
use std::sync::Arc;

use super::listeners::{AllowedFrom, Gateways, ListenerInfo, validate_hostname};
use super::rules::{self, Pending};
use super::status::{ConditionType as C, Reason, failed, ok};
use super::{Findings, Index, TranslateOptions};
use crate::api::gateway_api::{
    HttpRoute, HttpRouteRule, LabelSelector, ObjectMeta, ParentReference,
};
use crate::api::{ObjectKey, Snapshot};
use crate::ir::{self, HostPattern};

/// Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The kind of a route being attached. A GRPCRoute carries the (service, method)
/// characters of its matches, by rule then match: they, not its compiled paths, rank it.
#[derive(Clone, Copy)]
enum RouteKind<'a> {
    Http,
    Grpc(&'a [Vec<rules::GrpcChars>]),
}

impl RouteKind<'_> {
    fn name(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc(_) => "GRPCRoute",
        }
    }
}

/// Attaches every HTTPRoute and GRPCRoute to its listeners, oldest route first so that
/// precedence ties go to the oldest.
pub fn attach_routes(
    snap: &Snapshot,
    index: &Index<'_>,
    opts: &TranslateOptions,
    gateways: &mut Gateways,
    f: &mut Findings,
) {
    for route in &snap.http_routes {
        attach_route(snap, index, opts, RouteKind::Http, route, gateways, f);
    }
    for grpc in &snap.grpc_routes {
        match super::grpc::as_http_route(grpc) {
            Ok(route) => {
                let chars = super::grpc::match_chars(grpc);
                let kind = RouteKind::Grpc(&chars);
                attach_route(snap, index, opts, kind, &route, gateways, f);
            }
            Err(e) => {
                let obj = format!("GRPCRoute {}", grpc.metadata.key());
                let msg = format!("{obj} {e}");
                for p in &grpc.spec.parent_refs {
                    let gw = p.namespace.as_deref().unwrap_or(grpc.metadata.ns());
                    let key = format!("{gw}/{}", p.name);
                    let c = failed(C::Accepted, Reason::UnsupportedValue, msg.clone());
                    f.report.parent_condition(&obj, &key, c);
                }
                f.errors.push(msg);
            }
        }
    }
}

fn attach_route(
    snap: &Snapshot,
    index: &Index<'_>,
    opts: &TranslateOptions,
    route_kind: RouteKind<'_>,
    route: &HttpRoute,
    gateways: &mut Gateways,
    f: &mut Findings,
) {
    let kind = route_kind.name();
    let key = route.metadata.key();
    let obj = [kind, " ", &key].concat();
    // The route's `namespace/name`, shared by its rules and their precedence keys.
    let order_key: Arc<str> = key.into();
    let errors_before = f.errors.len();
    if !route.spec.unsupported.is_empty() {
        f.unsupported(&format!("{obj} spec"), &route.spec.unsupported);
    }
    let mut hostnames = Vec::new();
    for (i, h) in route.spec.hostnames.iter().enumerate() {
        match validate_hostname(h) {
            Ok(p) => hostnames.push(p),
            Err(e) => f.errors.push(format!("{obj} hostnames[{i}] {h:?}: {e}")),
        }
    }
    if hostnames.is_empty() {
        hostnames.push(HostPattern::Any);
    }
    let default_rules = [HttpRouteRule::default()];
    let src_rules = if route.spec.rules.is_empty() {
        &default_rules[..]
    } else {
        &route.spec.rules[..]
    };
    f.unresolved.clear();
    // Errors so far are the route's own (spec, hostnames): they refuse it whole.
    let route_errors = f.errors.len();
    let mut compiled = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    let rate_limit = index
        .rate_limits
        .for_route(kind, &route.metadata, &route.spec.parent_refs);
    for (ri, rule) in src_rules.iter().enumerate() {
        let rc = super::backends::RuleCtx {
            snap,
            index,
            meta: &route.metadata,
            opts,
            kind,
            rate_limit: rate_limit.clone(),
            l4: false,
            server_port: None,
        };
        let before = f.errors.len();
        match rules::compile_rule(&rc, &order_key, ri, rule, f) {
            Some(r) => compiled.push(r),
            None => dropped.push(format!("Dropped Rule {ri}: {}", f.errors[before])),
        }
    }
    let unresolved = std::mem::take(&mut f.unresolved);
    // An invalid route field refuses the route whole, as do rules that are all invalid;
    // invalid rules beside valid ones are dropped and the rest served, with
    // PartiallyInvalid (the spec's "Dropped Rule" approach).
    let invalid = f.errors[errors_before..route_errors]
        .first()
        .or((compiled.is_empty())
            .then(|| &f.errors[route_errors..])
            .and_then(|e| e.first()))
        .cloned();
    let partially = (invalid.is_none() && !dropped.is_empty()).then(|| dropped.join("; "));
    let checked = Checked {
        hostnames: &hostnames,
        invalid: invalid.as_deref(),
        partially: partially.as_deref(),
        unresolved: &unresolved,
    };
    let attached = parents(snap, route, gateways, (kind, &obj), &checked, f);
    // `parents` gives each listener once, but two hostnames can intersect one listener
    // in one host: attach once (with a single hostname, as nearly always, there is
    // nothing to compare).
    let dedup = hostnames.len() > 1;
    let mut seen = HashSet::new();
    let mut targets: Vec<Target> = Vec::new();
    for l in &attached {
        let listener = (l.port, l.full_name());
        for rh in &hostnames {
            if let Some(host) = intersect(&l.hostname, rh)
                && (!dedup || seen.insert((listener.clone(), host.to_string())))
            {
                targets.push((listener.clone(), host));
            }
        }
    }
    let grpc = match route_kind {
        RouteKind::Grpc(chars) => Some(chars),
        RouteKind::Http => None,
    };
    let route_ref = (&route.metadata, &order_key);
    add_pending(gateways, targets, compiled, route_ref, grpc);
}

/// A listener (port, `namespace/gateway/listener`) and a hostname a route attaches to.
type Target = ((u16, String), HostPattern);

/// Adds a route's compiled rules to each (listener, host) it attaches to as pending
/// entries with their precedence keys (`order_key`: the route's `namespace/name`; `grpc`:
/// a GRPCRoute's match characters, by rule then match).
fn add_pending(
    gateways: &mut Gateways,
    targets: Vec<Target>,
    mut compiled: Vec<(Arc<ir::Rule>, Vec<ir::RouteMatch>)>,
    (meta, order_key): (&ObjectMeta, &Arc<str>),
    grpc: Option<&[Vec<rules::GrpcChars>]>,
) {
    let entries: usize = compiled.iter().map(|(_, m)| m.len()).sum();
    let last = targets.len().saturating_sub(1);
    for (ti, (listener, host)) in targets.into_iter().enumerate() {
        let vh = gateways
            .pending
            .entry(listener)
            .or_default()
            .entry(host.to_string())
            .or_insert_with(|| (host, Vec::new()));
        vh.1.reserve(entries);
        // The last (usually the only) attachment takes the matches, the others copy them.
        let these = if ti == last {
            std::mem::take(&mut compiled)
        } else {
            compiled.clone()
        };
        for (rule, matches) in these {
            for (mi, m) in matches.into_iter().enumerate() {
                // A rule without matches has one (the default), which has no characters.
                let chars = grpc.map(|g| {
                    let rule_chars = g.get(rule.index).and_then(|r| r.get(mi));
                    rule_chars.copied().unwrap_or_default()
                });
                vh.1.push(Pending {
                    key: rules::precedence(&m, meta, order_key, (rule.index, mi), chars),
                    entry: ir::RouteEntry {
                        matcher: m,
                        rule: rule.clone(),
                        rank: 0,
                    },
                });
            }
        }
    }
}

/// What translating a route found before its parents are checked.
pub(super) struct Checked<'a> {
    /// Its hostnames (`*` when it has none).
    pub hostnames: &'a [HostPattern],
    /// Its first error: it refuses every parent.
    pub invalid: Option<&'a str>,
    /// Rules dropped beside served ones (`Dropped Rule <i>: <why>`, joined): the
    /// parents that accept it also get `PartiallyInvalid`.
    pub partially: Option<&'a str>,
    /// Its unresolved references (`ResolvedRefs=False` with the first).
    pub unresolved: &'a [(Reason, String)],
}

/// The listeners the route attaches to through its parentRefs (each once), counted in
/// their `attachedRoutes`, with `Accepted` and `ResolvedRefs` per parent.
pub(super) fn parents(
    snap: &Snapshot,
    route: &HttpRoute,
    gateways: &Gateways,
    (kind, obj): (&str, &str),
    checked: &Checked<'_>,
    f: &mut Findings,
) -> Vec<Arc<ListenerInfo>> {
    let Checked {
        hostnames,
        invalid,
        partially,
        unresolved,
    } = *checked;
    // Every listener the route attaches to, counted; served only when the route is valid.
    let mut counted: Vec<Arc<ListenerInfo>> = Vec::new();
    if route.spec.parent_refs.is_empty() {
        f.errors.push(format!("{obj}: parentRefs is empty"));
    }
    let resolved = match unresolved.first() {
        Some((reason, msg)) => failed(C::ResolvedRefs, *reason, msg.clone()),
        None => ok(C::ResolvedRefs, Reason::ResolvedRefs),
    };
    for (pi, p) in route.spec.parent_refs.iter().enumerate() {
        let pctx = super::Ctx::Item(&obj, "parentRefs", pi);
        let gw_ns = p.namespace.as_deref().unwrap_or(route.metadata.ns());
        let gw = [gw_ns, "/", &p.name].concat();
        let selected = parent_listeners(snap, route, kind, gateways, p, &gw, &pctx)
            .and_then(|ls| intersecting(ls, hostnames, &pctx, &gw));
        let accepted = match (selected, invalid) {
            (Ok(ls), invalid) => {
                for l in ls {
                    // Two parentRefs may select one listener: the route is one route there.
                    if !counted.iter().any(|a| Arc::ptr_eq(a, &l)) {
                        // attachedRoutes counts routes that attach "that may themselves
                        // have Accepted: false" (ListenerStatus): an invalid one too,
                        // though it is not served.
                        f.report.attach(&["Gateway ", &l.gateway].concat(), &l.name);
                        counted.push(l);
                    }
                }
                match invalid {
                    Some(e) => failed(C::Accepted, Reason::UnsupportedValue, e.to_string()),
                    None => ok(C::Accepted, Reason::Accepted),
                }
            }
            (Err(_), Some(e)) => failed(C::Accepted, Reason::UnsupportedValue, e.to_string()),
            (Err((reason, msg)), None) => {
                f.errors.push(msg.clone());
                failed(C::Accepted, reason, msg)
            }
        };
        let parent_key = match &p.section_name {
            Some(s) => [&gw, "/", s].concat(),
            None => gw,
        };
        let dropped = partially.filter(|_| accepted.status).map(|why| {
            let mut c = ok(C::PartiallyInvalid, Reason::UnsupportedValue);
            c.message = why.to_string();
            c
        });
        let conditions = [accepted, resolved.clone()].into_iter().chain(dropped);
        f.report.parent_conditions(obj, &parent_key, conditions);
    }
    if invalid.is_some() {
        counted.clear();
    }
    counted
}

fn parent_listeners(
    snap: &Snapshot,
    route: &HttpRoute,
    kind: &str,
    gateways: &Gateways,
    p: &ParentReference,
    gw: &str,
    pctx: &dyn std::fmt::Display,
) -> Result<Vec<Arc<ListenerInfo>>, (Reason, String)> {
    let group = p.group.as_deref().unwrap_or(GATEWAY_GROUP);
    let parent_kind = p.kind.as_deref().unwrap_or("Gateway");
    if group != GATEWAY_GROUP || parent_kind != "Gateway" {
        return Err((
            Reason::InvalidKind,
            format!("{pctx}: parent {group}/{parent_kind} is not supported (only Gateway)"),
        ));
    }
    if !gateways.names.contains(gw) {
        return Err((
            Reason::NoMatchingParent,
            format!("{pctx}: Gateway {gw} not found"),
        ));
    }
    let candidates: Vec<&Arc<ListenerInfo>> = gateways
        .listeners
        .iter()
        .chain(&gateways.unprogrammed)
        .filter(|l| l.gateway == gw)
        .filter(|l| p.section_name.as_ref().is_none_or(|s| *s == l.name))
        .filter(|l| p.port.is_none_or(|port| port == l.port))
        .collect();
    if candidates.is_empty() {
        return Err((
            Reason::NoMatchingParent,
            format!(
                "{pctx}: Gateway {gw} has no listener{}{}",
                p.section_name
                    .as_ref()
                    .map(|s| format!(" named {s:?}"))
                    .unwrap_or_default(),
                p.port.map(|p| format!(" on port {p}")).unwrap_or_default()
            ),
        ));
    }
    let route_ns = route.metadata.ns();
    if !candidates.iter().any(|l| l.kinds.contains(&kind)) {
        let serves: Vec<String> = candidates
            .iter()
            .map(|l| format!("{:?} serves {}", l.name, l.kinds.join(", ")))
            .collect();
        return Err((
            Reason::NotAllowedByListeners,
            format!(
                "{pctx}: no listener of Gateway {gw} serves {kind}s ({})",
                serves.join("; ")
            ),
        ));
    }
    let allowed: Vec<Arc<ListenerInfo>> = candidates
        .into_iter()
        .filter(|l| l.kinds.contains(&kind) && namespace_allowed(snap, l, route_ns))
        .cloned()
        .collect();
    if allowed.is_empty() {
        return Err((
            Reason::NotAllowedByListeners,
            format!(
                "{pctx}: no listener of Gateway {gw} allows {kind}s from namespace {route_ns:?} \
                 (listener allowedRoutes)"
            ),
        ));
    }
    Ok(allowed)
}

/// The listeners of `ls` sharing a hostname with the route (`hostnames`, `*` when it has
/// none). The spec: a route MUST NOT be accepted by a parent none of whose listeners'
/// hostnames it intersects, and it counts only on listeners it intersects.
fn intersecting(
    ls: Vec<Arc<ListenerInfo>>,
    hostnames: &[HostPattern],
    pctx: &dyn std::fmt::Display,
    gw: &str,
) -> Result<Vec<Arc<ListenerInfo>>, (Reason, String)> {
    let (matching, other): (Vec<_>, Vec<_>) = ls.into_iter().partition(|l| {
        hostnames
            .iter()
            .any(|h| intersect(&l.hostname, h).is_some())
    });
    if !matching.is_empty() {
        return Ok(matching);
    }
    let listeners: Vec<String> = other
        .iter()
        .map(|l| format!("{:?} {}", l.name, l.hostname))
        .collect();
    Err((
        Reason::NoMatchingListenerHostname,
        format!(
            "{pctx}: no hostname of the route intersects the hostname of a listener of \
             Gateway {gw} it selects ({})",
            listeners.join("; ")
        ),
    ))
}

/// Whether routes from `route_ns` may attach to `l`.
pub(super) fn namespace_allowed(snap: &Snapshot, l: &ListenerInfo, route_ns: &str) -> bool {
    match &l.allowed_from {
        AllowedFrom::All => true,
        AllowedFrom::Same => l.gateway.split('/').next() == Some(route_ns),
        AllowedFrom::Namespace(ns) => ns == route_ns,
        AllowedFrom::Selector(sel) => {
            let labels = snap
                .namespaces
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(route_ns))
                .and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default();
            selector_matches(sel, &labels)
        }
    }
}

/// Kubernetes label-selector semantics (an unknown operator matches nothing).
pub fn selector_matches(
    sel: &LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let eq = sel
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    eq && sel.match_expressions.iter().all(|e| {
        let v = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => v.is_some_and(|v| e.values.contains(v)),
            "NotIn" => v.is_none_or(|v| !e.values.contains(v)),
            "Exists" => v.is_some(),
            "DoesNotExist" => v.is_none(),
            _ => false,
        }
    })
}

/// Intersection of a listener hostname and a route hostname (Gateway API rules).
pub fn intersect(listener: &HostPattern, route: &HostPattern) -> Option<HostPattern> {
    use HostPattern::*;
    match (listener, route) {
        (Any, r) => Some(r.clone()),
        (l, Any) => Some(l.clone()),
        (Exact(l), Exact(r)) => (l == r).then(|| route.clone()),
        (Wildcard(_), Exact(r)) => listener.matches(r).then(|| route.clone()),
        (Exact(l), Wildcard(_)) => route.matches(l).then(|| listener.clone()),
        (Wildcard(ls), Wildcard(rs)) => {
            if rs.ends_with(ls.as_str()) {
                Some(route.clone())
            } else if ls.ends_with(rs.as_str()) {
                Some(listener.clone())
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::providers::file::parse_str;
    use crate::translate::status::{Condition, ConditionType as C, Reason, Report};

    /// Gateway `default/gw`: listener `a` for a.example.com, `b` for b.example.com.
    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
        metadata: {name: gw, namespace: default}\n\
        spec: {listeners: [{name: a, port: 8080, protocol: HTTP, hostname: a.example.com}, \
        {name: b, port: 8081, protocol: HTTP, hostname: b.example.com}]}\n";

    fn http_route(name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {name}, namespace: default}}\nspec: {spec}\n"
        )
    }

    fn report(yaml: &str) -> Report {
        super::super::translate(&parse_str(yaml).unwrap(), &Default::default()).status
    }

    fn accepted<'r>(r: &'r Report, obj: &str, parent: &str) -> &'r Condition {
        let conditions = &r.objects[obj].parents[parent];
        conditions.iter().find(|c| c.kind == C::Accepted).unwrap()
    }

    fn attached(r: &Report, listener: &str) -> u32 {
        r.objects["Gateway default/gw"].listeners[listener].attached_routes
    }

    #[test]
    fn a_parent_whose_listeners_share_no_hostname_with_the_route_does_not_accept_it() {
        let refs = "[{name: gw, sectionName: a}, {name: gw, sectionName: b}]";
        let spec = format!("{{parentRefs: {refs}, hostnames: [b.example.com]}}");
        let r = report(&[GATEWAY, &http_route("web", &spec)].concat());
        let a = accepted(&r, "HTTPRoute default/web", "default/gw/a");
        assert_eq!(
            (a.status, a.reason),
            (false, Reason::NoMatchingListenerHostname)
        );
        let b = accepted(&r, "HTTPRoute default/web", "default/gw/b");
        assert_eq!((b.status, b.reason), (true, Reason::Accepted));
    }

    #[test]
    fn attached_routes_counts_only_listeners_the_route_intersects() {
        let yaml = [
            GATEWAY,
            &http_route("b-only", "{parentRefs: [{name: gw}], hostnames: [b.example.com]}"),
            // No hostnames: intersects every listener.
            &http_route("any", "{parentRefs: [{name: gw}]}"),
            // Two parentRefs selecting listener b: one route there.
            &http_route("twice", "{parentRefs: [{name: gw}, {name: gw, sectionName: b}], hostnames: [b.example.com]}"),
        ]
        .concat();
        let r = report(&yaml);
        assert_eq!((attached(&r, "a"), attached(&r, "b")), (1, 3));
        let c = accepted(&r, "HTTPRoute default/b-only", "default/gw");
        assert_eq!((c.status, c.reason), (true, Reason::Accepted));
    }

    #[test]
    fn an_httproute_and_a_grpcroute_of_one_name_both_attach() {
        let route = |kind: &str, rule: &str| {
            format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\n\
                 metadata: {{name: api, namespace: default}}\n\
                 spec: {{parentRefs: [{{name: gw}}], hostnames: [api.example.com], rules: [{rule}]}}\n"
            )
        };
        let yaml = [
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: gw, namespace: default}\n\
             spec: {listeners: [{name: http, port: 8080, protocol: HTTP}]}\n",
            &route(
                "HTTPRoute",
                "{matches: [{path: {type: PathPrefix, value: /web}}]}",
            ),
            &route("GRPCRoute", "{matches: [{method: {service: pkg.Api}}]}"),
        ]
        .concat();
        let out = super::super::translate(&parse_str(&yaml).unwrap(), &Default::default());
        let vh = &out.config.ports[&8080].listeners[0].virtual_hosts[0];
        // One entry from each: before, the second was taken for a duplicate of the first.
        let ids: Vec<_> = vh.routes.iter().map(|e| &*e.rule.route).collect();
        assert_eq!(ids, ["default/api", "default/api"]);
    }
}
