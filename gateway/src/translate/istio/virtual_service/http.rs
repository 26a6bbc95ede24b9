//! `http[]` entries: everything but the matches in HTTPRoute's shape (filters,
//! backendRefs, timeouts, retries), compiled by the same code as HTTPRoute rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::matches::compile_matches;
use super::{apply_subset, backend_ref, declaration_order};
use crate::api::gateway_api::{self as gapi, HttpRouteRule};
use crate::api::istio_gateway::{Destination, HeaderOperations, HttpRoute, VirtualService};
use crate::ir::{self, HostPattern, PathMatch, RouteMatch};
use crate::translate::Findings;
use crate::translate::attachment::intersect;
use crate::translate::backends::RuleCtx;
use crate::translate::listeners::{Gateways, ListenerInfo};
use crate::translate::rules::{self, Pending};

/// One compiled `http[]` entry: its rules (one per rewrite flavour) and matches.
pub(super) struct HttpRule {
    index: usize,
    entries: Vec<(Arc<ir::Rule>, RouteMatch, Option<u16>)>,
}

pub(super) fn compile_http(
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
            let prefix = matches!(
                m.path,
                PathMatch::Prefix(_) | PathMatch::PrefixIgnoreCase(_)
            );
            let rule = match by_flavour.get(&prefix) {
                Some(r) => r.clone(),
                None => {
                    let Some((rule, _)) = rules::compile_rule(
                        rc,
                        &crate::api::ObjectKey::key(rc.meta).into(),
                        i,
                        &body,
                        f,
                    ) else {
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
                    let on = h.retries.as_ref().and_then(|r| r.retry_on.as_deref());
                    let rule = with_retried_failures(rule, on.unwrap_or(DEFAULT_RETRY_ON));
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
    // `retries.perTryTimeout` bounds each attempt whether `timeout` is set or not, as
    // Istio's route (per_try_timeout) does.
    // `attempts: 0` drops Istio's whole retry policy, its `perTryTimeout` with it.
    let per_try = h
        .retries
        .as_ref()
        .filter(|r| r.attempts > 0)
        .and_then(|r| r.per_try_timeout.clone());
    let timeouts = (h.timeout.is_some() || per_try.is_some()).then(|| gapi::HttpRouteTimeouts {
        request: h.timeout.clone(),
        backend_request: per_try,
    });
    HttpRouteRule {
        name: h.name.clone(),
        matches: vec![],
        filters,
        backend_refs,
        timeouts,
        // No `retries`: Istio's default policy (none on a redirect, which has no
        // upstream).
        retry: match &h.retries {
            Some(r) => Some(retry(r, ctx, f)),
            None if h.route.is_empty() => None,
            None => Some(gapi::HttpRouteRetry {
                attempts: Some(DEFAULT_ATTEMPTS),
                ..Default::default()
            }),
        },
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

/// Istio's retries when a route has no `retries` (its `DefaultPolicy`): 2, on its
/// default conditions.
const DEFAULT_ATTEMPTS: u32 = 2;
/// Istio's default `retryOn` (since 1.24 without 503, so its `retriable-status-codes`
/// names none). An HTTP/2 `REFUSED_STREAM` is classed with protocol errors, which no
/// condition here retries.
const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled";

/// `retries` in Gateway API's shape: `attempts` and the status codes `retryOn` names
/// (`5xx`, `gateway-error`, `retriable-4xx`, numbers); which failures without a response
/// it retries is set on the compiled rule ([`retried_failures`]).
fn retry(
    r: &crate::api::istio_gateway::HttpRetry,
    ctx: &str,
    f: &mut Findings,
) -> gapi::HttpRouteRetry {
    f.unsupported(&format!("{ctx}.retries"), &r.unsupported);
    let on = r.retry_on.as_deref().unwrap_or(DEFAULT_RETRY_ON);
    let codes = retry_on_codes(on, &format!("{ctx}.retries.retryOn"), &mut f.errors);
    gapi::HttpRouteRetry {
        codes,
        attempts: Some(r.attempts),
        backoff: None,
        unsupported: Default::default(),
    }
}

/// Sets which failures without a response a freshly compiled rule's retry retries, from
/// Envoy's `retryOn` conditions `on` (Istio's and Gloo's).
pub(crate) fn with_retried_failures(mut rule: Arc<ir::Rule>, on: &str) -> Arc<ir::Rule> {
    if let Some(retry) = Arc::get_mut(&mut rule).and_then(|r| r.retry.as_mut()) {
        (retry.on_connect_failure, retry.on_reset) = retried_failures(on);
        retry.grpc_statuses = on
            .split(',')
            .filter_map(|c| grpc_status(c.trim()))
            .collect();
    }
    rule
}

/// The gRPC status an Envoy `retryOn` condition names.
fn grpc_status(condition: &str) -> Option<u8> {
    Some(match condition {
        "cancelled" => 1,
        "deadline-exceeded" => 4,
        "resource-exhausted" => 8,
        "internal" => 13,
        "unavailable" => 14,
        _ => return None,
    })
}

/// Whether Envoy's `retryOn` conditions retry (connect failures, resets before a
/// response): `5xx`, `gateway-error` and `reset` retry both; `connect-failure` and
/// `reset-before-request` (a failed connect never sent the request) the first.
fn retried_failures(on: &str) -> (bool, bool) {
    let conds: Vec<&str> = on.split(',').map(str::trim).collect();
    let any = |names: &[&str]| conds.iter().any(|c| names.contains(c));
    let resets = any(&["5xx", "gateway-error", "reset"]);
    (
        resets || any(&["connect-failure", "reset-before-request"]),
        resets,
    )
}

/// The status codes Envoy's `retryOn` conditions name (`5xx`, `gateway-error`,
/// `retriable-4xx`, numbers); which failures without a response they retry is
/// [`retried_failures`]'s.
pub(crate) fn retry_on_codes(on: &str, ctx: &str, errors: &mut Vec<String>) -> Vec<u16> {
    let mut codes = Vec::new();
    for cond in on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match cond {
            "5xx" => codes.extend(500..=599),
            "gateway-error" => codes.extend([502, 503, 504]),
            "retriable-4xx" => codes.push(409),
            "connect-failure" | "refused-stream" | "reset" | "reset-before-request" => {}
            // gRPC statuses, set by `with_retried_failures`.
            c if grpc_status(c).is_some() => {}
            // Envoy's switch for the listed numbers (Istio adds it when only numbers are
            // given); the numbers are the codes.
            "retriable-status-codes" => {}
            n => match n.parse::<u16>() {
                Ok(c) if (400..=599).contains(&c) => codes.push(c),
                _ => errors.push(format!(
                    "{ctx}: {n:?} is not one of 5xx, gateway-error, retriable-4xx, \
                     connect-failure, refused-stream, reset, reset-before-request, \
                     retriable-status-codes, cancelled, deadline-exceeded, \
                     resource-exhausted, internal, unavailable, or a status code"
                )),
            },
        }
    }
    codes.sort_unstable();
    codes.dedup();
    codes
}

pub(super) fn add_http(
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
                        rank: 0,
                    },
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_conditions_retry_failures_as_envoys_do() {
        // (connect failures, resets before a response)
        assert_eq!(retried_failures(DEFAULT_RETRY_ON), (true, false));
        assert_eq!(retried_failures("5xx"), (true, true));
        assert_eq!(retried_failures("gateway-error, 409"), (true, true));
        assert_eq!(retried_failures("retriable-4xx,reset"), (true, true));
        assert_eq!(retried_failures("reset-before-request"), (true, false));
        assert_eq!(
            retried_failures("retriable-status-codes,503"),
            (false, false)
        );
        assert_eq!(retried_failures("refused-stream"), (false, false));
        assert_eq!(retried_failures("unavailable,cancelled"), (false, false));
        let statuses: Vec<u8> = DEFAULT_RETRY_ON
            .split(',')
            .filter_map(grpc_status)
            .collect();
        assert_eq!(statuses, [14, 1]);
    }
}
