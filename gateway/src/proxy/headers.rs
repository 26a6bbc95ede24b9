//! Header handling on the request path: hop-by-hop removal, forwarding headers, the
//! request id, and reading the request's authority.

use http::Request;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::observe::peer_metadata;

/// Header carrying the request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Client certificate details set by mesh proxies; never accepted from edge clients.
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// Sent with an h2c upgrade (RFC 7540 §3.2.1); hop-by-hop wherever it appears.
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The request id: the client's `x-request-id` when `keep` and sane, else a new UUID
/// v4. Kept as a header value: it is sent upstream and back without another copy.
pub fn request_id<B>(req: &Request<B>, keep: bool) -> HeaderValue {
    req.headers()
        .get(X_REQUEST_ID)
        .filter(|v| keep && !v.is_empty() && v.len() <= 128 && v.to_str().is_ok())
        .cloned()
        .unwrap_or_else(new_request_id)
}

/// Host of the request: `:authority` (HTTP/2, absolute-form) or the Host header.
pub fn request_authority<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
}

/// Strips the port (IPv6 brackets kept) and lowercases.
pub fn host_without_port(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        // `[v6]` with its closing bracket (added back when missing).
        match authority.find(']') {
            Some(end) => &authority[..=end],
            None => return format!("{authority}]").to_ascii_lowercase(),
        }
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.to_ascii_lowercase()
}

/// What a request's `Upgrade` (with `Connection: upgrade`) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeRequest<'a> {
    /// No upgrade: an ordinary request.
    None,
    /// A WebSocket handshake: tunnelled once the upstream answers 101.
    WebSocket,
    /// HTTP/2 over cleartext (RFC 7540 §3.2): as Envoy does, the upgrade headers are
    /// dropped and the request is served as HTTP/1.1.
    H2c,
    /// Anything else, refused with 403 `upgrade_failed` as Envoy refuses an upgrade
    /// type its `upgrade_configs` do not list (Istio and Envoy Gateway list websocket).
    Other(&'a str),
}

/// What the request's upgrade asks for; two `Upgrade` lines or an unreadable one is
/// [`UpgradeRequest::Other`].
pub fn upgrade_request(h: &HeaderMap) -> UpgradeRequest<'_> {
    let mut lines = h.get_all(header::UPGRADE).iter();
    let Some(first) = lines.next() else {
        return UpgradeRequest::None;
    };
    if !connection_lists(h, "upgrade") {
        return UpgradeRequest::None;
    }
    let value = first.to_str().unwrap_or("(not ASCII)");
    if lines.next().is_some() {
        return UpgradeRequest::Other(value);
    }
    match value.trim() {
        v if v.eq_ignore_ascii_case("websocket") => UpgradeRequest::WebSocket,
        v if v.eq_ignore_ascii_case("h2c") => UpgradeRequest::H2c,
        _ => UpgradeRequest::Other(value),
    }
}

/// Whether a `Connection` line lists `token`.
fn connection_lists(h: &HeaderMap, token: &str) -> bool {
    connection_tokens(h).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// The tokens of every `Connection` line, read as bytes: a line with a byte outside
/// visible ASCII still names the headers its other tokens name.
fn connection_tokens(h: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    h.get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
}

/// What the gateway adds for the upstream: forwarding headers and the request id; an
/// edge client's XFCC and Istio peer metadata are dropped (only mesh proxies set them).
pub struct Forwarded<'a> {
    /// Client IP (formatted once per connection).
    pub peer_ip: &'a HeaderValue,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The request's authority (before any rewrite).
    pub authority: &'a HeaderValue,
    /// The request id.
    pub request_id: &'a HeaderValue,
}

/// Rewrites request headers for the upstream. A WebSocket upgrade goes on as
/// `Connection: upgrade` with the client's `Upgrade`, never the client's own
/// `Connection` line (which could name headers the gateway removed).
pub fn prepare_upstream(headers: &mut HeaderMap, upgrade: bool, fwd: &Forwarded<'_>) {
    let upgrade_to = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    remove_hop_by_hop(headers);
    if let Some(u) = upgrade_to {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
    headers.remove(X_FORWARDED_CLIENT_CERT);
    // Only the gateway itself speaks to the mesh as the gateway (added per attempt,
    // towards mesh upstreams only).
    peer_metadata::remove(headers);
    remove_envoy_internal(headers);
    join_cookies(headers);
    append_forwarded_for(headers, fwd.peer_ip);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(fwd.proto));
    headers.insert(X_FORWARDED_HOST, fwd.authority.clone());
    headers.insert(X_REQUEST_ID, fwd.request_id.clone());
}

