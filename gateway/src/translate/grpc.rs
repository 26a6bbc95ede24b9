//! GRPCRoute: each rule's service/method matches become path matches on
//! `/<service>/<method>` (how gRPC names a call over HTTP/2), so a GRPCRoute compiles
//! through the same rules, filters and backends as an HTTPRoute; its backends always
//! speak HTTP/2.

use super::rules::GrpcChars;
use crate::api::gateway_api::{
    GrpcMethodMatch, GrpcRoute, GrpcRouteMatch, HttpPathMatch, HttpRoute, HttpRouteMatch,
    HttpRouteRule, HttpRouteSpec,
};

/// The HTTPRoute shape of a GRPCRoute, or the first invalid match (`rule i match j: why`).
pub fn as_http_route(route: &GrpcRoute) -> Result<HttpRoute, String> {
    let mut rules = Vec::new();
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let mut matches = Vec::new();
        for (mi, m) in rule.matches.iter().enumerate() {
            let path = match &m.method {
                Some(method) => {
                    Some(path_match(method).map_err(|e| format!("rule {ri} match {mi}: {e}"))?)
                }
                None => None,
            };
            matches.push(HttpRouteMatch {
                path,
                headers: m.headers.clone(),
                ..Default::default()
            });
        }
        rules.push(HttpRouteRule {
            name: rule.name.clone(),
            matches,
            filters: rule.filters.clone(),
            backend_refs: rule.backend_refs.clone(),
            timeouts: None,
            retry: None,
            unsupported: rule.unsupported.clone(),
        });
    }
    let spec = HttpRouteSpec {
        parent_refs: route.spec.parent_refs.clone(),
        hostnames: route.spec.hostnames.clone(),
        rules,
        unsupported: route.spec.unsupported.clone(),
    };
    Ok(HttpRoute {
        metadata: route.metadata.clone(),
        spec,
    })
}

/// The service and method characters of each match, by rule then match: what ranks
/// GRPCRoute matches (GRPCRouteRule.matches), which their compiled paths do not show.
pub fn match_chars(route: &GrpcRoute) -> Vec<Vec<GrpcChars>> {
    let chars = |m: &GrpcRouteMatch| {
        let len = |s: Option<&String>| s.map_or(0, |s| s.chars().count());
        let mm = m.method.as_ref();
        let service = len(mm.and_then(|mm| mm.service.as_ref()));
        (service, len(mm.and_then(|mm| mm.method.as_ref())))
    };
    let rules = route.spec.rules.iter();
    rules
        .map(|r| r.matches.iter().map(chars).collect())
        .collect()
}

fn path_match(m: &GrpcMethodMatch) -> Result<HttpPathMatch, String> {
    let (service, method) = (m.service.as_deref(), m.method.as_deref());
    if service.is_none() && method.is_none() {
        return Err("method match needs a service or a method".into());
    }
    let (kind, value) = match m.kind.as_deref().unwrap_or("Exact") {
        "Exact" => {
            for v in [service, method].into_iter().flatten() {
                if v.is_empty() || v.contains('/') {
                    return Err(format!("{v:?} is not a gRPC service or method name"));
                }
            }
            match (service, method) {
                (Some(s), Some(me)) => ("Exact", format!("/{s}/{me}")),
                (Some(s), None) => ("PathPrefix", format!("/{s}")),
                (None, Some(me)) => ("RegularExpression", format!("/[^/]+/{}", regex::escape(me))),
                (None, None) => unreachable!("checked above"),
            }
        }
        // Each expression matches its own part: grouped, so a `|` in one stays in it.
        "RegularExpression" => (
            "RegularExpression",
            format!(
                "/(?:{})/(?:{})",
                service.unwrap_or("[^/]+"),
                method.unwrap_or("[^/]+")
            ),
        ),
        other => {
            return Err(format!(
                "method type {other:?} is not one of Exact, RegularExpression"
            ));
        }
    };
    Ok(HttpPathMatch {
        kind: Some(kind.into()),
        value: Some(value),
    })
}

#[cfg(test)]
mod tests {
    use crate::providers::file::parse_str;

    #[test]
    fn grpc_matches_rank_by_service_then_method_characters() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
            metadata: {name: gw, namespace: default}\n\
            spec: {listeners: [{name: http, port: 8080, protocol: HTTP}]}\n---\n\
            apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n\
            metadata: {name: api, namespace: default}\n\
            spec: {parentRefs: [{name: gw}], rules: [\
            {matches: [{method: {method: Get}}]}, \
            {matches: [{method: {service: pkg.Api}}]}, \
            {matches: [{method: {service: pkg.Api, method: Get}}]}, \
            {matches: [{method: {type: RegularExpression, service: pkg.Ap., method: G.t}}]}]}\n";
        let out = super::super::translate(&parse_str(yaml).unwrap(), &Default::default());
        assert_eq!(out.errors, Vec::<String>::new());
        let vh = &out.config.ports[&8080].listeners[0].virtual_hosts[0];
        let order: Vec<usize> = vh.routes.iter().map(|e| e.rule.index).collect();
        // Service and method (7, 3), regex service and method (7, 3) but the later rule,
        // service only (7, 0), method only (0, 3): a call to /pkg.Api/Get that the
        // service-only and method-only rules both match goes to the service-only one.
        assert_eq!(order, [2, 3, 1, 0]);
    }
}
