//! Runtime routes: compiled matches (regexes, header names, methods), filters with
//! ready-made header values, and backends with pre-parsed upstream authorities.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

use super::authz::Authorizer;
use super::limits::{TokenBucket, cidr_contains, parse_cidr};
use crate::ir::{self, PathModifier, Redirect, Transport};
use crate::observe::istio_metrics::Destination;
use crate::upstream::attempt::RetryPolicy;
use crate::upstream::backend_state::{BackendState, BackendStates};
use crate::upstream::outlier::EndpointHealth;

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
    /// Precedence across the listener's virtual hosts (smaller first).
    pub rank: u32,
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
    /// Plain string prefix (Istio).
    Prefix(String),
    /// Plain string prefix, ASCII case ignored (Istio's `ignoreUriCase`).
    PrefixIgnoreCase(String),
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
            PathMatch::Prefix(p) => req.path.starts_with(p.as_str()),
            PathMatch::PrefixIgnoreCase(p) => req
                .path
                .as_bytes()
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
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
    /// `namespace/name/index` (shared: metrics labels hold it; a request's record reads it
    /// through the rule).
    pub id: Arc<str>,
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
    /// `retry`; `None` means one attempt.
    pub retry: Option<RetryPolicy>,
    /// Local rate limits (BackendTrafficPolicy).
    pub rate_limit: Option<RateLimiter>,
    /// The gateway's AuthorizationPolicies (the same for every rule).
    pub authorization: Option<Arc<Authorizer>>,
}

/// A route's compiled local rate limits.
pub struct RateLimiter {
    /// `BackendTrafficPolicy ns/name`.
    pub source: String,
    /// Trusted X-Forwarded-For hops: which address is the client's.
    pub num_trusted_proxies: u32,
    /// The limits.
    pub limits: Vec<Limit>,
}

/// One limit with its bucket.
pub struct Limit {
    selectors: Vec<Selector>,
    /// Requests per `per`.
    pub requests: u64,
    /// The unit.
    pub per: Duration,
    /// Per process, shared by every rule of the route.
    pub bucket: Arc<TokenBucket>,
}

struct Selector {
    headers: Vec<(HeaderName, Option<ValueMatch>, bool)>,
    cidr: Option<(IpAddr, u8)>,
}

/// What selectors look at.
pub struct SelectorView<'a> {
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The client's address.
    pub client_ip: IpAddr,
}

impl Selector {
    fn matches(&self, v: &SelectorView<'_>) -> bool {
        let headers_ok = self.headers.iter().all(|(name, value, invert)| {
            let hit = match value {
                None => v.headers.contains_key(name),
                Some(m) => v
                    .headers
                    .get_all(name)
                    .iter()
                    .any(|h| h.to_str().is_ok_and(|h| m.matches(h))),
            };
            hit != *invert
        });
        headers_ok
            && self
                .cidr
                .is_none_or(|(net, len)| cidr_contains(net, len, v.client_ip))
    }
}

impl RateLimiter {
    /// The limits that select a request (a limit without selectors selects every one).
    pub fn selecting<'a>(&'a self, v: &'a SelectorView<'a>) -> impl Iterator<Item = &'a Limit> {
        self.limits
            .iter()
            .filter(|l| l.selectors.is_empty() || l.selectors.iter().any(|s| s.matches(v)))
    }
}

impl Rule {
    /// Weighted random pick, as an index into `backends`; `None` when every weight is 0
    /// or there are no backends.
    pub fn pick_backend_index(&self) -> Option<usize> {
        pick_weighted_index(&self.backends, self.total_weight)
    }
}

/// Weighted random pick among backends whose weights sum to `total`.
pub fn pick_weighted(backends: &[Backend], total: u32) -> Option<&Backend> {
    pick_weighted_index(backends, total).map(|i| &backends[i])
}

/// The same pick, as an index into `backends`.
fn pick_weighted_index(backends: &[Backend], total: u32) -> Option<usize> {
    if total == 0 {
        return None;
    }
    let mut n = fastrand::u32(0..total);
    for (i, b) in backends.iter().enumerate() {
        if n < b.weight {
            return Some(i);
        }
        n -= b.weight;
    }
    None
}

