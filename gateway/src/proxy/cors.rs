//! The CORS filter: preflights answered by the gateway, CORS headers added to answers
//! for allowed origins (Gateway API `HTTPCORSFilter`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::body::BodyKind;
use crate::ir::Cors;

const ACAO: HeaderName = header::ACCESS_CONTROL_ALLOW_ORIGIN;

/// `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The `Access-Control-Allow-Origin` value for an allowed origin, `None` otherwise.
fn allow_origin(c: &Cors, origin: &str) -> Option<String> {
    if c.allow_origins.iter().any(|o| o == "*") {
        return Some(if c.allow_credentials { origin } else { "*" }.to_string());
    }
    let matches = |pattern: &str| match pattern.split_once("://*.") {
        Some((scheme, suffix)) => origin
            .strip_prefix(scheme)
            .and_then(|o| o.strip_prefix("://"))
            .is_some_and(|host| host.ends_with(&format!(".{suffix}"))),
        None => pattern.eq_ignore_ascii_case(origin),
    };
    c.allow_origins
        .iter()
        .any(|p| matches(p))
        .then(|| origin.to_string())
}

fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// A list, or what the request asked for when the list is `*` and credentials are on
/// (a literal `*` means nothing to browsers then).
fn list_or_echo(list: &[String], credentials: bool, asked: Option<&HeaderValue>) -> String {
    if list.iter().any(|v| v == "*") && credentials {
        return asked
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
    }
    list.join(", ")
}

/// The gateway's answer to a preflight: 200, with CORS headers only for an allowed
/// origin (a browser then refuses the actual request).
pub fn preflight<B>(c: &Cors, req: &Request<B>) -> Response<BodyKind> {
    let mut resp = Response::new(BodyKind::Full(None));
    *resp.status_mut() = StatusCode::OK;
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    let Some(allowed) = allow_origin(c, origin) else {
        return resp;
    };
    set(h, ACAO, &allowed);
    let asked_method = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD);
    let methods = list_or_echo(&c.allow_methods, c.allow_credentials, asked_method);
    set(h, header::ACCESS_CONTROL_ALLOW_METHODS, &methods);
    let asked_headers = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS);
    let headers = list_or_echo(&c.allow_headers, c.allow_credentials, asked_headers);
    if !headers.is_empty() {
        set(h, header::ACCESS_CONTROL_ALLOW_HEADERS, &headers);
    }
    set(h, header::ACCESS_CONTROL_MAX_AGE, &c.max_age.to_string());
    finish(c, &allowed, h);
    resp
}

/// Makes an answer's CORS headers the filter's: the upstream's own are removed (the
/// route's CORS policy is the one in force), then added back for an allowed origin.
pub fn decorate(c: &Cors, origin: Option<&HeaderValue>, h: &mut HeaderMap) {
    for name in [
        ACAO,
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::ACCESS_CONTROL_MAX_AGE,
    ] {
        h.remove(name);
    }
    let Some(origin) = origin.and_then(|v| v.to_str().ok()) else {
        return;
    };
    let Some(allowed) = allow_origin(c, origin) else {
        return;
    };
    set(h, ACAO, &allowed);
    let exposed = expose_list(c, h);
    if !exposed.is_empty() {
        set(h, header::ACCESS_CONTROL_EXPOSE_HEADERS, &exposed);
    }
    finish(c, &allowed, h);
}

/// `Access-Control-Expose-Headers`: the list, except that with credentials a `*` (which
/// browsers then read as a header named `*`) becomes the answer's own header names.
fn expose_list(c: &Cors, h: &HeaderMap) -> String {
    if !(c.allow_credentials && c.expose_headers.iter().any(|v| v == "*")) {
        return c.expose_headers.join(", ");
    }
    let mut names: Vec<&str> = c
        .expose_headers
        .iter()
        .map(String::as_str)
        .filter(|n| *n != "*")
        .collect();
    for name in h.keys() {
        let n = name.as_str();
        if !n.starts_with("access-control-") && !names.iter().any(|e| e.eq_ignore_ascii_case(n)) {
            names.push(n);
        }
    }
    names.join(", ")
}

fn finish(c: &Cors, allowed: &str, h: &mut HeaderMap) {
    if c.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if allowed != "*" {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_credentials: credentials,
            allow_methods: vec!["GET".into()],
            allow_headers: vec![],
            expose_headers: vec![],
            max_age: 5,
        }
    }

    #[test]
    fn wildcard_hosts_match_subdomains_of_the_same_scheme_only() {
        let c = cors(&["https://*.example.com"], false);
        assert!(allow_origin(&c, "https://a.example.com").is_some());
        assert!(allow_origin(&c, "http://a.example.com").is_none());
        assert!(allow_origin(&c, "https://example.com").is_none());
        assert!(allow_origin(&c, "https://a.example.com.evil.org").is_none());
    }

    #[test]
    fn exposed_star_with_credentials_lists_the_answers_headers() {
        let mut c = cors(&["*"], true);
        c.expose_headers = vec!["*".into(), "X-Extra".into()];
        let mut h = HeaderMap::new();
        h.insert("x-served-by", HeaderValue::from_static("a"));
        h.insert("x-extra", HeaderValue::from_static("b"));
        h.insert(ACAO, HeaderValue::from_static("x"));
        assert_eq!(expose_list(&c, &h), "X-Extra, x-served-by");
        c.allow_credentials = false;
        assert_eq!(expose_list(&c, &h), "*, X-Extra");
    }

    #[test]
    fn star_with_credentials_echoes_the_origin() {
        assert_eq!(
            allow_origin(&cors(&["*"], true), "https://x.org").unwrap(),
            "https://x.org"
        );
        assert_eq!(
            allow_origin(&cors(&["*"], false), "https://x.org").unwrap(),
            "*"
        );
    }
}
