//! HTTPRoute rules: matches (validated), filters, backends, timeouts, and Gateway API
//! precedence between matches.

use std::sync::Arc;
use std::time::Duration;

use super::{Ctx, Findings, backends, filters, policies};
use crate::api::gateway_api::{HttpRouteMatch, HttpRouteRule, HttpValueMatch, ObjectMeta};
use crate::ir::{self, PathMatch, PathModifier, RouteMatch, ValueMatch};

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A route entry waiting to be sorted into its virtual host.
#[derive(Debug)]
pub struct Pending {
    /// Precedence (smaller first).
    pub key: PrecedenceKey,
    /// The entry.
    pub entry: ir::RouteEntry,
}

/// Gateway API precedence: exact path, then longest prefix (regex between the two),
/// method, most headers, most query params, oldest route, name, rule order. A GRPCRoute
/// match ranks by service characters (as the prefix `/<service>`), then method
/// characters (the third field, 0 for HTTPRoutes), then headers (see [`precedence`]).
pub type PrecedenceKey = (
    u8,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<bool>,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
    // Creation time; a route without one sorts first.
    Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    Arc<str>,
    usize,
    usize,
);

/// Characters of a GRPCRoute match's service and method (0 for one not set).
pub type GrpcChars = (usize, usize);

/// The precedence key of match `mi` of rule `rule` of a route (`key`: its
/// `namespace/name`, shared by its entries); `grpc`: a GRPCRoute match's characters.
pub fn precedence(
    m: &RouteMatch,
    meta: &ObjectMeta,
    key: &Arc<str>,
    (rule, mi): (usize, usize),
    grpc: Option<GrpcChars>,
) -> PrecedenceKey {
    use std::cmp::Reverse;
    let (rank, len, method_chars) = match (grpc, &m.path) {
        (Some(chars), _) => grpc_rank(chars),
        (None, PathMatch::Exact(p)) => (0, p.len(), 0),
        (None, PathMatch::RegularExpression(r)) => (1, r.len(), 0),
        (
            None,
            PathMatch::PathPrefix(p) | PathMatch::Prefix(p) | PathMatch::PrefixIgnoreCase(p),
        ) => (2, p.len(), 0),
    };
    (
        rank,
        Reverse(len),
        Reverse(method_chars),
        Reverse(m.method.is_some()),
        Reverse(m.headers.len()),
        Reverse(m.query_params.len()),
        meta.creation_timestamp.clone(),
        key.clone(),
        rule,
        mi,
    )
}

/// A GRPCRoute match's rank, length and method characters. GRPCRouteRule.matches ranks
/// by service characters, then method characters; the compiled path (exact, prefix or
/// expression, by which of the two are set) would rank a method-only match over a
/// service-only one. So it ranks as the prefix `/<service>`: among GRPCRoutes by service
/// characters, and next to HTTPRoutes on one host (precedence the spec leaves to the
/// implementation) as its calls' paths start.
fn grpc_rank((service, method): GrpcChars) -> (u8, usize, usize) {
    let len = if service == 0 { 0 } else { service + 1 };
    (2, len, method)
}

/// Compiles rule `ri` of the route whose `namespace/name` is `key` (shared by its
/// rules); `None` (with errors recorded) when it is invalid.
pub fn compile_rule(
    rc: &backends::RuleCtx<'_>,
    key: &Arc<str>,
    ri: usize,
    rule: &HttpRouteRule,
    f: &mut Findings,
) -> Option<(Arc<ir::Rule>, Vec<RouteMatch>)> {
    let ctx = Ctx::Rule {
        kind: rc.kind,
        key,
        index: ri,
    };
    let before = f.errors.len();
    f.unsupported(&ctx, &rule.unsupported);
    let default_match = [HttpRouteMatch::default()];
    let src_matches = if rule.matches.is_empty() {
        &default_match[..]
    } else {
        &rule.matches[..]
    };
    let mut matches = Vec::with_capacity(src_matches.len());
    for (mi, m) in src_matches.iter().enumerate() {
        matches.extend(compile_match(m, &Ctx::Match(&ctx, mi), &mut f.errors));
    }
    let mut filters = filters::compile_filters(rc, &rule.filters, &ctx, f);
    let refused = f.refused_filter.take();
    check_filter_combinations(rule, &filters, &matches, &ctx, &mut f.errors);
    let mut backends = backends::compile_backend_refs(rc, &rule.backend_refs, &ctx, f);
    if let Some(why) = refused {
        // Every request of the rule is answered 500, as for a backendRef that does not
        // resolve; the rule's other filters have nothing left to act on.
        filters = ir::Filters::default();
        backends = vec![ir::Backend {
            name: "ExtensionRef".into(),
            weight: 1,
            http2: false,
            target: ir::BackendTarget::Unresolvable(why),
            filters: ir::Filters::default(),
            policy: None,
            service_host: None,
            subset: None,
        }];
    }
    let total_weight = backends.iter().map(|b| b.weight).sum();
    let (request_timeout, backend_request_timeout) = timeouts(rule, &ctx, &mut f.errors);
    let retry = rule
        .retry
        .as_ref()
        .and_then(|r| policies::retry::compile(r, &ctx.to_string(), rc.kind, f));
    if f.errors.len() > before {
        return None;
    }
    let rule = ir::Rule {
        id: rule_id(key, ri),
        route: key.clone(),
        index: ri,
        filters,
        backends,
        total_weight,
        request_timeout,
        backend_request_timeout,
        retry,
        rate_limit: rc.rate_limit.clone(),
    };
    Some((Arc::new(rule), matches))
}

