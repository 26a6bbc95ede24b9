//! Endpoint pickers for DestinationRule `loadBalancer`: ROUND_ROBIN, LEAST_REQUEST (the
//! less busy of two random endpoints), RANDOM (the default), and consistentHash by
//! header, cookie, source IP or query parameter (rendezvous hashing: a key stays on its
//! endpoint while that endpoint is healthy, and only the keys of an endpoint that leaves
//! move). Ejected endpoints are skipped unless too few are healthy.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use http::HeaderMap;

use super::backend_state::BackendState;
use super::outlier::{self, EndpointHealth};
use crate::ir::{BackendPolicy, HashKey, LoadBalancer};

/// The request properties a consistent hash may use.
pub struct HashInput<'a> {
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Raw query string.
    pub query: Option<&'a str>,
    /// The connection's peer.
    pub client_ip: IpAddr,
    /// Proxies in front trusted to append `X-Forwarded-For` (`--num-trusted-proxies`).
    pub trusted_proxies: u32,
}

/// The hash of the request's key, when the backend hashes and the key is present.
pub fn request_hash(policy: Option<&BackendPolicy>, input: &HashInput<'_>) -> Option<u64> {
    let Some(LoadBalancer::ConsistentHash(key)) = policy.and_then(|p| p.load_balancer.as_ref())
    else {
        return None;
    };
    let mut h = DefaultHasher::new();
    match key {
        HashKey::Header(name) => input.headers.get(name.as_str())?.as_bytes().hash(&mut h),
        HashKey::Cookie(name) => cookie(input.headers, name)?.hash(&mut h),
        // The client as Envoy's source_ip hash sees it behind trusted proxies
        // (use_remote_address with xff_num_trusted_hops), as AuthorizationPolicy does; the
        // headers are the upstream's, with the peer already appended to X-Forwarded-For.
        HashKey::SourceIp if input.trusted_proxies > 0 => {
            let hops = input.trusted_proxies + 1;
            crate::dataplane::authz::client_ip(hops, input.client_ip, input.headers).hash(&mut h)
        }
        HashKey::SourceIp => input.client_ip.hash(&mut h),
        HashKey::QueryParameter(name) => input
            .query?
            .split('&')
            .find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then_some(v)
            })?
            .hash(&mut h),
    }
    Some(h.finish())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// One endpoint as the picker sees it.
pub trait Candidate {
    /// `ip:port`, the identity hashed and compared with the endpoint to avoid.
    fn key(&self) -> &str;
    /// Its health.
    fn health(&self) -> &EndpointHealth;
}

/// Picks the index of an endpoint of a non-empty list; `avoid` (the endpoint a retry
/// just failed on) is skipped when another is available. `None` when every endpoint is
/// ejected and panic mode is off (`minHealthPercent` 0, Istio's default): Envoy then
/// answers `503 UH` without contacting any.
pub fn pick<C: Candidate>(
    policy: Option<&BackendPolicy>,
    state: &BackendState,
    eps: &[C],
    hash: Option<u64>,
    avoid: Option<&str>,
) -> Option<usize> {
    let od = policy.and_then(|p| p.outlier.as_ref());
    let lb = policy.and_then(|p| p.load_balancer.as_ref());
    // Most picks consider every endpoint (no outlier detection, a first attempt): chosen
    // among them without listing them, as this runs once per request.
    if od.is_none() && (avoid.is_none() || eps.len() < 2) {
        return (!eps.is_empty()).then(|| choose(lb, hash, state, eps, eps.len(), |k| k));
    }
    let mut usable: Vec<usize> = (0..eps.len())
        .filter(|&i| od.is_none() || !eps[i].health().is_ejected())
        .collect();
    if !outlier::honour_ejections(od, usable.len(), eps.len()) {
        usable = (0..eps.len()).collect();
    }
    if usable.is_empty() {
        return None;
    }
    if usable.len() > 1
        && let Some(a) = avoid
    {
        usable.retain(|&i| eps[i].key() != a);
    }
    Some(choose(lb, hash, state, eps, usable.len(), |k| usable[k]))
}

