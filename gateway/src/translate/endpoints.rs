//! Which endpoints of a Service port are used, and the service accounts behind them.
//!
//! - Ready endpoints are used (a missing `ready` condition counts as ready, as the
//!   EndpointSlice API says to read an unknown state). Endpoints that are terminating but
//!   still serving are used only when no endpoint is ready (as Envoy Gateway does), so a
//!   rollout's last pods keep answering until their replacements are up.
//! - An endpoint whose `targetRef` Pod is not known is held back when the snapshot holds
//!   every Pod (the Kubernetes provider): an EndpointSlice can arrive before its Pod, and
//!   using the endpoint then would guess plaintext for a mesh pod (istiod waits the same
//!   way). The file provider lists no Pods for most endpoints, so there the endpoint is
//!   used with the slice's labels alone, as before.
//! - The Pod's labels overlay the slice's (`security.istio.io/tlsMode` decides `auto`),
//!   and its `serviceAccountName` is the identity it may present (Istio's secure naming).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use super::Index;
use crate::api;
use crate::ir;
use crate::observe::istio_metrics::workload_name;

/// The endpoints used for one Service port.
#[derive(Debug, Default)]
pub struct Picked {
    /// Address, labels and workload (when its Pod is known) of each endpoint used,
    /// sorted by address.
    pub endpoints: Vec<(SocketAddr, BTreeMap<String, String>, Option<ir::Workload>)>,
    /// Service accounts of the Pods behind the endpoints used.
    pub service_accounts: BTreeSet<String>,
}

/// Where an endpoint stands in its lifecycle.
#[derive(Debug, PartialEq, Eq)]
enum State {
    Ready,
    ServingTerminating,
    Unused,
}

fn state(c: Option<&api::EndpointConditions>) -> State {
    let ready = c.and_then(|c| c.ready);
    let serving = c.and_then(|c| c.serving).or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    match (ready, serving, terminating) {
        (Some(false), Some(true), true) => State::ServingTerminating,
        (Some(false), _, _) => State::Unused,
        _ => State::Ready,
    }
}

struct Candidate {
    address: SocketAddr,
    labels: BTreeMap<String, String>,
    service_account: Option<String>,
    workload: Option<ir::Workload>,
}

/// Picks the endpoints of `slices` for the Service port named `port_name`.
pub fn pick(
    index: &Index<'_>,
    slices: &[&api::EndpointSlice],
    ns: &str,
    port_name: &str,
) -> Picked {
    let (mut ready, mut terminating) = (Vec::new(), Vec::new());
    for slice in slices {
        let Some(target) = target_port(slice, port_name) else {
            continue;
        };
        for ep in &slice.endpoints {
            let bucket = match state(ep.conditions.as_ref()) {
                State::Ready => &mut ready,
                State::ServingTerminating => &mut terminating,
                State::Unused => continue,
            };
            let pod = match pod_of(index, ep, ns) {
                PodRef::Known(p) => Some(p),
                PodRef::Unknown if index.pods_complete => continue,
                PodRef::Unknown | PodRef::None => None,
            };
            let mut labels = slice.metadata.labels.clone().unwrap_or_default();
            if let Some(l) = pod.and_then(|p| p.metadata.labels.as_ref()) {
                labels.extend(l.clone());
            }
            let service_account = pod.map(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".into())
            });
            let workload = pod
                .zip(service_account.as_ref())
                .map(|(p, sa)| ir::Workload {
                    name: pod_workload(p, &labels),
                    namespace: p
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| ns.to_string()),
                    service_account: sa.clone(),
                });
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    bucket.push(Candidate {
                        address: SocketAddr::new(ip, target),
                        labels: labels.clone(),
                        service_account: service_account.clone(),
                        workload: workload.clone(),
                    });
                }
            }
        }
    }
    let mut used = if ready.is_empty() { terminating } else { ready };
    used.sort_by_key(|c| c.address);
    used.dedup_by_key(|c| c.address);
    Picked {
        service_accounts: used
            .iter()
            .filter_map(|c| c.service_account.clone())
            .collect(),
        endpoints: used
            .into_iter()
            .map(|c| (c.address, c.labels, c.workload))
            .collect(),
    }
}

