//! Objects -> [`ir::Config`] plus per-object conditions ([`status::Report`]).
//!
//! One module per concern: [`listeners`] (Gateways, the port table, TLS material),
//! [`attachment`] (parentRefs, allowedRoutes, hostnames), [`rules`] (matches and
//! precedence), [`filters`], [`l4`] (TCPRoute, TLSRoute), [`backends`] (Services, EndpointSlices, mesh policy) and
//! [`status`]. Every error names the object and the field at fault, e.g. `HTTPRoute
//! default/httpbin rule 0 match 0: path type "PathPrefixx" is not one of Exact,
//! PathPrefix, RegularExpression`; all errors are collected, not just the first.
//!
//! Acceptance is per object, as the Gateway API spec has it: an invalid listener or route
//! is left out with `Accepted=False` and the reason, and everything valid is served; a
//! backendRef that cannot be resolved (missing Service, unsupported kind, no
//! ReferenceGrant) leaves the route accepted with `ResolvedRefs=False`, and its share of
//! requests gets a 500. Only a configuration that cannot be used at all (no Gateway) is
//! rejected whole; that decision is made in one place, [`Output::accepted`].

/// Where in a route a finding is, written out only when one is recorded: a reload of 10k
/// routes would otherwise make a string per rule, match and backendRef that is almost
/// never read. Displays as `HTTPRoute ns/name rule 0`, `... rule 0 match 1`,
/// `... rule 0 backendRefs[2]`.
#[derive(Clone, Copy)]
pub enum Ctx<'a> {
    /// A rule of a route.
    Rule {
        /// The route kind (`HTTPRoute`, `GRPCRoute`).
        kind: &'a str,
        /// The route's `namespace/name`.
        key: &'a str,
        /// The rule's index.
        index: usize,
    },
    /// A match: the rule's context and the match's index.
    Match(&'a Ctx<'a>, usize),
    /// A backendRef: the context it is under (a rule, or one already written out, as
    /// the L4 and Istio translators have) and its index.
    BackendRef(&'a dyn std::fmt::Display, usize),
    /// An item of a list field under another context: `{parent} {field}[{index}]`.
    Item(&'a dyn std::fmt::Display, &'static str, usize),
}

impl std::fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ctx::Rule { kind, key, index } => write!(f, "{kind} {key} rule {index}"),
            Ctx::Match(rule, i) => write!(f, "{rule} match {i}"),
            Ctx::BackendRef(parent, i) => write!(f, "{parent} backendRefs[{i}]"),
            Ctx::Item(parent, field, i) => write!(f, "{parent} {field}[{i}]"),
        }
    }
}

pub mod attachment;
pub mod backend_tls;
pub mod backends;
pub mod endpoints;
pub mod filters;
pub mod gloo;
pub mod grants;
pub mod grpc;
pub mod host_ranks;
pub mod istio;
pub mod l4;
pub mod listeners;
pub mod policies;
pub mod rules;
pub mod status;

use std::collections::HashMap;

use crate::api::{self, ObjectKey, SERVICE_NAME_LABEL, Snapshot, Unsupported};
use crate::ir::{self, MinVersion};

pub use backends::{SERVICE_ACCOUNTS_ANNOTATION, UPSTREAM_TLS_ANNOTATION, UpstreamTls};

/// Settings that come from the command line rather than the objects.
#[derive(Debug, Clone)]
pub struct TranslateOptions {
    /// Minimum TLS version for listeners without the `meshgate.io/min-tls-version` option.
    pub default_min_tls_version: MinVersion,
    /// Cluster domain for Service DNS names.
    pub cluster_domain: String,
    /// Upstream TLS mode for Services without the `meshgate.io/upstream-tls` annotation.
    pub upstream_tls: UpstreamTls,
    /// Trust domain of upstream SPIFFE identities.
    pub trust_domain: String,
    /// The gateway pod's labels, for AuthorizationPolicy and Istio Gateway selectors
    /// (`--pod-labels`).
    pub pod_labels: std::collections::BTreeMap<String, String>,
    /// The gateway pod's namespace, where Istio Gateways' `credentialName` Secrets live
    /// (`--pod-namespace`); unknown: the Istio Gateway's own namespace.
    pub pod_namespace: Option<String>,
    /// Proxies in front of the gateway trusted to append X-Forwarded-For (Istio's
    /// `numTrustedProxies`).
    pub num_trusted_proxies: u32,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            default_min_tls_version: MinVersion::Tls12,
            cluster_domain: "cluster.local".into(),
            upstream_tls: UpstreamTls::Disable,
            trust_domain: mesh::consts::DEFAULT_TRUST_DOMAIN.into(),
            pod_labels: Default::default(),
            pod_namespace: None,
            num_trusted_proxies: 0,
        }
    }
}

/// Why a configuration was rejected: one line per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// What translation produced: the IR, the conditions, and the errors found.
#[derive(Debug)]
pub struct Output {
    /// The compiled configuration (valid parts only).
    pub config: ir::Config,
    /// Conditions per object.
    pub status: status::Report,
    /// Every error, naming object and field (the objects at fault are left out).
    pub errors: Vec<String>,
    /// Errors that make the whole configuration unusable.
    pub fatal: Vec<String>,
}

impl Output {
    /// The acceptance policy: objects with errors are already left out; only a
    /// configuration that is unusable as a whole is refused (the last good one keeps
    /// serving).
    pub fn accepted(self) -> Result<(ir::Config, status::Report), ConfigErrors> {
        if self.fatal.is_empty() {
            Ok((self.config, self.status))
        } else {
            Err(ConfigErrors([self.fatal, self.errors].concat()))
        }
    }
}

