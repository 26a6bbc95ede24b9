//! VirtualServices bound to this pod's Istio Gateways -> route entries. HTTP rules keep
//! Istio's order (first match wins: declaration order within a VirtualService, creation
//! order between VirtualServices for one host); `tcp` rules serve TCP (and terminated
//! TLS) servers by port; `tls` rules pass TLS through by SNI.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::gateway::{KIND, Redirects};
use crate::api::gateway_api::{self as gapi, HttpBackendRef, HttpRouteRule};
use crate::api::istio_gateway::{
    Destination, HeaderOperations, HttpMatchRequest, HttpRoute, RouteDestination, StringMatch,
    VirtualService, VirtualServiceSpec,
};
use crate::api::{ObjectKey, Snapshot};
use crate::ir::{self, HostPattern, PathMatch, Protocol, RouteMatch, ValueMatch};
use crate::translate::attachment::{intersect, namespace_allowed};
use crate::translate::backends::{self, RuleCtx};
use crate::translate::listeners::{Gateways, ListenerInfo, validate_hostname};
use crate::translate::rules::{self, Pending, PrecedenceKey};
use crate::translate::{Findings, Index, TranslateOptions};

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
    let listeners: Vec<ListenerInfo> = gateways
        .listeners
        .iter()
        .filter(|l| bound.contains(&l.gateway) && l.kinds.contains(&KIND))
        .filter(|l| namespace_allowed(snap, l, ns))
        .cloned()
        .collect();
    let hosts = vs_hosts(vs, opts, &obj, f);
    let rc = RuleCtx {
        snap,
        index,
        meta: &vs.metadata,
        opts,
        kind: KIND,
        rate_limit: None,
        l4: false,
    };
    let http = compile_http(&rc, vs, &obj, f);
    let l4_rc = RuleCtx { l4: true, ..rc };
    let tcp = compile_l4(&l4_rc, &tcp_entries(&vs.spec), &obj, "tcp", f);
    let tls = compile_l4(&l4_rc, &tls_entries(&vs.spec), &obj, "tls", f);
    // Istio objects have no Gateway API conditions: unresolved destinations (their
    // share of requests gets a 500) are reported as warnings.
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
             allow namespace {ns:?}; not served"
        ));
        return;
    }
    for l in &listeners {
        match l.protocol {
            Protocol::Http | Protocol::Https => add_http(l, &hosts, &http, vs, gateways),
            Protocol::Tcp => add_tcp(l, &tcp, &obj, gateways, f),
            Protocol::Tls => add_tls(l, &tls, &tcp, &obj, gateways, f),
        }
    }
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

/// One compiled `http[]` entry: its rules (one per rewrite flavour) and matches.
struct HttpRule {
    index: usize,
    entries: Vec<(Arc<ir::Rule>, RouteMatch, Option<u16>)>,
}

fn compile_http(
    rc: &RuleCtx<'_>,
    vs: &VirtualService,
    obj: &str,
    f: &mut Findings,
) -> Vec<HttpRule> {
    let mut out = Vec::new();
    for (i, h) in vs.spec.http.iter().enumerate() {
        let ctx = format!("{obj} http[{i}]");
        let before = f.errors.len();
        f.unsupported(&ctx, &h.unsupported);
        let matches = compile_matches(h, &ctx, &mut f.errors);
        let body = rule_body(rc, h, &ctx, f);
        if f.errors.len() > before {
            continue;
        }
        let mut entries = Vec::new();
        // Istio's rewrite.uri replaces the matched prefix after a prefix match, else the
        // whole path: one rule per flavour.
        let mut by_flavour: BTreeMap<bool, Arc<ir::Rule>> = BTreeMap::new();
        for (m, port) in matches {
            let prefix = matches!(m.path, PathMatch::Prefix(_));
            let rule = match by_flavour.get(&prefix) {
                Some(r) => r.clone(),
                None => {
                    let Some((rule, _)) = rules::compile_rule(rc, i, &body, f) else {
                        break;
                    };
                    let uri = h.rewrite.as_ref().and_then(|r| r.uri.clone());
                    let mut rule = with_string_prefix_rewrite(rule, uri, prefix);
                    if let Some(r) = Arc::get_mut(&mut rule) {
                        let dests = h.route.iter().map(|d| &d.destination);
                        for (b, d) in r.backends.iter_mut().zip(dests) {
                            apply_subset(rc, b, d, f);
                        }
                    }
                    by_flavour.insert(prefix, rule.clone());
                    rule
                }
            };
            entries.push((rule, m, port));
        }
        out.push(HttpRule { index: i, entries });
    }
    out
}