/// The `x-envoy-*` request headers Envoy sanitizes from an external request (its
/// "HTTP header sanitizing" list): the Envoy sidecars behind the gateway would obey a
/// client's retry, timeout and tracing orders, or trust its `x-envoy-internal`.
const ENVOY_SANITIZED: [&str; 21] = [
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-external-address",
    "x-envoy-force-trace",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-internal",
    "x-envoy-ip-tags",
    "x-envoy-max-retries",
    "x-envoy-original-path",
    "x-envoy-original-url",
    "x-envoy-retriable-header-names",
    "x-envoy-retriable-status-codes",
    "x-envoy-retry-grpc-on",
    "x-envoy-retry-on",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-stream-duration-ms",
];

/// Drops what the edge client may not say to the Envoys behind the gateway: every
/// client is external to the gateway.
fn remove_envoy_internal(headers: &mut HeaderMap) {
    // One pass over the names; the removals only when a client sent one.
    if headers.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
        for name in ENVOY_SANITIZED {
            headers.remove(name);
        }
    }
}

/// HTTP/2 may split `cookie` into several fields; they are joined with "; " before
/// they can reach an HTTP/1.1 upstream (RFC 9113 §8.2.3), as Envoy joins them.
fn join_cookies(headers: &mut HeaderMap) {
    let mut lines = headers.get_all(header::COOKIE).iter();
    if lines.next().is_none() || lines.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Appends the peer to `X-Forwarded-For`, every line of it kept in order (the policies
/// read them all, so the upstream must see them all); an unreadable one is replaced by
/// the one address known to be true.
fn append_forwarded_for(headers: &mut HeaderMap, peer_ip: &HeaderValue) {
    let prev: Result<Vec<&str>, _> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(HeaderValue::to_str)
        .collect();
    let xff = match prev {
        Ok(lines) if !lines.is_empty() => {
            let ip = peer_ip.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{}, {ip}", lines.join(", "))).ok()
        }
        _ => Some(peer_ip.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1, and `HTTP2-Settings`) and any named in
/// `Connection`. `Trailer` is end-to-end (§6.6.2) and stays: hyper's HTTP/1 encoder sends
/// only the trailer fields it declares.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = connection_tokens(h)
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    for n in listed {
        if n != header::TE {
            h.remove(n);
        }
    }
    // RFC 9112 §6.3: a message with Transfer-Encoding is framed by it; its
    // Content-Length must go before it is forwarded (the next hop would frame by it).
    if h.contains_key(header::TRANSFER_ENCODING) {
        h.remove(header::CONTENT_LENGTH);
    }
    for n in [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HTTP2_SETTINGS,
    ] {
        h.remove(n);
    }
    // TE is hop-by-hop, but "trailers" must reach gRPC servers.
    let keep_trailers = h
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    h.remove(header::TE);
    if keep_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// A random UUID v4, as a header value that owns the string it was written into.
fn new_request_id() -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(uuid_v4(fastrand::u128(..))))
        .expect("hex digits and dashes are a valid header value")
}

/// A UUID v4 string from 128 random bits (version and variant bits set).
fn uuid_v4(v: u128) -> String {
    let v = (v & !(0xf << 76)) | (0x4 << 76);
    let v = (v & !(0x3 << 62)) | (0x2 << 62);
    // 8-4-4-4-12 lowercase hex digits, written into one string.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            id.push('-');
        }
        let nibble = (v >> (124 - 4 * i)) & 0xf;
        id.push(char::from(HEX[nibble as usize]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4_strings() {
        // What `format!("{v:032x}")` split 8-4-4-4-12 gave before.
        assert_eq!(uuid_v4(0), "00000000-0000-4000-8000-000000000000");
        assert_eq!(uuid_v4(u128::MAX), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(
            uuid_v4(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            "01234567-89ab-4def-8123-456789abcdef"
        );
    }

    #[test]
    fn host_without_port_strips_the_port_and_lowercases() {
        assert_eq!(host_without_port("App.Example.com:8080"), "app.example.com");
        assert_eq!(host_without_port("app.example.com"), "app.example.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
