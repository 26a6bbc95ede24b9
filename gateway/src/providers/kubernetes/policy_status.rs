//! BackendTLSPolicy status (`status.ancestors`, Gateway API v1.6): one entry per policy
//! for our Gateway, when a route attached to it sends traffic to a Service the policy
//! targets (the Gateway is the ancestor the spec recommends). Conditions:
//!
//! - `Accepted`: `True/Accepted`; `False/Conflicted` when an older policy targets the
//!   same Service port (the oldest wins, then by name, as translate chooses);
//!   `False/NoValidCACertificate` when its CA references do not resolve;
//!   `False/Invalid` with translate's message naming the field otherwise.
//! - `ResolvedRefs`: `True/ResolvedRefs`; `False/InvalidKind` for a caCertificateRef
//!   that is not a core ConfigMap; `False/InvalidCACertificateRef` for a ConfigMap that
//!   is missing (or not in `--secret-namespaces`) or has no `ca.crt`.
//!
//! Translate validates policies but keeps no per-policy conditions, so the provider
//! derives them here from translate's own selection ([`backend_tls::for_service`]).

use serde_json::json;

use super::GatewayRef;
use super::snapshot::Caches;
use super::status::{ListDesired, StatusCondition, StatusList};
use crate::api::gateway_api::{BackendTlsPolicy, PolicyTargetReference};
use crate::api::{ObjectKey, Snapshot};
use crate::translate::attachment::GATEWAY_GROUP;
use crate::translate::{Index, backend_tls};

/// BackendTLSPolicy `status.ancestors`.
pub const BACKEND_TLS_POLICY_ANCESTORS: StatusList = StatusList {
    kind: "BackendTLSPolicy",
    plural: "backendtlspolicies",
    api_version: "v1",
    list: "ancestors",
    reference: "ancestorRef",
};

fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
) -> StatusCondition {
    StatusCondition {
        kind: kind.into(),
        status,
        reason: reason.into(),
        message: message.into(),
    }
}

/// The `status.ancestors` entries every BackendTLSPolicy in the cache should have for
/// our Gateway (none when it does not concern it: a stale entry of ours is removed).
pub fn backend_tls_policies(
    caches: &Caches,
    snap: &Snapshot,
    gw: &GatewayRef,
    served: bool,
) -> Vec<ListDesired> {
    let index = Index::new(snap);
    let ancestor = json!({
        "group": GATEWAY_GROUP,
        "kind": "Gateway",
        "namespace": gw.namespace,
        "name": gw.name,
    });
    let mut out = Vec::new();
    for (key, entry) in caches.backend_tls_policies.entries() {
        let policy = snap
            .backend_tls_policies
            .iter()
            .find(|p| p.metadata.key() == key);
        let parents = match policy {
            Some(p) if served && used_by_our_routes(snap, p) => {
                vec![(ancestor.clone(), conditions(snap, &index, p))]
            }
            _ => Vec::new(),
        };
        out.push(ListDesired {
            list: BACKEND_TLS_POLICY_ANCESTORS,
            served_version: caches.backend_tls_policies.version(),
            key,
            generation: entry.generation,
            resource_version: entry.resource_version,
            current: entry.status,
            entries: parents,
        });
    }
    out
}

fn targets_service(t: &PolicyTargetReference) -> bool {
    t.group.is_empty() && t.kind == "Service"
}

/// Whether a route we serve has a backendRef to a Service the policy targets.
fn used_by_our_routes(snap: &Snapshot, p: &BackendTlsPolicy) -> bool {
    let ns = p.metadata.ns();
    let http = snap
        .http_routes
        .iter()
        .flat_map(|r| r.spec.rules.iter().map(move |rule| (r, &rule.backend_refs)));
    let grpc = snap
        .grpc_routes
        .iter()
        .flat_map(|r| r.spec.rules.iter().map(move |rule| (r, &rule.backend_refs)));
    let mut refs = http
        .map(|(r, b)| (r.metadata.ns(), b))
        .chain(grpc.map(|(r, b)| (r.metadata.ns(), b)));
    refs.any(|(route_ns, backends)| {
        backends.iter().any(|b| {
            b.group.as_deref().unwrap_or("").is_empty()
                && b.kind.as_deref().unwrap_or("Service") == "Service"
                && b.namespace.as_deref().unwrap_or(route_ns) == ns
                && p.spec
                    .target_refs
                    .iter()
                    .any(|t| targets_service(t) && t.name == b.name)
        })
    })
}

/// `Accepted` and `ResolvedRefs` of one policy.
fn conditions(snap: &Snapshot, index: &Index<'_>, p: &BackendTlsPolicy) -> Vec<StatusCondition> {
    let key = p.metadata.key();
    let resolved = resolved_refs(index, p);
    let accepted = if let Some(winner) = conflicting(snap, p) {
        condition(
            "Accepted",
            false,
            "Conflicted",
            format!(
                "BackendTLSPolicy {key}: BackendTLSPolicy {winner} is older and targets the same Service port"
            ),
        )
    } else if !resolved.status {
        condition(
            "Accepted",
            false,
            "NoValidCACertificate",
            resolved.message.clone(),
        )
    } else {
        match validity(snap, index, p) {
            Ok(()) => condition("Accepted", true, "Accepted", ""),
            Err(why) => condition("Accepted", false, "Invalid", why),
        }
    };
    vec![accepted, resolved]
}

