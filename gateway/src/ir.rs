//! The intermediate representation: what `translate` produces and the data plane is built
//! from. Pure data — no sockets, no rustls objects, no compiled regexes — so golden tests
//! compare it as JSON and `/config_dump` shows it. Credentials are DER.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// Everything the data plane needs, validated.
#[derive(Debug, Default, Serialize)]
pub struct Config {
    /// The port table: every listening port of every dialect, by number.
    pub ports: BTreeMap<u16, Port>,
    /// Non-fatal findings (routes that attach nowhere, ignored kinds...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Some backend may use mesh mTLS (readiness then waits for the SDS identity).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mesh_upstreams: bool,
    /// Istio AuthorizationPolicies that apply to this gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Arc<Authorization>>,
}

/// The AuthorizationPolicies of the gateway: any DENY match denies; then, if any ALLOW
/// policy exists, a request must match one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Authorization {
    /// Proxies in front of the gateway whose X-Forwarded-For entries are trusted
    /// (Istio's `numTrustedProxies`): the client address for `remoteIpBlocks`.
    pub num_trusted_proxies: u32,
    /// DENY policies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<AuthzPolicy>,
    /// ALLOW policies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AuthzPolicy>,
}

/// One policy's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthzPolicy {
    /// `AuthorizationPolicy ns/name`.
    pub source: String,
    /// Matches every request (a DENY policy with a field meshgate cannot evaluate fails
    /// closed this way).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub match_all: bool,
    /// Rules; any matching matches the policy.
    pub rules: Vec<AuthzRule>,
}

/// A rule: any `from` and any `to` must match (an empty list matches anything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuthzRule {
    /// Source conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<AuthzSource>,
    /// Operation conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<AuthzOperation>,
}

/// IP conditions (CIDRs, validated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuthzSource {
    /// Peer in one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// Peer in none of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Client in one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    /// Client in none of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

/// Operation conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuthzOperation {
    /// Hosts (lower case; `*.suffix`, `prefix.*`, `*`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Not these hosts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Listener ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Not these ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<u16>,
    /// Methods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Not these methods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Paths (`prefix*`, `*suffix`, `*`, exact, or a path template with `{*}`, `{**}`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Not these paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// Edge protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protocol {
    /// Plain HTTP/1.1 and h2c.
    #[serde(rename = "HTTP")]
    Http,
    /// TLS-terminated HTTP/1.1 and HTTP/2.
    #[serde(rename = "HTTPS")]
    Https,
    /// TLS chosen by SNI: passed through untouched, or terminated and then proxied as
    /// TCP.
    #[serde(rename = "TLS")]
    Tls,
    /// Plain TCP, proxied byte for byte.
    #[serde(rename = "TCP")]
    Tcp,
}

impl Protocol {
    /// URL scheme (`http`/`https`), also the `X-Forwarded-Proto` value.
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https | Protocol::Tls => "https",
            Protocol::Tcp => "tcp",
        }
    }

    /// The API spelling (`HTTP`, `HTTPS`, `TLS`, `TCP`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
        }
    }

    /// Whether listeners of both protocols can share a port: HTTPS and TLS can (the
    /// ClientHello's SNI picks the listener, as Gateway API and Istio allow); every other
    /// protocol needs a port of its own.
    pub fn shares_port_with(self, other: Protocol) -> bool {
        self == other || (self.is_tls() && other.is_tls())
    }

    /// Does a connection start with a TLS ClientHello?
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}

/// One listening port and the listeners sharing it, most specific hostname first.
#[derive(Debug, Serialize)]
pub struct Port {
    /// Port number.
    pub port: u16,
    /// Connections start with a PROXY protocol header (ClientTrafficPolicy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// HTTP/1.0 requests are served (ClientTrafficPolicy `http1.http10`); refused with
    /// 426 otherwise, as Envoy refuses them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub accept_http10: bool,
    /// The port's protocol (its first listener's); HTTPS and TLS listeners may share a
    /// port, any other second protocol is a conflict.
    pub protocol: Protocol,
    /// Listeners; each keeps its own virtual hosts.
    pub listeners: Vec<Listener>,
}

