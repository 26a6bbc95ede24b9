//! The Gloo Edge dialect: `gateway.solo.io/v1` VirtualServices (with `gloo.solo.io/v1`
//! Upstreams) compiled into the same port table. They are served on the HTTP listeners
//! of `gateway.solo.io/v1` Gateways that select them, or, when there is none, on every
//! HTTP listener of the Gateway API Gateway this pod serves (as Gloo's default
//! gateway-proxy serves every VirtualService on 8080). Routes keep Gloo's order: first
//! match wins.

use std::sync::Arc;

use super::backends::RuleCtx;
use super::istio::virtual_service::{
    declaration_order, retry_on_codes, with_retried_failures, with_string_prefix_rewrite,
};
use super::listeners::{AllowedFrom, Gateways, ListenerInfo, validate_hostname};
use super::rules::{self, Pending};
use super::{Findings, Index, TranslateOptions};
use crate::api::gateway_api::{self as gapi, HttpBackendRef, HttpRouteRule, ObjectMeta};
use crate::api::gloo::{GlooDestination, GlooGateway, GlooVirtualService, Matcher, Route};
use crate::api::{ObjectKey, Snapshot};
use crate::ir::{self, HostPattern, PathMatch, Protocol, RouteMatch, ValueMatch};

/// The route kind Gloo listeners accept (and how Gloo VirtualServices are named).
pub const KIND: &str = "VirtualService.gateway.solo.io";

/// A listener serving Gloo VirtualServices, and which.
pub struct GlooListener {
    info: ListenerInfo,
    /// Only these `namespace/name`s (empty: all).
    names: Vec<String>,
    /// Only these namespaces (empty or `*`: all).
    namespaces: Vec<String>,
}

/// Compiles `gateway.solo.io` Gateways into HTTP listeners; with none, the served
/// Gateway API Gateway's HTTP listeners serve every Gloo VirtualService.
pub fn compile_gateways(
    snap: &Snapshot,
    out: &mut Gateways,
    f: &mut Findings,
) -> Vec<GlooListener> {
    if snap.gloo_gateways.is_empty() {
        let served = snap.gateways.first().map(|g| g.metadata.key());
        return out
            .listeners
            .iter()
            .filter(|l| Some(&l.gateway) == served.as_ref() && l.protocol == Protocol::Http)
            .map(|l| GlooListener {
                info: (**l).clone(),
                names: vec![],
                namespaces: vec![],
            })
            .collect();
    }
    let mut listeners = Vec::new();
    for gw in &snap.gloo_gateways {
        if let Some(l) = compile_gateway(gw, out, f) {
            listeners.push(l);
        }
    }
    listeners
}

fn compile_gateway(gw: &GlooGateway, out: &mut Gateways, f: &mut Findings) -> Option<GlooListener> {
    let obj = format!("Gateway.gateway.solo.io {}", gw.metadata.key());
    let before = f.errors.len();
    f.unsupported(&format!("{obj} spec"), &gw.spec.unsupported);
    if let Some(a) = gw.spec.bind_address.as_deref()
        && !matches!(a, "::" | "0.0.0.0")
    {
        f.errors.push(format!(
            "{obj} spec.bindAddress {a:?}: meshgate binds every address (--bind-address); only \"::\" and \"0.0.0.0\" are accepted"
        ));
    }
    if gw.spec.ssl {
        f.errors.push(format!("{obj} spec.ssl: TLS Gloo Gateways are not supported by meshgate (use a Gateway API HTTPS listener)"));
    }
    let http = gw.spec.http_gateway.clone().unwrap_or_default();
    f.unsupported(&format!("{obj} spec.httpGateway"), &http.unsupported);
    let port = u16::try_from(gw.spec.bind_port).ok().filter(|p| *p > 0);
    if port.is_none() {
        f.errors.push(format!(
            "{obj} spec.bindPort {} is not 1-65535",
            gw.spec.bind_port
        ));
    }
    if f.errors.len() > before {
        return None;
    }
    let port = port?;
    let info = ListenerInfo {
        gateway: gw.metadata.key(),
        name: "http".into(),
        port,
        declared_port: port,
        protocol: Protocol::Http,
        hostname: HostPattern::Any,
        allowed_from: AllowedFrom::All,
        kinds: vec![KIND],
    };
    if let Err((reason, msg)) = out.add(info.clone(), None) {
        f.errors.push(format!(
            "{obj} spec.bindPort: conflicted ({reason:?}): {msg}"
        ));
        return None;
    }
    let ns = gw.metadata.ns();
    Some(GlooListener {
        info,
        names: http
            .virtual_services
            .iter()
            .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(ns), r.name))
            .collect(),
        namespaces: http.virtual_service_namespaces.clone(),
    })
}

