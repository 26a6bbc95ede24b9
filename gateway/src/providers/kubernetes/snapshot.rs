//! The caches -> the objects this pod serves: its Gateway (only when its GatewayClass
//! names our controller), the HTTPRoutes, GRPCRoutes, TCPRoutes and TLSRoutes whose
//! parentRefs name it (with the parentRefs to other Gateways left out: their status is
//! someone else's), every ReferenceGrant, BackendTLSPolicy, DestinationRule,
//! AuthorizationPolicy, BackendTrafficPolicy, Service, EndpointSlice, Pod and Namespace
//! (translate decides what applies), and the Secrets and ConfigMaps the Gateway or a
//! BackendTLSPolicy refers to.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::cache::{Cache, Entry};
use super::{Assembled, CONTROLLER_NAME, GatewayRef, Settings};
use crate::api::envoy_gateway::{BackendTrafficPolicy, ClientTrafficPolicy};
use crate::api::gateway_api::{
    BackendTlsPolicy, Gateway, GrpcRoute, HttpRoute, ObjectMeta, ParentReference, ReferenceGrant,
    TcpRoute, TlsRoute,
};
use crate::api::gloo::{GlooGateway, GlooVirtualService, Upstream};
use crate::api::istio::{AuthorizationPolicy, DestinationRule};
use crate::api::istio_gateway::{IstioGateway, VirtualService};
use crate::api::{ConfigMap, EndpointSlice, Namespace, ObjectKey, Pod, Secret, Service};
use crate::translate::attachment::GATEWAY_GROUP;

/// A GatewayClass, as far as the gateway reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct GatewayClass {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: GatewayClassSpec,
}

/// `GatewayClass.spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    /// The controller that serves Gateways of this class.
    pub controller_name: String,
}

/// A route naming our Gateway that could not be decoded: it gets `Accepted=False` with
/// the decoding error, and everything else keeps being served.
#[derive(Debug, Clone)]
pub struct Undecodable {
    /// The route's kind (`HTTPRoute`, `GRPCRoute`).
    pub kind: &'static str,
    /// `namespace/name`.
    pub key: String,
    /// The decoding error.
    pub message: String,
    /// The route's parentRefs that name our Gateway, as written.
    pub parent_refs: Vec<Value>,
}

/// The Secrets and ConfigMaps of one watched namespace.
pub type NamespaceRefs = (String, Arc<Cache<Secret>>, Arc<Cache<ConfigMap>>);

/// Every watch's cache.
#[derive(Debug)]
pub struct Caches {
    /// GatewayClasses.
    pub gateway_classes: Arc<Cache<GatewayClass>>,
    /// Gateways in the served Gateway's namespace.
    pub gateways: Arc<Cache<Gateway>>,
    /// HTTPRoutes, all namespaces.
    pub http_routes: Arc<Cache<HttpRoute>>,
    /// GRPCRoutes, all namespaces.
    pub grpc_routes: Arc<Cache<GrpcRoute>>,
    /// TCPRoutes, all namespaces.
    pub tcp_routes: Arc<Cache<TcpRoute>>,
    /// TLSRoutes, all namespaces.
    pub tls_routes: Arc<Cache<TlsRoute>>,
    /// ReferenceGrants, all namespaces.
    pub reference_grants: Arc<Cache<ReferenceGrant>>,
    /// BackendTLSPolicies, all namespaces.
    pub backend_tls_policies: Arc<Cache<BackendTlsPolicy>>,
    /// Istio Gateways, all namespaces (translate serves those selecting this pod).
    pub istio_gateways: Arc<Cache<IstioGateway>>,
    /// Istio VirtualServices, all namespaces.
    pub virtual_services: Arc<Cache<VirtualService>>,
    /// Gloo Edge VirtualServices, all namespaces.
    pub gloo_virtual_services: Arc<Cache<GlooVirtualService>>,
    /// Gloo Edge Gateways, all namespaces.
    pub gloo_gateways: Arc<Cache<GlooGateway>>,
    /// Gloo Edge Upstreams, all namespaces.
    pub gloo_upstreams: Arc<Cache<Upstream>>,
    /// Istio DestinationRules, all namespaces.
    pub destination_rules: Arc<Cache<DestinationRule>>,
    /// Istio AuthorizationPolicies, all namespaces.
    pub authorization_policies: Arc<Cache<AuthorizationPolicy>>,
    /// Envoy Gateway ClientTrafficPolicies, all namespaces.
    pub client_traffic_policies: Arc<Cache<ClientTrafficPolicy>>,
    /// Envoy Gateway BackendTrafficPolicies, all namespaces.
    pub backend_traffic_policies: Arc<Cache<BackendTrafficPolicy>>,
    /// Namespaces.
    pub namespaces: Arc<Cache<Namespace>>,
    /// Services.
    pub services: Arc<Cache<Service>>,
    /// EndpointSlices.
    pub endpoint_slices: Arc<Cache<EndpointSlice>>,
    /// Pods, trimmed to labels and serviceAccountName.
    pub pods: Arc<Cache<Pod>>,
    /// Secrets and ConfigMaps, one pair of caches per watched namespace.
    pub referenced: Vec<NamespaceRefs>,
    /// Where Istio Gateways' `credentialName` Secrets are read (the pod's namespace).
    pub credential_namespace: Option<String>,
}