/// After a prefix match Istio replaces the matched string prefix, byte for byte.
pub(crate) fn with_string_prefix_rewrite(
    mut rule: Arc<ir::Rule>,
    uri: Option<String>,
    prefix: bool,
) -> Arc<ir::Rule> {
    if let (Some(uri), Some(r)) = (uri, Arc::get_mut(&mut rule))
        && let Some(rw) = r.filters.rewrite.as_mut()
    {
        rw.path = Some(if prefix {
            ir::PathModifier::ReplaceStringPrefix(uri)
        } else {
            ir::PathModifier::ReplaceFullPath(uri)
        });
    }
    rule
}

/// The matches of an `http[]` entry, each with its `port` condition.
fn compile_matches(
    h: &HttpRoute,
    ctx: &str,
    errors: &mut Vec<String>,
) -> Vec<(RouteMatch, Option<u16>)> {
    if h.matches.is_empty() {
        let all = RouteMatch {
            path: PathMatch::Prefix("/".into()),
            headers: vec![],
            query_params: vec![],
            method: None,
        };
        return vec![(all, None)];
    }
    let mut out = Vec::new();
    for (mi, m) in h.matches.iter().enumerate() {
        let mctx = format!("{ctx}.match[{mi}]");
        if let Some(r) = compile_match(m, &mctx, errors) {
            out.push(r);
        }
    }
    out
}

fn compile_match(
    m: &HttpMatchRequest,
    ctx: &str,
    errors: &mut Vec<String>,
) -> Option<(RouteMatch, Option<u16>)> {
    let before = errors.len();
    for k in m.unsupported.keys() {
        errors.push(format!("{ctx}: field {k:?} is not supported by meshgate"));
    }
    let path = match &m.uri {
        None => PathMatch::Prefix("/".into()),
        Some(u) => uri_match(u, m.ignore_uri_case, &format!("{ctx}.uri"), errors)?,
    };
    let mut headers = Vec::new();
    for (name, v) in &m.headers {
        let hctx = format!("{ctx}.headers[{name:?}]");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(format!("{hctx}: not a valid header name"));
            continue;
        }
        if let Some(value) = value_match(v, &hctx, errors) {
            let name = name.to_ascii_lowercase();
            headers.push(ir::HeaderMatch { name, value });
        }
    }
    let mut query_params = Vec::new();
    for (name, v) in &m.query_params {
        let qctx = format!("{ctx}.queryParams[{name:?}]");
        if let Some(value) = value_match(v, &qctx, errors) {
            query_params.push(ir::QueryMatch {
                name: name.clone(),
                value,
            });
        }
    }
    let method = match &m.method {
        None => None,
        Some(StringMatch {
            exact: Some(e),
            prefix: None,
            regex: None,
            ..
        }) => Some(e.to_ascii_uppercase()),
        Some(_) => {
            errors.push(format!("{ctx}.method: only exact is supported"));
            None
        }
    };
    let port = match m.port {
        None => None,
        Some(p) => match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                errors.push(format!("{ctx}.port {p} is not 1-65535"));
                None
            }
        },
    };
    (errors.len() == before).then_some((
        RouteMatch {
            path,
            headers,
            query_params,
            method,
        },
        port,
    ))
}

