//! Hostname lookup in O(labels): exact hosts in a hash map, wildcards by suffix.

use crate::ir::HostPattern;

/// Finds the most specific pattern matching a host: exact, then the longest wildcard
/// suffix, then `*`. Values are indexes into the owner's list.
/// foldhash (seeded per process), not SipHash: a lookup per request, 10k inserts per
/// reload; the keys are the configuration's, a client only looks up.
#[derive(Debug, Default)]
pub struct HostIndex {
    exact: hashbrown::HashMap<String, usize>,
    /// Keyed by the suffix with its leading dot (`.example.com`).
    wildcard: hashbrown::HashMap<String, usize>,
    any: Option<usize>,
}

impl HostIndex {
    /// Indexes patterns by position; the first of equal patterns wins.
    pub fn new<'a>(patterns: impl Iterator<Item = &'a HostPattern>) -> HostIndex {
        let mut idx = HostIndex::default();
        // Sized up front: 10k hosts would otherwise rehash a dozen times.
        idx.exact.reserve(patterns.size_hint().0);
        for (i, p) in patterns.enumerate() {
            match p {
                HostPattern::Exact(h) => {
                    idx.exact.entry(h.clone()).or_insert(i);
                }
                HostPattern::Wildcard(s) => {
                    idx.wildcard.entry(s.clone()).or_insert(i);
                }
                HostPattern::Any => {
                    idx.any.get_or_insert(i);
                }
            }
        }
        idx
    }

    /// Every pattern matching a (lowercase, port-less) host, most specific first.
    pub fn find_all<'a>(&'a self, host: &'a str) -> impl Iterator<Item = usize> + 'a {
        let wildcards = host
            .match_indices('.')
            .filter(|(p, _)| *p > 0 && !self.wildcard.is_empty())
            .filter_map(|(pos, _)| self.wildcard.get(&host[pos..]).copied());
        self.exact
            .get(host)
            .copied()
            .into_iter()
            .chain(wildcards)
            .chain(self.any)
    }

    /// The most specific match for a (lowercase, port-less) host.
    pub fn find(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        if !self.wildcard.is_empty() {
            // Longest suffix first: each dot after the first character starts one.
            for (pos, _) in host.match_indices('.').filter(|(p, _)| *p > 0) {
                if let Some(i) = self.wildcard.get(&host[pos..]) {
                    return Some(*i);
                }
            }
        }
        self.any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_longest_wildcard_beats_shorter_wildcard_beats_any() {
        let pats = [
            HostPattern::parse("*"),
            HostPattern::parse("*.example.com"),
            HostPattern::parse("*.a.example.com"),
            HostPattern::parse("x.a.example.com"),
        ];
        let idx = HostIndex::new(pats.iter());
        assert_eq!(idx.find("x.a.example.com"), Some(3));
        assert_eq!(idx.find("y.a.example.com"), Some(2));
        assert_eq!(idx.find("b.example.com"), Some(1));
        assert_eq!(idx.find("example.com"), Some(0));
        assert_eq!(idx.find("other.org"), Some(0));
    }

    #[test]
    fn every_match_is_found_most_specific_first() {
        let pats = [
            HostPattern::parse("*"),
            HostPattern::parse("*.example.com"),
            HostPattern::parse("*.a.example.com"),
            HostPattern::parse("x.a.example.com"),
            HostPattern::parse("other.org"),
        ];
        let idx = HostIndex::new(pats.iter());
        let all = |h| idx.find_all(h).collect::<Vec<_>>();
        assert_eq!(all("x.a.example.com"), [3, 2, 1, 0]);
        assert_eq!(all("b.example.com"), [1, 0]);
        assert_eq!(all("other.org"), [4, 0]);
        assert_eq!(all("example.com"), [0]);
    }

    #[test]
    fn wildcard_needs_at_least_one_label_before_the_suffix() {
        let pats = [HostPattern::parse("*.example.com")];
        let idx = HostIndex::new(pats.iter());
        assert_eq!(idx.find(".example.com"), None);
        assert_eq!(idx.find("example.com"), None);
        assert_eq!(idx.find("a.b.example.com"), Some(0));
    }
}