impl Caches {
    /// Empty caches for the kinds and namespaces `settings` asks for.
    pub fn new(settings: &Settings) -> Caches {
        Caches {
            gateway_classes: Arc::default(),
            gateways: Arc::default(),
            http_routes: Arc::default(),
            grpc_routes: Arc::default(),
            tcp_routes: Arc::default(),
            tls_routes: Arc::default(),
            reference_grants: Arc::default(),
            backend_tls_policies: Arc::default(),
            istio_gateways: Arc::default(),
            virtual_services: Arc::default(),
            gloo_virtual_services: Arc::default(),
            gloo_gateways: Arc::default(),
            gloo_upstreams: Arc::default(),
            destination_rules: Arc::default(),
            authorization_policies: Arc::default(),
            backend_traffic_policies: Arc::default(),
            client_traffic_policies: Arc::default(),
            namespaces: Arc::default(),
            services: Arc::default(),
            endpoint_slices: Arc::default(),
            pods: Arc::new(Cache::with_trim(trim_pod)),
            referenced: settings
                .secret_namespaces
                .iter()
                .map(|ns| (ns.clone(), Arc::default(), Arc::default()))
                .collect(),
            credential_namespace: settings.pod_namespace.clone(),
        }
    }

    /// The first kind whose watch has not listed yet, if any.
    pub fn first_unsynced(&self) -> Option<&'static str> {
        let kinds = [
            ("GatewayClass", self.gateway_classes.synced()),
            ("Gateway", self.gateways.synced()),
            ("HTTPRoute", self.http_routes.synced()),
            ("GRPCRoute", self.grpc_routes.synced()),
            ("TCPRoute", self.tcp_routes.synced()),
            ("TLSRoute", self.tls_routes.synced()),
            ("ReferenceGrant", self.reference_grants.synced()),
            ("BackendTLSPolicy", self.backend_tls_policies.synced()),
            ("Gateway.networking.istio.io", self.istio_gateways.synced()),
            ("VirtualService", self.virtual_services.synced()),
            (
                "VirtualService.gateway.solo.io",
                self.gloo_virtual_services.synced(),
            ),
            ("Gateway.gateway.solo.io", self.gloo_gateways.synced()),
            ("Upstream", self.gloo_upstreams.synced()),
            ("DestinationRule", self.destination_rules.synced()),
            ("AuthorizationPolicy", self.authorization_policies.synced()),
            (
                "BackendTrafficPolicy",
                self.backend_traffic_policies.synced(),
            ),
            ("ClientTrafficPolicy", self.client_traffic_policies.synced()),
            ("Namespace", self.namespaces.synced()),
            ("Service", self.services.synced()),
            ("EndpointSlice", self.endpoint_slices.synced()),
            ("Pod", self.pods.synced()),
        ];
        let refs = self
            .referenced
            .iter()
            .flat_map(|(_, s, c)| [("Secret", s.synced()), ("ConfigMap", c.synced())]);
        kinds
            .into_iter()
            .chain(refs)
            .find(|(_, synced)| !synced)
            .map(|(k, _)| k)
    }

    /// The objects served now, and the routes naming our Gateway that cannot be decoded.
    pub fn assemble(&self, gw: &GatewayRef) -> Assembled {
        let mut out = Assembled::default();
        let snap = &mut out.snapshot;
        let gateway = self.served_gateway(gw, &mut out.notes);
        snap.http_routes = routes(&self.http_routes, gw, &mut out.undecodable);
        snap.grpc_routes = routes(&self.grpc_routes, gw, &mut out.undecodable);
        snap.tcp_routes = routes(&self.tcp_routes, gw, &mut out.undecodable);
        snap.tls_routes = routes(&self.tls_routes, gw, &mut out.undecodable);
        snap.reference_grants = decoded("ReferenceGrant", &self.reference_grants, &mut out.notes);
        snap.backend_tls_policies = decoded(
            "BackendTLSPolicy",
            &self.backend_tls_policies,
            &mut out.notes,
        );
        snap.destination_rules =
            decoded("DestinationRule", &self.destination_rules, &mut out.notes);
        let notes = &mut out.notes;
        snap.istio_gateways = decoded("Gateway.networking.istio.io", &self.istio_gateways, notes);
        snap.virtual_services = decoded("VirtualService", &self.virtual_services, notes);
        snap.gloo_virtual_services = decoded(
            "VirtualService.gateway.solo.io",
            &self.gloo_virtual_services,
            notes,
        );
        snap.gloo_gateways = decoded("Gateway.gateway.solo.io", &self.gloo_gateways, notes);
        snap.gloo_upstreams = decoded("Upstream", &self.gloo_upstreams, notes);
        snap.authorization_policies = decoded(
            "AuthorizationPolicy",
            &self.authorization_policies,
            &mut out.notes,
        );
        snap.backend_traffic_policies = decoded(
            "BackendTrafficPolicy",
            &self.backend_traffic_policies,
            &mut out.notes,
        );
        snap.client_traffic_policies = decoded(
            "ClientTrafficPolicy",
            &self.client_traffic_policies,
            &mut out.notes,
        );
        snap.services = decoded("Service", &self.services, &mut out.notes);
        snap.endpoint_slices = decoded("EndpointSlice", &self.endpoint_slices, &mut out.notes);
        snap.pods = decoded("Pod", &self.pods, &mut out.notes);
        snap.pods_complete = true;
        snap.namespaces = decoded("Namespace", &self.namespaces, &mut out.notes);
        if let Some(g) = gateway {
            let mut wanted = referenced_names(&g, &snap.backend_tls_policies);
            wanted.extend(credential_names(
                &snap.istio_gateways,
                self.credential_namespace.as_deref(),
            ));
            wanted.extend(destination_rule_credentials(
                &snap.destination_rules,
                self.credential_namespace.as_deref(),
            ));
            for (_, secrets, config_maps) in &self.referenced {
                let keep = |meta: &ObjectMeta| wanted.contains(&meta.key());
                let s = decoded("Secret", secrets, &mut out.notes);
                snap.secrets
                    .extend(s.into_iter().filter(|s| keep(&s.metadata)));
                let c = decoded("ConfigMap", config_maps, &mut out.notes);
                snap.config_maps
                    .extend(c.into_iter().filter(|c| keep(&c.metadata)));
            }
            snap.gateways.push(g);
        }
        out
    }

    /// Our Gateway, when it exists, decodes, and its class is ours.
    fn served_gateway(&self, gw: &GatewayRef, notes: &mut Vec<String>) -> Option<Gateway> {
        let gateway = match self.gateways.get(&gw.to_string()).map(|e| e.object) {
            None => {
                notes.push(format!("Gateway {gw} not found"));
                return None;
            }
            Some(Err(e)) => {
                notes.push(format!("Gateway {gw} cannot be decoded: {e}"));
                return None;
            }
            Some(Ok(g)) => g,
        };
        let class = &gateway.spec.gateway_class_name;
        match self.gateway_classes.get(class).map(|e| e.object) {
            Some(Ok(c)) if c.spec.controller_name == CONTROLLER_NAME => {
                Some(Gateway::clone(&gateway))
            }
            Some(Ok(c)) => {
                notes.push(format!(
                    "Gateway {gw}: GatewayClass {class} belongs to controller {:?}, not {CONTROLLER_NAME:?}; not served",
                    c.spec.controller_name
                ));
                None
            }
            _ => {
                notes.push(format!(
                    "Gateway {gw}: GatewayClass {class:?} not found; not served"
                ));
                None
            }
        }
    }
}

