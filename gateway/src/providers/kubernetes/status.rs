//! What the Gateway's and the routes' status should say, as JSON documents, from one
//! translation. Pure: [`super::writer`] decides when and how to write them.
//!
//! Conditions carry `observedGeneration`; `lastTransitionTime` is kept from the current
//! status while a condition's status is unchanged, and comparisons ignore it, so an
//! unchanged translation writes nothing.

use serde_json::{Value, json};

use super::cache::Cache;
use super::quarantine::{Translated, parent_key};
use super::snapshot::{Caches, names_gateway};
use super::{CONTROLLER_NAME, GatewayRef};
use crate::api::gateway_api::Listener;
use crate::api::gateway_api::ParentReference;
use crate::translate::attachment::GATEWAY_GROUP;
use crate::translate::status::{
    Condition, ConditionType, ObjectStatus, Reason, Report, failed, ok,
};

/// The desired status of our GatewayClasses, our Gateway, every route and every
/// BackendTLSPolicy, from one translation.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// The Gateway served, if it is ours to serve (class ours): its status is written.
    pub gateway: Option<GatewayDesired>,
    /// Every route (HTTPRoute, GRPCRoute) and BackendTLSPolicy in the caches, with the
    /// entries it should have for our Gateway (none when it no longer concerns it: a stale
    /// entry of ours is then removed).
    pub lists: Vec<ListDesired>,
    /// Every GatewayClass whose controllerName is ours: each is `Accepted`.
    pub gateway_classes: Vec<ClassDesired>,
}

