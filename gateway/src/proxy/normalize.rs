//! The request path as routes see it and as the upstream receives it, normalized the way
//! Istio's gateways do by default (`BASE`, Envoy's `normalize_path`): percent-encoded
//! unreserved characters decoded, the remaining percent-encodings upper-cased, and RFC
//! 3986 dot segments resolved. `%2F` stays encoded (it is not a segment boundary), so
//! `/public/%2e%2e/admin` becomes `/admin` while `/a%2F..%2Fb` stays one segment.
//! As Envoy's normalizer (Chromium's URL canonicalizer) also does, and backends such as
//! Tomcat read them: a backslash is a `/` (`/a\..\b` -> `/b`), and a segment that is a
//! dot segment before a `;` is one, its parameters dropped (`/a/x/..;/b` -> `/a/b`).
//! `--merge-slashes` adds Istio's `MERGE_SLASHES` (`//a///b` -> `/a/b`).

use std::borrow::Cow;

/// The normalized form of an origin-form path (`*` and other forms are returned as is).
pub fn path(raw: &str, merge_slashes: bool) -> Cow<'_, str> {
    if !raw.starts_with('/') || is_normal(raw, merge_slashes) {
        return Cow::Borrowed(raw);
    }
    let slashes = raw.replace('\\', "/");
    let decoded = decode_unreserved(&slashes);
    let merged = if merge_slashes {
        merge(&decoded)
    } else {
        decoded.clone()
    };
    let resolved = remove_dot_segments(&merged);
    if resolved == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(resolved)
    }
}

/// Whether an absolute path is already normal (the common case, decided without
/// allocating): no escapes, no backslash, no segment starting with a dot, no `//` to
/// merge.
fn is_normal(raw: &str, merge_slashes: bool) -> bool {
    let needs_work =
        raw.contains(['%', '\\']) || raw.contains("/.") || (merge_slashes && raw.contains("//"));
    !needs_work
}

/// RFC 3986 §2.3: `%41` and `A` are the same URI, so routes see `A`; other escapes are
/// kept (upper-cased, §6.2.2.1) because decoding them would change the meaning. Every
/// other byte is copied as it came: hyper lets UTF-8 through in a request target, and
/// a multi-byte character holds no `%`, so it stays whole.
fn decode_unreserved(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = if b[i] == b'%' {
            let at = |j: usize| b.get(j).copied().and_then(hex);
            at(i + 1).zip(at(i + 2))
        } else {
            None
        };
        match escaped {
            Some((hi, lo)) => {
                let c = hi << 4 | lo;
                if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                    out.push(c);
                } else {
                    out.extend_from_slice(&[b'%', b[i + 1], b[i + 2]]);
                    let n = out.len();
                    out[n - 2..].make_ascii_uppercase();
                }
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    // ASCII replaced ASCII escapes and every other byte is the input's: still UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).map(|d| d as u8)
}

fn merge(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// RFC 3986 §5.2.4 on an absolute path: `.` segments vanish, `..` removes the segment
/// before it (never above the root), and a path ending in either keeps its final slash.
/// A segment is a dot segment by what comes before its first `;` (`..;x` is `..`).
fn remove_dot_segments(p: &str) -> String {
    let segments: Vec<&str> = p[1..].split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match seg.split(';').next().unwrap_or_default() {
            "." => {}
            ".." => {
                out.pop();
            }
            _ => {
                out.push(seg);
                continue;
            }
        }
        if last {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::path;

    #[test]
    fn base_normalization_resolves_dots_and_decodes_only_unreserved() {
        let n = |p| path(p, false).into_owned();
        assert_eq!(n("/public/../admin"), "/admin");
        assert_eq!(n("/public/%2e%2e/admin"), "/admin");
        assert_eq!(n("/public/%2E%2E/admin"), "/admin");
        assert_eq!(n("/a/./b/."), "/a/b/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/%7Euser/%41"), "/~user/A");
        assert_eq!(n("/a%2Fb"), "/a%2Fb");
        assert_eq!(n("/a%2f..%2fb"), "/a%2F..%2Fb");
        assert_eq!(n("/a//b"), "/a//b");
        assert_eq!(n("/bad%zz%4"), "/bad%zz%4");
        // UTF-8 in the target is copied whole, not read as Latin-1.
        assert_eq!(n("/caf\u{e9}/%41/../x"), "/caf\u{e9}/x");
        assert_eq!(n("/\u{65e5}%2e/%2f"), "/\u{65e5}./%2F");
        assert_eq!(n("*"), "*");
        assert!(matches!(
            path("/plain/path", false),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(n("/.well-known/x"), "/.well-known/x");
        assert_eq!(n("/a/.b/../c"), "/a/c");
        assert_eq!(n("/a.b/c."), "/a.b/c.");
        assert!(matches!(
            path("/a//b", false),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    /// As Envoy 1.40 forwards them with `normalize_path` (checked against it).
    #[test]
    fn backslashes_and_dot_segments_with_parameters_are_normalized_as_envoy_does() {
        let n = |p| path(p, false).into_owned();
        assert_eq!(n("/a\\b"), "/a/b");
        assert_eq!(n("/a\\..\\b"), "/b");
        assert_eq!(n("/a/x/..;/b"), "/a/b");
        assert_eq!(n("/a/x/..;foo/b"), "/a/b");
        assert_eq!(n("/a/x/..;a=b/c"), "/a/c");
        assert_eq!(n("/a/.;/b"), "/a/b");
        assert_eq!(n("/a/x/.;/b"), "/a/x/b");
        assert_eq!(n("/a/x/..;"), "/a/");
        assert_eq!(n("/a/..;"), "/");
        assert_eq!(n("/a/x;/../b"), "/a/b");
        assert_eq!(n("/a;b/c"), "/a;b/c");
        assert_eq!(n("/a/x/...;/b"), "/a/x/...;/b");
        assert_eq!(
            n("/a%5Cb"),
            "/a%5Cb",
            "an encoded backslash stays, as %2F does"
        );
        assert_eq!(n("/a/x/..%3B/b"), "/a/x/..%3B/b");
        // Envoy leaves `/a/..;/b` here; a backend that reads `..;` as `..` (Tomcat) would
        // then serve `/b`, so the gateway resolves it as it resolves `..;`.
        assert_eq!(n("/a/%2e%2e;/b"), "/b");
    }

    #[test]
    fn merge_slashes_is_an_option() {
        assert_eq!(path("//a///b/", true), "/a/b/");
        assert_eq!(path("/a//../b", true), "/b");
        assert_eq!(path("/a//../b", false), "/a/b");
    }
}