impl GlooListener {
    fn serves(&self, vs: &GlooVirtualService) -> bool {
        let key = vs.metadata.key();
        let ns = vs.metadata.ns();
        (self.names.is_empty() || self.names.contains(&key))
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == "*" || n == ns))
    }
}

/// Attaches every Gloo VirtualService, oldest first.
pub fn attach(
    snap: &Snapshot,
    index: &Index<'_>,
    opts: &TranslateOptions,
    listeners: &[GlooListener],
    gateways: &mut Gateways,
    f: &mut Findings,
) {
    let mut vss: Vec<&GlooVirtualService> = snap.gloo_virtual_services.iter().collect();
    vss.sort_by_key(|v| (v.metadata.creation_timestamp.clone(), v.metadata.key()));
    for vs in vss {
        let obj = format!("{KIND} {}", vs.metadata.key());
        let Some((hosts, routes)) = compile_vs(snap, index, opts, vs, &obj, f) else {
            continue;
        };
        let mine: Vec<&GlooListener> = listeners.iter().filter(|l| l.serves(vs)).collect();
        if mine.is_empty() {
            f.warnings
                .push(format!("{obj}: no HTTP listener serves it; not served"));
        }
        for l in mine {
            add(&l.info, &hosts, &routes, &vs.metadata, gateways);
        }
    }
}

type Compiled = (
    Vec<HostPattern>,
    Vec<(Arc<ir::Rule>, RouteMatch, usize, usize)>,
);

fn compile_vs(
    snap: &Snapshot,
    index: &Index<'_>,
    opts: &TranslateOptions,
    vs: &GlooVirtualService,
    obj: &str,
    f: &mut Findings,
) -> Option<Compiled> {
    let before = f.errors.len();
    f.unresolved.clear();
    f.unsupported(&format!("{obj} spec"), &vs.spec.unsupported);
    let vh = &vs.spec.virtual_host;
    f.unsupported(&format!("{obj} virtualHost"), &vh.unsupported);
    let mut hosts = Vec::new();
    for (i, d) in vh.domains.iter().enumerate() {
        match d.as_str() {
            "*" => hosts.push(HostPattern::Any),
            d => match validate_hostname(d) {
                Ok(p) => hosts.push(p),
                Err(e) => f
                    .errors
                    .push(format!("{obj} virtualHost.domains[{i}] {d:?}: {e}")),
            },
        }
    }
    if hosts.is_empty() {
        hosts.push(HostPattern::Any);
    }
    let rc = RuleCtx {
        snap,
        index,
        meta: &vs.metadata,
        opts,
        kind: KIND,
        rate_limit: None,
        l4: false,
        server_port: None,
    };
    let mut entries = Vec::new();
    for (ri, route) in vh.routes.iter().enumerate() {
        let ctx = format!("{obj} virtualHost.routes[{ri}]");
        entries.extend(compile_route(&rc, ri, route, &ctx, f));
    }
    for (_, why) in std::mem::take(&mut f.unresolved) {
        f.warnings.push(why);
    }
    // An invalid VirtualService is left out whole, like an invalid route.
    (f.errors.len() == before).then_some((hosts, entries))
}

/// Gloo's `retryOn` when a route's `retries` leaves it out.
const GLOO_RETRY_ON: &str = "5xx";

