//! Envoy Gateway BackendTrafficPolicy `rateLimit.type: Local` -> [`ir::RateLimit`] per
//! route. A policy targets Gateways or HTTPRoutes in its own namespace; one targeting
//! an HTTPRoute wins over one targeting the route's Gateway (Envoy Gateway's rule: the
//! more specific target takes precedence). Among policies on the same target the
//! oldest wins.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::super::Findings;
use crate::api::ObjectKey;
use crate::api::Snapshot;
use crate::api::envoy_gateway::{BackendTrafficPolicy, HeaderMatch, RateLimitRule};
use crate::api::gateway_api::{ObjectMeta, ParentReference};
use crate::dataplane::limits::parse_cidr;
use crate::ir::{ClientSelector, LimitHeaderMatch, LocalLimit, RateLimit, ValueMatch};

/// Valid local rate limits by target.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// By `HTTPRoute ns/name` or `Gateway ns/name`, with the policy's creation time.
    by_target: HashMap<
        String,
        (
            Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
            Arc<RateLimit>,
        ),
    >,
}

impl RateLimits {
    /// Compiles every policy; invalid ones are reported and left out.
    pub fn compile(snap: &Snapshot, num_trusted_proxies: u32, f: &mut Findings) -> RateLimits {
        let mut out = RateLimits::default();
        for p in &snap.backend_traffic_policies {
            let Some((targets, mut limit)) = compile_policy(p, f) else {
                continue;
            };
            limit.num_trusted_proxies = num_trusted_proxies;
            let limit = Arc::new(limit);
            let created = p.metadata.creation_timestamp.clone();
            for t in targets {
                let keep_old = out
                    .by_target
                    .get(&t)
                    .is_some_and(|(c, _)| c.is_some() && *c <= created);
                if !keep_old {
                    out.by_target.insert(t, (created.clone(), limit.clone()));
                }
            }
        }
        out
    }

    /// The limits of a route: its own policy, else its Gateway's.
    pub fn for_route(
        &self,
        kind: &str,
        meta: &ObjectMeta,
        parents: &[ParentReference],
    ) -> Option<Arc<RateLimit>> {
        if self.by_target.is_empty() {
            return None;
        }
        if let Some((_, l)) = self.by_target.get(&format!("{kind} {}", meta.key())) {
            return Some(l.clone());
        }
        parents.iter().find_map(|p| {
            let is_gateway = p.kind.as_deref().unwrap_or("Gateway") == "Gateway";
            let ns = p.namespace.as_deref().unwrap_or(meta.ns());
            let key = format!("Gateway {ns}/{}", p.name);
            is_gateway
                .then(|| self.by_target.get(&key).map(|(_, l)| l.clone()))
                .flatten()
        })
    }
}

fn compile_policy(p: &BackendTrafficPolicy, f: &mut Findings) -> Option<(Vec<String>, RateLimit)> {
    let key = p.metadata.key();
    let ctx = format!("BackendTrafficPolicy {key}");
    let before = f.errors.len();
    let spec = &p.spec;
    f.unsupported(&ctx, &spec.unsupported);
    let mut targets = Vec::new();
    for (i, t) in spec.target_refs.iter().chain(&spec.target_ref).enumerate() {
        let tctx = format!("{ctx} targetRefs[{i}]");
        f.unsupported(&tctx, &t.unsupported);
        match (t.group.as_str(), t.kind.as_str()) {
            ("gateway.networking.k8s.io", kind @ ("Gateway" | "HTTPRoute")) => {
                targets.push(format!("{kind} {}/{}", p.metadata.ns(), t.name))
            }
            (g, k) => f.errors.push(format!(
                "{tctx}: {g}/{k} is not a target meshgate supports (gateway.networking.k8s.io Gateway or HTTPRoute)"
            )),
        }
    }
    if targets.is_empty() && f.errors.len() == before {
        f.errors.push(format!("{ctx}: targetRefs names no target"));
    }
    let Some(rl) = &spec.rate_limit else {
        f.errors.push(format!(
            "{ctx}: rateLimit is required (the only part meshgate implements)"
        ));
        return None;
    };
    let rctx = format!("{ctx} rateLimit");
    f.unsupported(&rctx, &rl.unsupported);
    match rl.kind.as_deref() {
        Some("Local") => {}
        other => f.errors.push(format!(
            "{rctx}: type {:?} is not supported by meshgate (Local is)",
            other.unwrap_or("")
        )),
    }
    let local = rl.local.clone().unwrap_or_default();
    f.unsupported(&format!("{rctx}.local"), &local.unsupported);
    let limits: Vec<LocalLimit> = local
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| rule(r, &format!("{rctx}.local.rules[{i}]"), f))
        .collect();
    if limits.is_empty() && f.errors.len() == before {
        f.errors.push(format!("{rctx}.local: rules is empty"));
    }
    if f.errors.len() > before {
        return None;
    }
    Some((
        targets,
        RateLimit {
            source: format!("BackendTrafficPolicy {key}"),
            num_trusted_proxies: 0,
            limits,
        },
    ))
}

