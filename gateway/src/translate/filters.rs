//! HTTPRoute filters: header modifiers, redirects and URL rewrites, validated.

use super::Findings;
use super::backends::{self, RuleCtx};
use super::listeners::validate_hostname;
use crate::api::gateway_api::{self, HttpRouteFilter};
use crate::ir::{Cors, Filters, HeaderEdits, Mirror, PathModifier, Redirect, Rewrite};

const SUPPORTED: &str = "RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, \
     URLRewrite, RequestMirror, CORS";

/// Compiles the filters of a rule or a backendRef.
pub fn compile_filters(
    rc: &RuleCtx<'_>,
    filters: &[HttpRouteFilter],
    ctx: &dyn std::fmt::Display,
    f: &mut Findings,
) -> Filters {
    let mut out = Filters::default();
    for (i, filter) in filters.iter().enumerate() {
        let fctx = format!("{ctx} filters[{i}]");
        if filter.kind == "RequestMirror" {
            match &filter.request_mirror {
                Some(m) => out.mirrors.extend(mirror(rc, m, &fctx, f)),
                None => f.errors.push(format!("{fctx}: requestMirror is missing")),
            }
        }
        if filter.kind == "ExtensionRef" {
            // HTTPRouteFilter: a custom filter that cannot be resolved "MUST NOT be
            // skipped"; requests it would have processed get an error response.
            let target = filter.unsupported.get("extensionRef").map_or_else(
                || "(no extensionRef)".to_string(),
                |r| {
                    let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("");
                    format!("{}/{} {}", s("group"), s("kind"), s("name"))
                },
            );
            let why = format!(
                "{fctx}: ExtensionRef {target} is not supported by meshgate: requests this \
                 rule sends there get 500"
            );
            f.unresolved
                .push((super::status::Reason::InvalidKind, why.clone()));
            f.refused_filter.get_or_insert(why);
            continue;
        }
        let errors = &mut f.errors;
        let gateway_api = matches!(rc.kind, "HTTPRoute" | "GRPCRoute");
        if filter.kind != "RequestMirror"
            && filters[..i]
                .iter()
                .any(|earlier| earlier.kind == filter.kind)
        {
            // The CRD's CEL rules refuse a repeat ("RequestHeaderModifier filter cannot
            // be repeated"); the file provider has no API server to do it.
            errors.push(format!(
                "{fctx}: filter type {} cannot be repeated",
                filter.kind
            ));
            continue;
        }
        match filter.kind.as_str() {
            "RequestMirror" => {}
            "CORS" => match &filter.cors {
                Some(c) => out.cors = cors(c, &fctx, errors).map(Box::new),
                None => errors.push(format!("{fctx}: cors is missing")),
            },
            "RequestHeaderModifier" => match &filter.request_header_modifier {
                Some(m) => {
                    out.request_headers =
                        Some(Box::new(header_edits(m, &fctx, gateway_api, errors)))
                }
                None => errors.push(format!("{fctx}: requestHeaderModifier is missing")),
            },
            "ResponseHeaderModifier" => match &filter.response_header_modifier {
                Some(m) => {
                    out.response_headers =
                        Some(Box::new(header_edits(m, &fctx, gateway_api, errors)))
                }
                None => errors.push(format!("{fctx}: responseHeaderModifier is missing")),
            },
            "RequestRedirect" => match &filter.request_redirect {
                Some(r) => out.redirect = Some(Box::new(redirect(r, &fctx, errors))),
                None => errors.push(format!("{fctx}: requestRedirect is missing")),
            },
            "URLRewrite" => match &filter.url_rewrite {
                Some(r) => out.rewrite = Some(Box::new(rewrite(r, &fctx, errors))),
                None => errors.push(format!("{fctx}: urlRewrite is missing")),
            },
            other => errors.push(format!(
                "{fctx}: filter type {other:?} is not one of {SUPPORTED}"
            )),
        }
        // An unknown type's own field (`requestMirror` for RequestMirror) is already named.
        let mut own = filter.kind.clone();
        if let Some(first) = own.get_mut(0..1) {
            first.make_ascii_lowercase();
        }
        let mut rest = filter.unsupported.clone();
        rest.remove(&own);
        f.unsupported(&fctx, &rest);
    }
    out
}

fn redirect(r: &gateway_api::RequestRedirect, fctx: &str, errors: &mut Vec<String>) -> Redirect {
    let status = r.status_code.unwrap_or(302);
    if ![301, 302, 303, 307, 308].contains(&status) {
        errors.push(format!(
            "{fctx}: requestRedirect.statusCode {status} is not one of 301, 302, 303, 307, 308"
        ));
    }
    if let Some(s) = &r.scheme
        && s != "http"
        && s != "https"
    {
        errors.push(format!(
            "{fctx}: requestRedirect.scheme {s:?} is not one of http, https"
        ));
    }
    if let Some(h) = &r.hostname
        && let Err(e) = validate_hostname(h)
    {
        errors.push(format!("{fctx}: requestRedirect.hostname {h:?}: {e}"));
    }
    Redirect {
        scheme: r.scheme.clone(),
        hostname: r.hostname.clone(),
        port: r.port,
        path: r
            .path
            .as_ref()
            .and_then(|p| path_modifier(p, &format!("{fctx} requestRedirect"), errors)),
        status,
    }
}