/// `namespace/name/<rule index>`: written once into a buffer of the right size, then
/// shared (the data plane's rule and every request's record hold it).
fn rule_id(key: &str, ri: usize) -> Arc<str> {
    use std::fmt::Write;
    let mut id = String::with_capacity(key.len() + 4);
    let _ = write!(id, "{key}/{ri}");
    id.as_str().into()
}

fn check_filter_combinations(
    rule: &HttpRouteRule,
    filters: &ir::Filters,
    matches: &[RouteMatch],
    ctx: &Ctx<'_>,
    errors: &mut Vec<String>,
) {
    let prefix_rewrite = matches!(
        filters.rewrite.as_ref().and_then(|r| r.path.as_ref()),
        Some(PathModifier::ReplacePrefixMatch(_))
    ) || matches!(
        filters.redirect.as_ref().and_then(|r| r.path.as_ref()),
        Some(PathModifier::ReplacePrefixMatch(_))
    );
    if prefix_rewrite
        && matches
            .iter()
            .any(|m| !matches!(m.path, PathMatch::PathPrefix(_)))
    {
        errors.push(format!(
            "{ctx}: ReplacePrefixMatch needs every match of the rule to be a PathPrefix match"
        ));
    }
    if filters.redirect.is_some() && filters.rewrite.is_some() {
        errors.push(format!(
            "{ctx}: filters RequestRedirect and URLRewrite cannot be used together"
        ));
    }
    if filters.redirect.is_some() && !rule.backend_refs.is_empty() {
        errors.push(format!(
            "{ctx}: a rule with a RequestRedirect filter cannot have backendRefs"
        ));
    }
}

fn timeouts(
    rule: &HttpRouteRule,
    ctx: &Ctx<'_>,
    errors: &mut Vec<String>,
) -> (Option<Duration>, Option<Duration>) {
    let Some(t) = &rule.timeouts else {
        return (None, None);
    };
    let request = parse_timeout(t.request.as_deref(), ctx, "timeouts.request", errors);
    let backend = parse_timeout(
        t.backend_request.as_deref(),
        ctx,
        "timeouts.backendRequest",
        errors,
    );
    if let (Some(r), Some(b)) = (request, backend)
        && b > r
    {
        errors.push(format!(
            "{ctx}: timeouts.backendRequest must not be longer than timeouts.request"
        ));
    }
    (request, backend)
}

fn parse_timeout(
    v: Option<&str>,
    ctx: &Ctx<'_>,
    field: &str,
    errors: &mut Vec<String>,
) -> Option<Duration> {
    let v = v?;
    // HTTPRouteTimeouts are GEP-2257 durations (`1h30m`, `250ms`), not humantime's wider set.
    match super::policies::retry::parse_gateway_duration(v) {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None => {
            errors.push(format!(
                "{ctx}: {field} {v:?} is not a Gateway API duration (GEP-2257: 1 to 4 parts \
                 of up to 5 digits with unit h, m, s or ms, such as 1m30s)"
            ));
            None
        }
    }
}

fn compile_path(m: &HttpRouteMatch, ctx: &Ctx<'_>, errors: &mut Vec<String>) -> Option<PathMatch> {
    let (kind, value) = match &m.path {
        Some(p) => (
            p.kind.as_deref().unwrap_or("PathPrefix"),
            p.value.as_deref().unwrap_or("/"),
        ),
        None => ("PathPrefix", "/"),
    };
    let path = match kind {
        "Exact" | "PathPrefix" if !value.starts_with('/') => {
            errors.push(format!("{ctx}: path value {value:?} must start with \"/\""));
            return None;
        }
        "Exact" => PathMatch::Exact(value.to_string()),
        "PathPrefix" => PathMatch::PathPrefix(value.trim_end_matches('/').to_string()),
        "RegularExpression" => match check_regex(value) {
            Ok(()) => PathMatch::RegularExpression(value.to_string()),
            Err(e) => {
                errors.push(format!("{ctx}: path regular expression {value:?}: {e}"));
                return None;
            }
        },
        other => {
            errors.push(format!(
                "{ctx}: path type {other:?} is not one of Exact, PathPrefix, RegularExpression"
            ));
            return None;
        }
    };
    Some(path)
}