/// A GatewayClass of our controller, as last seen.
#[derive(Debug, Clone)]
pub struct ClassDesired {
    /// Name (cluster-scoped).
    pub name: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.resourceVersion` of the object `current` was read from.
    pub resource_version: Option<String>,
    /// Status as last seen.
    pub current: Value,
}

/// Where an object keeps the entries of each controller: a route's `status.parents`
/// (keyed by `parentRef`) or a policy's `status.ancestors` (keyed by `ancestorRef`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusList {
    /// Kind, for logs and the API path.
    pub kind: &'static str,
    /// Resource plural.
    pub plural: &'static str,
    /// API version written.
    pub api_version: &'static str,
    /// `parents` or `ancestors`.
    pub list: &'static str,
    /// `parentRef` or `ancestorRef`.
    pub reference: &'static str,
}

/// HTTPRoute `status.parents`.
pub const HTTP_ROUTE_PARENTS: StatusList = StatusList {
    kind: "HTTPRoute",
    plural: "httproutes",
    api_version: "v1",
    list: "parents",
    reference: "parentRef",
};
/// GRPCRoute `status.parents`.
pub const GRPC_ROUTE_PARENTS: StatusList = StatusList {
    kind: "GRPCRoute",
    plural: "grpcroutes",
    api_version: "v1",
    list: "parents",
    reference: "parentRef",
};

/// TCPRoute `status.parents`.
pub const TCP_ROUTE_PARENTS: StatusList = StatusList {
    kind: "TCPRoute",
    plural: "tcproutes",
    api_version: "v1alpha2",
    list: "parents",
    reference: "parentRef",
};
/// TLSRoute `status.parents`.
pub const TLS_ROUTE_PARENTS: StatusList = StatusList {
    kind: "TLSRoute",
    plural: "tlsroutes",
    api_version: "v1",
    list: "parents",
    reference: "parentRef",
};

/// A condition as written: the spec's type and reason names (policies have reasons that
/// translate's route and Gateway conditions do not, e.g. `Conflicted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCondition {
    /// Type (`Accepted`, `ResolvedRefs`).
    pub kind: String,
    /// True or False.
    pub status: bool,
    /// The spec's reason.
    pub reason: String,
    /// For a person; names the field at fault.
    pub message: String,
}

impl From<&Condition> for StatusCondition {
    fn from(c: &Condition) -> Self {
        let name = |v: serde_json::Result<Value>| {
            v.ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        };
        StatusCondition {
            kind: name(serde_json::to_value(c.kind)),
            status: c.status,
            reason: name(serde_json::to_value(c.reason)),
            message: c.message.clone(),
        }
    }
}

/// Inputs of the Gateway's status.
#[derive(Debug, Clone)]
pub struct GatewayDesired {
    /// `namespace/name`.
    pub key: GatewayRef,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.resourceVersion` of the object `current` was read from.
    pub resource_version: Option<String>,
    /// Status as last seen.
    pub current: Value,
    /// Object and listener conditions from translation.
    pub conditions: ObjectStatus,
    /// Listeners as specified.
    pub listeners: Vec<Listener>,
}

/// One route's `status.parents` (or policy's `status.ancestors`) entries for our Gateway.
#[derive(Debug, Clone)]
pub struct ListDesired {
    /// Which list of which kind.
    pub list: StatusList,
    /// The version the API server serves the kind at (written through), when discovered.
    pub served_version: Option<String>,
    /// `namespace/name`.
    pub key: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.resourceVersion` of the object `current` was read from.
    pub resource_version: Option<String>,
    /// Status as last seen.
    pub current: Value,
    /// Our entries: (parentRef as written in the spec, or ancestorRef; conditions).
    pub entries: Vec<(Value, Vec<StatusCondition>)>,
}

impl Desired {
    /// Computes what status should say after `translated`.
    pub fn new(gw: &GatewayRef, caches: &Caches, translated: &Translated) -> Desired {
        let report = &translated.report;
        let served = translated.snapshot.gateways.first();
        let cached = caches.gateways.get(&gw.to_string());
        let gateway = served.map(|g| GatewayDesired {
            key: gw.clone(),
            generation: g.metadata.generation,
            resource_version: cached.as_ref().and_then(|e| e.resource_version.clone()),
            current: cached.map(|e| e.status).unwrap_or_default(),
            conditions: report
                .objects
                .get(&format!("Gateway {gw}"))
                .cloned()
                .unwrap_or_default(),
            listeners: g.spec.listeners.clone(),
        });
        let served = gateway.is_some();
        let mut lists = route_entries(HTTP_ROUTE_PARENTS, &caches.http_routes, report, gw, served);
        lists.extend(route_entries(
            GRPC_ROUTE_PARENTS,
            &caches.grpc_routes,
            report,
            gw,
            served,
        ));
        lists.extend(route_entries(
            TCP_ROUTE_PARENTS,
            &caches.tcp_routes,
            report,
            gw,
            served,
        ));
        lists.extend(route_entries(
            TLS_ROUTE_PARENTS,
            &caches.tls_routes,
            report,
            gw,
            served,
        ));
        lists.extend(super::policy_status::backend_tls_policies(
            caches,
            &translated.snapshot,
            gw,
            served,
        ));
        let gateway_classes = caches
            .gateway_classes
            .entries()
            .into_iter()
            .filter(|(_, e)| {
                e.object
                    .as_ref()
                    .is_ok_and(|c| c.spec.controller_name == CONTROLLER_NAME)
            })
            .map(|(name, e)| ClassDesired {
                name,
                generation: e.generation,
                resource_version: e.resource_version,
                current: e.status,
            })
            .collect();
        Desired {
            gateway,
            lists,
            gateway_classes,
        }
    }
}

/// Each route of `cache` with the `status.parents` entries it should have for our Gateway.
fn route_entries<T>(
    list: StatusList,
    cache: &Cache<T>,
    report: &Report,
    gw: &GatewayRef,
    served: bool,
) -> Vec<ListDesired> {
    let mut routes = Vec::new();
    for (key, entry) in cache.entries() {
        let ns = key.split('/').next().unwrap_or("default");
        let conditions = report.objects.get(&format!("{} {key}", list.kind));
        let parents = entry
            .parent_refs
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|raw| {
                let p: ParentReference = serde_json::from_value(raw.clone()).ok()?;
                if !names_gateway(&p, ns, gw) || !served {
                    return None;
                }
                let cs = conditions
                    .and_then(|o| o.parents.get(&parent_key(&p, ns)))
                    .map(|cs| cs.iter().map(StatusCondition::from).collect())
                    .unwrap_or_default();
                Some((raw.clone(), cs))
            })
            .collect();
        routes.push(ListDesired {
            list,
            served_version: cache.version(),
            key,
            generation: entry.generation,
            resource_version: entry.resource_version,
            current: entry.status,
            entries: parents,
        });
    }
    routes
}

/// One condition as the API writes it.
pub fn condition_json(c: &Condition, generation: Option<i64>, current: &Value, now: &str) -> Value {
    status_condition_json(&StatusCondition::from(c), generation, current, now)
}