/// Whether a parentRef of a route in namespace `route_ns` names our Gateway.
pub fn names_gateway(p: &ParentReference, route_ns: &str, gw: &GatewayRef) -> bool {
    p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
        && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
        && p.namespace.as_deref().unwrap_or(route_ns) == gw.namespace
        && p.name == gw.name
}

/// A route kind: its parentRefs can be narrowed to the ones naming our Gateway.
pub trait Route: Clone {
    /// `HTTPRoute`, `GRPCRoute`.
    const KIND: &'static str;
    /// Metadata.
    fn meta(&self) -> &ObjectMeta;
    /// `spec.parentRefs`.
    fn parent_refs_mut(&mut self) -> &mut Vec<ParentReference>;
}

impl Route for HttpRoute {
    const KIND: &'static str = "HTTPRoute";
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn parent_refs_mut(&mut self) -> &mut Vec<ParentReference> {
        &mut self.spec.parent_refs
    }
}

impl Route for GrpcRoute {
    const KIND: &'static str = "GRPCRoute";
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn parent_refs_mut(&mut self) -> &mut Vec<ParentReference> {
        &mut self.spec.parent_refs
    }
}

impl Route for TcpRoute {
    const KIND: &'static str = "TCPRoute";
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn parent_refs_mut(&mut self) -> &mut Vec<ParentReference> {
        &mut self.spec.parent_refs
    }
}