fn rule(r: &RateLimitRule, ctx: &str, f: &mut Findings) -> Option<LocalLimit> {
    let before = f.errors.len();
    f.unsupported(&ctx, &r.unsupported);
    f.unsupported(&format!("{ctx}.limit"), &r.limit.unsupported);
    let per = match r.limit.unit.as_str() {
        "Second" => Duration::from_secs(1),
        "Minute" => Duration::from_secs(60),
        "Hour" => Duration::from_secs(3600),
        "Day" => Duration::from_secs(86400),
        u => {
            f.errors.push(format!(
                "{ctx}: limit.unit {u:?} is not one of Second, Minute, Hour, Day"
            ));
            Duration::ZERO
        }
    };
    if r.limit.requests == 0 {
        f.errors
            .push(format!("{ctx}: limit.requests must be at least 1"));
    }
    let mut selectors = Vec::new();
    for (si, s) in r.client_selectors.iter().enumerate() {
        let sctx = format!("{ctx}.clientSelectors[{si}]");
        f.unsupported(&sctx, &s.unsupported);
        let headers = s
            .headers
            .iter()
            .enumerate()
            .filter_map(|(hi, h)| header(h, &format!("{sctx}.headers[{hi}]"), f))
            .collect();
        let source_cidr = s.source_cidr.as_ref().and_then(|c| {
            let cctx = format!("{sctx}.sourceCIDR");
            f.unsupported(&cctx, &c.unsupported);
            if c.kind.as_deref().unwrap_or("Exact") != "Exact" {
                f.errors.push(format!(
                    "{cctx}: type {:?} needs a global rate limit; local limits support Exact",
                    c.kind.as_deref().unwrap_or_default()
                ));
                return None;
            }
            match parse_cidr(&c.value) {
                Some(_) => Some(c.value.clone()),
                None => {
                    f.errors
                        .push(format!("{cctx}: value {:?} is not a CIDR", c.value));
                    None
                }
            }
        });
        selectors.push(ClientSelector {
            headers,
            source_cidr,
        });
    }
    (f.errors.len() == before).then_some(LocalLimit {
        selectors,
        requests: r.limit.requests,
        per,
    })
}

fn header(h: &HeaderMatch, ctx: &str, f: &mut Findings) -> Option<LimitHeaderMatch> {
    f.unsupported(&ctx, &h.unsupported);
    if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
        f.errors
            .push(format!("{ctx}: {:?} is not a valid header name", h.name));
        return None;
    }
    let value = match (h.kind.as_deref().unwrap_or("Exact"), &h.value) {
        ("Exact" | "RegularExpression", None) => None,
        ("Exact", Some(v)) => Some(ValueMatch::Exact(v.clone())),
        ("RegularExpression", Some(v)) => match regex::Regex::new(v) {
            Ok(_) => Some(ValueMatch::RegularExpression(v.clone())),
            Err(_) => {
                f.errors.push(format!(
                    "{ctx}: value {v:?} is not a valid regular expression"
                ));
                return None;
            }
        },
        (other, _) => {
            f.errors.push(format!(
                "{ctx}: type {other:?} is not supported for local limits (Exact, RegularExpression are)"
            ));
            return None;
        }
    };
    Some(LimitHeaderMatch {
        name: h.name.to_ascii_lowercase(),
        value,
        invert: h.invert.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use crate::dataplane::limits::{cidr_contains, parse_cidr};

    #[test]
    fn cidrs_match_by_prefix() {
        let (n, l) = parse_cidr("10.1.0.0/16").unwrap();
        assert!(cidr_contains(n, l, "10.1.2.3".parse().unwrap()));
        assert!(!cidr_contains(n, l, "10.2.0.1".parse().unwrap()));
        let (n, l) = parse_cidr("0.0.0.0/0").unwrap();
        assert!(cidr_contains(n, l, "1.2.3.4".parse().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_none());
    }
}