/// One condition as the API writes it, from its names.
pub fn status_condition_json(
    c: &StatusCondition,
    generation: Option<i64>,
    current: &Value,
    now: &str,
) -> Value {
    let kind = Value::String(c.kind.clone());
    let reason = Value::String(c.reason.clone());
    let status = if c.status { "True" } else { "False" };
    let previous = current
        .as_array()
        .and_then(|cs| cs.iter().find(|p| p["type"] == kind));
    // The transition time moves only when the status does.
    let since = match previous {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => Value::String(now.to_string()),
    };
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": c.message,
        "observedGeneration": generation.unwrap_or(0),
        "lastTransitionTime": since,
    })
}

/// How the data plane stands for one listener port: `Ok` when bound and serving the
/// current configuration, else why not.
pub type Programmed<'a> = &'a dyn Fn(u16) -> Result<(), String>;

/// The Gateway's `status` document.
pub fn gateway_status(
    d: &GatewayDesired,
    programmed: Programmed<'_>,
    addresses: &[String],
    now: &str,
) -> Value {
    let g = d.generation;
    let cur = &d.current;
    let accepted = d
        .conditions
        .conditions
        .iter()
        .find(|c| c.kind == ConditionType::Accepted)
        .cloned()
        .unwrap_or_else(|| ok(ConditionType::Accepted, Reason::Accepted));
    let not_programmed: Vec<String> = d
        .listeners
        .iter()
        .filter_map(|l| programmed(l.port).err())
        .collect();
    let gw_programmed = match (accepted.status, not_programmed.first()) {
        (false, _) => failed(
            ConditionType::Programmed,
            Reason::Invalid,
            "the Gateway is not accepted",
        ),
        (true, Some(why)) => failed(ConditionType::Programmed, Reason::Pending, why.clone()),
        (true, None) => ok(ConditionType::Programmed, Reason::Programmed),
    };
    let conditions: Vec<Value> = [accepted, gw_programmed]
        .iter()
        .map(|c| condition_json(c, g, &cur["conditions"], now))
        .collect();
    let listeners: Vec<Value> = d
        .listeners
        .iter()
        .map(|l| listener_status(d, l, programmed, now))
        .collect();
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|a| {
            let kind = if a.parse::<std::net::IpAddr>().is_ok() {
                "IPAddress"
            } else {
                "Hostname"
            };
            json!({"type": kind, "value": a})
        })
        .collect();
    json!({"conditions": conditions, "listeners": listeners, "addresses": addresses})
}

fn listener_status(
    d: &GatewayDesired,
    l: &Listener,
    programmed: Programmed<'_>,
    now: &str,
) -> Value {
    let from_report = d.conditions.listeners.get(&l.name);
    let mut cs = from_report
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let has = |cs: &Vec<Condition>, k| cs.iter().any(|c: &Condition| c.kind == k);
    if !has(&cs, ConditionType::ResolvedRefs) {
        cs.push(ok(ConditionType::ResolvedRefs, Reason::ResolvedRefs));
    }
    if !has(&cs, ConditionType::Programmed) {
        cs.push(match programmed(l.port) {
            Ok(()) => ok(ConditionType::Programmed, Reason::Programmed),
            Err(why) => failed(ConditionType::Programmed, Reason::Pending, why),
        });
    }
    let current = d
        .current
        .get("listeners")
        .and_then(Value::as_array)
        .and_then(|ls| ls.iter().find(|c| c["name"] == l.name.as_str()))
        .map(|c| c["conditions"].clone())
        .unwrap_or_default();
    let kinds: Vec<Value> = supported_kinds(l)
        .into_iter()
        .map(|k| json!({"group": GATEWAY_GROUP, "kind": k}))
        .collect();
    json!({
        "name": l.name,
        "supportedKinds": kinds,
        "attachedRoutes": from_report.map(|s| s.attached_routes).unwrap_or(0),
        "conditions": cs.iter().map(|c| condition_json(c, d.generation, &current, now)).collect::<Vec<_>>(),
    })
}

/// A GatewayClass's `status`: we accept every class that names our controller (there is
/// nothing in a class's spec meshgate could refuse: `parametersRef` is not read).
pub fn gateway_class_status(c: &ClassDesired, now: &str) -> Value {
    let accepted = ok(ConditionType::Accepted, Reason::Accepted);
    json!({"conditions": [condition_json(&accepted, c.generation, &c.current["conditions"], now)]})
}