/// The PROXY protocol on a port: the header's source address becomes the client's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyProtocol {
    /// `ClientTrafficPolicy ns/name`.
    pub source: String,
    /// Connections without a header are accepted too (as they are).
    pub optional: bool,
}

/// One listener: a hostname on a port, its TLS, and the routes attached to it.
#[derive(Debug, Serialize)]
pub struct Listener {
    /// `namespace/gateway/listener`.
    pub name: String,
    /// Hostname the listener serves.
    pub hostname: HostPattern,
    /// The listener's protocol.
    pub protocol: Protocol,
    /// TLS termination (HTTPS, TLS with mode Terminate); none on a TLS listener means
    /// passthrough.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsServer>,
    /// Virtual hosts, most specific hostname first; `*` last (HTTP and HTTPS).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub virtual_hosts: Vec<VirtualHost>,
    /// Connection routes (TCP and TLS), most specific SNI hostname first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub l4_routes: Vec<L4Route>,
    /// Gateway API: a request is matched against the rules of every virtual host whose
    /// hostname matches its host, in one precedence order (entries' `rank`), as the
    /// conformance test HTTPRouteMatchingAcrossRoutes requires. Istio and Gloo: the most
    /// specific virtual host's rules only, as Envoy's virtual host selection.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub across_hostnames: bool,
}

/// Where the connections of one SNI hostname (TLS) or of a whole listener (TCP) go.
#[derive(Debug, Serialize)]
pub struct L4Route {
    /// SNI hostname (`*` on TCP listeners).
    pub hostname: HostPattern,
    /// `Kind namespace/name`, the name used in logs.
    pub route: String,
    /// Weighted backends (shared by every hostname and listener the route serves); none,
    /// or an unresolvable one picked, refuses the connection.
    pub backends: Arc<Vec<Backend>>,
    /// Sum of backend weights.
    pub total_weight: u32,
}

/// TLS server settings of a listener.
#[derive(Debug, Clone, Serialize)]
pub struct TlsServer {
    /// The Secret the certificate came from.
    pub certificate_ref: String,
    /// Certificate chain, leaf first (DER).
    pub cert_chain: Vec<Der>,
    /// Private key (PKCS#8, PKCS#1 or SEC1 DER); never shown.
    pub key: PrivateKey,
    /// Client-certificate validation (`spec.tls.frontend`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<ClientValidation>,
    /// Lowest TLS version accepted.
    pub min_version: MinVersion,
}

/// Client-certificate validation for the HTTPS listeners of one port.
#[derive(Debug, Clone, Serialize)]
pub struct ClientValidation {
    /// Where the CA certificates came from.
    pub ca_refs: Vec<String>,
    /// Trusted client CAs (DER).
    pub ca_certs: Vec<Der>,
    /// `AllowValidOnly` or `AllowInsecureFallback`.
    pub mode: ValidationMode,
}

/// Gateway API `FrontendValidationModeType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ValidationMode {
    /// A valid client certificate is required.
    AllowValidOnly,
    /// A client certificate is requested and verified if sent, but not required.
    AllowInsecureFallback,
}

/// Minimum TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

impl std::str::FromStr for MinVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().trim_start_matches("tlsv") {
            "1.2" | "1_2" => Ok(MinVersion::Tls12),
            "1.3" | "1_3" => Ok(MinVersion::Tls13),
            other => Err(format!("TLS version {other:?} is not one of 1.2, 1.3")),
        }
    }
}

/// DER bytes; shown as a SHA-256 fingerprint.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Der(pub Vec<u8>);

impl std::fmt::Debug for Der {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Der({})", self.fingerprint())
    }
}

impl Der {
    /// `sha256:<hex>` of the bytes.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&self.0)))
    }
}

impl Serialize for Der {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.fingerprint())
    }
}

/// A private key in DER; serialized as `<redacted>`.
pub struct PrivateKey(pub rustls_pki_types::PrivateKeyDer<'static>);

impl Clone for PrivateKey {
    fn clone(&self) -> Self {
        PrivateKey(self.0.clone_key())
    }
}

// Keys compare (and hash) by their bytes, so that a pool keyed by a TLS target changes
// when its key does.
impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.secret_der() == other.0.secret_der()
    }
}

