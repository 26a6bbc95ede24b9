//! ReferenceGrant: whether an object may refer to one in another namespace.

use crate::api::{ObjectKey, Snapshot};

/// A cross-namespace reference to check.
pub struct Reference<'a> {
    /// Referrer's API group.
    pub from_group: &'a str,
    /// Referrer's kind.
    pub from_kind: &'a str,
    /// Referrer's namespace.
    pub from_namespace: &'a str,
    /// Target's API group (empty for core).
    pub to_group: &'a str,
    /// Target's kind.
    pub to_kind: &'a str,
    /// Target's namespace.
    pub to_namespace: &'a str,
    /// Target's name.
    pub to_name: &'a str,
}

/// Same-namespace references are always allowed; others need a ReferenceGrant in the
/// target's namespace whose `from` and `to` both match.
pub fn permitted(snap: &Snapshot, r: &Reference<'_>) -> bool {
    if r.from_namespace == r.to_namespace {
        return true;
    }
    snap.reference_grants
        .iter()
        .filter(|g| g.metadata.ns() == r.to_namespace)
        .any(|g| {
            let from = g.spec.from.iter().any(|f| {
                f.group == r.from_group && f.kind == r.from_kind && f.namespace == r.from_namespace
            });
            let to = g.spec.to.iter().any(|t| {
                t.group == r.to_group
                    && t.kind == r.to_kind
                    && t.name.as_deref().is_none_or(|n| n == r.to_name)
            });
            from && to
        })
}