/// Istio's workload name of a Pod, from its controller owner.
fn pod_workload(pod: &api::Pod, labels: &BTreeMap<String, String>) -> String {
    let owner = pod
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str()));
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    workload_name(name, owner, labels)
}

fn target_port(slice: &api::EndpointSlice, port_name: &str) -> Option<u16> {
    slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
}

enum PodRef<'a> {
    /// The endpoint names a Pod we know.
    Known(&'a api::Pod),
    /// The endpoint names a Pod we have not seen (yet).
    Unknown,
    /// The endpoint names no Pod.
    None,
}

fn pod_of<'a>(index: &Index<'a>, ep: &api::Endpoint, ns: &str) -> PodRef<'a> {
    let Some(t) = ep
        .target_ref
        .as_ref()
        .filter(|t| t.kind.as_deref() == Some("Pod"))
    else {
        return PodRef::None;
    };
    let key = format!(
        "{}/{}",
        t.namespace.as_deref().unwrap_or(ns),
        t.name.as_deref().unwrap_or_default()
    );
    match index.pods.get(&key) {
        Some(p) => PodRef::Known(p),
        None => PodRef::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Snapshot;
    use crate::providers::file::parse_str;

    fn slice(endpoints: &str) -> String {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: s, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{endpoints}"
        )
    }

    fn pod(name: &str, sa: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{serviceAccountName: {sa}, containers: []}}\n"
        )
    }

    fn picked(snap: &Snapshot) -> Picked {
        let index = Index::new(snap);
        pick(&index, &index.slices["default/web"], "default", "http")
    }

    fn addrs(p: &Picked) -> Vec<String> {
        p.endpoints
            .iter()
            .map(|(a, _, _)| a.ip().to_string())
            .collect()
    }

    #[test]
    fn serving_terminating_endpoints_are_used_only_when_none_is_ready() {
        let both = slice(
            "- {addresses: [10.0.0.1], conditions: {ready: true}}\n\
             - {addresses: [10.0.0.2], conditions: {ready: false, serving: true, terminating: true}}\n\
             - {addresses: [10.0.0.3], conditions: {ready: false, serving: false, terminating: true}}\n",
        );
        assert_eq!(addrs(&picked(&parse_str(&both).unwrap())), ["10.0.0.1"]);
        let draining = slice(
            "- {addresses: [10.0.0.2], conditions: {ready: false, serving: true, terminating: true}}\n\
             - {addresses: [10.0.0.3], conditions: {ready: false, serving: false, terminating: true}}\n",
        );
        assert_eq!(addrs(&picked(&parse_str(&draining).unwrap())), ["10.0.0.2"]);
    }

    #[test]
    fn an_endpoint_whose_pod_is_unknown_is_held_back_only_when_every_pod_is_watched() {
        let yaml = slice(
            "- {addresses: [10.0.0.1], targetRef: {kind: Pod, name: a}}\n\
             - {addresses: [10.0.0.2], targetRef: {kind: Pod, name: b}}\n",
        ) + &pod("a", "reviews");
        let mut snap = parse_str(&yaml).unwrap();
        assert_eq!(addrs(&picked(&snap)), ["10.0.0.1", "10.0.0.2"]);
        snap.pods_complete = true;
        assert_eq!(addrs(&picked(&snap)), ["10.0.0.1"]);
    }

    #[test]
    fn service_accounts_come_from_the_pods_of_the_endpoints_used() {
        let yaml = slice(
            "- {addresses: [10.0.0.1], targetRef: {kind: Pod, name: a}}\n\
             - {addresses: [10.0.0.2], targetRef: {kind: Pod, name: b}}\n",
        ) + &pod("a", "reviews")
            + &pod("b", "reviews-v2");
        let p = picked(&parse_str(&yaml).unwrap());
        let sas: Vec<_> = p.service_accounts.iter().map(String::as_str).collect();
        assert_eq!(sas, ["reviews", "reviews-v2"]);
    }
}