impl Eq for PrivateKey {}

impl std::hash::Hash for PrivateKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.secret_der().hash(h);
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl Serialize for PrivateKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A hostname pattern: exact, `*.suffix`, or any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// One host.
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Wildcard(String),
    /// Every host.
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
    /// The hostname (intersection of listener and route hostnames).
    pub hostname: HostPattern,
    /// Match entries, first match wins.
    pub routes: Vec<RouteEntry>,
}

/// One match of one rule; a rule with several matches yields several entries.
#[derive(Debug, Serialize)]
pub struct RouteEntry {
    /// What the request must look like.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// What to do then (shared by the rule's entries).
    pub rule: Arc<Rule>,
    /// Position in the listener's precedence order across its virtual hosts (smaller
    /// first; see [`Listener::across_hostnames`]); its virtual host's order is the list's.
    #[serde(skip)]
    pub rank: u32,
}

/// What a request must look like to select a rule.
#[derive(Debug, Clone, Serialize)]
pub struct RouteMatch {
    /// Path match.
    pub path: PathMatch,
    /// Header matches (all must match).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Query parameter matches (all must match).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryMatch>,
    /// Method (validated upper-case token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A path match.
#[derive(Debug, Clone, Serialize)]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// Element-wise prefix, stored without trailing `/` (empty = `/`).
    PathPrefix(String),
    /// An (already validated) expression matched against the whole path.
    RegularExpression(String),
    /// A plain string prefix (Istio's `uri.prefix`: `/foo` also matches `/foobar`).
    Prefix(String),
    /// A plain string prefix compared ignoring ASCII case (Istio's `uri.prefix` with
    /// `ignoreUriCase`, Envoy's `case_sensitive: false`): still a prefix, so a rewrite
    /// replaces the bytes it matched.
    PrefixIgnoreCase(String),
}

/// A header or query value match.
#[derive(Debug, Clone, Serialize)]
pub enum ValueMatch {
    /// Equal.
    Exact(String),
    /// An (already validated) expression matched against the whole value.
    RegularExpression(String),
}

/// A header match (name validated, lower case).
#[derive(Debug, Clone, Serialize)]
pub struct HeaderMatch {
    /// Header name.
    pub name: String,
    /// Value match.
    pub value: ValueMatch,
}

/// A query parameter match.
#[derive(Debug, Clone, Serialize)]
pub struct QueryMatch {
    /// Parameter name.
    pub name: String,
    /// Value match (against the percent-decoded value).
    pub value: ValueMatch,
}

/// A rule: what to do once matched.
#[derive(Debug, Serialize)]
pub struct Rule {
    /// `namespace/name` of the route (shared by its rules).
    pub route: Arc<str>,
    /// Index of the rule in the route.
    pub index: usize,
    /// `namespace/name/index`, the name used in metrics and logs (the data plane's rule
    /// shares it).
    pub id: Arc<str>,
    /// Rule-level filters.
    #[serde(skip_serializing_if = "Filters::is_empty")]
    pub filters: Filters,
    /// Weighted backends; empty with no redirect means 500.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
    /// Sum of backend weights.
    pub total_weight: u32,
    /// `timeouts.request`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub request_timeout: Option<Duration>,
    /// `timeouts.backendRequest`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub backend_request_timeout: Option<Duration>,
    /// `retry`: when a failed attempt is tried again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Local rate limits (BackendTrafficPolicy) of the route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Arc<RateLimit>>,
}

/// A BackendTrafficPolicy's local rate limits for one route; every limit whose
/// selectors match a request takes a token from its bucket (one bucket per limit and
/// route, per process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// `BackendTrafficPolicy ns/name`.
    pub source: String,
    /// Proxies in front of the gateway trusted to append X-Forwarded-For
    /// (`--num-trusted-proxies`): the client address `sourceCIDR` matches is the N-th
    /// entry from the right, as for AuthorizationPolicy.
    #[serde(skip_serializing_if = "is_zero")]
    pub num_trusted_proxies: u32,
    /// The limits.
    pub limits: Vec<LocalLimit>,
}