/// The route kinds a listener's protocol serves: HTTP ones on HTTP and HTTPS, TLSRoute on
/// TLS (and TCPRoute once terminated, i.e. not Passthrough), TCPRoute on TCP.
fn protocol_kinds(l: &Listener) -> &'static [&'static str] {
    let passthrough = l.tls.as_ref().and_then(|t| t.mode.as_deref()) == Some("Passthrough");
    match l.protocol.as_str() {
        "HTTP" | "HTTPS" => &["HTTPRoute", "GRPCRoute"],
        "TLS" if passthrough => &["TLSRoute"],
        "TLS" => &["TLSRoute", "TCPRoute"],
        "TCP" => &["TCPRoute"],
        _ => &[],
    }
}

/// A listener's `supportedKinds`: the route kinds meshgate serves on its protocol, narrowed
/// to `allowedRoutes.kinds` when given (translate attaches by the same rule; its report
/// does not carry the list, so it is read from the spec here).
fn supported_kinds(l: &Listener) -> Vec<&'static str> {
    let served = protocol_kinds(l).iter().copied();
    let asked = l.allowed_routes.as_ref().map(|a| &a.kinds);
    match asked {
        Some(kinds) if !kinds.is_empty() => served
            .filter(|k| {
                kinds.iter().any(|a| {
                    a.kind == *k && a.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                })
            })
            .collect(),
        _ => served.collect(),
    }
}

/// Whether a `status.parents` (or `ancestors`) entry is ours: written by our controller
/// for our Gateway.
pub fn is_our_entry(entry: &Value, list: &StatusList, route_ns: &str, gw: &GatewayRef) -> bool {
    entry["controllerName"] == CONTROLLER_NAME
        && serde_json::from_value::<ParentReference>(entry[list.reference].clone())
            .is_ok_and(|p| names_gateway(&p, route_ns, gw))
}

/// A route's new `status.parents` (a policy's `status.ancestors`): other controllers'
/// (and other Gateways') entries as they are, then ours.
pub fn list_entries(r: &ListDesired, current: &Value, gw: &GatewayRef, now: &str) -> Value {
    let ns = r.key.split('/').next().unwrap_or("default");
    let l = &r.list;
    let existing = current[l.list].as_array().cloned().unwrap_or_default();
    let mut out: Vec<Value> = existing
        .iter()
        .filter(|e| !is_our_entry(e, l, ns, gw))
        .cloned()
        .collect();
    for (reference, conditions) in &r.entries {
        let previous = existing
            .iter()
            .find(|e| is_our_entry(e, l, ns, gw) && e[l.reference] == *reference)
            .map(|e| e["conditions"].clone())
            .unwrap_or_default();
        let conditions: Vec<Value> = conditions
            .iter()
            .map(|c| status_condition_json(c, r.generation, &previous, now))
            .collect();
        let mut entry = serde_json::Map::new();
        entry.insert(l.reference.into(), reference.clone());
        entry.insert("controllerName".into(), CONTROLLER_NAME.into());
        entry.insert("conditions".into(), conditions.into());
        out.push(Value::Object(entry));
    }
    Value::Array(out)
}

/// Equality that ignores every `lastTransitionTime` (what a rewrite would only bump).
pub fn same_ignoring_timestamps(a: &Value, b: &Value) -> bool {
    strip(a) == strip(b)
}

fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(yaml: &str) -> Listener {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn supported_kinds_are_the_served_route_kinds_narrowed_by_allowed_routes() {
        let plain = listener("{name: http, port: 80, protocol: HTTP}");
        assert_eq!(supported_kinds(&plain), ["HTTPRoute", "GRPCRoute"]);
        let grpc_only = listener(
            "{name: h, port: 80, protocol: HTTPS, allowedRoutes: {kinds: [{kind: GRPCRoute}, {kind: TCPRoute}]}}",
        );
        assert_eq!(supported_kinds(&grpc_only), ["GRPCRoute"]);
        let tcp = listener("{name: t, port: 9000, protocol: TCP}");
        assert_eq!(supported_kinds(&tcp), ["TCPRoute"]);
        let terminated = listener("{name: t, port: 9443, protocol: TLS}");
        assert_eq!(supported_kinds(&terminated), ["TLSRoute", "TCPRoute"]);
        let passthrough =
            listener("{name: p, port: 9443, protocol: TLS, tls: {mode: Passthrough}}");
        assert_eq!(supported_kinds(&passthrough), ["TLSRoute"]);
        let udp = listener("{name: u, port: 53, protocol: UDP}");
        assert!(supported_kinds(&udp).is_empty());
    }
}
