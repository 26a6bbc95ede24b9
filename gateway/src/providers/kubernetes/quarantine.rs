//! One user's broken HTTPRoute must not freeze everyone else's configuration. The file
//! provider's policy (any error rejects the whole update) fits a file one person edits;
//! in a cluster, the routes (and Services) at fault are left out and get
//! `Accepted=False` with the error, and the rest is translated and served.
//!
//! Translate names the object at fault at the start of each error (`HTTPRoute ns/name
//! ...`, `Service ns/name: ...`); that prefix is what is matched here. Errors of the
//! Gateway itself are not quarantined: they reject the update, and the Gateway's
//! status says why.

use std::collections::BTreeMap;

use serde_json::Value;

use super::snapshot::Undecodable;
use crate::api::gateway_api::ParentReference;
use crate::api::{ObjectKey, Snapshot};
use crate::ir;
use crate::translate::status::{ConditionType, Reason, Report, failed};
use crate::translate::{TranslateOptions, translate};

/// Passes at most: each pass removes every object named by an error, so a second pass
/// only finds errors that removing the first ones revealed.
const MAX_PASSES: usize = 4;

/// What is left to serve after quarantine, and what status should say about it.
#[derive(Debug, Default)]
pub struct Translated {
    /// The objects to serve.
    pub snapshot: Snapshot,
    /// Conditions of the final translation, with `Accepted=False` for every route left
    /// out (and every undecodable route).
    pub report: Report,
    /// Per route (`namespace/name`), why backendRefs could not be resolved.
    pub unresolved: BTreeMap<String, Vec<String>>,
}

/// Leaves out the routes and Services with errors and translates the rest.
pub fn apply(
    mut snap: Snapshot,
    undecodable: &[Undecodable],
    opts: &TranslateOptions,
) -> Translated {
    let mut rejected: BTreeMap<String, ParentConditions> = BTreeMap::new();
    let mut report = Report::default();
    let mut unresolved = BTreeMap::new();
    for _ in 0..MAX_PASSES {
        let out = translate(&snap, opts);
        report = out.status;
        unresolved = unresolved_backends(&out.config);
        let at_fault = objects_at_fault(&out.errors);
        if at_fault.is_empty() {
            break;
        }
        let before = (snap.http_routes.len(), snap.services.len());
        snap.http_routes.retain(|r| {
            let key = r.metadata.key();
            let Some(message) = at_fault.get(&format!("HTTPRoute {key}")) else {
                return true;
            };
            let parents = parent_conditions(&report, &key, r.spec.parent_refs.iter(), message);
            rejected.insert(key, parents);
            false
        });
        snap.services.retain(|s| {
            let obj = format!("Service {}", s.metadata.key());
            match at_fault.get(&obj) {
                Some(message) => {
                    tracing::warn!("{message}; the Service is left out");
                    false
                }
                None => true,
            }
        });
        if before == (snap.http_routes.len(), snap.services.len()) {
            break;
        }
    }
    for (key, parents) in rejected {
        for (parent, conditions) in parents {
            for c in conditions {
                report.parent_condition(&format!("HTTPRoute {key}"), &parent, c);
            }
        }
    }
    for u in undecodable {
        let refs: Vec<ParentReference> = u
            .parent_refs
            .iter()
            .filter_map(|v: &Value| serde_json::from_value(v.clone()).ok())
            .collect();
        let parents = parent_conditions(&Report::default(), &u.key, refs.iter(), &u.message);
        for (parent, conditions) in parents {
            for c in conditions {
                report.parent_condition(&format!("HTTPRoute {}", u.key), &parent, c);
            }
        }
    }
    Translated {
        snapshot: snap,
        report,
        unresolved,
    }
}

/// Per route, the reasons its backendRefs could not be resolved (a route's ResolvedRefs).
fn unresolved_backends(config: &ir::Config) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let entries = config
        .ports
        .values()
        .flat_map(|p| &p.listeners)
        .flat_map(|l| &l.virtual_hosts)
        .flat_map(|v| &v.routes);
    for e in entries {
        for b in &e.rule.backends {
            if let ir::BackendTarget::Unresolvable(why) = &b.target {
                let reasons = out.entry(e.rule.route.clone()).or_default();
                if !reasons.contains(why) {
                    reasons.push(why.clone());
                }
            }
        }
    }
    out
}

/// The first error of each object an error names, keyed `Kind ns/name`.
fn objects_at_fault(errors: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in errors {
        let mut words = e.split_whitespace();
        let (Some(kind), Some(key)) = (words.next(), words.next()) else {
            continue;
        };
        if matches!(kind, "HTTPRoute" | "Service") {
            let key = key.trim_end_matches(':');
            out.entry(format!("{kind} {key}"))
                .or_insert_with(|| e.clone());
        }
    }
    out
}

type ParentConditions = Vec<(String, Vec<crate::translate::status::Condition>)>;

/// For each parentRef: the conditions translation gave it when it already says why the
/// route is not accepted (NotAllowedByListeners, ...), else `Accepted=False` with the
/// route's first error.
fn parent_conditions<'a>(
    report: &Report,
    route_key: &str,
    refs: impl Iterator<Item = &'a ParentReference>,
    message: &str,
) -> ParentConditions {
    let route_ns = route_key.split('/').next().unwrap_or("default");
    let known = report.objects.get(&format!("HTTPRoute {route_key}"));
    refs.map(|p| {
        let gw = format!("{}/{}", p.namespace.as_deref().unwrap_or(route_ns), p.name);
        let parent = match &p.section_name {
            Some(s) => format!("{gw}/{s}"),
            None => gw,
        };
        let translated = known
            .and_then(|o| o.parents.get(&parent))
            .filter(|cs| {
                cs.iter()
                    .any(|c| c.kind == ConditionType::Accepted && !c.status)
            })
            .cloned();
        let conditions = translated.unwrap_or_else(|| {
            vec![failed(
                ConditionType::Accepted,
                Reason::UnsupportedValue,
                message,
            )]
        });
        (parent, conditions)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::file::parse_str;

    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
        metadata: {name: edge, namespace: default}\nspec:\n  gatewayClassName: meshgate\n  \
        listeners: [{name: http, port: 8080, protocol: HTTP}]\n";

    fn route(name: &str, path_type: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {name}, namespace: default}}\nspec:\n  \
             parentRefs: [{{name: edge}}]\n  rules:\n  - matches: [{{path: {{type: {path_type}, value: /}}}}]\n"
        )
    }

    #[test]
    fn a_broken_route_is_left_out_with_accepted_false_and_the_others_are_served() {
        let yaml = [
            GATEWAY,
            &route("good", "PathPrefix"),
            &route("bad", "PathPrefixx"),
        ];
        let snap = parse_str(&yaml.join("---\n")).unwrap();
        let Translated {
            snapshot: snap,
            report,
            ..
        } = apply(snap, &[], &TranslateOptions::default());
        let names: Vec<_> = snap.http_routes.iter().map(|r| r.metadata.key()).collect();
        assert_eq!(names, ["default/good"]);
        assert!(
            translate(&snap, &TranslateOptions::default())
                .errors
                .is_empty()
        );
        let bad = &report.objects["HTTPRoute default/bad"].parents["default/edge"];
        assert_eq!(bad[0].kind, ConditionType::Accepted);
        assert!(!bad[0].status);
        assert_eq!(bad[0].reason, Reason::UnsupportedValue);
        assert!(bad[0].message.contains("PathPrefixx"), "{}", bad[0].message);
        let good = &report.objects["HTTPRoute default/good"].parents["default/edge"];
        assert!(good[0].status);
    }
}