/// Compiled filters.
#[derive(Default)]
pub struct Filters {
    /// RequestHeaderModifier.
    pub request_headers: Option<Box<HeaderEdits>>,
    /// ResponseHeaderModifier.
    pub response_headers: Option<Box<HeaderEdits>>,
    /// RequestRedirect (plain data).
    pub redirect: Option<Box<Redirect>>,
    /// URLRewrite.
    pub rewrite: Option<Box<Rewrite>>,
    /// CORS (plain data; preflights are rare enough to format on demand).
    pub cors: Option<Box<crate::ir::Cors>>,
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
    /// Applies remove, set, add: Envoy's order (its header parser removes first), which
    /// matters only for an Istio or Gloo name both removed and set (Gateway API allows
    /// one action per name).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
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
    /// Length of the matched prefix (PathPrefix, Prefix), else 0: what
    /// ReplacePrefixMatch replaces.
    pub fn prefix_len(&self) -> usize {
        match self {
            PathMatch::PathPrefix(p) | PathMatch::Prefix(p) | PathMatch::PrefixIgnoreCase(p) => {
                p.len()
            }
            _ => 0,
        }
    }
}

/// Applies a path modifier to a path (no query) whose first `prefix_len` bytes matched.
pub fn modify_path(m: &PathModifier, path: &str, prefix_len: usize) -> String {
    match m {
        PathModifier::ReplaceFullPath(p) => p.clone(),
        PathModifier::ReplaceStringPrefix(replacement) => {
            let out = format!("{replacement}{}", path.get(prefix_len..).unwrap_or(""));
            if out.is_empty() { "/".to_string() } else { out }
        }
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
    /// `Service ns/name:port` (shared: metrics labels hold it; a request's record reads it
    /// through its rule).
    pub name: Arc<str>,
    /// Relative weight.
    pub weight: u32,
    /// Speak h2c.
    pub http2: bool,
    /// Where traffic goes.
    pub target: Target,
    /// BackendRef-level filters.
    pub filters: Filters,
    /// Per-process state (in-flight requests, retry budget), kept across reloads.
    pub state: Arc<BackendState>,
    /// DestinationRule traffic policy (load balancer, limits, outlier detection).
    pub policy: Option<Arc<ir::BackendPolicy>>,
    /// Istio's destination labels before an endpoint is picked (the Service only), and
    /// for a DNS target.
    pub destination: Arc<Destination>,
    /// The DestinationRule subset an Istio destination names (in its cluster's name).
    pub subset: Option<Arc<str>>,
}

impl Backend {
    /// Envoy's cluster name as Istio builds it, `outbound|<port>|<subset>|<service host>`,
    /// for a Service backend (`dest`: its destination labels); else the backend's name.
    pub fn cluster_name(&self, dest: &Destination) -> String {
        match self.name.rsplit_once(':') {
            Some((_, port)) if &*dest.service_name != crate::observe::istio_metrics::UNKNOWN => {
                let subset = self.subset.as_deref().unwrap_or("");
                format!("outbound|{port}|{subset}|{}", dest.service)
            }
            _ => self.name.to_string(),
        }
    }

    /// The connection settings of the backend's pool (its DestinationRule's, else the
    /// shared pools').
    pub fn pool(&self) -> &ir::PoolSettings {
        static SHARED: ir::PoolSettings = ir::PoolSettings {
            connect_timeout: None,
            idle_timeout: None,
            max_requests_per_connection: None,
            tcp_keepalive: None,
        };
        self.policy
            .as_ref()
            .and_then(|p| p.limits.as_ref())
            .map_or(&SHARED, |l| &l.pool)
    }
}

/// Where a backend's traffic goes.
pub enum Target {
    /// Endpoint addresses (possibly none), shared by the backends that reach them.
    Endpoints(Arc<[Endpoint]>),
    /// A DNS name resolved at connect time.
    Dns {
        /// `host:port`.
        authority: Authority,
        /// How to connect.
        transport: Transport,
    },
    /// The reference did not resolve; the reason.
    Unresolvable(String),
    /// An Istio destination without a cluster (503 `NC`); the reason.
    NoCluster(String),
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
    /// Outlier-detection and load state, per process, kept across reloads.
    pub health: Arc<EndpointHealth>,
    /// Istio's destination labels for requests to this endpoint.
    pub destination: Arc<Destination>,
}

impl crate::upstream::lb::Candidate for Endpoint {
    fn key(&self) -> &str {
        self.authority.as_str()
    }
    fn health(&self) -> &EndpointHealth {
        &self.health
    }
}

/// Builds runtime rules once per IR rule (rules are shared by several entries).
#[derive(Default)]
pub struct RuleCache {
    /// By the IR rule's address; foldhash, not SipHash: 40k lookups per reload.
    built: hashbrown::HashMap<*const ir::Rule, Arc<Rule>>,
    backends: BackendBuilder,
    /// Buckets by (route, limit index): the rules of one route share them.
    buckets: HashMap<(String, usize), Arc<TokenBucket>>,
    authz: Option<Arc<Authorizer>>,
}

impl RuleCache {
    /// A cache whose backends take their state from `states`.
    pub fn new(states: BackendStates, authz: Option<Arc<Authorizer>>, rules: usize) -> RuleCache {
        RuleCache {
            // Sized up front: 40k rules would otherwise rehash a dozen times.
            built: hashbrown::HashMap::with_capacity(rules),
            backends: BackendBuilder::new(states),
            buckets: HashMap::new(),
            authz,
        }
    }

    /// The backend builder, for connection routes.
    pub fn backends(&mut self) -> &mut BackendBuilder {
        &mut self.backends
    }

    /// Compiles a virtual host.
    pub fn virtual_host(&mut self, v: &ir::VirtualHost) -> VirtualHost {
        let routes = v
            .routes
            .iter()
            .map(|e| RouteEntry {
                matcher: compile_match(&e.matcher),
                rule: self.rule(&e.rule),
                rank: e.rank,
            })
            .collect();
        VirtualHost { routes }
    }

    fn rule(&mut self, r: &Arc<ir::Rule>) -> Arc<Rule> {
        if let Some(built) = self.built.get(&Arc::as_ptr(r)) {
            return built.clone();
        }
        let backends = &mut self.backends;
        let rule = Arc::new(Rule {
            id: r.id.clone(),
            filters: backends.filters(&r.filters),
            backends: r.backends.iter().map(|b| backends.backend(b)).collect(),
            total_weight: r.total_weight,
            request_timeout: r.request_timeout,
            backend_request_timeout: r.backend_request_timeout,
            retry: r.retry.as_ref().map(RetryPolicy::from_ir),
            rate_limit: r
                .rate_limit
                .as_ref()
                .map(|l| compile_rate_limit(l, &r.route, &mut self.buckets)),
            authorization: self.authz.clone(),
        });
        self.built.insert(Arc::as_ptr(r), rule.clone());
        rule
    }
}

fn compile_rate_limit(
    l: &ir::RateLimit,
    route: &str,
    buckets: &mut HashMap<(String, usize), Arc<TokenBucket>>,
) -> RateLimiter {
    let limits = l
        .limits
        .iter()
        .enumerate()
        .map(|(i, lim)| Limit {
            selectors: lim
                .selectors
                .iter()
                .map(|s| Selector {
                    headers: s
                        .headers
                        .iter()
                        .filter_map(|h| {
                            Some((
                                HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                                h.value.as_ref().map(value),
                                h.invert,
                            ))
                        })
                        .collect(),
                    cidr: s.source_cidr.as_deref().and_then(parse_cidr),
                })
                .collect(),
            requests: lim.requests,
            per: lim.per,
            bucket: buckets
                .entry((route.to_owned(), i))
                .or_insert_with(|| Arc::new(TokenBucket::new(lim.requests, lim.per)))
                .clone(),
        })
        .collect();
    RateLimiter {
        source: l.source.clone(),
        num_trusted_proxies: l.num_trusted_proxies,
        limits,
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
            ir::PathMatch::Prefix(p) => PathMatch::Prefix(p.clone()),
            ir::PathMatch::PrefixIgnoreCase(p) => PathMatch::PrefixIgnoreCase(p.clone()),
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

fn header_edits(e: &ir::HeaderEdits) -> Box<HeaderEdits> {
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
    Box::new(HeaderEdits {
        set: pairs(&e.set),
        add: pairs(&e.add),
        remove: e
            .remove
            .iter()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect(),
    })
}

/// Builds runtime backends. Backends of many rules that reach the same endpoints under
/// the same name (10k routes to one Service) share one build of their endpoints, state and
/// destination labels.
#[derive(Default)]
pub struct BackendBuilder {
    states: BackendStates,
    /// By the IR endpoint list's address (the IR outlives the build), then what else the
    /// runtime endpoints depend on: the backend's name, subset and Service host
    /// (foldhash: looked up for every backend of every rule).
    shared: hashbrown::HashMap<usize, Vec<SharedTarget>>,
}

/// One shared build: what it was made for, and its parts.
struct SharedTarget {
    name: Arc<str>,
    subset: Option<String>,
    service_host: Option<Arc<str>>,
    state: Arc<BackendState>,
    endpoints: Arc<[Endpoint]>,
    destination: Arc<Destination>,
}

/// A backend's state, endpoints and destination labels.
type SharedParts = (Arc<BackendState>, Arc<[Endpoint]>, Arc<Destination>);

impl SharedTarget {
    fn parts(&self) -> SharedParts {
        let (s, e, d) = (&self.state, &self.endpoints, &self.destination);
        (s.clone(), e.clone(), d.clone())
    }
}

impl BackendBuilder {
    /// A builder whose backends take their state from (and keep it in) `states`.
    pub fn new(states: BackendStates) -> BackendBuilder {
        BackendBuilder {
            states,
            shared: hashbrown::HashMap::new(),
        }
    }

    fn filters(&mut self, f: &ir::Filters) -> Filters {
        Filters {
            request_headers: f.request_headers.as_deref().map(header_edits),
            response_headers: f.response_headers.as_deref().map(header_edits),
            redirect: f.redirect.as_ref().map(|r| {
                Box::new(Redirect {
                    scheme: r.scheme.clone(),
                    hostname: r.hostname.clone(),
                    port: r.port,
                    path: r.path.clone(),
                    status: r.status,
                })
            }),
            rewrite: f.rewrite.as_ref().map(|r| {
                Box::new(Rewrite {
                    hostname: r
                        .hostname
                        .as_deref()
                        .and_then(|h| HeaderValue::from_str(h).ok()),
                    path: r.path.clone(),
                })
            }),
            cors: f.cors.clone(),
            mirrors: f
                .mirrors
                .iter()
                .map(|m| (self.backend(&m.backend), m.parts_per_million))
                .collect(),
        }
    }

    /// Compiles one backend.
    pub fn backend(&mut self, b: &ir::Backend) -> Backend {
        let (state, target, destination) = match &b.target {
            ir::BackendTarget::Endpoints(eps) => {
                let (state, endpoints, destination) = self.endpoints(b, eps);
                (state, Target::Endpoints(endpoints), destination)
            }
            ir::BackendTarget::Dns {
                host,
                port,
                transport,
            } => {
                let target = dns_target(host, *port, transport);
                (
                    self.state(b),
                    target,
                    Destination::for_backend(b).interned(),
                )
            }
            ir::BackendTarget::Unresolvable(why) | ir::BackendTarget::NoCluster(why) => {
                let target = match &b.target {
                    ir::BackendTarget::NoCluster(_) => Target::NoCluster(why.clone()),
                    _ => Target::Unresolvable(why.clone()),
                };
                (
                    self.state(b),
                    target,
                    Destination::for_backend(b).interned(),
                )
            }
        };
        Backend {
            name: b.name.clone(),
            weight: b.weight,
            http2: b.http2,
            target,
            filters: self.filters(&b.filters),
            state,
            policy: b.policy.clone(),
            destination,
            subset: b.subset.as_deref().map(Arc::from),
        }
    }

    /// A backend's state; a subset keeps its own in-flight counts and retry budget.
    fn state(&self, b: &ir::Backend) -> Arc<BackendState> {
        match &b.subset {
            Some(s) => self.states.get(&format!("{} subset {s}", b.name)),
            None => self.states.get(&b.name),
        }
    }

    fn endpoints(&mut self, b: &ir::Backend, eps: &Arc<[ir::Endpoint]>) -> SharedParts {
        let key = Arc::as_ptr(eps) as *const u8 as usize;
        let same = |t: &&SharedTarget| {
            (&t.name, &t.subset, &t.service_host) == (&b.name, &b.subset, &b.service_host)
        };
        if let Some(hit) = self.shared.get(&key).and_then(|v| v.iter().find(same)) {
            return hit.parts();
        }
        let state = self.state(b);
        let base = Destination::for_backend(b);
        let endpoints = eps
            .iter()
            .filter_map(|e| {
                let key = e.address.to_string();
                Some(Endpoint {
                    address: e.address,
                    health: state.endpoint(&key),
                    authority: key.parse().ok()?,
                    transport: e.transport.clone(),
                    mesh_labelled: e
                        .labels
                        .get(mesh::consts::TLS_MODE_LABEL)
                        .is_some_and(|v| v == "istio"),
                    destination: Destination::for_endpoint(&base, e).interned(),
                })
            })
            .collect();
        let shared = SharedTarget {
            name: b.name.clone(),
            subset: b.subset.clone(),
            service_host: b.service_host.clone(),
            state,
            endpoints,
            destination: base.interned(),
        };
        let parts = shared.parts();
        self.shared.entry(key).or_default().push(shared);
        parts
    }
}

fn dns_target(host: &str, port: u16, transport: &Transport) -> Target {
    match format!("{host}:{port}").parse() {
        Ok(authority) => Target::Dns {
            authority,
            transport: transport.clone(),
        },
        Err(_) => Target::Unresolvable(format!("{host}:{port} is not a valid authority")),
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

    #[test]
    fn backends_of_many_rules_share_one_build_of_their_endpoints() {
        let mut yaml = String::from(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: gw, namespace: default}\n\
             spec: {listeners: [{name: http, port: 8080, protocol: HTTP}]}\n\
             ---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
             spec: {ports: [{name: http, port: 80}, {name: admin, port: 81}]}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}\n\
             addressType: IPv4\nports: [{name: http, port: 8000}, {name: admin, port: 9000}]\n\
             endpoints: [{addresses: [10.0.0.1]}]\n",
        );
        for (name, port) in [("one", 80), ("two", 80), ("three", 81)] {
            yaml.push_str(&format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {{name: {name}, namespace: default}}\n\
                 spec: {{parentRefs: [{{name: gw}}], hostnames: [{name}.example.com], \
                 rules: [{{backendRefs: [{{name: web, port: {port}}}]}}]}}\n"
            ));
        }
        let snap = crate::providers::file::parse_str(&yaml).unwrap();
        let out = crate::translate::translate(&snap, &Default::default());
        let (ir, _) = out.accepted().unwrap();
        let tables = super::super::build_with(Arc::new(ir), &BackendStates::default());
        let listener = &tables.ports[&8080].listeners[0];
        let backend = |host: &str| {
            let vh = listener.virtual_host(host).expect(host);
            let b = &vh.routes[0].rule.backends[0];
            match &b.target {
                Target::Endpoints(e) => (e.clone(), b.state.clone()),
                _ => panic!("{host}: no endpoints"),
            }
        };
        let (one, two, three) = (
            backend("one.example.com"),
            backend("two.example.com"),
            backend("three.example.com"),
        );
        assert!(Arc::ptr_eq(&one.0, &two.0), "port 80 built twice");
        assert!(Arc::ptr_eq(&one.1, &two.1), "port 80 with two states");
        assert!(!Arc::ptr_eq(&one.0, &three.0));
        assert_eq!(one.0[0].authority.as_str(), "10.0.0.1:8000");
        assert_eq!(three.0[0].authority.as_str(), "10.0.0.1:9000");
    }
}
