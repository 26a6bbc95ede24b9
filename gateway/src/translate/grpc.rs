//! GRPCRoute: each rule's service/method matches become path matches on
//! `/<service>/<method>` (how gRPC names a call over HTTP/2), so a GRPCRoute compiles
//! through the same rules, filters and backends as an HTTPRoute; its backends always
//! speak HTTP/2.

use crate::api::gateway_api::{
    GrpcMethodMatch, GrpcRoute, HttpPathMatch, HttpRoute, HttpRouteMatch, HttpRouteRule,
    HttpRouteSpec,
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
        "RegularExpression" => (
            "RegularExpression",
            format!(
                "/{}/{}",
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