/// One limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalLimit {
    /// Any selector matching selects the request; none selects every request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<ClientSelector>,
    /// Requests per `per`.
    pub requests: u64,
    /// The unit.
    #[serde(serialize_with = "ser_duration")]
    pub per: Duration,
}

/// Conditions on a request, all of which must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientSelector {
    /// Header conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<LimitHeaderMatch>,
    /// Client address range (`ip/prefix`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_cidr: Option<String>,
}

/// A header condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitHeaderMatch {
    /// Lower-case name.
    pub name: String,
    /// The value match; `None`: the header must be present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<ValueMatch>,
    /// Matches when the condition does not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

impl PartialEq for ValueMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ValueMatch::Exact(a), ValueMatch::Exact(b)) => a == b,
            (ValueMatch::RegularExpression(a), ValueMatch::RegularExpression(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for ValueMatch {}

/// A rule's retry policy, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Retries after the first attempt (`attempts`).
    pub retries: u32,
    /// Response codes retried.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<u16>,
    /// Connect failures are retried (always for Gateway API and Gloo routes; Envoy's
    /// `connect-failure`, `reset`, `5xx`, `gateway-error` for Istio's `retryOn`).
    #[serde(skip_serializing_if = "is_true")]
    pub on_connect_failure: bool,
    /// Connections reset before a response are retried (always for Gateway API and
    /// Gloo routes; `reset`, `5xx`, `gateway-error` for Istio's `retryOn`).
    #[serde(skip_serializing_if = "is_true")]
    pub on_reset: bool,
    /// gRPC statuses retried when an answer's headers carry them (a Trailers-Only
    /// answer): Envoy's `cancelled`, `deadline-exceeded`, `resource-exhausted`,
    /// `internal`, `unavailable` (Istio and Gloo `retryOn`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grpc_statuses: Vec<u8>,
    /// Wait before the first retry, doubled for each further one (capped at 10x).
    #[serde(serialize_with = "ser_duration")]
    pub backoff: Duration,
    /// At most this share (percent) of a backend's active requests may be retries...
    pub budget_percent: u32,
    /// ...but this many concurrent retries are always allowed (`u32::MAX`: no budget,
    /// only `maxRetries` bounds them, as Istio without `retryBudget`).
    pub min_retry_concurrency: u32,
    /// Largest request body buffered for replay; larger (or unsized) bodies are
    /// streamed and not retried.
    pub max_replay_body_bytes: u64,
    /// An attempt that reached its per-try timeout is retried whatever `codes` say.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retry_timeouts: bool,
}

/// Filters of a rule or a backendRef (names and values validated).
#[derive(Debug, Default, Serialize)]
pub struct Filters {
    /// RequestHeaderModifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<Box<HeaderEdits>>,
    /// ResponseHeaderModifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<Box<HeaderEdits>>,
    /// RequestRedirect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Box<Redirect>>,
    /// URLRewrite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Box<Rewrite>>,
    /// CORS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Box<Cors>>,
    /// RequestMirror filters (fire-and-forget copies).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
}

impl Filters {
    /// No filter set.
    pub fn is_empty(&self) -> bool {
        self.request_headers.is_none()
            && self.response_headers.is_none()
            && self.redirect.is_none()
            && self.rewrite.is_none()
            && self.cors.is_none()
            && self.mirrors.is_empty()
    }
}

/// The CORS filter, validated.
#[derive(Debug, Clone, Serialize)]
pub struct Cors {
    /// Allowed origins: `*`, or `scheme://host[:port]` with an optional `*.` host prefix.
    pub allow_origins: Vec<String>,
    /// `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
    /// Allowed methods (or `*`).
    pub allow_methods: Vec<String>,
    /// Allowed request headers (or `*`).
    pub allow_headers: Vec<String>,
    /// Exposed response headers.
    pub expose_headers: Vec<String>,
    /// Preflight cache time, seconds.
    pub max_age: u32,
}

/// A RequestMirror filter: a share of requests copied to another backend.
#[derive(Debug, Serialize)]
pub struct Mirror {
    /// Where copies go.
    pub backend: Backend,
    /// Share mirrored, in millionths (1_000_000 = every request).
    pub parts_per_million: u32,
}

/// Header edits, applied set, then add, then remove.
#[derive(Debug, Default, Serialize)]
pub struct HeaderEdits {
    /// Replace or add.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_pairs")]
    pub set: Vec<(String, String)>,
    /// Append.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_pairs")]
    pub add: Vec<(String, String)>,
    /// Remove.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// How a path is rewritten or redirected.
#[derive(Debug, Clone, Serialize)]
pub enum PathModifier {
    /// Replace the whole path.
    ReplaceFullPath(String),
    /// Replace the prefix the request matched (a PathPrefix match) with this.
    ReplacePrefixMatch(String),
    /// Replace the matched string prefix with this, byte for byte (Istio's `rewrite.uri`
    /// after a `uri.prefix` match: `/foo` -> `/bar` turns `/foobar` into `/barbar`).
    ReplaceStringPrefix(String),
}

/// RequestRedirect.
#[derive(Debug, Serialize)]
pub struct Redirect {
    /// New scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// New host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// New port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// New path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// Status code.
    pub status: u16,
}

/// URLRewrite.
#[derive(Debug, Serialize)]
pub struct Rewrite {
    /// Host header sent upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Path sent upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// One weighted backendRef, resolved.
#[derive(Debug, Serialize)]
pub struct Backend {
    /// `Service ns/name:port` (or the reference as written when unresolvable); shared by
    /// every rule that names the same reference.
    pub name: Arc<str>,
    /// Relative weight.
    pub weight: u32,
    /// Speak HTTP/2 (h2c) to this backend (Service `appProtocol`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub http2: bool,
    /// Where the traffic goes.
    pub target: BackendTarget,
    /// BackendRef-level filters.
    #[serde(skip_serializing_if = "Filters::is_empty")]
    pub filters: Filters,
    /// Traffic policy from the DestinationRule that applies to the Service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Arc<BackendPolicy>>,
    /// The Service's host (`name.namespace.svc.<cluster domain>`) when the reference
    /// resolved to a Service: Istio's `destination_service`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_host: Option<Arc<str>>,
    /// The DestinationRule subset (an Istio destination's `subset`): only endpoints with
    /// its labels, with its policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
}

/// A DestinationRule's `trafficPolicy`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendPolicy {
    /// `DestinationRule ns/name`.
    pub source: String,
    /// Endpoint choice (`loadBalancer`); none means random.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// `connectionPool` limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<ConnectionLimits>,
    /// `outlierDetection`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierDetection>,
    /// `tls.mode` (already applied to the endpoints' transports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_mode: Option<String>,
    /// For `SIMPLE` and `MUTUAL`: the TLS origination, less what depends on the backend
    /// (HTTP/2, and the SNI when `sni` is unset: the Service's FQDN). Not shown here: the
    /// endpoints' transports show the finished target.
    #[serde(skip)]
    pub tls_origination: Option<Arc<TlsTarget>>,
}

/// How an endpoint is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum LoadBalancer {
    /// In turn.
    RoundRobin,
    /// The less busy of two random endpoints.
    LeastRequest,
    /// At random.
    Random,
    /// The same key always goes to the same endpoint while it is healthy.
    ConsistentHash(HashKey),
}

/// What a consistent hash hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum HashKey {
    /// A request header (lower case).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// The client's IP address.
    SourceIp,
    /// A query parameter.
    QueryParameter(String),
}