fn rewrite(r: &gateway_api::UrlRewrite, fctx: &str, errors: &mut Vec<String>) -> Rewrite {
    let hostname = match &r.hostname {
        Some(h) if validate_hostname(h).is_ok() && http::HeaderValue::from_str(h).is_ok() => {
            Some(h.clone())
        }
        Some(h) => {
            errors.push(format!(
                "{fctx}: urlRewrite.hostname {h:?} is not a valid hostname"
            ));
            None
        }
        None => None,
    };
    Rewrite {
        hostname,
        path: r
            .path
            .as_ref()
            .and_then(|p| path_modifier(p, &format!("{fctx} urlRewrite"), errors)),
    }
}

fn path_modifier(
    p: &gateway_api::PathModifier,
    ctx: &str,
    errors: &mut Vec<String>,
) -> Option<PathModifier> {
    match p.kind.as_str() {
        "ReplaceFullPath" => match &p.replace_full_path {
            Some(v) if v.starts_with('/') => Some(PathModifier::ReplaceFullPath(v.clone())),
            _ => {
                errors.push(format!(
                    "{ctx}.path: replaceFullPath must be set and start with \"/\""
                ));
                None
            }
        },
        // Empty is valid (HTTPPathModifier): it drops the matched prefix, `/foo/bar`
        // matched by `/foo` becoming `/bar`.
        "ReplacePrefixMatch" => match &p.replace_prefix_match {
            Some(v) if v.is_empty() || v.starts_with('/') => {
                Some(PathModifier::ReplacePrefixMatch(v.clone()))
            }
            _ => {
                errors.push(format!(
                    "{ctx}.path: replacePrefixMatch must be set and be empty or start with \"/\""
                ));
                None
            }
        },
        other => {
            errors.push(format!(
                "{ctx}.path: type {other:?} is not one of ReplaceFullPath, ReplacePrefixMatch"
            ));
            None
        }
    }
}

/// `one_action`: HTTPHeaderFilter's "only one action for a given header name is
/// permitted" (Gateway API); Istio and Gloo headers may set and remove one name (Envoy
/// removes, then adds).
fn header_edits(
    m: &gateway_api::HeaderModifier,
    ctx: &str,
    one_action: bool,
    errors: &mut Vec<String>,
) -> HeaderEdits {
    // HTTPHeader.name: of entries with equivalent (case-insensitive) names only the
    // first counts; HTTPHeaderFilter: more than one action for a name is invalid.
    let mut actions: Vec<(String, &str)> = Vec::new();
    let mut claim = |name: String, field: &'static str, errors: &mut Vec<String>| match actions
        .iter()
        .find(|(n, _)| *n == name)
    {
        Some((_, f)) if *f == field => None,
        Some(_) if !one_action => Some(name),
        Some((_, f)) => {
            errors.push(format!(
                "{ctx}: header {name:?} is in both {f} and {field} (one action per header)"
            ));
            None
        }
        None => {
            actions.push((name.clone(), field));
            Some(name)
        }
    };
    let mut pairs =
        |list: &[gateway_api::HttpHeader], field: &'static str, errors: &mut Vec<String>| {
            let mut out = Vec::new();
            for (i, h) in list.iter().enumerate() {
                let valid = http::HeaderName::from_bytes(h.name.as_bytes()).is_ok()
                    && http::HeaderValue::from_str(&h.value).is_ok();
                if !valid {
                    errors.push(format!(
                        "{ctx}: {field}[{i}] {:?}: {:?} is not a valid header",
                        h.name, h.value
                    ));
                } else if let Some(name) = claim(h.name.to_ascii_lowercase(), field, errors) {
                    out.push((name, h.value.clone()));
                }
            }
            out
        };
    let set = pairs(&m.set, "set", errors);
    let add = pairs(&m.add, "add", errors);
    let mut remove = Vec::new();
    for (i, n) in m.remove.iter().enumerate() {
        match http::HeaderName::from_bytes(n.as_bytes()) {
            Ok(_) => remove.extend(claim(n.to_ascii_lowercase(), "remove", errors)),
            Err(_) => errors.push(format!(
                "{ctx}: remove[{i}] {n:?} is not a valid header name"
            )),
        }
    }
    HeaderEdits { set, add, remove }
}