/// One of exact, prefix, regex: exactly one must be set.
fn one_of<'a>(
    s: &'a StringMatch,
    ctx: &str,
    errors: &mut Vec<String>,
) -> Option<(&'static str, &'a str)> {
    if let Some(k) = s.unsupported.keys().next() {
        errors.push(format!("{ctx}: field {k:?} is not supported by meshgate"));
        return None;
    }
    let set: Vec<(&'static str, &str)> = [
        ("exact", &s.exact),
        ("prefix", &s.prefix),
        ("regex", &s.regex),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    .collect();
    match set[..] {
        [one] => Some(one),
        [] => Some(("prefix", "")),
        _ => {
            errors.push(format!("{ctx}: set one of exact, prefix, regex"));
            None
        }
    }
}

fn checked_regex(re: &str, ctx: &str, errors: &mut Vec<String>) -> Option<String> {
    match regex::Regex::new(re) {
        Ok(_) => Some(re.to_string()),
        Err(e) => {
            errors.push(format!("{ctx}: regex {re:?} is invalid: {e}"));
            None
        }
    }
}

fn uri_match(
    u: &StringMatch,
    ignore_case: bool,
    ctx: &str,
    errors: &mut Vec<String>,
) -> Option<PathMatch> {
    let (kind, v) = one_of(u, ctx, errors)?;
    if kind != "regex" && !v.starts_with('/') {
        errors.push(format!("{ctx}: {kind} {v:?} must start with /"));
        return None;
    }
    let ci = if ignore_case { "(?i)" } else { "" };
    Some(match (kind, ignore_case) {
        ("exact", false) => PathMatch::Exact(v.to_string()),
        ("prefix", false) => PathMatch::Prefix(v.to_string()),
        ("exact", true) => PathMatch::RegularExpression(format!("(?i){}", regex::escape(v))),
        ("prefix", true) => PathMatch::RegularExpression(format!("(?i){}.*", regex::escape(v))),
        _ => PathMatch::RegularExpression(checked_regex(&format!("{ci}{v}"), ctx, errors)?),
    })
}

fn value_match(v: &StringMatch, ctx: &str, errors: &mut Vec<String>) -> Option<ValueMatch> {
    let (kind, s) = one_of(v, ctx, errors)?;
    Some(match kind {
        "exact" => ValueMatch::Exact(s.to_string()),
        "prefix" => ValueMatch::RegularExpression(format!("{}.*", regex::escape(s))),
        _ => ValueMatch::RegularExpression(checked_regex(s, ctx, errors)?),
    })
}

/// Everything of an `http[]` entry but its matches, in HTTPRoute's shape, so the same
/// code validates and compiles filters, backends, timeouts and retries.
fn rule_body(rc: &RuleCtx<'_>, h: &HttpRoute, ctx: &str, f: &mut Findings) -> HttpRouteRule {
    let mut filters = Vec::new();
    if let Some(hs) = &h.headers {
        filters.extend(header_filters(hs.request.as_ref(), hs.response.as_ref()));
    }
    if let Some(r) = &h.redirect {
        f.unsupported(&format!("{ctx}.redirect"), &r.unsupported);
        filters.push(gapi::HttpRouteFilter {
            kind: "RequestRedirect".into(),
            request_redirect: Some(gapi::RequestRedirect {
                scheme: r.scheme.clone(),
                hostname: r.authority.clone(),
                path: r.uri.as_ref().map(|u| full_path(u)),
                port: r.port.and_then(|p| u16::try_from(p).ok()),
                status_code: Some(r.redirect_code.unwrap_or(301)),
            }),
            ..Default::default()
        });
    }
    if let Some(rw) = &h.rewrite {
        f.unsupported(&format!("{ctx}.rewrite"), &rw.unsupported);
        filters.push(gapi::HttpRouteFilter {
            kind: "URLRewrite".into(),
            url_rewrite: Some(gapi::UrlRewrite {
                hostname: rw.authority.clone(),
                path: rw.uri.as_ref().map(|u| full_path(u)),
            }),
            ..Default::default()
        });
    }
    filters.extend(mirrors(rc, h, ctx, f));
    if let Some(c) = &h.cors_policy {
        filters.extend(cors(c, ctx, &mut f.errors));
    }
    let backend_refs = h
        .route
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let dctx = format!("{ctx}.route[{i}]");
            f.unsupported(&dctx, &d.unsupported);
            let mut b = backend_ref(rc, &d.destination, &dctx, &mut f.errors)?;
            b.weight = Some(weight(d.weight, h.route.iter().map(|r| r.weight)));
            if let Some(hs) = &d.headers {
                b.filters = header_filters(hs.request.as_ref(), hs.response.as_ref());
            }
            Some(b)
        })
        .collect();
    if h.route.is_empty() && h.redirect.is_none() {
        f.errors.push(format!("{ctx}: needs route or redirect"));
    }
    HttpRouteRule {
        name: h.name.clone(),
        matches: vec![],
        filters,
        backend_refs,
        timeouts: h.timeout.clone().map(|t| gapi::HttpRouteTimeouts {
            request: Some(t),
            backend_request: h.retries.as_ref().and_then(|r| r.per_try_timeout.clone()),
        }),
        retry: h.retries.as_ref().map(|r| retry(r, ctx, f)),
        unsupported: Default::default(),
    }
}

