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
        attach_route(snap, index, opts, "HTTPRoute", route, gateways, f);
    }
    for grpc in &snap.grpc_routes {
        match super::grpc::as_http_route(grpc) {
            Ok(route) => attach_route(snap, index, opts, "GRPCRoute", &route, gateways, f),
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
    kind: &'static str,
    route: &HttpRoute,
    gateways: &mut Gateways,
    f: &mut Findings,
) {
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
    let mut compiled = Vec::new();
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
        };
        if let Some(r) = rules::compile_rule(&rc, &order_key, ri, rule, f) {
            compiled.push(r);
        }
    }
    let unresolved = std::mem::take(&mut f.unresolved);
    // A route with an invalid field is left out whole: serving part of what its author
    // wrote could send traffic where they did not mean it to go.
    let invalid = f.errors.get(errors_before).cloned();
    let attached = parents(
        snap,
        route,
        gateways,
        (kind, &obj),
        invalid.as_deref(),
        &unresolved,
        f,
    );
    // Two parentRefs (or two hostnames) can select one listener and host: attach once
    // (with a single pair, as nearly always, there is nothing to compare).
    let dedup = attached.len() * hostnames.len() > 1;
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
        f.report.attach(&["Gateway ", &l.gateway].concat(), &l.name);
    }
    let any_host = !targets.is_empty();
    add_pending(gateways, targets, compiled, &route.metadata, &order_key);
    if invalid.is_none() && !any_host {
        f.warnings.push(format!(
            "{obj}: no hostname intersects the hostnames of its parent listeners; not attached"
        ));
    }
}

/// A listener (port, `namespace/gateway/listener`) and a hostname a route attaches to.
type Target = ((u16, String), HostPattern);

/// Adds a route's compiled rules to each (listener, host) it attaches to as pending
/// entries with their precedence keys (`order_key`: the route's `namespace/name`).
fn add_pending(
    gateways: &mut Gateways,
    targets: Vec<Target>,
    mut compiled: Vec<(Arc<ir::Rule>, Vec<ir::RouteMatch>)>,
    meta: &ObjectMeta,
    order_key: &Arc<str>,
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
                vh.1.push(Pending {
                    key: rules::precedence(&m, meta, order_key, rule.index, mi),
                    entry: ir::RouteEntry {
                        matcher: m,
                        rule: rule.clone(),
                    },
                });
            }
        }
    }
}

/// The listeners each parentRef selects, with `Accepted` and `ResolvedRefs` per parent.
/// `invalid` (the route's first error) refuses every parent.
pub(super) fn parents(
    snap: &Snapshot,
    route: &HttpRoute,
    gateways: &Gateways,
    (kind, obj): (&str, &str),
    invalid: Option<&str>,
    unresolved: &[(Reason, String)],
    f: &mut Findings,
) -> Vec<Arc<ListenerInfo>> {
    let mut attached = Vec::new();
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
        let accepted = match invalid {
            Some(e) => Err((Reason::UnsupportedValue, e.to_string())),
            None => parent_listeners(snap, route, kind, gateways, p, &gw, &pctx),
        };
        let accepted = match accepted {
            Ok(ls) => {
                attached.extend(ls);
                ok(C::Accepted, Reason::Accepted)
            }
            Err((reason, msg)) => {
                if invalid.is_none() {
                    f.errors.push(msg.clone());
                }
                failed(C::Accepted, reason, msg)
            }
        };
        let parent_key = match &p.section_name {
            Some(s) => [&gw, "/", s].concat(),
            None => gw,
        };
        f.report
            .parent_conditions(obj, &parent_key, [accepted, resolved.clone()]);
    }
    attached
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
