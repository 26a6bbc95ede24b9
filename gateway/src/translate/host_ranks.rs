//! One precedence order across a Gateway API listener's virtual hosts: the rules of every
//! hostname that matches a request's host compete (conformance HTTPRouteMatchingAcrossRoutes),
//! so each entry gets a rank the data plane compares between the virtual hosts a host
//! matches.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::rules::Pending;
use crate::ir::HostPattern;

/// An entry's place: match precedence, hostname specificity, route order (oldest, then
/// name), rule and match position; integers only, so 40,000 entries sort in a few ms.
type Place = (Matched, (u8, usize), u32, usize, usize);

/// Match precedence, as [`super::rules::PrecedenceKey`] orders it.
type Matched = (
    u8,
    Reverse<usize>,
    Reverse<usize>,
    Reverse<bool>,
    Reverse<usize>,
    Reverse<usize>,
);

/// Ranks every entry of a listener's virtual hosts: Gateway API's match precedence first
/// (so `*.com`'s `/v2` beats `example.com`'s `/` for `example.com/v2`), then the more
/// specific hostname (the hostname rule of HTTPRoute's `hostnames`), then the oldest
/// route, its name, rule and match order. Virtual hosts no host can share need no rank.
pub fn rank_across_hostnames(hosts: &mut [(HostPattern, Vec<Pending>)]) {
    if !any_overlap(hosts) {
        return;
    }
    let routes = route_order(hosts);
    let total = hosts.iter().map(|(_, entries)| entries.len()).sum();
    let mut places: Vec<(Place, usize, usize)> = Vec::with_capacity(total);
    for (h, (hostname, entries)) in hosts.iter().enumerate() {
        for (e, p) in entries.iter().enumerate() {
            let k = &p.key;
            let route = routes[&std::sync::Arc::as_ptr(&k.7).cast::<u8>()];
            let place = (
                (k.0, k.1, k.2, k.3, k.4, k.5),
                hostname.specificity(),
                route,
                k.8,
                k.9,
            );
            places.push((place, h, e));
        }
    }
    places.sort_unstable_by_key(|p| p.0);
    for (rank, (_, h, e)) in places.into_iter().enumerate() {
        hosts[h].1[e].entry.rank = u32::try_from(rank).unwrap_or(u32::MAX);
    }
}

/// Whether some host matches two of these hostnames: `*` beside anything, or a
/// wildcard's suffix ending another hostname (`a.example.com`, `*.a.example.com` under
/// `*.example.com`).
fn any_overlap(hosts: &[(HostPattern, Vec<Pending>)]) -> bool {
    if hosts.len() < 2 {
        return false;
    }
    if hosts.iter().any(|(h, _)| matches!(h, HostPattern::Any)) {
        return true;
    }
    let suffixes: HashSet<&str> = hosts
        .iter()
        .filter_map(|(h, _)| match h {
            HostPattern::Wildcard(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    !suffixes.is_empty()
        && hosts.iter().any(|(h, _)| {
            let name = match h {
                HostPattern::Exact(n) | HostPattern::Wildcard(n) => n.as_str(),
                HostPattern::Any => return false,
            };
            name.match_indices('.')
                .filter(|(pos, _)| *pos > 0)
                .any(|(pos, _)| suffixes.contains(&name[pos..]))
        })
}

/// Each route's place in Gateway API's route order (oldest, then `namespace/name`), by
/// the address of its key: a route's entries share it, and routes are far fewer than
/// entries, so names are compared once per route.
fn route_order(hosts: &[(HostPattern, Vec<Pending>)]) -> RouteOrder {
    let mut routes = Vec::new();
    let mut last = std::ptr::null();
    for p in hosts.iter().flat_map(|(_, entries)| entries) {
        // A route's entries in a virtual host are consecutive: one per run.
        let ptr = std::sync::Arc::as_ptr(&p.key.7).cast::<u8>();
        if ptr != last {
            routes.push((&p.key.6, &p.key.7, ptr));
            last = ptr;
        }
    }
    routes.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    // Equal keys held in different allocations share a place.
    let mut order = RouteOrder::with_capacity_and_hasher(routes.len(), Default::default());
    let mut place = 0u32;
    for (i, &(time, name, ptr)) in routes.iter().enumerate() {
        if i > 0 && (routes[i - 1].0, routes[i - 1].1) != (time, name) {
            place += 1;
        }
        order.insert(ptr, place);
    }
    order
}

/// Route places by the address of the route's key.
type RouteOrder = HashMap<*const u8, u32, BuildHasherDefault<AddressHasher>>;

/// Hashes an address (aligned: its low bits carry nothing) with one multiplication.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> Vec<(HostPattern, Vec<Pending>)> {
        names
            .iter()
            .map(|n| (HostPattern::parse(n), Vec::new()))
            .collect()
    }

    #[test]
    fn hostnames_overlap_when_one_host_can_match_two() {
        assert!(!any_overlap(&hosts(&["a.example.com"])));
        assert!(!any_overlap(&hosts(&["a.example.com", "b.example.com"])));
        assert!(!any_overlap(&hosts(&["a.example.com", "*.w1.example.com"])));
        assert!(!any_overlap(&hosts(&["example.com", "*.example.com"])));
        assert!(any_overlap(&hosts(&["a.example.com", "*.example.com"])));
        assert!(any_overlap(&hosts(&["*.a.example.com", "*.example.com"])));
        assert!(any_overlap(&hosts(&["a.example.com", "*"])));
    }
}