impl Route for TlsRoute {
    const KIND: &'static str = "TLSRoute";
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn parent_refs_mut(&mut self) -> &mut Vec<ParentReference> {
        &mut self.spec.parent_refs
    }
}

/// The routes of a cache that name our Gateway (narrowed to those parentRefs); the ones
/// naming it that cannot be decoded go to `undecodable`.
fn routes<R: Route>(
    cache: &Cache<R>,
    gw: &GatewayRef,
    undecodable: &mut Vec<Undecodable>,
) -> Vec<R> {
    let mut out = Vec::new();
    for (key, e) in cache.entries() {
        match &e.object {
            Ok(route) => out.extend(ours_only(R::clone(route), gw)),
            Err(message) => {
                let (ns, _) = key.split_once('/').unwrap_or(("default", &key));
                let parent_refs = raw_refs_to(&e.parent_refs, ns, gw);
                if !parent_refs.is_empty() {
                    undecodable.push(Undecodable {
                        kind: R::KIND,
                        key,
                        message: format!("cannot be decoded: {message}"),
                        parent_refs,
                    });
                }
            }
        }
    }
    out
}

/// The route with only the parentRefs naming our Gateway; none when it names it nowhere.
fn ours_only<R: Route>(mut route: R, gw: &GatewayRef) -> Option<R> {
    let ns = route.meta().ns().to_string();
    let refs = route.parent_refs_mut();
    refs.retain(|p| names_gateway(p, &ns, gw));
    (!refs.is_empty()).then_some(route)
}

fn raw_refs_to(refs: &Value, route_ns: &str, gw: &GatewayRef) -> Vec<Value> {
    let refs = refs.as_array().map(Vec::as_slice).unwrap_or_default();
    refs.iter()
        .filter(|r| {
            serde_json::from_value::<ParentReference>((*r).clone())
                .is_ok_and(|p| names_gateway(&p, route_ns, gw))
        })
        .cloned()
        .collect()
}