fn compile_match(
    m: &HttpRouteMatch,
    ctx: &Ctx<'_>,
    errors: &mut Vec<String>,
) -> Option<RouteMatch> {
    let before = errors.len();
    let path = compile_path(m, ctx, errors);
    let mut headers: Vec<ir::HeaderMatch> = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        // HTTPHeaderMatch.name: only the first entry of an equivalent (case-insensitive)
        // name is considered; later ones MUST be ignored.
        if headers.iter().any(|o| o.name.eq_ignore_ascii_case(&h.name)) {
            continue;
        }
        let hctx = Ctx::Item(ctx, "headers", i);
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            errors.push(format!("{hctx}: {:?} is not a valid header name", h.name));
            continue;
        }
        if let Some(value) = value_match(h, &hctx, errors) {
            headers.push(ir::HeaderMatch {
                name: h.name.to_ascii_lowercase(),
                value,
            });
        }
    }
    let mut query_params: Vec<ir::QueryMatch> = Vec::new();
    for (i, q) in m.query_params.iter().enumerate() {
        // HTTPQueryParamMatch.name: the same, but names are equivalent only when equal
        // (an exact string match).
        if query_params.iter().any(|o| o.name == q.name) {
            continue;
        }
        let qctx = Ctx::Item(ctx, "queryParams", i);
        if let Some(value) = value_match(q, &qctx, errors) {
            query_params.push(ir::QueryMatch {
                name: q.name.clone(),
                value,
            });
        }
    }
    let method = match &m.method {
        Some(mth) if HTTP_METHODS.contains(&mth.as_str()) => Some(mth.clone()),
        Some(mth) => {
            errors.push(format!(
                "{ctx}: method {mth:?} is not one of {}",
                HTTP_METHODS.join(", ")
            ));
            None
        }
        None => None,
    };
    if errors.len() > before {
        return None;
    }
    Some(RouteMatch {
        path: path?,
        headers,
        query_params,
        method,
    })
}

fn value_match(
    m: &HttpValueMatch,
    ctx: &dyn std::fmt::Display,
    errors: &mut Vec<String>,
) -> Option<ValueMatch> {
    match m.kind.as_deref().unwrap_or("Exact") {
        "Exact" => Some(ValueMatch::Exact(m.value.clone())),
        "RegularExpression" => match check_regex(&m.value) {
            Ok(()) => Some(ValueMatch::RegularExpression(m.value.clone())),
            Err(e) => {
                errors.push(format!("{ctx}: regular expression {:?}: {e}", m.value));
                None
            }
        },
        other => {
            errors.push(format!(
                "{ctx}: type {other:?} is not one of Exact, RegularExpression"
            ));
            None
        }
    }
}

/// Checks that an expression compiles; the error is the parser's one-line summary.
fn check_regex(re: &str) -> Result<(), String> {
    match regex::Regex::new(re) {
        Ok(_) => Ok(()),
        Err(e) => {
            let msg = e.to_string();
            let last = msg.lines().last().unwrap_or_default().trim();
            Err(last.trim_start_matches("error: ").to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{RouteEntry, ValueMatch};
    use crate::providers::file::parse_str;

    /// The entries of the one virtual host of an HTTPRoute `default/web` with `rules`.
    fn routes(rules: &str) -> Vec<RouteEntry> {
        let yaml = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: gw, namespace: default}}\n\
             spec: {{listeners: [{{name: http, port: 8080, protocol: HTTP}}]}}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: web, namespace: default}}\n\
             spec: {{parentRefs: [{{name: gw}}], rules: {rules}}}\n"
        );
        let mut out = super::super::translate(&parse_str(&yaml).unwrap(), &Default::default());
        assert_eq!(out.errors, Vec::<String>::new());
        let l = out.config.ports.get_mut(&8080).unwrap().listeners.remove(0);
        l.virtual_hosts.into_iter().next().unwrap().routes
    }

    fn exact(v: &ValueMatch) -> &str {
        match v {
            ValueMatch::Exact(v) => v,
            ValueMatch::RegularExpression(_) => panic!("not an exact match"),
        }
    }

    #[test]
    fn later_header_and_query_matches_of_an_equivalent_name_are_ignored() {
        let routes = routes(
            "[{matches: [{headers: [{name: X-Env, value: a}, {name: x-env, value: b}], \
             queryParams: [{name: q, value: '1'}, {name: Q, value: '2'}, {name: q, value: '3'}]}]}]",
        );
        let m = &routes[0].matcher;
        let headers: Vec<_> = m
            .headers
            .iter()
            .map(|h| (&*h.name, exact(&h.value)))
            .collect();
        assert_eq!(headers, [("x-env", "a")]);
        // Query param names are equivalent only when equal (an exact string match).
        let query: Vec<_> = m
            .query_params
            .iter()
            .map(|q| (&*q.name, exact(&q.value)))
            .collect();
        assert_eq!(query, [("q", "1"), ("Q", "2")]);
    }

    #[test]
    fn ignored_header_matches_do_not_count_for_precedence() {
        // Rule 0 has one header match once the repeated name is ignored; rule 1 has two.
        let routes = routes(
            "[{matches: [{headers: [{name: X-Env, value: a}, {name: x-env, value: b}]}]}, \
             {matches: [{headers: [{name: X-Env, value: a}, {name: X-Other, value: c}]}]}]",
        );
        let order: Vec<usize> = routes.iter().map(|e| e.rule.index).collect();
        assert_eq!(order, [1, 0]);
    }
}
