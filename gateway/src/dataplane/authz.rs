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

fn operation_matches(o: &ir::AuthzOperation, r: &AuthzRequest<'_>) -> bool {
    let any = |v: &[String], s: &str| v.iter().any(|p| string_matches(p, s));
    (o.hosts.is_empty() || any(&o.hosts, r.host))
        && !any(&o.not_hosts, r.host)
        && (o.ports.is_empty() || o.ports.contains(&r.port))
        && !o.not_ports.contains(&r.port)
        && (o.methods.is_empty() || any(&o.methods, r.method))
        && !any(&o.not_methods, r.method)
        && (o.paths.is_empty() || any(&o.paths, r.path))
        && !any(&o.not_paths, r.path)
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
    fn istio_string_matches() {
        assert!(string_matches("/api/*", "/api/x"));
        assert!(string_matches("*.example.com", "a.example.com"));
        assert!(!string_matches("/exact", "/exact/more"));
    }
}
