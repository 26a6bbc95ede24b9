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

/// The request id: the client's `x-request-id` when sane, else a new UUID v4.
/// Kept as a header value: it is sent upstream and back without another copy.
pub fn request_id<B>(req: &Request<B>) -> HeaderValue {
    req.headers()
        .get(X_REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.to_str().is_ok())
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

/// Whether the request asks for a protocol upgrade (WebSocket).
pub fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
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

/// Rewrites request headers for the upstream; keeps `Connection: upgrade` for upgrades.
pub fn prepare_upstream(headers: &mut HeaderMap, upgrade: bool, fwd: &Forwarded<'_>) {
    let upgrade_headers = upgrade.then(|| {
        (
            headers.get(header::CONNECTION).cloned(),
            headers.get(header::UPGRADE).cloned(),
        )
    });
    remove_hop_by_hop(headers);
    if let Some((c, u)) = upgrade_headers {
        if let Some(c) = c {
            headers.insert(header::CONNECTION, c);
        }
        if let Some(u) = u {
            headers.insert(header::UPGRADE, u);
        }
    }
    headers.remove(X_FORWARDED_CLIENT_CERT);
    // Only the gateway itself speaks to the mesh as the gateway (added per attempt,
    // towards mesh upstreams only).
    peer_metadata::remove(headers);
    let xff = match headers.get(X_FORWARDED_FOR).map(HeaderValue::to_str) {
        Some(Ok(prev)) => {
            let ip = fwd.peer_ip.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{prev}, {ip}")).ok()
        }
        // Unreadable: replaced by the one address known to be true.
        Some(Err(_)) | None => Some(fwd.peer_ip.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(fwd.proto));
    headers.insert(X_FORWARDED_HOST, fwd.authority.clone());
    headers.insert(X_REQUEST_ID, fwd.request_id.clone());
}

/// Removes hop-by-hop headers (RFC 9110 7.6.1) and any named in `Connection`.
pub fn remove_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        if n != header::TE {
            h.remove(n);
        }
    }
    for n in [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TRAILER,
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
