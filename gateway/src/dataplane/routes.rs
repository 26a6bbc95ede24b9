//! Runtime routes: compiled matches (regexes, header names, methods), filters with
//! ready-made header values, and backends with pre-parsed upstream authorities.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

use crate::ir::{self, PathModifier, Redirect, Transport};
use crate::observe::istio_metrics::Destination;

/// Routes of one hostname, first match wins.
pub struct VirtualHost {
    /// Entries in precedence order.
    pub routes: Vec<RouteEntry>,
}

impl VirtualHost {
    /// First route (in precedence order) matching the request.
    pub fn find(&self, req: &RequestView<'_>) -> Option<&RouteEntry> {
        self.routes.iter().find(|r| r.matcher.matches(req))
    }

    /// Position of that route (the same as in the IR virtual host's list).
    pub fn find_index(&self, req: &RequestView<'_>) -> Option<usize> {
        self.routes.iter().position(|r| r.matcher.matches(req))
    }
}

/// One match and the rule it selects.
pub struct RouteEntry {
    /// The compiled match.
    pub matcher: RouteMatch,
    /// The rule.
    pub rule: Arc<Rule>,
}

/// A compiled match.
pub struct RouteMatch {
    /// Path match.
    pub path: PathMatch,
    headers: Vec<(HeaderName, ValueMatch)>,
    query_params: Vec<(String, ValueMatch)>,
    method: Option<Method>,
}

/// A compiled path match.
pub enum PathMatch {
    /// Whole path.
    Exact(String),
    /// Element-wise prefix without trailing `/` (empty = `/`).
    PathPrefix(String),
    /// Anchored expression.
    RegularExpression(Regex),
}

enum ValueMatch {
    Exact(String),
    RegularExpression(Regex),
}

impl ValueMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatch::Exact(e) => e == v,
            ValueMatch::RegularExpression(r) => r.is_match(v),
        }
    }
}

/// The request properties matching looks at.
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path (no query).
    pub path: &'a str,
    /// Raw query.
    pub query: Option<&'a str>,
    /// Headers.
    pub headers: &'a HeaderMap,
}

impl RouteMatch {
    /// Whether a request matches.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let path_ok = match &self.path {
            PathMatch::Exact(p) => p == req.path,
            PathMatch::PathPrefix(p) => {
                p.is_empty()
                    || (req.path.starts_with(p.as_str())
                        && matches!(req.path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            PathMatch::RegularExpression(r) => r.is_match(req.path),
        };
        if !path_ok || self.method.as_ref().is_some_and(|m| m != req.method) {
            return false;
        }
        let headers_ok = self.headers.iter().all(|(name, value)| {
            req.headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| value.matches(v)))
        });
        headers_ok
            && self.query_params.iter().all(|(name, value)| {
                req.query.is_some_and(|query| {
                    query_pairs(query)
                        .find(|(k, _)| k == name)
                        .is_some_and(|(_, v)| value.matches(&percent_decode(v)))
                })
            })
    }
}

/// What to do with a matched request.
pub struct Rule {
    /// `namespace/name/index`.
    pub id: String,
    /// Rule-level filters.
    pub filters: Filters,
    /// Weighted backends.
    pub backends: Vec<Backend>,
    /// Sum of weights.
    pub total_weight: u32,
    /// `timeouts.request`.
    pub request_timeout: Option<Duration>,
    /// `timeouts.backendRequest`.
    pub backend_request_timeout: Option<Duration>,
}

impl Rule {
    /// Weighted random pick; `None` when every weight is 0 or there are no backends.
    pub fn pick_backend(&self) -> Option<&Backend> {
        if self.total_weight == 0 {
            return None;
        }
        let mut n = fastrand::u32(0..self.total_weight);
        for b in &self.backends {
            if n < b.weight {
                return Some(b);
            }
            n -= b.weight;
        }
        None
    }
}

/// Compiled filters.
#[derive(Default)]
pub struct Filters {
    /// RequestHeaderModifier.
    pub request_headers: Option<HeaderEdits>,
    /// ResponseHeaderModifier.
    pub response_headers: Option<HeaderEdits>,
    /// RequestRedirect (plain data).
    pub redirect: Option<Redirect>,
    /// URLRewrite.
    pub rewrite: Option<Rewrite>,
    /// CORS (plain data; preflights are rare enough to format on demand).
    pub cors: Option<crate::ir::Cors>,
    /// RequestMirror targets with their share.
    pub mirrors: Vec<(Backend, u32)>,
}