/// The decoded objects of a cache; each undecodable one is noted and left out.
fn decoded<T: Clone>(kind: &str, cache: &Cache<T>, notes: &mut Vec<String>) -> Vec<T> {
    let mut out = Vec::with_capacity(cache.len());
    for (key, Entry { object, .. }) in cache.entries() {
        match object {
            Ok(o) => out.push(T::clone(&o)),
            Err(e) => notes.push(format!("{kind} {key} cannot be decoded (left out): {e}")),
        }
    }
    out
}

/// `namespace/name` of the Secrets Istio Gateways name in `credentialName` (and their
/// `-cacert` companions), read from `ns` (the pod's namespace) as Istio reads them, else
/// from each Gateway's own namespace.
fn credential_names(gateways: &[IstioGateway], ns: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for g in gateways {
        let ns = ns.unwrap_or(g.metadata.ns());
        let names = g
            .spec
            .servers
            .iter()
            .filter_map(|s| s.tls.as_ref()?.credential_name.clone());
        for name in names {
            out.push(format!("{ns}/{name}-cacert"));
            out.push(format!("{ns}/{name}"));
        }
    }
    out
}

/// `namespace/name` of the Secrets DestinationRules name in a `tls.credentialName` (any
/// level: rule, port, subset) and their `-cacert` companions, read from `ns` (the pod's
/// namespace), else from the rule's own, as translation reads them.
fn destination_rule_credentials(
    rules: &[crate::api::istio::DestinationRule],
    ns: Option<&str>,
) -> Vec<String> {
    use crate::api::istio::TrafficPolicy;
    fn names(tp: &TrafficPolicy) -> impl Iterator<Item = &String> {
        let port_level = tp.port_level_settings.iter().filter_map(|p| p.tls.as_ref());
        tp.tls
            .iter()
            .chain(port_level)
            .filter_map(|t| t.credential_name.as_ref())
    }
    let mut out = Vec::new();
    for dr in rules {
        let ns = ns.unwrap_or(dr.metadata.ns());
        let subsets = dr
            .spec
            .subsets
            .iter()
            .filter_map(|s| s.traffic_policy.as_ref());
        for tp in dr.spec.traffic_policy.iter().chain(subsets) {
            for name in names(tp) {
                out.push(format!("{ns}/{name}-cacert"));
                out.push(format!("{ns}/{name}"));
            }
        }
    }
    out
}

/// `namespace/name` of every Secret and ConfigMap the Gateway refers to (listener
/// certificates, client-certificate CAs) and of the BackendTLSPolicies' CA ConfigMaps.
fn referenced_names(g: &Gateway, policies: &[BackendTlsPolicy]) -> BTreeSet<String> {
    let ns = g.metadata.ns();
    let mut refs = Vec::new();
    for l in &g.spec.listeners {
        refs.extend(l.tls.iter().flat_map(|t| t.certificate_refs.iter()));
    }
    if let Some(frontend) = g.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) {
        let configs = frontend
            .default
            .iter()
            .chain(frontend.per_port.iter().map(|p| &p.tls));
        for c in configs {
            refs.extend(
                c.validation
                    .iter()
                    .flat_map(|v| v.ca_certificate_refs.iter()),
            );
        }
    }
    let policy_cas = policies.iter().flat_map(|p| {
        let ns = p.metadata.ns();
        let cas = p.spec.validation.ca_certificate_refs.iter();
        cas.map(move |r| format!("{ns}/{}", r.name))
    });
    refs.iter()
        .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(ns), r.name))
        .chain(policy_cas)
        .collect()
}

/// Keeps what translate reads of a Pod (name, namespace, labels, serviceAccountName):
/// with tens of thousands of Pods, the rest is most of the memory.
fn trim_pod(p: Pod) -> Pod {
    let meta = p.metadata;
    Pod {
        metadata: ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            labels: meta.labels,
            ..ObjectMeta::default()
        },
        spec: p.spec.map(|s| k8s_openapi::api::core::v1::PodSpec {
            service_account_name: s.service_account_name,
            ..Default::default()
        }),
        status: None,
    }
}
