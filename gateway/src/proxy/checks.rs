//! What a request must be before it is routed: one valid Host (RFC 9112 §3.2), an HTTP/2
//! `:authority` that agrees with it (RFC 9113 §8.3.1), an upper-case method of sane
//! length, and no encoded NUL in the path (Istio's normalization refuses both). A request
//! that fails gets 400 with the reason code, and is never forwarded.

use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Request, StatusCode, Version};

use super::reject::{Reject, reject};

/// Longest method accepted (bytes). Every method in the IANA registry fits in 17
/// (`UPDATEREDIRECTREF`); Envoy's HTTP/1 codec goes further and refuses any method not
/// on its fixed list. We let extension methods through up to this length; a longer one
/// is an attack on whatever parses it next.
pub const MAX_METHOD_BYTES: usize = 32;

/// Checks the method, the path, the transfer coding and the Host/`:authority` of a
/// request.
pub fn check_request<B>(req: &Request<B>) -> Result<(), Reject> {
    check_method(req)?;
    check_path(req)?;
    check_transfer_coding(req)?;
    check_host(req)
}

/// `chunked` is the only transfer coding the gateway decodes; any other (`gzip, chunked`)
/// would reach the upstream undecoded and unannounced, since Transfer-Encoding is
/// hop-by-hop. 501, as RFC 9112 §6.1 and Envoy answer.
fn check_transfer_coding<B>(req: &Request<B>) -> Result<(), Reject> {
    let codings: Vec<&[u8]> = req
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    match codings.as_slice() {
        [] => Ok(()),
        [one] if one.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(reject(
            StatusCode::NOT_IMPLEMENTED,
            "transfer_coding_not_implemented",
            format!(
                "transfer-encoding {:?}: only a single chunked is decoded",
                String::from_utf8_lossy(&codings.join(&b", "[..]))
            ),
        )),
    }
}

/// `%00` in a path is refused, as Istio documents for every normalization level: a
/// backend that decodes it may cut the path there.
fn check_path<B>(req: &Request<B>) -> Result<(), Reject> {
    if req.uri().path().contains("%00") {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "path_nul",
            "the path holds an encoded NUL (%00)",
        ));
    }
    Ok(())
}

fn check_method<B>(req: &Request<B>) -> Result<(), Reject> {
    let len = req.method().as_str().len();
    if len > MAX_METHOD_BYTES {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "method_too_long",
            format!("request method is {len} bytes, limit is {MAX_METHOD_BYTES}"),
        ));
    }
    // Methods are case-sensitive (RFC 9110 §9.1): `delete` is not `DELETE`, yet a
    // backend may treat it as one while a DENY rule on DELETE does not match it. Envoy's
    // HTTP/1 codec refuses it; refused here over HTTP/2 too.
    if req
        .method()
        .as_str()
        .bytes()
        .any(|b| b.is_ascii_lowercase())
    {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "method_not_uppercase",
            format!(
                "request method {:?} is not upper case",
                req.method().as_str()
            ),
        ));
    }
    Ok(())
}