/// Connection-pool limits; an overflow is refused at once with 503 `UO`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionLimits {
    /// HTTP/1.1 requests in flight (each holds a connection): `tcp.maxConnections`.
    pub max_connections: u32,
    /// Requests waiting for one of those: `http.http1MaxPendingRequests`.
    pub max_pending_requests: u32,
    /// Requests in flight, any protocol: `http.http2MaxRequests`.
    pub max_requests: u32,
    /// Retries in flight: `http.maxRetries`.
    pub max_retries: u32,
    /// Settings that need a connection pool of the backend's own.
    #[serde(skip_serializing_if = "PoolSettings::is_shared")]
    pub pool: PoolSettings,
}

/// Connection settings of a backend's own pool (`tcp.connectTimeout`, `tcp.tcpKeepalive`,
/// `http.idleTimeout`, `http.maxRequestsPerConnection`); all unset: the shared pools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct PoolSettings {
    /// TCP connect timeout (else `--connect-timeout`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub connect_timeout: Option<Duration>,
    /// How long an idle upstream connection is kept (else 90s);
    /// zero: until the upstream closes it.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub idle_timeout: Option<Duration>,
    /// Requests per upstream connection before it is retired (else unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// SO_KEEPALIVE on upstream connections (`tcp.tcpKeepalive`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
}