/// The load balancer's choice among `m` usable endpoints, the `k`-th of which is
/// `eps[at(k)]`; returns its index in `eps`.
fn choose<C: Candidate>(
    lb: Option<&LoadBalancer>,
    hash: Option<u64>,
    state: &BackendState,
    eps: &[C],
    m: usize,
    at: impl Fn(usize) -> usize,
) -> usize {
    match (lb, hash) {
        (Some(LoadBalancer::ConsistentHash(_)), Some(h)) => (0..m)
            .map(&at)
            .max_by_key(|&i| {
                let mut s = DefaultHasher::new();
                (h, eps[i].key()).hash(&mut s);
                s.finish()
            })
            .expect("m is not 0"),
        (Some(LoadBalancer::RoundRobin), _) => at(state.next_round_robin() % m),
        // LEAST_REQUEST is the default, as in Istio and Envoy Gateway.
        (Some(LoadBalancer::LeastRequest) | None, _) if m > 1 => {
            let a = at(fastrand::usize(..m));
            let mut b = at(fastrand::usize(..m - 1));
            if b == a {
                b = at(m - 1);
            }
            let load = |i: usize| eps[i].health().active.load(Ordering::Relaxed);
            if load(b) < load(a) { b } else { a }
        }
        _ => at(fastrand::usize(..m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ep(String, EndpointHealth);
    impl Candidate for Ep {
        fn key(&self) -> &str {
            &self.0
        }
        fn health(&self) -> &EndpointHealth {
            &self.1
        }
    }

    fn eps(n: usize) -> Vec<Ep> {
        (0..n)
            .map(|i| Ep(format!("10.0.0.{i}:80"), EndpointHealth::default()))
            .collect()
    }

    fn policy(lb: LoadBalancer) -> BackendPolicy {
        BackendPolicy {
            source: "test".into(),
            load_balancer: Some(lb),
            limits: None,
            outlier: None,
            tls_mode: None,
            tls_origination: None,
        }
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        let p = policy(LoadBalancer::RoundRobin);
        let s = BackendState::default();
        let e = eps(3);
        let picks: Vec<_> = (0..6)
            .map(|_| pick(Some(&p), &s, &e, None, None).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_hash_key_stays_on_one_endpoint_and_a_retry_moves_off_it() {
        let p = policy(LoadBalancer::ConsistentHash(HashKey::SourceIp));
        let s = BackendState::default();
        let e = eps(5);
        let first = pick(Some(&p), &s, &e, Some(42), None).unwrap();
        for _ in 0..100 {
            assert_eq!(pick(Some(&p), &s, &e, Some(42), None).unwrap(), first);
        }
        assert_ne!(
            pick(Some(&p), &s, &e, Some(42), Some(&e[first].0)).unwrap(),
            first
        );
    }

    #[test]
    fn adding_a_fifth_endpoint_moves_about_a_fifth_of_the_keys_and_only_to_it() {
        let p = policy(LoadBalancer::ConsistentHash(HashKey::SourceIp));
        let s = BackendState::default();
        let (four, five) = (eps(4), eps(5));
        let keys = 0..10_000u64;
        let mut moved = 0;
        for k in keys.clone() {
            let before = pick(Some(&p), &s, &four, Some(k), None).unwrap();
            let after = pick(Some(&p), &s, &five, Some(k), None).unwrap();
            if before != after {
                assert_eq!(after, 4, "key {k} moved between old endpoints");
                moved += 1;
            }
        }
        // Rendezvous hashing: a new endpoint takes 1/N of the keys (N = 5), from all.
        let share = moved as f64 / 10_000.0;
        assert!((0.17..0.23).contains(&share), "{moved} of 10000 keys moved");
        // And removing it again puts every key back where it was.
        for k in keys.step_by(97) {
            assert_eq!(
                pick(Some(&p), &s, &four, Some(k), None).unwrap(),
                pick(Some(&p), &s, &five[..4], Some(k), None).unwrap()
            );
        }
    }
}