/// Istio's weight: absent on every destination means equal shares; absent on some
/// means 0 for those (Istio's weights then must add up to 100).
pub(crate) fn weight(w: Option<u32>, all: impl Iterator<Item = Option<u32>>) -> u32 {
    let mut all = all;
    match w {
        Some(w) => w,
        None if all.all(|x| x.is_none()) => 1,
        None => 0,
    }
}

fn full_path(u: &str) -> gapi::PathModifier {
    gapi::PathModifier {
        kind: "ReplaceFullPath".into(),
        replace_full_path: Some(u.to_string()),
        replace_prefix_match: None,
    }
}

fn header_filters(
    req: Option<&HeaderOperations>,
    resp: Option<&HeaderOperations>,
) -> Vec<gapi::HttpRouteFilter> {
    let modifier = |o: &HeaderOperations| gapi::HeaderModifier {
        set: pairs(&o.set),
        add: pairs(&o.add),
        remove: o.remove.clone(),
    };
    let mut out = Vec::new();
    if let Some(o) = req {
        out.push(gapi::HttpRouteFilter {
            kind: "RequestHeaderModifier".into(),
            request_header_modifier: Some(modifier(o)),
            ..Default::default()
        });
    }
    if let Some(o) = resp {
        out.push(gapi::HttpRouteFilter {
            kind: "ResponseHeaderModifier".into(),
            response_header_modifier: Some(modifier(o)),
            ..Default::default()
        });
    }
    out
}

fn pairs(m: &BTreeMap<String, String>) -> Vec<gapi::HttpHeader> {
    m.iter()
        .map(|(name, value)| gapi::HttpHeader {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn mirrors(
    rc: &RuleCtx<'_>,
    h: &HttpRoute,
    ctx: &str,
    f: &mut Findings,
) -> Vec<gapi::HttpRouteFilter> {
    let mut all: Vec<(&Destination, Option<f64>, String)> = Vec::new();
    if let Some(m) = &h.mirror {
        all.push((
            m,
            h.mirror_percentage.as_ref().map(|p| p.value),
            format!("{ctx}.mirror"),
        ));
    }
    for (i, m) in h.mirrors.iter().enumerate() {
        all.push((
            &m.destination,
            m.percentage.as_ref().map(|p| p.value),
            format!("{ctx}.mirrors[{i}]"),
        ));
    }
    let mut out = Vec::new();
    for (d, pct, mctx) in all {
        let pct = pct.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&pct) {
            f.errors
                .push(format!("{mctx}: percentage {pct} is not 0-100"));
            continue;
        }
        if let Some(s) = &d.subset {
            f.errors.push(format!(
                "{mctx}.subset {s:?}: mirroring to a subset is not supported by meshgate"
            ));
            continue;
        }
        let Some(backend_ref) = backend_ref(rc, d, &mctx, &mut f.errors) else {
            continue;
        };
        out.push(gapi::HttpRouteFilter {
            kind: "RequestMirror".into(),
            request_mirror: Some(gapi::RequestMirror {
                backend_ref,
                percent: None,
                fraction: Some(gapi::Fraction {
                    numerator: (pct * 10_000.0).round() as u32,
                    denominator: Some(1_000_000),
                }),
            }),
            ..Default::default()
        });
    }
    out
}

fn cors(
    c: &crate::api::istio_gateway::CorsPolicy,
    ctx: &str,
    errors: &mut Vec<String>,
) -> Option<gapi::HttpRouteFilter> {
    let cctx = format!("{ctx}.corsPolicy");
    for k in c.unsupported.keys() {
        errors.push(format!("{cctx}: field {k:?} is not supported by meshgate"));
    }
    let mut origins = Vec::new();
    for (i, o) in c.allow_origins.iter().enumerate() {
        match (&o.exact, &o.prefix, &o.regex) {
            (Some(e), None, None) => origins.push(e.clone()),
            _ => errors.push(format!("{cctx}.allowOrigins[{i}]: only exact is supported")),
        }
    }
    let max_age = match &c.max_age {
        None => None,
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) => Some(d.as_secs().min(u64::from(u32::MAX)) as u32),
            Err(e) => {
                errors.push(format!("{cctx}.maxAge {s:?}: {e}"));
                None
            }
        },
    };
    Some(gapi::HttpRouteFilter {
        kind: "CORS".into(),
        cors: Some(gapi::HttpCors {
            allow_origins: origins,
            allow_credentials: c.allow_credentials,
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            max_age,
            unsupported: Default::default(),
        }),
        ..Default::default()
    })
}