/// Header edits with parsed names and values.
#[derive(Default)]
pub struct HeaderEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Applies set, add, remove.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
        for n in &self.remove {
            headers.remove(n);
        }
    }
}

/// URLRewrite with a ready Host value.
pub struct Rewrite {
    /// Host header sent upstream.
    pub hostname: Option<HeaderValue>,
    /// Path sent upstream.
    pub path: Option<PathModifier>,
}

impl PathMatch {
    /// Length of the matched prefix (PathPrefix), else 0: what ReplacePrefixMatch replaces.
    pub fn prefix_len(&self) -> usize {
        match self {
            PathMatch::PathPrefix(p) => p.len(),
            _ => 0,
        }
    }
}

/// Applies a path modifier to a path (no query) whose first `prefix_len` bytes matched.
pub fn modify_path(m: &PathModifier, path: &str, prefix_len: usize) -> String {
    match m {
        PathModifier::ReplaceFullPath(p) => p.clone(),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let rest = path.get(prefix_len..).unwrap_or("");
            let repl = replacement.trim_end_matches('/');
            let mut out = String::with_capacity(repl.len() + rest.len() + 1);
            out.push_str(repl);
            if !rest.is_empty() && !rest.starts_with('/') {
                out.push('/');
            }
            out.push_str(rest);
            if out.is_empty() {
                out.push('/');
            }
            out
        }
    }
}

/// A backend with its upstream targets.
pub struct Backend {
    /// `Service ns/name:port`.
    pub name: String,
    /// Relative weight.
    pub weight: u32,
    /// Speak h2c.
    pub http2: bool,
    /// Where traffic goes.
    pub target: Target,
    /// BackendRef-level filters.
    pub filters: Filters,
    /// Istio's destination labels before an endpoint is picked (the Service only), and
    /// for a DNS target.
    pub destination: Arc<Destination>,
}

/// Where a backend's traffic goes.
pub enum Target {
    /// Endpoint addresses (possibly none).
    Endpoints(Vec<Endpoint>),
    /// A DNS name resolved at connect time.
    Dns {
        /// `host:port`.
        authority: Authority,
        /// How to connect.
        transport: Transport,
    },
    /// The reference did not resolve; the reason.
    Unresolvable(String),
}

/// One upstream endpoint.
pub struct Endpoint {
    /// Address.
    pub address: SocketAddr,
    /// Pre-parsed `ip:port` for the upstream URI.
    pub authority: Authority,
    /// How to connect.
    pub transport: Transport,
    /// The endpoint's Pod is labelled `security.istio.io/tlsMode=istio`.
    pub mesh_labelled: bool,
    /// Istio's destination labels for requests to this endpoint.
    pub destination: Arc<Destination>,
}

/// Builds runtime rules once per IR rule (rules are shared by several entries).
#[derive(Default)]
pub struct RuleCache {
    built: HashMap<*const ir::Rule, Arc<Rule>>,
}

impl RuleCache {
    /// Compiles a virtual host.
    pub fn virtual_host(&mut self, v: &ir::VirtualHost) -> VirtualHost {
        let routes = v
            .routes
            .iter()
            .map(|e| RouteEntry {
                matcher: compile_match(&e.matcher),
                rule: self.rule(&e.rule),
            })
            .collect();
        VirtualHost { routes }
    }

    fn rule(&mut self, r: &Arc<ir::Rule>) -> Arc<Rule> {
        self.built
            .entry(Arc::as_ptr(r))
            .or_insert_with(|| {
                Arc::new(Rule {
                    id: r.id.clone(),
                    filters: compile_filters(&r.filters),
                    backends: r.backends.iter().map(compile_backend).collect(),
                    total_weight: r.total_weight,
                    request_timeout: r.request_timeout,
                    backend_request_timeout: r.backend_request_timeout,
                })
            })
            .clone()
    }
}

/// Anchors an expression validated by translate (it cannot fail to compile here).
fn anchored(re: &str) -> Regex {
    Regex::new(&format!("^(?:{re})$")).unwrap_or_else(|_| Regex::new("$^").expect("static"))
}

fn value(v: &ir::ValueMatch) -> ValueMatch {
    match v {
        ir::ValueMatch::Exact(s) => ValueMatch::Exact(s.clone()),
        ir::ValueMatch::RegularExpression(r) => ValueMatch::RegularExpression(anchored(r)),
    }
}