/// `ResolvedRefs`: every caCertificateRef is a core ConfigMap with `ca.crt`.
fn resolved_refs(index: &Index<'_>, p: &BackendTlsPolicy) -> StatusCondition {
    let key = p.metadata.key();
    for (i, r) in p.spec.validation.ca_certificate_refs.iter().enumerate() {
        let ctx = format!("BackendTLSPolicy {key} validation.caCertificateRefs[{i}]");
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("ConfigMap");
        if !group.is_empty() || kind != "ConfigMap" {
            let why = format!("{ctx}: {group}/{kind} is not a core ConfigMap");
            return condition("ResolvedRefs", false, "InvalidKind", why);
        }
        let cm = format!("{}/{}", p.metadata.ns(), r.name);
        let has_ca = index
            .config_maps
            .get(&cm)
            .and_then(|c| c.data.as_ref())
            .is_some_and(|d| d.contains_key("ca.crt"));
        if !has_ca {
            let why = format!("{ctx}: ConfigMap {cm} with ca.crt not found");
            return condition("ResolvedRefs", false, "InvalidCACertificateRef", why);
        }
    }
    condition("ResolvedRefs", true, "ResolvedRefs", "")
}

/// Translate's order among policies targeting one Service port: oldest, then by name.
fn order(p: &BackendTlsPolicy) -> (Option<String>, String) {
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string());
    (created, p.metadata.key())
}

/// The older policy that wins one of `p`'s targets, if any.
fn conflicting(snap: &Snapshot, p: &BackendTlsPolicy) -> Option<String> {
    let ns = p.metadata.ns();
    let overlaps = |a: &PolicyTargetReference, b: &PolicyTargetReference| {
        targets_service(a)
            && targets_service(b)
            && a.name == b.name
            && match (&a.section_name, &b.section_name) {
                (Some(x), Some(y)) => x == y,
                _ => true,
            }
    };
    snap.backend_tls_policies
        .iter()
        .filter(|o| o.metadata.ns() == ns && o.metadata.key() != p.metadata.key())
        .filter(|o| order(o) < order(p))
        .find(|o| {
            o.spec
                .target_refs
                .iter()
                .any(|a| p.spec.target_refs.iter().any(|b| overlaps(a, b)))
        })
        .map(|o| o.metadata.key())
}

/// Whether translate can use the policy: asked through the Service port it targets
/// (translate picks this policy there, as it has no older rival).
fn validity(snap: &Snapshot, index: &Index<'_>, p: &BackendTlsPolicy) -> Result<(), String> {
    let ns = p.metadata.ns();
    for t in p.spec.target_refs.iter().filter(|t| targets_service(t)) {
        let port = t.section_name.as_deref().unwrap_or_default();
        if let Some(Err(why)) = backend_tls::for_service(snap, index, ns, &t.name, port, false) {
            return Err(why);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::file::parse_str;

    fn policy(name: &str, created: &str, service: &str, validation: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\n\
             metadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"}}\n\
             spec:\n  targetRefs: [{{group: \"\", kind: Service, name: {service}}}]\n  \
             validation: {validation}\n"
        )
    }

    fn summary(snap: &Snapshot, name: &str) -> Vec<(String, bool, String)> {
        let index = Index::new(snap);
        let p = snap
            .backend_tls_policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap();
        conditions(snap, &index, p)
            .into_iter()
            .map(|c| (c.kind, c.status, c.reason))
            .collect()
    }

    fn c(kind: &str, status: bool, reason: &str) -> (String, bool, String) {
        (kind.into(), status, reason.into())
    }

    #[test]
    fn policy_conditions_follow_the_spec_reasons() {
        let system = "{wellKnownCACertificates: System, hostname: a.test}";
        let yaml = [
            policy("older", "2026-01-01T00:00:00Z", "web", system),
            policy("newer", "2026-02-01T00:00:00Z", "web", system),
            policy(
                "no-ca",
                "2026-01-01T00:00:00Z",
                "api",
                "{caCertificateRefs: [{group: \"\", kind: ConfigMap, name: nope}], hostname: a.test}",
            ),
            policy(
                "secret-ca",
                "2026-01-01T00:00:00Z",
                "db",
                "{caCertificateRefs: [{group: \"\", kind: Secret, name: ca}], hostname: a.test}",
            ),
            policy(
                "bad-host",
                "2026-01-01T00:00:00Z",
                "cache",
                "{wellKnownCACertificates: System, hostname: \"*.a.test\"}",
            ),
        ];
        let snap = parse_str(&yaml.join("---\n")).unwrap();
        let resolved = c("ResolvedRefs", true, "ResolvedRefs");
        assert_eq!(
            summary(&snap, "older"),
            [c("Accepted", true, "Accepted"), resolved.clone()]
        );
        assert_eq!(
            summary(&snap, "newer"),
            [c("Accepted", false, "Conflicted"), resolved.clone()]
        );
        assert_eq!(
            summary(&snap, "no-ca"),
            [
                c("Accepted", false, "NoValidCACertificate"),
                c("ResolvedRefs", false, "InvalidCACertificateRef")
            ]
        );
        assert_eq!(
            summary(&snap, "secret-ca"),
            [
                c("Accepted", false, "NoValidCACertificate"),
                c("ResolvedRefs", false, "InvalidKind")
            ]
        );
        assert_eq!(
            summary(&snap, "bad-host"),
            [c("Accepted", false, "Invalid"), resolved]
        );
    }
}