fn mirror(
    rc: &RuleCtx<'_>,
    m: &gateway_api::RequestMirror,
    fctx: &str,
    f: &mut Findings,
) -> Option<Mirror> {
    let ppm = match (&m.percent, &m.fraction) {
        (Some(_), Some(_)) => {
            let msg = format!("{fctx}: requestMirror: set percent or fraction, not both");
            f.errors.push(msg);
            return None;
        }
        (Some(p), None) if *p <= 100 => p * 10_000,
        (None, Some(fr)) => {
            let den = fr.denominator.unwrap_or(100);
            if den == 0 || fr.numerator > den {
                let msg = format!("{fctx}: requestMirror.fraction must be between 0 and 1");
                f.errors.push(msg);
                return None;
            }
            ((u64::from(fr.numerator) * 1_000_000) / u64::from(den)) as u32
        }
        (None, None) => 1_000_000,
        (Some(p), None) => {
            f.errors
                .push(format!("{fctx}: requestMirror.percent {p} is over 100"));
            return None;
        }
    };
    let backend = backends::backend(
        rc,
        &m.backend_ref,
        &format!("{fctx} requestMirror.backendRef"),
        f,
    )?;
    Some(Mirror {
        backend,
        parts_per_million: ppm,
    })
}

fn cors(c: &gateway_api::HttpCors, fctx: &str, errors: &mut Vec<String>) -> Option<Cors> {
    let before = errors.len();
    for k in c.unsupported.keys() {
        errors.push(format!(
            "{fctx}: cors: field {k:?} is not supported by meshgate"
        ));
    }
    for (i, o) in c.allow_origins.iter().enumerate() {
        if !valid_origin(o) {
            errors.push(format!(
                "{fctx}: cors.allowOrigins[{i}] {o:?} is not \"*\" or scheme://host[:port]"
            ));
        }
    }
    let token = |v: &String| v == "*" || http::Method::from_bytes(v.as_bytes()).is_ok();
    for (i, m) in c
        .allow_methods
        .iter()
        .enumerate()
        .filter(|(_, m)| !token(m))
    {
        errors.push(format!(
            "{fctx}: cors.allowMethods[{i}] {m:?} is not a method"
        ));
    }
    let header = |v: &String| v == "*" || http::HeaderName::from_bytes(v.as_bytes()).is_ok();
    for (field, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, h) in list.iter().enumerate().filter(|(_, h)| !header(h)) {
            errors.push(format!(
                "{fctx}: cors.{field}[{i}] {h:?} is not a header name"
            ));
        }
    }
    (errors.len() == before).then(|| Cors {
        allow_origins: c.allow_origins.clone(),
        allow_credentials: c.allow_credentials.unwrap_or(false),
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age: c.max_age.unwrap_or(5),
    })
}

/// `*`, or `scheme://host[:port]` where host may start with `*.`.
fn valid_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    let host = rest.rsplit_once(':').map_or(
        rest,
        |(h, p)| {
            if p.parse::<u16>().is_ok() { h } else { rest }
        },
    );
    let host = host.strip_prefix("*.").unwrap_or(host);
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use crate::dataplane::routes::{PathMatch, modify_path};
    use crate::ir::PathModifier;
    use crate::providers::file::parse_str;

    #[test]
    fn an_empty_replace_prefix_match_drops_the_matched_prefix() {
        let rule = |filter: &str| {
            format!(
                "{{matches: [{{path: {{type: PathPrefix, value: /foo}}}}], filters: [{filter}]}}"
            )
        };
        let yaml = [
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: gw, namespace: default}\n\
             spec: {listeners: [{name: http, port: 8080, protocol: HTTP}]}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: web, namespace: default}\nspec: {parentRefs: [{name: gw}], rules: [",
            &rule("{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: \"\"}}}"),
            ", ",
            &rule("{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: \"\"}}}"),
            "]}\n",
        ]
        .concat();
        let out = super::super::translate(&parse_str(&yaml).unwrap(), &Default::default());
        assert_eq!(out.errors, Vec::<String>::new());
        let routes = &out.config.ports[&8080].listeners[0].virtual_hosts[0].routes;
        let empty = |p: &Option<PathModifier>| matches!(p, Some(PathModifier::ReplacePrefixMatch(r)) if r.is_empty());
        let filters = |i: usize| &routes[i].rule.filters;
        assert!(empty(&filters(0).rewrite.as_ref().unwrap().path));
        assert!(empty(&filters(1).redirect.as_ref().unwrap().path));
        // HTTPPathModifier: `/foo/bar` matched by `/foo` becomes `/bar`, `/foo` becomes `/`.
        let matched = PathMatch::PathPrefix("/foo".into()).prefix_len();
        let m = PathModifier::ReplacePrefixMatch(String::new());
        assert_eq!(modify_path(&m, "/foo/bar", matched), "/bar");
        assert_eq!(modify_path(&m, "/foo", matched), "/");
    }
}