fn compile_match(m: &ir::RouteMatch) -> RouteMatch {
    RouteMatch {
        path: match &m.path {
            ir::PathMatch::Exact(p) => PathMatch::Exact(p.clone()),
            ir::PathMatch::PathPrefix(p) => PathMatch::PathPrefix(p.clone()),
            ir::PathMatch::RegularExpression(r) => PathMatch::RegularExpression(anchored(r)),
        },
        headers: m
            .headers
            .iter()
            .filter_map(|h| {
                Some((
                    HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                    value(&h.value),
                ))
            })
            .collect(),
        query_params: m
            .query_params
            .iter()
            .map(|q| (q.name.clone(), value(&q.value)))
            .collect(),
        method: m
            .method
            .as_ref()
            .and_then(|s| Method::from_bytes(s.as_bytes()).ok()),
    }
}

fn header_edits(e: &ir::HeaderEdits) -> HeaderEdits {
    let pairs = |v: &[(String, String)]| {
        v.iter()
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect()
    };
    HeaderEdits {
        set: pairs(&e.set),
        add: pairs(&e.add),
        remove: e
            .remove
            .iter()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect(),
    }
}

fn compile_filters(f: &ir::Filters) -> Filters {
    Filters {
        request_headers: f.request_headers.as_ref().map(header_edits),
        response_headers: f.response_headers.as_ref().map(header_edits),
        redirect: f.redirect.as_ref().map(|r| Redirect {
            scheme: r.scheme.clone(),
            hostname: r.hostname.clone(),
            port: r.port,
            path: r.path.clone(),
            status: r.status,
        }),
        rewrite: f.rewrite.as_ref().map(|r| Rewrite {
            hostname: r
                .hostname
                .as_deref()
                .and_then(|h| HeaderValue::from_str(h).ok()),
            path: r.path.clone(),
        }),
        cors: f.cors.clone(),
        mirrors: f
            .mirrors
            .iter()
            .map(|m| (compile_backend(&m.backend), m.parts_per_million))
            .collect(),
    }
}

fn compile_backend(b: &ir::Backend) -> Backend {
    let base = Destination::for_backend(b);
    let target = match &b.target {
        ir::BackendTarget::Endpoints(eps) => Target::Endpoints(
            eps.iter()
                .filter_map(|e| {
                    Some(Endpoint {
                        address: e.address,
                        authority: e.address.to_string().parse().ok()?,
                        transport: e.transport.clone(),
                        mesh_labelled: e
                            .labels
                            .get(mesh::consts::TLS_MODE_LABEL)
                            .is_some_and(|v| v == "istio"),
                        destination: Destination::for_endpoint(&base, e).interned(),
                    })
                })
                .collect(),
        ),
        ir::BackendTarget::Dns {
            host,
            port,
            transport,
        } => match format!("{host}:{port}").parse() {
            Ok(authority) => Target::Dns {
                authority,
                transport: transport.clone(),
            },
            Err(_) => Target::Unresolvable(format!("{host}:{port} is not a valid authority")),
        },
        ir::BackendTarget::Unresolvable(why) => Target::Unresolvable(why.clone()),
    };
    Backend {
        name: b.name.clone(),
        weight: b.weight,
        http2: b.http2,
        target,
        filters: compile_filters(&b.filters),
        destination: base.interned(),
    }
}

fn query_pairs(q: &str) -> impl Iterator<Item = (&str, &str)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
}

/// Minimal `%XX` and `+` decoding for query parameter values.
pub fn percent_decode(s: &str) -> String {
    if !s.contains(['%', '+']) {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrite_to_root_keeps_the_rest_of_the_path() {
        let m = PathModifier::ReplacePrefixMatch("/".into());
        let matched = PathMatch::PathPrefix("/httpbin".into()).prefix_len();
        assert_eq!(modify_path(&m, "/httpbin/get", matched), "/get");
        assert_eq!(modify_path(&m, "/httpbin", matched), "/");
        let m = PathModifier::ReplacePrefixMatch("/v2".into());
        let matched = PathMatch::PathPrefix("/a".into()).prefix_len();
        assert_eq!(modify_path(&m, "/a/b", matched), "/v2/b");
    }

    #[test]
    fn path_prefix_is_element_wise() {
        let m = compile_match(&ir::RouteMatch {
            path: ir::PathMatch::PathPrefix("/foo".into()),
            headers: vec![],
            query_params: vec![],
            method: None,
        });
        let h = HeaderMap::new();
        let view = |p| RequestView {
            method: &Method::GET,
            path: p,
            query: None,
            headers: &h,
        };
        assert!(m.matches(&view("/foo")));
        assert!(m.matches(&view("/foo/bar")));
        assert!(!m.matches(&view("/foobar")));
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