fn compile_route(
    rc: &RuleCtx<'_>,
    ri: usize,
    route: &Route,
    ctx: &str,
    f: &mut Findings,
) -> Vec<(Arc<ir::Rule>, RouteMatch, usize, usize)> {
    let before = f.errors.len();
    f.unsupported(&ctx, &route.unsupported);
    let matches: Vec<RouteMatch> = if route.matchers.is_empty() {
        vec![prefix_all()]
    } else {
        route
            .matchers
            .iter()
            .enumerate()
            .filter_map(|(mi, m)| {
                compile_matcher(m, &format!("{ctx}.matchers[{mi}]"), &mut f.errors)
            })
            .collect()
    };
    let (body, statics) = rule_body(rc, route, ctx, f);
    if f.errors.len() > before {
        return vec![];
    }
    let rewrite = route
        .options
        .as_ref()
        .and_then(|o| o.prefix_rewrite.clone());
    let retry_on = route
        .options
        .as_ref()
        .and_then(|o| o.retries.as_ref())
        .and_then(|r| r.retry_on.as_deref());
    let mut out = Vec::new();
    for (mi, m) in matches.into_iter().enumerate() {
        let prefix = matches!(
            m.path,
            PathMatch::Prefix(_) | PathMatch::PrefixIgnoreCase(_)
        );
        if rewrite.is_some() && matches!(m.path, PathMatch::RegularExpression(_)) {
            f.errors.push(format!(
                "{ctx}.options.prefixRewrite: not allowed with a regex matcher (as in Envoy)"
            ));
            return vec![];
        }
        let Some((rule, _)) = rules::compile_rule(rc, &rc.meta.key().into(), ri, &body, f) else {
            return vec![];
        };
        let rule = with_string_prefix_rewrite(rule, rewrite.clone(), prefix);
        let rule = with_retried_failures(rule, retry_on.unwrap_or(GLOO_RETRY_ON));
        out.push((with_static_backends(rule, &statics), m, ri, mi));
    }
    out
}

fn prefix_all() -> RouteMatch {
    RouteMatch {
        path: PathMatch::Prefix("/".into()),
        headers: vec![],
        query_params: vec![],
        method: None,
    }
}

fn compile_matcher(m: &Matcher, ctx: &str, errors: &mut Vec<String>) -> Option<RouteMatch> {
    let before = errors.len();
    for k in m.unsupported.keys() {
        errors.push(format!("{ctx}: field {k:?} is not supported by meshgate"));
    }
    let ci = if m.case_sensitive == Some(false) {
        "(?i)"
    } else {
        ""
    };
    let path = match (&m.prefix, &m.exact, &m.regex) {
        (None, None, None) => PathMatch::Prefix("/".into()),
        (Some(p), None, None) if ci.is_empty() => PathMatch::Prefix(p.clone()),
        (None, Some(e), None) if ci.is_empty() => PathMatch::Exact(e.clone()),
        (Some(p), None, None) => PathMatch::PrefixIgnoreCase(p.clone()),
        (None, Some(e), None) => PathMatch::RegularExpression(format!("{ci}{}", regex::escape(e))),
        (None, None, Some(r)) => {
            PathMatch::RegularExpression(checked(&format!("{ci}{r}"), ctx, errors)?)
        }
        _ => {
            errors.push(format!("{ctx}: set one of prefix, exact, regex"));
            return None;
        }
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let hctx = format!("{ctx}.headers[{i}]");
        for k in h.unsupported.keys() {
            errors.push(format!("{hctx}: field {k:?} is not supported by meshgate"));
        }
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            errors.push(format!("{hctx}: {:?} is not a valid header name", h.name));
            continue;
        }
        let value = value(&h.value, h.regex, &hctx, errors)?;
        headers.push(ir::HeaderMatch {
            name: h.name.to_ascii_lowercase(),
            value,
        });
    }
    let mut query_params = Vec::new();
    for (i, q) in m.query_parameters.iter().enumerate() {
        let qctx = format!("{ctx}.queryParameters[{i}]");
        unsupported(&qctx, &q.unsupported, errors);
        let value = value(&q.value, q.regex, &qctx, errors)?;
        query_params.push(ir::QueryMatch {
            name: q.name.clone(),
            value,
        });
    }
    let method = match &m.methods[..] {
        [] => None,
        [one] => Some(one.to_ascii_uppercase()),
        _ => {
            errors.push(format!(
                "{ctx}.methods: one method per matcher (list a matcher per method)"
            ));
            None
        }
    };
    (errors.len() == before).then_some(RouteMatch {
        path,
        headers,
        query_params,
        method,
    })
}

