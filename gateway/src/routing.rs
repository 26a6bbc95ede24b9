//! The compiled, immutable route table and request matching.
//!
//! `translate` builds a [`Table`] from Gateway API resources; the request path only reads
//! it (through an `ArcSwap`), so nothing here allocates on the hot path beyond what a
//! match needs. Serialization is the `/config_dump` format and the golden-test format.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;
use serde::{Serialize, Serializer};

use crate::upstream::Transport;

/// Everything the data plane needs, compiled and validated.
#[derive(Debug, Default, Serialize)]
pub struct Table {
    /// Listening ports, by port number.
    pub ports: BTreeMap<u16, PortTable>,
    /// Non-fatal findings (routes that attach nowhere, ignored kinds...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Some backend may use mesh mTLS (readiness then waits for the SDS identity).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mesh_upstreams: bool,
}

/// Edge protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protocol {
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "HTTPS")]
    Https,
}

impl Protocol {
    /// URL scheme (`http`/`https`), also the `X-Forwarded-Proto` value.
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

/// One listening port: the Gateway listeners on it merged.
#[derive(Debug, Serialize)]
pub struct PortTable {
    pub port: u16,
    pub protocol: Protocol,
    /// TLS server settings per listener hostname (HTTPS only), most specific first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<crate::tls::ListenerTls>,
    /// Virtual hosts, most specific hostname first; `*` last.
    pub virtual_hosts: Vec<VirtualHost>,
}

impl PortTable {
    /// Picks the virtual host for a request host (lowercase, without port).
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        self.virtual_hosts.iter().find(|v| v.hostname.matches(host))
    }
}

/// A hostname pattern: exact, `*.suffix`, or any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Wildcard(String),
    Any,
}

impl HostPattern {
    /// Parses `foo.com`, `*.foo.com` or `*`.
    pub fn parse(s: &str) -> HostPattern {
        let s = s.to_ascii_lowercase();
        if s == "*" || s.is_empty() {
            HostPattern::Any
        } else if let Some(rest) = s.strip_prefix('*') {
            HostPattern::Wildcard(rest.to_string())
        } else {
            HostPattern::Exact(s)
        }
    }

    /// Does this pattern match a concrete host? A wildcard matches one or more labels.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            HostPattern::Any => true,
        }
    }

    /// Sort key: exact first, then longer wildcards, then any.
    pub fn specificity(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(h) => (0, usize::MAX - h.len()),
            HostPattern::Wildcard(s) => (1, usize::MAX - s.len()),
            HostPattern::Any => (2, 0),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*{s}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Routes for one hostname, in Gateway API precedence order.
#[derive(Debug, Serialize)]
pub struct VirtualHost {
    pub hostname: HostPattern,
    pub routes: Vec<RouteEntry>,
}

/// One match of one rule; a rule with several matches yields several entries.
#[derive(Debug, Serialize)]
pub struct RouteEntry {
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub rule: Arc<Rule>,
}

/// What a request must look like to select a rule.
#[derive(Debug, Clone, Serialize)]
pub struct RouteMatch {
    pub path: PathMatch,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryMatch>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_display"
    )]
    pub method: Option<Method>,
}

