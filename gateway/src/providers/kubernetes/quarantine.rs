//! One user's broken route must not freeze everyone else's configuration. Translate
//! already accepts per object (an invalid route is left out with `Accepted=False` naming
//! the field, everything valid is served), so one translation pass gives both what is
//! served and what status says. What translate never sees is a route that could not even
//! be decoded: it is quarantined here, with `Accepted=False` and the decoding error on
//! each of its parentRefs that names our Gateway.

use serde_json::Value;

use super::snapshot::Undecodable;
use crate::api::Snapshot;
use crate::api::gateway_api::ParentReference;
use crate::translate::status::{ConditionType, Reason, Report, failed};
use crate::translate::{TranslateOptions, translate};

/// What is served, and what status should say about it.
#[derive(Debug, Default)]
pub struct Translated {
    /// The objects to serve (translate leaves the invalid ones out itself).
    pub snapshot: Snapshot,
    /// Conditions of the one translation, plus `Accepted=False` for every undecodable
    /// route.
    pub report: Report,
}

/// Translates `snap` once and adds the conditions of the routes that could not be decoded.
pub fn apply(snap: Snapshot, undecodable: &[Undecodable], opts: &TranslateOptions) -> Translated {
    let out = translate(&snap, opts);
    let mut report = out.status;
    for u in undecodable {
        let (route_ns, _) = u.key.split_once('/').unwrap_or(("default", &u.key));
        let obj = format!("{} {}", u.kind, u.key);
        let refs = u
            .parent_refs
            .iter()
            .filter_map(|v: &Value| serde_json::from_value::<ParentReference>(v.clone()).ok());
        for p in refs {
            let c = failed(
                ConditionType::Accepted,
                Reason::UnsupportedValue,
                format!("{obj} {}", u.message),
            );
            report.parent_condition(&obj, &parent_key(&p, route_ns), c);
        }
    }
    Translated {
        snapshot: snap,
        report,
    }
}