/// Reports every field of `fields` at `ctx` by name.
fn unsupported(ctx: &str, fields: &crate::api::Unsupported, errors: &mut Vec<String>) {
    for k in fields.keys() {
        errors.push(format!("{ctx}: field {k:?} is not supported by meshgate"));
    }
}

fn value(v: &str, regex: bool, ctx: &str, errors: &mut Vec<String>) -> Option<ValueMatch> {
    Some(match (v, regex) {
        ("", _) => ValueMatch::RegularExpression(".*".into()),
        (v, false) => ValueMatch::Exact(v.to_string()),
        (v, true) => ValueMatch::RegularExpression(checked(v, ctx, errors)?),
    })
}

fn checked(re: &str, ctx: &str, errors: &mut Vec<String>) -> Option<String> {
    match regex::Regex::new(re) {
        Ok(_) => Some(re.to_string()),
        Err(e) => {
            errors.push(format!("{ctx}: regex {re:?} is invalid: {e}"));
            None
        }
    }
}

/// A destination that is not a Service: a static Upstream's addresses.
struct Static {
    name: Arc<str>,
    weight: u32,
    target: ir::BackendTarget,
}

/// The route's action and options in HTTPRoute's shape (Service destinations as
/// backendRefs), plus static Upstreams.
fn rule_body(
    rc: &RuleCtx<'_>,
    route: &Route,
    ctx: &str,
    f: &mut Findings,
) -> (HttpRouteRule, Vec<Static>) {
    let mut filters = Vec::new();
    let mut backend_refs = Vec::new();
    let mut statics = Vec::new();
    match (&route.route_action, &route.redirect_action) {
        (Some(a), None) => {
            f.unsupported(&format!("{ctx}.routeAction"), &a.unsupported);
            let dests: Vec<(u32, &GlooDestination)> = match (&a.single, &a.multi) {
                (Some(d), None) => vec![(1, d)],
                (None, Some(m)) => {
                    let mctx = format!("{ctx}.routeAction.multi");
                    unsupported(&mctx, &m.unsupported, &mut f.errors);
                    for (i, w) in m.destinations.iter().enumerate() {
                        let wctx = format!("{mctx}.destinations[{i}]");
                        unsupported(&wctx, &w.unsupported, &mut f.errors);
                    }
                    m.destinations
                        .iter()
                        .map(|w| (w.weight, &w.destination))
                        .collect()
                }
                _ => {
                    f.errors
                        .push(format!("{ctx}.routeAction: set one of single, multi"));
                    vec![]
                }
            };
            for (di, (weight, d)) in dests.into_iter().enumerate() {
                let dctx = format!("{ctx}.routeAction destination[{di}]");
                match destination(rc, d, &dctx, &mut f.errors) {
                    Some(Dest::Service(mut b)) => {
                        b.weight = Some(weight);
                        backend_refs.push(b);
                    }
                    Some(Dest::Static(name, target)) => statics.push(Static {
                        name: name.into(),
                        weight,
                        target,
                    }),
                    None => {}
                }
            }
        }
        (None, Some(r)) => {
            f.unsupported(&format!("{ctx}.redirectAction"), &r.unsupported);
            let status = match r.response_code.as_deref().unwrap_or("MOVED_PERMANENTLY") {
                "MOVED_PERMANENTLY" => 301,
                "FOUND" => 302,
                "SEE_OTHER" => 303,
                "TEMPORARY_REDIRECT" => 307,
                "PERMANENT_REDIRECT" => 308,
                other => {
                    f.errors.push(format!(
                        "{ctx}.redirectAction.responseCode {other:?} is not a Gloo redirect code"
                    ));
                    301
                }
            };
            filters.push(gapi::HttpRouteFilter {
                kind: "RequestRedirect".into(),
                request_redirect: Some(gapi::RequestRedirect {
                    scheme: r.https_redirect.then(|| "https".to_string()),
                    hostname: r.host_redirect.clone(),
                    path: r.path_redirect.as_ref().map(|p| gapi::PathModifier {
                        kind: "ReplaceFullPath".into(),
                        replace_full_path: Some(p.clone()),
                        replace_prefix_match: None,
                    }),
                    port: None,
                    status_code: Some(status),
                }),
                ..Default::default()
            });
        }
        _ => f
            .errors
            .push(format!("{ctx}: set one of routeAction, redirectAction")),
    }
    let mut timeouts = None;
    let mut retry = None;
    if let Some(o) = &route.options {
        f.unsupported(&format!("{ctx}.options"), &o.unsupported);
        if o.prefix_rewrite.is_some() || o.host_rewrite.is_some() {
            filters.push(gapi::HttpRouteFilter {
                kind: "URLRewrite".into(),
                url_rewrite: Some(gapi::UrlRewrite {
                    hostname: o.host_rewrite.clone(),
                    path: o.prefix_rewrite.as_ref().map(|p| gapi::PathModifier {
                        kind: "ReplaceFullPath".into(),
                        replace_full_path: Some(p.clone()),
                        replace_prefix_match: None,
                    }),
                }),
                ..Default::default()
            });
        }
        let per_try = o.retries.as_ref().and_then(|r| r.per_try_timeout.clone());
        if o.timeout.is_some() || per_try.is_some() {
            timeouts = Some(gapi::HttpRouteTimeouts {
                request: o.timeout.clone(),
                backend_request: per_try,
            });
        }
        if let Some(r) = &o.retries {
            f.unsupported(&format!("{ctx}.options.retries"), &r.unsupported);
            let on = r.retry_on.as_deref().unwrap_or(GLOO_RETRY_ON);
            let codes =
                retry_on_codes(on, &format!("{ctx}.options.retries.retryOn"), &mut f.errors);
            retry = Some(gapi::HttpRouteRetry {
                codes,
                attempts: Some(r.num_retries.max(1)),
                backoff: None,
                unsupported: Default::default(),
            });
        }
    }
    let body = HttpRouteRule {
        filters,
        backend_refs,
        timeouts,
        retry,
        ..Default::default()
    };
    (body, statics)
}