/// TCP keepalive timings; unset ones are the OS defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct TcpKeepalive {
    /// Idle time before the first probe.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub time: Option<Duration>,
    /// Time between probes.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
}

impl PoolSettings {
    /// Nothing set: the backend uses the shared pools.
    pub fn is_shared(&self) -> bool {
        *self == PoolSettings::default()
    }
}

/// Outlier detection settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlierDetection {
    /// 5xx answers and failures in a row that eject an endpoint (0 = off).
    pub consecutive_5xx: u32,
    /// 502/503/504 and failures in a row that eject an endpoint (0 = off).
    pub consecutive_gateway: u32,
    /// How often ejections are reviewed.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// Ejection length; the n-th ejection of an endpoint lasts n times this.
    #[serde(serialize_with = "ser_duration")]
    pub base_ejection_time: Duration,
    /// Most endpoints ejected at once, percent (at least one may always be).
    pub max_ejection_percent: u32,
    /// Ejection is suspended while fewer endpoints than this (percent) are healthy.
    pub min_health_percent: u32,
}

/// Where a backend's traffic goes.
#[derive(Debug, Clone, Serialize)]
pub enum BackendTarget {
    /// Addresses from EndpointSlices (possibly none: 503).
    Endpoints(Arc<[Endpoint]>),
    /// A DNS name resolved at connect time (Service DNS name or `externalName`).
    Dns {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
        /// How to connect.
        #[serde(skip_serializing_if = "Transport::is_plaintext")]
        transport: Transport,
    },
    /// The reference cannot be resolved (500); the reason is logged.
    Unresolvable(String),
    /// An Istio destination with no cluster behind it (an unknown Service or an undefined
    /// subset): Envoy answers 503 `NC` (cluster not found); the reason is logged.
    NoCluster(String),
}

impl BackendTarget {
    /// Whether any endpoint of this backend is reached with mesh mTLS.
    pub fn uses_mesh(&self) -> bool {
        match self {
            BackendTarget::Endpoints(eps) => eps.iter().any(|e| e.transport.is_mesh()),
            BackendTarget::Dns { transport, .. } => transport.is_mesh(),
            BackendTarget::Unresolvable(_) | BackendTarget::NoCluster(_) => false,
        }
    }
}

/// One upstream address with the labels of the workload behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// IP and target port.
    pub address: SocketAddr,
    /// Labels (EndpointSlice labels, overlaid with the target Pod's labels when known).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How to connect.
    pub transport: Transport,
    /// The workload of the endpoint's Pod, when the Pod is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
}

/// The workload behind an endpoint (from its Pod), for Istio's destination labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Istio's workload name (the Deployment, or the Pod's owner, or the Pod).
    pub name: String,
    /// The Pod's namespace.
    pub namespace: String,
    /// The Pod's service account.
    pub service_account: String,
}

/// How the gateway connects to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Transport {
    /// Plain TCP.
    Plaintext,
    /// Istio mutual TLS with the gateway's SDS identity.
    Mesh(Arc<MeshTarget>),
    /// TLS to a non-mesh backend (BackendTLSPolicy).
    Tls(Arc<TlsTarget>),
}

