//! Compiled AuthorizationPolicies: CIDRs parsed once; evaluated per request in Istio's
//! order (any DENY match denies; then, if ALLOW policies exist, one must match).

use std::net::IpAddr;

use http::HeaderMap;

use super::limits::{cidr_contains, parse_cidr};
use crate::ir;

/// The gateway's authorization, ready to evaluate.
pub struct Authorizer {
    num_trusted_proxies: u32,
    deny: Vec<Policy>,
    allow: Vec<Policy>,
}

struct Policy {
    source: String,
    match_all: bool,
    rules: Vec<Rule>,
}

struct Rule {
    from: Vec<Source>,
    to: Vec<ir::AuthzOperation>,
}

struct Source {
    ip: Vec<(IpAddr, u8)>,
    not_ip: Vec<(IpAddr, u8)>,
    remote: Vec<(IpAddr, u8)>,
    not_remote: Vec<(IpAddr, u8)>,
}

/// What a policy looks at.
pub struct AuthzRequest<'a> {
    /// The TCP peer.
    pub peer: IpAddr,
    /// Request headers (X-Forwarded-For).
    pub headers: &'a HeaderMap,
    /// Host (no port, lower case).
    pub host: &'a str,
    /// Listener port.
    pub port: u16,
    /// Method.
    pub method: &'a str,
    /// Path (normalized, no query).
    pub path: &'a str,
}

fn parse_all(v: &[String]) -> Vec<(IpAddr, u8)> {
    v.iter().filter_map(|c| parse_cidr(c)).collect()
}

impl Authorizer {
    /// Compiles the IR's policies.
    pub fn new(a: &ir::Authorization) -> Authorizer {
        let policy = |p: &ir::AuthzPolicy| Policy {
            source: p.source.clone(),
            match_all: p.match_all,
            rules: p
                .rules
                .iter()
                .map(|r| Rule {
                    from: r
                        .from
                        .iter()
                        .map(|s| Source {
                            ip: parse_all(&s.ip_blocks),
                            not_ip: parse_all(&s.not_ip_blocks),
                            remote: parse_all(&s.remote_ip_blocks),
                            not_remote: parse_all(&s.not_remote_ip_blocks),
                        })
                        .collect(),
                    to: r.to.clone(),
                })
                .collect(),
        };
        Authorizer {
            num_trusted_proxies: a.num_trusted_proxies,
            deny: a.deny.iter().map(policy).collect(),
            allow: a.allow.iter().map(policy).collect(),
        }
    }