enum Dest {
    Service(HttpBackendRef),
    Static(String, ir::BackendTarget),
}

/// An Upstream (kube -> the Service port; static -> its addresses) or a kube Service.
fn destination(
    rc: &RuleCtx<'_>,
    d: &GlooDestination,
    ctx: &str,
    errors: &mut Vec<String>,
) -> Option<Dest> {
    for k in d.unsupported.keys() {
        errors.push(format!("{ctx}: field {k:?} is not supported by meshgate"));
    }
    let ns = rc.meta.ns();
    let service = |name: &str, namespace: &str, port: u32| {
        Dest::Service(HttpBackendRef {
            name: name.to_string(),
            namespace: Some(namespace.to_string()),
            port: u16::try_from(port).ok(),
            ..Default::default()
        })
    };
    if let Some(u) = &d.upstream {
        unsupported(&format!("{ctx}.upstream"), &u.unsupported, errors);
    }
    if let Some(k) = &d.kube {
        unsupported(&format!("{ctx}.kube"), &k.unsupported, errors);
        unsupported(&format!("{ctx}.kube.ref"), &k.service.unsupported, errors);
    }
    match (&d.upstream, &d.kube) {
        (Some(u), None) => {
            let uns = u.namespace.as_deref().unwrap_or(ns);
            let key = format!("{uns}/{}", u.name);
            let Some(up) = rc
                .snap
                .gloo_upstreams
                .iter()
                .find(|x| x.metadata.key() == key)
            else {
                errors.push(format!("{ctx}: Upstream {key} not found"));
                return None;
            };
            let uctx = format!("Upstream {key} spec");
            for k in up.spec.unsupported.keys() {
                errors.push(format!("{uctx}: field {k:?} is not supported by meshgate"));
            }
            match (&up.spec.kube, &up.spec.r#static) {
                (Some(k), None) => {
                    for f in k.unsupported.keys() {
                        errors.push(format!(
                            "{uctx}.kube: field {f:?} is not supported by meshgate"
                        ));
                    }
                    Some(service(
                        &k.service_name,
                        &k.service_namespace,
                        k.service_port,
                    ))
                }
                (None, Some(s)) => Some(Dest::Static(
                    format!("Upstream {key}"),
                    static_target(s, &uctx, errors)?,
                )),
                _ => {
                    errors.push(format!("{uctx}: set one of kube, static"));
                    None
                }
            }
        }
        (None, Some(k)) => {
            let kns = k.service.namespace.as_deref().unwrap_or(ns);
            Some(service(&k.service.name, kns, k.port))
        }
        _ => {
            errors.push(format!("{ctx}: set one of upstream, kube"));
            None
        }
    }
}