/// Collects errors, warnings and conditions while translating.
#[derive(Debug, Default)]
pub struct Findings {
    /// Errors (each names object and field).
    pub errors: Vec<String>,
    /// Errors that make the whole configuration unusable.
    pub fatal: Vec<String>,
    /// References of the rule being compiled that did not resolve (reason, message).
    pub unresolved: Vec<(status::Reason, String)>,
    /// An ExtensionRef among the filters just compiled (why): the filter must not be
    /// skipped, so the rule (or backend) it is on answers 500.
    pub refused_filter: Option<String>,
    /// Non-fatal findings.
    pub warnings: Vec<String>,
    /// Conditions.
    pub report: status::Report,
}

impl Findings {
    /// Reports every unsupported field of `fields` found at `ctx`, as errors.
    pub fn unsupported(&mut self, ctx: &dyn std::fmt::Display, fields: &Unsupported) {
        for name in fields.keys() {
            self.errors.push(format!(
                "{ctx}: field {name:?} is not supported by meshgate"
            ));
        }
    }
}

/// Objects by `namespace/name`, for reference resolution.
pub struct Index<'a> {
    /// Secrets.
    pub secrets: HashMap<String, &'a api::Secret>,
    /// ConfigMaps.
    pub config_maps: HashMap<String, &'a api::ConfigMap>,
    /// Services.
    pub services: HashMap<String, &'a api::Service>,
    /// EndpointSlices by their Service's `namespace/name`.
    pub slices: HashMap<String, Vec<&'a api::EndpointSlice>>,
    /// Pods.
    pub pods: HashMap<String, &'a api::Pod>,
    /// The snapshot holds every Pod (see [`Snapshot::pods_complete`]).
    pub pods_complete: bool,
    /// Valid local rate limits (BackendTrafficPolicy), by target.
    pub rate_limits: policies::rate_limit::RateLimits,
    /// Valid DestinationRules, for per-Service traffic policy.
    pub destination_rules: policies::destination_rule::DestinationRules,
    /// The namespace of the served Gateway (the first one), where Istio looks for
    /// DestinationRules first.
    pub gateway_namespace: String,
    /// backendRefs already resolved (see `backends::resolve_memoised`); foldhash, not
    /// SipHash: looked up once per backendRef of every rule.
    pub resolved: std::cell::RefCell<hashbrown::HashMap<String, backends::Memoised>>,
    /// Where `resolve_memoised` writes a lookup key: a hit allocates nothing.
    pub resolved_key: std::cell::RefCell<String>,
}

impl<'a> Index<'a> {
    /// Indexes a snapshot.
    pub fn new(snap: &'a Snapshot) -> Index<'a> {
        let mut slices: HashMap<String, Vec<_>> = HashMap::new();
        for s in &snap.endpoint_slices {
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                slices
                    .entry(format!("{}/{svc}", s.metadata.ns()))
                    .or_default()
                    .push(s);
            }
        }
        Index {
            secrets: by_key(&snap.secrets, |s| &s.metadata),
            config_maps: by_key(&snap.config_maps, |c| &c.metadata),
            services: by_key(&snap.services, |s| &s.metadata),
            slices,
            pods: by_key(&snap.pods, |p| &p.metadata),
            pods_complete: snap.pods_complete,
            destination_rules: Default::default(),
            rate_limits: Default::default(),
            gateway_namespace: snap
                .gateways
                .first()
                .map_or("default", |g| g.metadata.ns())
                .to_string(),
            resolved: Default::default(),
            resolved_key: Default::default(),
        }
    }
}

fn by_key<T>(
    items: &[T],
    meta: impl Fn(&T) -> &api::gateway_api::ObjectMeta,
) -> HashMap<String, &T> {
    items.iter().map(|i| (meta(i).key(), i)).collect()
}

/// Compiles a snapshot: the IR of everything valid, conditions, and every error.
pub fn translate(snap: &Snapshot, opts: &TranslateOptions) -> Output {
    let mut index = Index::new(snap);
    let mut f = Findings {
        warnings: snap
            .ignored
            .iter()
            .map(|k| format!("ignored object {k}"))
            .collect(),
        ..Findings::default()
    };
    let rules =
        policies::destination_rule::DestinationRules::compile(snap, opts, &index.secrets, &mut f);
    index.destination_rules = rules;
    index.rate_limits =
        policies::rate_limit::RateLimits::compile(snap, opts.num_trusted_proxies, &mut f);
    backends::validate_services(snap, opts, &mut f);
    backend_tls::validate(snap, &index, &mut f);
    let mut gateways = listeners::compile(snap, &index, opts, &mut f);
    let redirects = istio::gateway::compile(snap, &index, opts, &mut gateways, &mut f);
    attachment::attach_routes(snap, &index, opts, &mut gateways, &mut f);
    l4::attach_l4_routes(snap, &index, opts, &mut gateways, &mut f);
    istio::virtual_service::attach(snap, &index, opts, &redirects, &mut gateways, &mut f);
    let gloo_listeners = gloo::compile_gateways(snap, &mut gateways, &mut f);
    gloo::attach(snap, &index, opts, &gloo_listeners, &mut gateways, &mut f);
    policies::client_traffic::apply(snap, &mut gateways, &mut f);
    let served = snap.gateways.first().map(|g| {
        (
            g.metadata.ns(),
            g.metadata.name.as_deref().unwrap_or_default(),
        )
    });
    let authorization = policies::authorization::compile(snap, opts, served, &mut f);
    let mut config = gateways.finish(f.warnings.clone());
    config.authorization = authorization.map(std::sync::Arc::new);
    Output {
        config,
        status: f.report,
        errors: f.errors,
        fatal: f.fatal,
    }
}