#[derive(Debug, Clone, Serialize)]
pub enum PathMatch {
    Exact(String),
    /// Element-wise prefix, stored without trailing `/` (empty = `/`).
    PathPrefix(String),
    RegularExpression(#[serde(serialize_with = "ser_regex")] Regex),
}

#[derive(Debug, Clone, Serialize)]
pub enum ValueMatch {
    Exact(String),
    RegularExpression(#[serde(serialize_with = "ser_regex")] Regex),
}

impl ValueMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatch::Exact(e) => e == v,
            ValueMatch::RegularExpression(r) => r.is_match(v),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HeaderMatch {
    #[serde(serialize_with = "ser_display")]
    pub name: HeaderName,
    pub value: ValueMatch,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// A rule: what to do once matched.
#[derive(Debug, Serialize)]
pub struct Rule {
    /// `namespace/name` of the HTTPRoute.
    pub route: String,
    /// Index of the rule in the route.
    pub index: usize,
    /// `namespace/name/index`, the name used in metrics and logs.
    pub id: String,
    #[serde(skip_serializing_if = "Filters::is_empty")]
    pub filters: Filters,
    /// Weighted backends; empty with no redirect means 500.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
    /// Sum of backend weights.
    pub total_weight: u32,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub request_timeout: Option<Duration>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
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

/// Filters of a rule or a backendRef.
#[derive(Debug, Default, Serialize)]
pub struct Filters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderEdits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderEdits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.request_headers.is_none()
            && self.response_headers.is_none()
            && self.redirect.is_none()
            && self.rewrite.is_none()
    }
}

/// RequestHeaderModifier / ResponseHeaderModifier.
#[derive(Debug, Default, Serialize)]
pub struct HeaderEdits {
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_pairs")]
    pub set: Vec<(HeaderName, HeaderValue)>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_pairs")]
    pub add: Vec<(HeaderName, HeaderValue)>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_names")]
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    pub fn apply(&self, headers: &mut http::HeaderMap) {
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

/// How a path is rewritten or redirected.
#[derive(Debug, Clone, Serialize)]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replace the prefix the request matched (a PathPrefix match) with this.
    ReplacePrefixMatch(String),
}

impl PathModifier {
    /// Applies to a path (no query) that matched `matched`.
    pub fn apply(&self, path: &str, matched: &PathMatch) -> String {
        match self {
            PathModifier::ReplaceFullPath(p) => p.clone(),
            PathModifier::ReplacePrefixMatch(replacement) => {
                let prefix_len = match matched {
                    PathMatch::PathPrefix(p) => p.len(),
                    _ => 0,
                };
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
}

/// RequestRedirect.
#[derive(Debug, Serialize)]
pub struct Redirect {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    pub status: u16,
}

/// URLRewrite.
#[derive(Debug, Serialize)]
pub struct Rewrite {
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_header"
    )]
    pub hostname: Option<HeaderValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// One weighted backendRef, resolved.
#[derive(Debug, Serialize)]
pub struct Backend {
    /// `Service ns/name:port` (or the reference as written when unresolvable).
    pub name: String,
    pub weight: u32,
    /// Speak HTTP/2 (h2c) to this backend (Service `appProtocol`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub http2: bool,
    pub target: BackendTarget,
    #[serde(skip_serializing_if = "Filters::is_empty")]
    pub filters: Filters,
}

/// Where a backend's traffic goes.
#[derive(Debug, Serialize)]
pub enum BackendTarget {
    /// Addresses from EndpointSlices (possibly none: 503).
    Endpoints(Vec<Endpoint>),
    /// A DNS name resolved at connect time (Service DNS name or `externalName`).
    Dns {
        host: String,
        port: u16,
        #[serde(skip_serializing_if = "Transport::is_plaintext")]
        transport: Transport,
    },
    /// The reference cannot be resolved (500); the reason is given to the client.
    Unresolvable(String),
}

impl BackendTarget {
    /// Whether any endpoint of this backend is reached with mesh mTLS.
    pub fn uses_mesh(&self) -> bool {
        match self {
            BackendTarget::Endpoints(eps) => eps.iter().any(|e| !e.transport.is_plaintext()),
            BackendTarget::Dns { transport, .. } => !transport.is_plaintext(),
            BackendTarget::Unresolvable(_) => false,
        }
    }
}

/// One upstream address with the labels of the workload behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// Labels (EndpointSlice labels, overlaid with the target Pod's labels when known);
    /// the mesh connector reads `security.istio.io/tlsMode`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How to connect (plaintext today; mesh mTLS later).
    pub transport: Transport,
}

/// The request properties matching looks at.
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
}

impl RouteMatch {
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
        if !path_ok {
            return false;
        }
        if let Some(m) = &self.method
            && m != req.method
        {
            return false;
        }
        for h in &self.headers {
            let found = req
                .headers
                .get_all(&h.name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| h.value.matches(v)));
            if !found {
                return false;
            }
        }
        for q in &self.query_params {
            let found = req.query.is_some_and(|query| {
                query_pairs(query)
                    .find(|(k, _)| *k == q.name)
                    .is_some_and(|(_, v)| q.value.matches(&percent_decode(v)))
            });
            if !found {
                return false;
            }
        }
        true
    }
}

impl VirtualHost {
    /// First route (in precedence order) matching the request.
    pub fn find(&self, req: &RequestView<'_>) -> Option<&RouteEntry> {
        self.routes.iter().find(|r| r.matcher.matches(req))
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

fn ser_regex<S: Serializer>(r: &Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

fn ser_display<S: Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_opt_display<S: Serializer, T: std::fmt::Display>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

fn ser_opt_header<S: Serializer>(v: &Option<HeaderValue>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&String::from_utf8_lossy(v.as_bytes())),
        None => s.serialize_none(),
    }
}

fn ser_opt_duration<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.collect_str(&humantime::format_duration(*d)),
        None => s.serialize_none(),
    }
}

fn ser_pairs<S: Serializer>(v: &[(HeaderName, HeaderValue)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (n, val) in v {
        m.serialize_entry(n.as_str(), &String::from_utf8_lossy(val.as_bytes()))?;
    }
    m.end()
}

fn ser_names<S: Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|n| n.as_str()))
}

impl Serialize for crate::tls::ListenerTls {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.summary.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_host_matches_one_or_more_labels_but_not_the_bare_suffix() {
        let p = HostPattern::parse("*.example.com");
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
    }

    #[test]
    fn prefix_rewrite_to_root_keeps_the_rest_of_the_path() {
        let m = PathModifier::ReplacePrefixMatch("/".into());
        let matched = PathMatch::PathPrefix("/httpbin".into());
        assert_eq!(m.apply("/httpbin/get", &matched), "/get");
        assert_eq!(m.apply("/httpbin", &matched), "/");
        let m = PathModifier::ReplacePrefixMatch("/v2".into());
        let matched = PathMatch::PathPrefix("/a".into());
        assert_eq!(m.apply("/a/b", &matched), "/v2/b");
    }

    #[test]
    fn path_prefix_is_element_wise() {
        let m = RouteMatch {
            path: PathMatch::PathPrefix("/foo".into()),
            headers: vec![],
            query_params: vec![],
            method: None,
        };
        let h = http::HeaderMap::new();
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