fn static_target(
    s: &crate::api::gloo::StaticUpstream,
    ctx: &str,
    errors: &mut Vec<String>,
) -> Option<ir::BackendTarget> {
    // Fields such as `useTls` change how the upstream is reached: refused, not dropped.
    unsupported(&format!("{ctx}.static"), &s.unsupported, errors);
    for (i, h) in s.hosts.iter().enumerate() {
        unsupported(&format!("{ctx}.static.hosts[{i}]"), &h.unsupported, errors);
    }
    let port = |p: u32| u16::try_from(p).ok().filter(|p| *p > 0);
    match &s.hosts[..] {
        [] => {
            errors.push(format!("{ctx}.static.hosts is empty"));
            None
        }
        [one] if one.addr.parse::<std::net::IpAddr>().is_err() => Some(ir::BackendTarget::Dns {
            host: one.addr.clone(),
            port: port(one.port)?,
            transport: ir::Transport::Plaintext,
        }),
        hosts => {
            let mut eps = Vec::new();
            for (i, h) in hosts.iter().enumerate() {
                match (h.addr.parse::<std::net::IpAddr>(), port(h.port)) {
                    (Ok(ip), Some(p)) => eps.push(ir::Endpoint {
                        address: std::net::SocketAddr::new(ip, p),
                        labels: Default::default(),
                        transport: ir::Transport::Plaintext,
                        workload: None,
                    }),
                    _ => errors.push(format!(
                        "{ctx}.static.hosts[{i}]: with several hosts each needs an IP address and a port"
                    )),
                }
            }
            Some(ir::BackendTarget::Endpoints(eps.into()))
        }
    }
}

/// Adds static Upstreams to a freshly compiled rule.
fn with_static_backends(mut rule: Arc<ir::Rule>, statics: &[Static]) -> Arc<ir::Rule> {
    if statics.is_empty() {
        return rule;
    }
    if let Some(r) = Arc::get_mut(&mut rule) {
        for s in statics {
            r.backends.push(ir::Backend {
                name: s.name.clone(),
                weight: s.weight,
                http2: false,
                target: s.target.clone(),
                filters: Default::default(),
                policy: None,
                service_host: None,
                subset: None,
            });
            r.total_weight += s.weight;
        }
    }
    rule
}

fn add(
    l: &ListenerInfo,
    hosts: &[HostPattern],
    entries: &[(Arc<ir::Rule>, RouteMatch, usize, usize)],
    meta: &ObjectMeta,
    gateways: &mut Gateways,
) {
    for vh in hosts {
        let Some(host) = super::attachment::intersect(&l.hostname, vh) else {
            continue;
        };
        let pending = gateways
            .pending
            .entry((l.port, l.full_name()))
            .or_default()
            .entry(host.to_string())
            .or_insert_with(|| (host.clone(), Vec::new()));
        for (rule, m, ri, mi) in entries {
            pending.1.push(Pending {
                key: declaration_order(meta, *ri, *mi),
                entry: ir::RouteEntry {
                    matcher: m.clone(),
                    rule: rule.clone(),
                    rank: 0,
                },
            });
        }
    }
}
