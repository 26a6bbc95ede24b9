//! Per-object conditions, computed in one place: what `gateway validate` prints, admin
//! `/config_dump` shows, and a Kubernetes provider writes as status.
//!
//! Shapes follow Gateway API: a Gateway has `Accepted`/`Programmed` and per-listener
//! `Accepted`/`ResolvedRefs`/`Programmed`/`Conflicted` with `attachedRoutes`; a route has
//! per-parent `Accepted`/`ResolvedRefs`. Reasons are the spec's.

use std::collections::BTreeMap;

use serde::Serialize;

/// A condition type of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ConditionType {
    /// The object (or the parent attachment) is valid and accepted.
    Accepted,
    /// Every reference resolved.
    ResolvedRefs,
    /// The data plane serves it.
    Programmed,
    /// The listener conflicts with another (port protocol, hostname).
    Conflicted,
    /// Some of a route's rules are invalid and were dropped; the rest is served.
    PartiallyInvalid,
    /// Client-certificate validation lets connections through without a valid
    /// certificate (`AllowInsecureFallback`).
    InsecureFrontendValidationMode,
}

/// Reasons, as the spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub enum Reason {
    Accepted,
    ListenersNotValid,
    ResolvedRefs,
    Programmed,
    Pending,
    Invalid,
    UnsupportedValue,
    UnsupportedProtocol,
    InvalidCertificateRef,
    InvalidCACertificateRef,
    InvalidRouteKinds,
    NoMatchingParent,
    NoMatchingListenerHostname,
    NotAllowedByListeners,
    BackendNotFound,
    InvalidKind,
    RefNotPermitted,
    ProtocolConflict,
    HostnameConflict,
    PortUnavailable,
    NoConflicts,
    ConfigurationChanged,
}

/// One condition.
#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    /// Type.
    #[serde(rename = "type")]
    pub kind: ConditionType,
    /// True or False.
    pub status: bool,
    /// Why.
    pub reason: Reason,
    /// For a person; names the field at fault.
    pub message: String,
}

/// Conditions of one listener of a Gateway.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListenerStatus {
    /// Conditions, one per type.
    pub conditions: Vec<Condition>,
    /// Routes attached (accepted) to this listener.
    #[serde(rename = "attachedRoutes")]
    pub attached_routes: u32,
}

/// Conditions of one object.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ObjectStatus {
    /// Object-level conditions (Gateways).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per listener (Gateways).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub listeners: BTreeMap<String, ListenerStatus>,
    /// Per parentRef, keyed `namespace/gateway[/section]` (routes).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parents: BTreeMap<String, Vec<Condition>>,
}

/// Conditions of every object translated, keyed `Kind namespace/name`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// By object.
    pub objects: BTreeMap<String, ObjectStatus>,
}

/// `map[key]`, inserted when absent; the key is copied only then (reports are
/// updated several times per route). Two walks of the map either way: a reload of 10k
/// routes inserts each route once, into a map whose keys share long prefixes.
fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if map.contains_key(key) {
        map.get_mut(key).expect("present")
    } else {
        map.entry(key.to_string()).or_default()
    }
}

fn set(list: &mut Vec<Condition>, c: Condition) {
    // A False condition is never overwritten by a True one of the same type.
    match list.iter_mut().find(|o| o.kind == c.kind) {
        Some(o) if o.status || !c.status => *o = c,
        Some(_) => {}
        None => list.push(c),
    }
}

impl Report {
    fn object(&mut self, obj: &str) -> &mut ObjectStatus {
        entry(&mut self.objects, obj)
    }

    /// Sets an object-level condition.
    pub fn object_condition(&mut self, obj: &str, c: Condition) {
        set(&mut self.object(obj).conditions, c);
    }

    /// Sets a listener condition.
    pub fn listener_condition(&mut self, obj: &str, listener: &str, c: Condition) {
        let l = entry(&mut self.object(obj).listeners, listener);
        set(&mut l.conditions, c);
    }

    /// Counts an attached route on a listener.
    pub fn attach(&mut self, obj: &str, listener: &str) {
        entry(&mut self.object(obj).listeners, listener).attached_routes += 1;
    }

    /// Sets a route's condition for one parent.
    pub fn parent_condition(&mut self, obj: &str, parent: &str, c: Condition) {
        self.parent_conditions(obj, parent, [c]);
    }

    /// Sets several of a route's conditions for one parent, looking the route up once
    /// (a reload of 10k routes sets two per route).
    pub fn parent_conditions(
        &mut self,
        obj: &str,
        parent: &str,
        conditions: impl IntoIterator<Item = Condition>,
    ) {
        let list = entry(&mut self.object(obj).parents, parent);
        for c in conditions {
            set(list, c);
        }
    }

    /// Records whether a listener (`namespace/gateway/listener`) is served by the data
    /// plane; the Gateway is Programmed while any of its listeners is.
    pub fn programmed(&mut self, listener: &str, result: Result<(), String>) {
        let Some((gw, name)) = listener.rsplit_once('/') else {
            return;
        };
        let obj = format!("Gateway {gw}");
        // Gateway API listeners only: an Istio server's or a Gloo Gateway's listener has
        // no such object (its bind result is in /config_dump's listeners and the log).
        if !self.objects.contains_key(&obj) {
            return;
        }
        let c = match result {
            Ok(()) => ok(ConditionType::Programmed, Reason::Programmed),
            Err(why) => failed(ConditionType::Programmed, Reason::Invalid, why),
        };
        // Replaced, not merged: a port that failed to bind may bind on a later try.
        let l = self.object(&obj).listeners.entry(name.into()).or_default();
        l.conditions.retain(|o| o.kind != ConditionType::Programmed);
        l.conditions.push(c);
        let any = self.objects[&obj].listeners.values().any(|l| {
            l.conditions
                .iter()
                .any(|c| c.kind == ConditionType::Programmed && c.status)
        });
        let c = if any {
            ok(ConditionType::Programmed, Reason::Programmed)
        } else {
            failed(
                ConditionType::Programmed,
                Reason::Invalid,
                "no listener is programmed",
            )
        };
        let conds = &mut self.object(&obj).conditions;
        conds.retain(|o| o.kind != ConditionType::Programmed);
        conds.push(c);
    }

    /// Objects with an `Accepted=False` condition anywhere, with the messages.
    pub fn not_accepted(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (obj, st) in &self.objects {
            let lists = st
                .conditions
                .iter()
                .chain(st.listeners.values().flat_map(|l| l.conditions.iter()))
                .chain(st.parents.values().flatten());
            for c in lists {
                if c.kind == ConditionType::Accepted && !c.status {
                    out.push((obj.clone(), c.message.clone()));
                }
            }
        }
        out
    }
}

/// A True condition.
pub fn ok(kind: ConditionType, reason: Reason) -> Condition {
    Condition {
        kind,
        status: true,
        reason,
        message: String::new(),
    }
}

/// A False condition with a message.
pub fn failed(kind: ConditionType, reason: Reason, message: impl Into<String>) -> Condition {
    Condition {
        kind,
        status: false,
        reason,
        message: message.into(),
    }
}