fn check_host<B>(req: &Request<B>) -> Result<(), Reject> {
    let bad = |code, detail: String| Err(reject(StatusCode::BAD_REQUEST, code, detail));
    let mut lines = req.headers().get_all(header::HOST).iter();
    let host = lines.next();
    if lines.next().is_some() {
        // RFC 9112 §3.2: more than one Host line is a 400 even when they agree, since
        // two parsers may pick different ones.
        let hosts: Vec<&HeaderValue> = req.headers().get_all(header::HOST).iter().collect();
        return bad(
            "duplicate_host",
            format!("{} Host header lines: {hosts:?}", hosts.len()),
        );
    }
    if let Some(h) = host
        && !valid_host(h.as_bytes())
    {
        return bad("invalid_host", format!("Host {h:?} is not host[:port]"));
    }
    let target = req.uri().authority();
    if let Some(a) = target
        && !port_is_digits(a.as_str())
    {
        return bad(
            "invalid_host",
            format!(
                "request target authority {:?} has a port that is not digits",
                a.as_str()
            ),
        );
    }
    if let Some(a) = target
        && a.as_str().contains('@')
    {
        return bad(
            "invalid_host",
            format!("request target authority {:?} carries userinfo", a.as_str()),
        );
    }
    match (req.version(), target, host) {
        // HTTP/1.1 requires Host, even with an absolute-form target (RFC 9112 §3.2).
        (Version::HTTP_11, _, None) => bad("missing_host", "HTTP/1.1 request without Host".into()),
        (Version::HTTP_2, None, None) => bad(
            "missing_host",
            "HTTP/2 request without :authority or Host".into(),
        ),
        (Version::HTTP_2, Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(to_str(h)) => bad(
            "conflicting_host",
            format!(":authority {:?} and Host {h:?} disagree", a.as_str()),
        ),
        // An HTTP/1 absolute-form target wins over Host (RFC 9112 §3.2.2): the Host
        // sent upstream is rebuilt from it, so a disagreement is not forwarded.
        _ => Ok(()),
    }
}

fn to_str(h: &HeaderValue) -> &str {
    h.to_str().unwrap_or_default()
}

/// `uri-host [":" port]` (RFC 9110 §7.2); empty is allowed (RFC 9112 §3.2: a target
/// without an authority is sent with an empty Host).
fn valid_host(h: &[u8]) -> bool {
    if h.is_empty() {
        return true;
    }
    !h.contains(&b'@') && Authority::try_from(h).is_ok_and(|a| port_is_digits(a.as_str()))
}

/// Whether the port of `host[:port]`, if any, is digits only (RFC 3986 §3.2.3). `http`'s
/// parser lets `host:x` through; routing and the authorization policies would then
/// strip such a "port" by different rules and see different hosts.
fn port_is_digits(authority: &str) -> bool {
    let port = match authority.strip_prefix('[') {
        // `[v6]` may only be followed by `:port`.
        Some(v6) => match v6.split_once(']') {
            Some((_, "")) => "",
            Some((_, rest)) => match rest.strip_prefix(':') {
                Some(p) => p,
                None => return false,
            },
            None => return false,
        },
        None => authority.rsplit_once(':').map_or("", |(_, p)| p),
    };
    port.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    fn code(r: Request<()>) -> Option<&'static str> {
        check_request(&r).err().map(|e| e.code)
    }

    #[test]
    fn host_rules_of_rfc_9112_and_9113() {
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        const HTTP_2: Version = Version::HTTP_2;
        assert_eq!(code(req(HTTP_11, "/", &["a.example:8080"])), None);
        assert_eq!(code(req(HTTP_11, "/", &[""])), None);
        assert_eq!(code(req(HTTP_10, "/", &[])), None);
        assert_eq!(code(req(HTTP_11, "/", &[])), Some("missing_host"));
        assert_eq!(code(req(HTTP_11, "/", &["a b/c@d"])), Some("invalid_host"));
        // A port that is not digits: routing and authorization would disagree on the host.
        for host in ["admin.example:x", "admin.example:80x", "[::1]x", "[::1]:x"] {
            assert_eq!(
                code(req(HTTP_11, "/", &[host])),
                Some("invalid_host"),
                "{host}"
            );
        }
        assert_eq!(code(req(HTTP_11, "/", &["[::1]:8080"])), None);
        assert_eq!(code(req(HTTP_11, "/", &["a.example:"])), None);
        assert_eq!(
            code(req(HTTP_2, "http://admin.example:x/", &[])),
            Some("invalid_host")
        );
        assert_eq!(
            code(req(HTTP_11, "/", &["u@a.example"])),
            Some("invalid_host")
        );
        assert_eq!(code(req(HTTP_11, "/", &["a", "b"])), Some("duplicate_host"));
        assert_eq!(code(req(HTTP_11, "/", &["a", "a"])), Some("duplicate_host"));
        assert_eq!(code(req(HTTP_2, "http://a/", &["A"])), None);
        assert_eq!(
            code(req(HTTP_2, "http://a/", &["b"])),
            Some("conflicting_host")
        );
        assert_eq!(code(req(HTTP_2, "/", &[])), Some("missing_host"));
        assert_eq!(
            code(req(HTTP_11, "http://u@a/", &["a"])),
            Some("invalid_host")
        );
        // Absolute form: the target's authority is used and Host rebuilt from it.
        assert_eq!(code(req(HTTP_11, "http://a/", &["b"])), None);
    }

    #[test]
    fn methods_longer_than_the_limit_are_refused() {
        let m = |m: &str| {
            let r = Request::builder()
                .method(m)
                .header(header::HOST, "a")
                .body(())
                .unwrap();
            check_request(&r).err().map(|e| e.code)
        };
        assert_eq!(m("UPDATEREDIRECTREF"), None);
        assert_eq!(m(&"M".repeat(MAX_METHOD_BYTES)), None);
        assert_eq!(
            m(&"M".repeat(MAX_METHOD_BYTES + 1)),
            Some("method_too_long")
        );
        for lower in ["delete", "Delete", "gEt"] {
            assert_eq!(m(lower), Some("method_not_uppercase"), "{lower}");
        }
        assert_eq!(m("M-SEARCH"), None);
    }

    #[test]
    fn transfer_codings_other_than_one_chunked_get_501() {
        let te = |values: &[&str]| {
            let mut b = Request::builder().header(header::HOST, "a");
            for v in values {
                b = b.header(header::TRANSFER_ENCODING, *v);
            }
            check_request(&b.body(()).unwrap()).err().map(|e| e.code)
        };
        assert_eq!(te(&[]), None);
        assert_eq!(te(&["chunked"]), None);
        assert_eq!(te(&["Chunked"]), None);
        let refused = Some("transfer_coding_not_implemented");
        assert_eq!(te(&["gzip, chunked"]), refused);
        assert_eq!(te(&["chunked, chunked"]), refused);
        assert_eq!(te(&["gzip", "chunked"]), refused);
    }

    #[test]
    fn an_encoded_nul_in_the_path_is_refused() {
        assert_eq!(
            code(req(Version::HTTP_11, "/a%00b", &["a"])),
            Some("path_nul")
        );
        assert_eq!(code(req(Version::HTTP_11, "/a%01b", &["a"])), None);
    }
}