/// TLS origination to a backend, from a BackendTLSPolicy or a DestinationRule's
/// `SIMPLE`/`MUTUAL` `tls`. Its pool (and rustls config) is keyed by its content, so a
/// changed certificate or key gives a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsTarget {
    /// Kind and `namespace/name` of the policy (`BackendTLSPolicy default/x`).
    pub policy: String,
    /// SNI (and the name verified when `subject_alt_names` is empty).
    pub hostname: String,
    /// Trusted CAs (DER); empty with `system_roots`.
    pub ca_certs: Vec<Der>,
    /// Trust the machine's CA store instead.
    pub system_roots: bool,
    /// The certificate must carry one of these (`Hostname` DNS names or `URI`s).
    pub subject_alt_names: Vec<SanMatch>,
    /// Speak HTTP/2 (ALPN `h2`) rather than HTTP/1.1.
    pub http2: bool,
    /// Client certificate presented to the backend (DestinationRule `MUTUAL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<ClientCert>,
    /// Accept any server certificate (DestinationRule `insecureSkipVerify`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// Why the credentials cannot be had (a missing or broken Secret or file): every
    /// connection fails with it (closed, as Istio keeps such a cluster without a secret)
    /// rather than falling back to plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

// Hashed by its small fields only: its pool is looked up on every request, and hashing
// the DER of its CAs, certificate and key each time cost microseconds. Equal targets still
// hash alike, and the lookup's equality check compares everything (first by pointer).
impl std::hash::Hash for TlsTarget {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.policy.hash(h);
        self.hostname.hash(h);
        self.http2.hash(h);
        self.system_roots.hash(h);
        self.insecure_skip_verify.hash(h);
        self.ca_certs.len().hash(h);
        self.client_cert.as_ref().map(|c| &c.source).hash(h);
    }
}

/// A client certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ClientCert {
    /// Where it came from (`Secret ns/name`).
    pub source: String,
    /// Chain, leaf first.
    pub chain: Vec<Der>,
    /// The key.
    pub key: PrivateKey,
}

/// A subjectAltName a backend certificate may carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum SanMatch {
    /// A DNS name.
    Hostname(String),
    /// A URI (e.g. a SPIFFE id).
    Uri(String),
}

impl Transport {
    /// Plain TCP?
    pub fn is_plaintext(&self) -> bool {
        matches!(self, Transport::Plaintext)
    }

    /// Istio mTLS with the gateway's identity?
    pub fn is_mesh(&self) -> bool {
        matches!(self, Transport::Mesh(_))
    }
}

/// Whom a mesh connection goes to: fixed per backend at translate time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MeshTarget {
    /// TLS server name, `outbound_.<port>_._.<fqdn>`.
    pub sni: String,
    /// SPIFFE ids the server may present.
    pub identities: Vec<String>,
    /// Speak HTTP/2 (ALPN `istio-h2`) rather than HTTP/1.1 (`istio-http/1.1`).
    pub http2: bool,
    /// Raw TCP: ALPN `istio` only, so the sidecar matches its TCP filter chain.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tcp: bool,
}

impl MeshTarget {
    /// Istio's outbound SNI for a service port.
    pub fn sni_for(port: u16, fqdn: &str) -> String {
        format!("outbound_.{port}_._.{fqdn}")
    }
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

fn ser_opt_duration<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.collect_str(&humantime::format_duration(*d)),
        None => s.serialize_none(),
    }
}

fn ser_pairs<S: Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (n, val) in v {
        m.serialize_entry(n, val)?;
    }
    m.end()
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn tls_targets_that_differ_only_in_key_material_stay_apart() {
        let target = |ca: &[u8]| TlsTarget {
            policy: "DestinationRule default/web".into(),
            hostname: "web.example.com".into(),
            ca_certs: vec![Der(ca.to_vec())],
            system_roots: false,
            subject_alt_names: vec![],
            http2: false,
            client_cert: None,
            insecure_skip_verify: false,
            unavailable: None,
        };
        let (a, b) = (Arc::new(target(b"ca one")), Arc::new(target(b"ca two")));
        let set: HashSet<Arc<TlsTarget>> = [a.clone(), b.clone()].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(set.contains(&Arc::new(target(b"ca one"))));
        assert!(!set.contains(&Arc::new(target(b"ca three"))));
    }

    #[test]
    fn wildcard_host_matches_one_or_more_labels_but_not_the_bare_suffix() {
        let p = HostPattern::parse("*.example.com");
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
    }
}
