//! `match[]` -> route matches: uri exact / prefix (Istio's string prefix) / regex,
//! `ignoreUriCase`, headers, queryParams, method, and the server `port` condition.

use crate::api::istio_gateway::{HttpMatchRequest, HttpRoute, StringMatch};
use crate::ir::{self, PathMatch, RouteMatch, ValueMatch};

/// The matches of an `http[]` entry, each with its `port` condition.
pub(super) fn compile_matches(
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
        ("prefix", true) => PathMatch::PrefixIgnoreCase(v.to_string()),
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