    /// The client address: the peer, or with `numTrustedProxies` N > 0 the N-th
    /// X-Forwarded-For entry from the right (each trusted proxy appended the address it
    /// saw); the peer when the header has fewer entries.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_ip(self.num_trusted_proxies, peer, headers)
    }

    /// `Err(why)` when the request is denied.
    pub fn check(&self, r: &AuthzRequest<'_>) -> Result<(), String> {
        let client = self.client_ip(r.peer, r.headers);
        let matches =
            |p: &&Policy| p.match_all || p.rules.iter().any(|rule| rule.matches(r, client));
        if let Some(p) = self.deny.iter().find(matches) {
            return Err(format!("denied by DENY policy {}", p.source));
        }
        if self.allow.is_empty() || self.allow.iter().any(|p| matches(&p)) {
            return Ok(());
        }
        Err(format!(
            "no ALLOW policy matched (client {client}); policies: {}",
            self.allow
                .iter()
                .map(|p| p.source.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// See [`Authorizer::client_ip`].
pub fn client_ip(trusted: u32, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if trusted == 0 {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let n = trusted as usize;
    entries
        .len()
        .checked_sub(n)
        .and_then(|i| entries[i].parse().ok())
        .unwrap_or(peer)
}

impl Rule {
    fn matches(&self, r: &AuthzRequest<'_>, client: IpAddr) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(r.peer, client)))
            && (self.to.is_empty() || self.to.iter().any(|o| operation_matches(o, r)))
    }
}

impl Source {
    fn matches(&self, peer: IpAddr, client: IpAddr) -> bool {
        let any = |v: &[(IpAddr, u8)], ip| v.iter().any(|&(n, l)| cidr_contains(n, l, ip));
        (self.ip.is_empty() || any(&self.ip, peer))
            && !any(&self.not_ip, peer)
            && (self.remote.is_empty() || any(&self.remote, client))
            && !any(&self.not_remote, client)
    }
}

/// Istio's string match: `*` any, `prefix*`, `*suffix`, else exact.
fn string_matches(pattern: &str, v: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        v.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        v.ends_with(suffix)
    } else {
        pattern == v
    }
}

/// Characters a template's literal may hold (RFC 3986 `pchar`, but `*`: the operator).
fn segment_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&c)
}

/// Characters `{*}` and `{**}` match in a request's path segment: Envoy 1.40's matcher
/// also takes `*` there (checked against it); `"`, `<`, `{`, `\`, `|` ... it does not.
fn path_char(c: u8) -> bool {
    segment_char(c) || c == b'*'
}

/// One `/`-separated segment of a path template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    /// This text.
    Literal(&'a str),
    /// `{*}`: one segment of segment characters, then this suffix (last segment only).
    One(&'a str),
    /// `{**}`: zero or more segment characters and `/`s, then this suffix.
    Rest(&'a str),
}

/// Whether `path` is one of Istio's path templates (it holds `{*}` or `{**}`).
pub fn is_template(path: &str) -> bool {
    path.contains("{*}") || path.contains("{**}")
}

/// Parses Istio's path template as Envoy's URI template matcher reads it (Istio hands
/// `{*}` and `{**}` to it as `*` and `**`): operators are whole segments (the last may
/// carry a literal suffix), `{**}` is the last operator, literals are segment
/// characters. `Err` says what is wrong.
fn parse_template(template: &str) -> Result<Vec<Segment<'_>>, String> {
    let rest = template
        .strip_prefix('/')
        .ok_or("a path template must start with /")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let mut out = Vec::with_capacity(parts.len());
    let mut after_rest = false;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let segment = if let Some(suffix) = part.strip_prefix("{**}") {
            Segment::Rest(suffix)
        } else if let Some(suffix) = part.strip_prefix("{*}") {
            Segment::One(suffix)
        } else {
            Segment::Literal(part)
        };
        let text = match segment {
            Segment::One(_) | Segment::Rest(_) if after_rest => {
                return Err(format!("{part:?}: no operator may follow {{**}}"));
            }
            Segment::One(s) | Segment::Rest(s) if !s.is_empty() && !last => {
                return Err(format!(
                    "{part:?}: an operator is a whole segment (only the last may have a suffix)"
                ));
            }
            Segment::One(s) | Segment::Rest(s) => s,
            // A trailing `/` is an empty last segment.
            Segment::Literal("") if last && i > 0 => "",
            Segment::Literal("") => return Err("an empty path segment".into()),
            Segment::Literal(l) => l,
        };
        if !text.bytes().all(segment_char) {
            return Err(format!(
                "{part:?}: only {{*}}, {{**}} and path segment characters are allowed"
            ));
        }
        after_rest |= matches!(segment, Segment::Rest(_));
        out.push(segment);
    }
    Ok(out)
}

/// Checks a path template (see [`parse_template`]) for the translator.
pub fn check_template(template: &str) -> Result<(), String> {
    parse_template(template).map(drop)
}

/// Whether `path` matches the path template, as Envoy's URI template matcher does.
fn template_matches(template: &str, path: &str) -> bool {
    let (Ok(segments), Some(mut rest)) = (parse_template(template), path.strip_prefix('/')) else {
        return false;
    };
    for (i, segment) in segments.iter().enumerate() {
        if let Segment::Rest(suffix) = segment {
            // Only literals follow: strip them from the end; what is left is the `{**}`.
            let mut left = Some(rest);
            for later in segments[i + 1..].iter().rev() {
                if let Segment::Literal(l) = later {
                    left = left
                        .and_then(|m| m.strip_suffix(l))
                        .and_then(|m| m.strip_suffix('/'));
                }
            }
            return left
                .and_then(|m| m.strip_suffix(suffix))
                .is_some_and(|m| m.bytes().all(|c| c == b'/' || path_char(c)));
        }
        let last = i + 1 == segments.len();
        let (here, next) = match rest.split_once('/') {
            Some((here, next)) if !last => (here, next),
            None if last => (rest, ""),
            _ => return false,
        };
        let matched = match segment {
            Segment::Literal(l) => here == *l,
            Segment::One(suffix) => here
                .strip_suffix(suffix)
                .is_some_and(|m| !m.is_empty() && m.bytes().all(path_char)),
            Segment::Rest(_) => unreachable!("handled above"),
        };
        if !matched {
            return false;
        }
        rest = next;
    }
    true
}

/// A `paths` entry: a path template, or Istio's string match.
fn path_matches(pattern: &str, path: &str) -> bool {
    if is_template(pattern) {
        template_matches(pattern, path)
    } else {
        string_matches(pattern, path)
    }
}

fn operation_matches(o: &ir::AuthzOperation, r: &AuthzRequest<'_>) -> bool {
    let any = |v: &[String], s: &str| v.iter().any(|p| string_matches(p, s));
    let any_path = |v: &[String]| v.iter().any(|p| path_matches(p, r.path));
    (o.hosts.is_empty() || any(&o.hosts, r.host))
        && !any(&o.not_hosts, r.host)
        && (o.ports.is_empty() || o.ports.contains(&r.port))
        && !o.not_ports.contains(&r.port)
        && (o.methods.is_empty() || any(&o.methods, r.method))
        && !any(&o.not_methods, r.method)
        && (o.paths.is_empty() || any_path(&o.paths))
        && !any_path(&o.not_paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_nth_forwarded_for_entry_from_the_right() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        let peer: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(client_ip(0, peer, &h), peer);
        assert_eq!(client_ip(1, peer, &h).to_string(), "2.2.2.2");
        assert_eq!(client_ip(2, peer, &h).to_string(), "1.1.1.1");
        assert_eq!(client_ip(3, peer, &h), peer);
    }

    #[test]
    fn path_templates_match_as_envoys_uri_template() {
        let t = "/anything/{*}/admin/{**}";
        assert!(template_matches(t, "/anything/a/admin/x/y"));
        assert!(
            template_matches(t, "/anything/a/admin/"),
            "{{**}} may be empty"
        );
        assert!(
            !template_matches(t, "/anything/a/admin"),
            "the / before it is literal"
        );
        assert!(
            !template_matches(t, "/anything/a/b/admin/x"),
            "{{*}} is one segment"
        );
        assert!(
            !template_matches(t, "/anything//admin/x"),
            "{{*}} is never empty"
        );
        assert!(template_matches("/files/{*}.txt", "/files/a.txt"));
        assert!(!template_matches("/files/{*}.txt", "/files/.txt"));
        assert!(!template_matches("/files/{*}.txt", "/files/a/b.txt"));
        assert!(template_matches("/v1/{**}/status", "/v1/a/b/status"));
        assert!(!template_matches("/v1/{**}/status", "/v1/a/b/other"));
        assert!(template_matches("/{*}/", "/a/"));
        assert!(!template_matches("/{*}/", "/a"));
        // As Envoy 1.40 matches them: `*` is taken in a segment, `"` and `{` are not.
        assert!(template_matches("/{*}/", "/a*b/"));
        assert!(!template_matches("/{*}/", "/a\"b/"));
        assert!(!template_matches("/x/{**}", "/x/a{b"));
    }

    #[test]
    fn malformed_path_templates_are_refused_with_the_reason() {
        for (t, why) in [
            ("/a/{**}/{*}", "no operator may follow {**}"),
            ("/a/{*}x/b", "an operator is a whole segment"),
            ("/a/x{*}", "only {*}, {**} and path segment characters"),
            ("/a//{*}", "an empty path segment"),
            ("a/{*}", "must start with /"),
            (
                "/a/{name}/{*}",
                "only {*}, {**} and path segment characters",
            ),
        ] {
            let err = check_template(t).unwrap_err();
            assert!(err.contains(why), "{t}: {err}");
        }
        assert_eq!(check_template("/api/{*}/items/{**}"), Ok(()));
    }

    #[test]
    fn istio_string_matches() {
        assert!(string_matches("/api/*", "/api/x"));
        assert!(string_matches("*.example.com", "a.example.com"));
        assert!(!string_matches("/exact", "/exact/more"));
    }
}