/// `retries` in Gateway API's shape: `attempts`, the status codes `retryOn` names
/// (`5xx`, `gateway-error`, `retriable-4xx`, numbers); connection failures and resets
/// are always retried by meshgate.
fn retry(
    r: &crate::api::istio_gateway::HttpRetry,
    ctx: &str,
    f: &mut Findings,
) -> gapi::HttpRouteRetry {
    f.unsupported(&format!("{ctx}.retries"), &r.unsupported);
    let on = r
        .retry_on
        .as_deref()
        .unwrap_or("connect-failure,refused-stream,503");
    let codes = retry_on_codes(on, &format!("{ctx}.retries.retryOn"), &mut f.errors);
    gapi::HttpRouteRetry {
        codes,
        attempts: Some(r.attempts),
        backoff: None,
        unsupported: Default::default(),
    }
}

/// The status codes Envoy's `retryOn` conditions name (`5xx`, `gateway-error`,
/// `retriable-4xx`, numbers); connection failures and resets need none, meshgate always
/// retries them.
pub(crate) fn retry_on_codes(on: &str, ctx: &str, errors: &mut Vec<String>) -> Vec<u16> {
    let mut codes = Vec::new();
    for cond in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match cond {
            "5xx" => codes.extend(500..=599),
            "gateway-error" => codes.extend([502, 503, 504]),
            "retriable-4xx" => codes.push(409),
            "connect-failure" | "refused-stream" | "reset" | "reset-before-request" => {}
            n => match n.parse::<u16>() {
                Ok(c) if (400..=599).contains(&c) => codes.push(c),
                _ => errors.push(format!(
                    "{ctx}: {n:?} is not one of 5xx, gateway-error, retriable-4xx, \
                     connect-failure, refused-stream, reset, or a status code"
                )),
            },
        }
    }
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// A destination as a Service backendRef: short names in the VirtualService's
/// namespace, `name.namespace.svc.<domain>` FQDNs; the port may be left out when the
/// Service has one.
fn backend_ref(
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
    let suffix = format!(".svc.{}", rc.opts.cluster_domain);
    let (name, ns) = if !d.host.contains('.') {
        (d.host.clone(), rc.meta.ns().to_string())
    } else if let Some((name, ns)) = d.host.strip_suffix(&suffix).and_then(|r| r.split_once('.')) {
        (name.to_string(), ns.to_string())
    } else {
        errors.push(format!(
            "{ctx}.destination.host {:?} is not a Service of this cluster (a short name or \
             <name>.<namespace>{suffix}; ServiceEntry hosts are not supported)",
            d.host
        ));
        return None;
    };
    let port = match &d.port {
        Some(p) => u16::try_from(p.number).ok(),
        None => only_port(rc.index, &ns, &name),
    };
    if port.is_none() {
        errors.push(format!(
            "{ctx}.destination.port is required: Service {ns}/{name} is unknown or has several ports"
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

/// Narrows a destination's backend to its DestinationRule subset: the endpoints carrying
/// the subset's labels, with the subset's policy. A subset no DestinationRule defines
/// gets no endpoint (Istio answers such requests with 503 too), and a warning.
fn apply_subset(rc: &RuleCtx<'_>, b: &mut ir::Backend, d: &Destination, f: &mut Findings) {
    let Some(name) = &d.subset else { return };
    let Some((svc_ns, svc)) = b
        .service_host
        .as_deref()
        .and_then(|h| h.split_once('.'))
        .and_then(|(svc, rest)| Some((rest.split_once('.')?.0, svc)))
    else {
        return;
    };
    let applied = rc.index.destination_rules.lookup(
        &rc.index.gateway_namespace,
        svc_ns,
        svc,
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
        b.target = ir::BackendTarget::Unresolvable(why);
        return;
    };
    if let ir::BackendTarget::Endpoints(eps) = &mut b.target {
        eps.retain(|e| labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)));
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
        Reverse(false),
        Reverse(0),
        Reverse(0),
        meta.creation_timestamp.clone(),
        meta.key(),
        rule,
        mi,
    )
}

fn add_http(
    l: &ListenerInfo,
    hosts: &[HostPattern],
    http: &[HttpRule],
    vs: &VirtualService,
    gateways: &mut Gateways,
) {
    for vh in hosts {
        let Some(host) = intersect(&l.hostname, vh) else {
            continue;
        };
        let entry = gateways
            .pending
            .entry((l.port, l.full_name()))
            .or_default()
            .entry(host.to_string())
            .or_insert_with(|| (host.clone(), Vec::new()));
        for r in http {
            for (mi, (rule, m, port)) in r.entries.iter().enumerate() {
                if port.is_some_and(|p| p != l.declared_port) {
                    continue;
                }
                entry.1.push(Pending {
                    key: declaration_order(&vs.metadata, r.index, mi),
                    entry: ir::RouteEntry {
                        matcher: m.clone(),
                        rule: rule.clone(),
                    },
                });
            }
        }
    }
}

/// One `tcp[]` or `tls[]` entry: its SNI hosts (tls), ports, and backends.
struct L4Rule {
    sni: Vec<HostPattern>,
    ports: Vec<u16>,
    backends: Arc<Vec<ir::Backend>>,
}

/// A `tcp[]` or `tls[]` entry in one shape: its matches (SNI hosts, port), its
/// destinations and the fields meshgate does not implement.
struct L4Entry<'a> {
    matches: Vec<(Vec<String>, Option<u32>)>,
    route: &'a [RouteDestination],
    unsupported: &'a crate::api::Unsupported,
}

fn tcp_entries(spec: &VirtualServiceSpec) -> Vec<L4Entry<'_>> {
    spec.tcp
        .iter()
        .map(|t| L4Entry {
            matches: t.matches.iter().map(|m| (Vec::new(), m.port)).collect(),
            route: &t.route,
            unsupported: &t.unsupported,
        })
        .collect()
}

fn tls_entries(spec: &VirtualServiceSpec) -> Vec<L4Entry<'_>> {
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

fn compile_l4(
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
fn add_tcp(l: &ListenerInfo, tcp: &[L4Rule], obj: &str, gateways: &mut Gateways, f: &mut Findings) {
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
fn add_tls(
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

/// An httpsRedirect server: every request gets a 301 to https on the same host.
fn https_redirect(l: &ListenerInfo, gateways: &mut Gateways) {
    let id = format!("{}/{}", l.gateway, l.name);
    let rule = Arc::new(ir::Rule {
        route: l.gateway.clone(),
        index: 0,
        id,
        filters: ir::Filters {
            redirect: Some(ir::Redirect {
                scheme: Some("https".into()),
                hostname: None,
                port: None,
                path: None,
                status: 301,
            }),
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
                Reverse(false),
                Reverse(0),
                Reverse(0),
                None,
                id_key(l),
                0,
                0,
            ),
            entry: ir::RouteEntry { matcher, rule },
        });
}

fn id_key(l: &ListenerInfo) -> String {
    l.full_name()
}