/// The key translate gives a parentRef in [`Report`]: `namespace/gateway[/section]`.
pub fn parent_key(p: &ParentReference, route_ns: &str) -> String {
    let gw = format!("{}/{}", p.namespace.as_deref().unwrap_or(route_ns), p.name);
    match &p.section_name {
        Some(s) => format!("{gw}/{s}"),
        None => gw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::file::parse_str;
    use crate::translate::status::Condition;

    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
        metadata: {name: edge, namespace: default}\nspec:\n  gatewayClassName: meshgate\n  \
        listeners: [{name: http, port: 8080, protocol: HTTP}]\n";

    fn route(name: &str, parent_refs: &str, path_type: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {name}, namespace: default}}\nspec:\n  \
             parentRefs: {parent_refs}\n  rules:\n  - matches: [{{path: {{type: {path_type}, value: /}}}}]\n"
        )
    }

    fn summary(cs: &[Condition]) -> Vec<(ConditionType, bool, Reason)> {
        cs.iter().map(|c| (c.kind, c.status, c.reason)).collect()
    }

    #[test]
    fn a_broken_route_is_refused_alone_and_the_others_are_served() {
        let yaml = [
            GATEWAY,
            &route("good", "[{name: edge}]", "PathPrefix"),
            &route("bad", "[{name: edge}]", "PathPrefixx"),
        ];
        let snap = parse_str(&yaml.join("---\n")).unwrap();
        let t = apply(snap, &[], &TranslateOptions::default());
        let bad = &t.report.objects["HTTPRoute default/bad"].parents["default/edge"];
        assert_eq!(
            summary(bad)[0],
            (ConditionType::Accepted, false, Reason::UnsupportedValue)
        );
        assert!(
            bad[0]
                .message
                .starts_with("HTTPRoute default/bad rule 0 match 0: path type \"PathPrefixx\""),
            "{}",
            bad[0].message
        );
        let good = &t.report.objects["HTTPRoute default/good"].parents["default/edge"];
        assert_eq!(
            summary(good),
            [
                (ConditionType::Accepted, true, Reason::Accepted),
                (ConditionType::ResolvedRefs, true, Reason::ResolvedRefs)
            ]
        );
        // Both attach; attachedRoutes counts the refused one too ("Routes that may
        // themselves have Accepted: false"), though only `good` is served.
        assert_eq!(
            t.report.objects["Gateway default/edge"].listeners["http"].attached_routes,
            2
        );
    }

    /// The text-prefix quarantine left out a whole route when any error named it, even
    /// one about a single parentRef that the spec refuses on its own.
    #[test]
    fn a_route_with_one_unmatched_parent_ref_is_still_served_through_the_other() {
        let refs = "[{name: edge, sectionName: http}, {name: edge, sectionName: nope}]";
        let snap = parse_str(&[GATEWAY, &route("two", refs, "PathPrefix")].join("---\n")).unwrap();
        let t = apply(snap, &[], &TranslateOptions::default());
        assert_eq!(t.snapshot.http_routes.len(), 1);
        let parents = &t.report.objects["HTTPRoute default/two"].parents;
        assert_eq!(
            summary(&parents["default/edge/http"])[0],
            (ConditionType::Accepted, true, Reason::Accepted)
        );
        assert_eq!(
            summary(&parents["default/edge/nope"])[0],
            (ConditionType::Accepted, false, Reason::NoMatchingParent)
        );
        assert_eq!(
            t.report.objects["Gateway default/edge"].listeners["http"].attached_routes,
            1
        );
    }

    /// A Service with a bad annotation is no longer cut out of the snapshot: the routes
    /// that use it say why their backend is unresolved, the others are untouched.
    #[test]
    fn a_service_with_a_bad_annotation_unresolves_only_the_routes_that_use_it() {
        let svc = |name: &str, ann: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default, \
                 annotations: {{meshgate.io/upstream-tls: {ann}}}}}\nspec: {{ports: [{{port: 80}}]}}\n"
            )
        };
        let with_backend = |name: &str, backend: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: edge}}]\n  \
                 hostnames: [{name}.example.com]\n  rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]\n"
            )
        };
        let yaml = [
            GATEWAY,
            &svc("good", "auto"),
            &svc("bad", "sometimes"),
            &with_backend("uses-good", "good"),
            &with_backend("uses-bad", "bad"),
        ];
        let t = apply(
            parse_str(&yaml.join("---\n")).unwrap(),
            &[],
            &TranslateOptions::default(),
        );
        assert_eq!(t.snapshot.services.len(), 2);
        let bad = &t.report.objects["HTTPRoute default/uses-bad"].parents["default/edge"];
        assert_eq!(
            summary(bad),
            [
                (ConditionType::Accepted, true, Reason::Accepted),
                (ConditionType::ResolvedRefs, false, Reason::BackendNotFound)
            ]
        );
        assert!(
            bad[1]
                .message
                .contains("Service default/bad has an invalid meshgate.io annotation"),
            "{}",
            bad[1].message
        );
        let good = &t.report.objects["HTTPRoute default/uses-good"].parents["default/edge"];
        assert_eq!(
            summary(good)[1],
            (ConditionType::ResolvedRefs, true, Reason::ResolvedRefs)
        );
    }

    #[test]
    fn an_undecodable_route_gets_accepted_false_with_the_decoding_error() {
        let snap = parse_str(GATEWAY).unwrap();
        let u = Undecodable {
            kind: "HTTPRoute",
            key: "team/odd".into(),
            message: "cannot be decoded: invalid type: string \"x\", expected a sequence".into(),
            parent_refs: vec![serde_json::json!({"name": "edge", "namespace": "default"})],
        };
        let t = apply(snap, &[u], &TranslateOptions::default());
        let c = &t.report.objects["HTTPRoute team/odd"].parents["default/edge"][0];
        assert_eq!(
            (c.kind, c.status, c.reason),
            (ConditionType::Accepted, false, Reason::UnsupportedValue)
        );
        assert_eq!(
            c.message,
            "HTTPRoute team/odd cannot be decoded: invalid type: string \"x\", expected a sequence"
        );
    }
}
