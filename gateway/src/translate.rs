//! Gateway API resources -> validated [`routing::Table`].
//!
//! Every error names the object and the field at fault, e.g.
//! `HTTPRoute default/httpbin rule 0 match 0: path type "PathPrefixx" is not one of Exact,
//! PathPrefix, RegularExpression`. All errors are collected, not just the first.
//!
//! Following the Gateway API spec, a backendRef that cannot be resolved (missing Service,
//! unsupported kind) does not reject the configuration: its share of requests gets a 500
//! saying why. Malformed objects (bad enums, regexes, certificates, dangling parentRefs)
//! reject the whole change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

use crate::mesh_tls::MeshTarget;
use crate::resources::{self, GatewayApiMeta, ObjectKey, Resources, SERVICE_NAME_LABEL};
use crate::routing::{
    Backend, BackendTarget, Endpoint, Filters, HeaderEdits, HeaderMatch, HostPattern, PathMatch,
    PathModifier, PortTable, Protocol, QueryMatch, Redirect, Rewrite, RouteEntry, RouteMatch, Rule,
    Table, ValueMatch, VirtualHost,
};
use crate::tls::{self, ListenerTls, MinVersion, TlsSummary};
use crate::upstream::{Transport, UpstreamTls};

/// Service annotation: upstream TLS mode of this Service (`auto`, `istio-mutual`, `disable`).
pub const UPSTREAM_TLS_ANNOTATION: &str = "meshgate.io/upstream-tls";
/// Service annotation: service accounts (names in the Service's namespace, or SPIFFE ids)
/// the Service's workloads run as; mesh mTLS accepts only these identities.
pub const SERVICE_ACCOUNTS_ANNOTATION: &str = "meshgate.io/service-accounts";

/// Settings that come from the command line rather than the resources.
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
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            default_min_tls_version: MinVersion::Tls12,
            cluster_domain: "cluster.local".into(),
            upstream_tls: UpstreamTls::Disable,
            trust_domain: mesh::consts::DEFAULT_TRUST_DOMAIN.into(),
        }
    }
}

/// The Service's upstream TLS mode and the identities its workloads may present.
/// Without the service-accounts annotation the expected identity is the Service's own
/// name as service account (`spiffe://<td>/ns/<ns>/sa/<service>`), Kubernetes' usual
/// convention; the annotation overrides it.
fn mesh_policy(
    svc: &resources::Service,
    opts: &TranslateOptions,
) -> Result<(UpstreamTls, Vec<String>), String> {
    let ns = svc.metadata.ns();
    let ctx = format!("Service {}", svc.metadata.key());
    let mode = match svc.metadata.annotations.get(UPSTREAM_TLS_ANNOTATION) {
        None => opts.upstream_tls,
        Some(v) => UpstreamTls::parse(v).ok_or_else(|| {
            format!("{ctx}: annotation {UPSTREAM_TLS_ANNOTATION}: {v:?} is not one of auto, istio-mutual, disable")
        })?,
    };
    let accounts = match svc.metadata.annotations.get(SERVICE_ACCOUNTS_ANNOTATION) {
        None => vec![svc.metadata.name.clone()],
        Some(v) => v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    };
    let mut ids = Vec::new();
    for a in accounts {
        let id = if a.starts_with("spiffe://") {
            a.parse::<mesh::Identity>()
        } else {
            mesh::Identity::new(&opts.trust_domain, ns, &a)
        }
        .map_err(|e| format!("{ctx}: annotation {SERVICE_ACCOUNTS_ANNOTATION}: {e}"))?;
        ids.push(id.to_string());
    }
    if ids.is_empty() {
        return Err(format!(
            "{ctx}: annotation {SERVICE_ACCOUNTS_ANNOTATION} names no service account"
        ));
    }
    Ok((mode, ids))
}

/// Why a configuration was rejected: one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads, parses and translates a config path: what both reload and `validate` run.
pub fn load(path: &std::path::Path, opts: &TranslateOptions) -> Result<Table, ConfigErrors> {
    let sources = resources::read_sources(path).map_err(|e| ConfigErrors(vec![e]))?;
    compile(&sources, opts)
}

/// Parses and translates already-read sources.
pub fn compile(
    sources: &[resources::SourceFile],
    opts: &TranslateOptions,
) -> Result<Table, ConfigErrors> {
    let res = resources::parse(sources).map_err(ConfigErrors)?;
    translate(&res, opts)
}

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// One Gateway listener, as routes see it.
struct ListenerInfo {
    gateway: String,
    name: String,
    port: u16,
    protocol: Protocol,
    hostname: HostPattern,
}

/// A route entry waiting to be sorted into its virtual host.
struct Pending {
    key: PrecedenceKey,
    entry: RouteEntry,
}

/// Gateway API precedence: exact path, then longest prefix (regex between the two),
/// method, most headers, most query params, oldest route, name, rule order.
type PrecedenceKey = (
    u8,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<bool>,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
    // Creation time; a route without one sorts first, as the empty string did before.
    Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    String,
    usize,
    usize,
);

struct Index<'a> {
    secrets: HashMap<String, &'a resources::Secret>,
    config_maps: HashMap<String, &'a resources::ConfigMap>,
    services: HashMap<String, &'a resources::Service>,
    slices: HashMap<String, Vec<&'a resources::EndpointSlice>>,
    pods: HashMap<String, &'a resources::Pod>,
}

/// Compiles resources into a table, or every reason it cannot.
pub fn translate(res: &Resources, opts: &TranslateOptions) -> Result<Table, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings: Vec<String> = res
        .ignored
        .iter()
        .map(|k| format!("ignored object {k}"))
        .collect();
    let index = Index {
        secrets: res.secrets.iter().map(|s| (s.metadata.key(), s)).collect(),
        config_maps: res
            .config_maps
            .iter()
            .map(|c| (c.metadata.key(), c))
            .collect(),
        services: res.services.iter().map(|s| (s.metadata.key(), s)).collect(),
        slices: {
            let mut m: HashMap<String, Vec<_>> = HashMap::new();
            for s in &res.endpoint_slices {
                if let Some(svc) = s.metadata.labels.get(SERVICE_NAME_LABEL) {
                    m.entry(format!("{}/{svc}", s.metadata.ns()))
                        .or_default()
                        .push(s);
                }
            }
            m
        },
        pods: res.pods.iter().map(|p| (p.metadata.key(), p)).collect(),
    };

    for svc in &res.services {
        if let Err(e) = mesh_policy(svc, opts) {
            errors.push(e);
        }
    }

    // Listeners.
    let mut listeners: Vec<ListenerInfo> = Vec::new();
    let mut ports: BTreeMap<u16, PortTable> = BTreeMap::new();
    let mut seen_gateways = BTreeSet::new();
    if res.gateways.is_empty() {
        errors.push("no Gateway found in the configuration".to_string());
    }
    for gw in &res.gateways {
        let gw_key = gw.metadata.key();
        if !seen_gateways.insert(gw_key.clone()) {
            errors.push(format!("Gateway {gw_key}: defined more than once"));
            continue;
        }
        let mut names = BTreeSet::new();
        for (li, l) in gw.spec.listeners.iter().enumerate() {
            let ctx = format!("Gateway {gw_key} listener {:?}", l.name);
            if !names.insert(l.name.clone()) {
                errors.push(format!("{ctx}: listener name used more than once"));
                continue;
            }
            let protocol = match l.protocol.as_str() {
                "HTTP" => Protocol::Http,
                "HTTPS" => Protocol::Https,
                other => {
                    errors.push(format!(
                        "{ctx}: protocol {other:?} is not one of HTTP, HTTPS"
                    ));
                    continue;
                }
            };
            if l.port == 0 {
                errors.push(format!("{ctx}: port must be 1-65535"));
                continue;
            }
            let hostname = match &l.hostname {
                Some(h) => match validate_hostname(h) {
                    Ok(p) => p,
                    Err(e) => {
                        errors.push(format!("{ctx}: hostname {h:?}: {e}"));
                        continue;
                    }
                },
                None => HostPattern::Any,
            };
            let port = ports.entry(l.port).or_insert_with(|| PortTable {
                port: l.port,
                protocol,
                tls: Vec::new(),
                virtual_hosts: Vec::new(),
            });
            if port.protocol != protocol {
                errors.push(format!(
                    "{ctx}: port {} is already used with protocol {}",
                    l.port,
                    port.protocol.scheme().to_ascii_uppercase()
                ));
                continue;
            }
            if listeners
                .iter()
                .any(|o| o.port == l.port && o.hostname == hostname)
            {
                errors.push(format!(
                    "{ctx}: another listener on port {} has the same hostname {hostname}",
                    l.port
                ));
                continue;
            }
            if protocol == Protocol::Https {
                match listener_tls(&index, gw, li, &ctx, &hostname, opts) {
                    Ok(t) => port.tls.push(t),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                }
            } else if l.tls.is_some() {
                errors.push(format!("{ctx}: tls is only allowed on HTTPS listeners"));
            }
            listeners.push(ListenerInfo {
                gateway: gw_key.clone(),
                name: l.name.clone(),
                port: l.port,
                protocol,
                hostname,
            });
        }
    }

    // Routes, oldest first so precedence ties go to the oldest.
    let mut pending: BTreeMap<(u16, String), (HostPattern, Vec<Pending>)> = BTreeMap::new();
    let mut dedup = BTreeSet::new();
    for route in &res.http_routes {
        let key = route.metadata.key();
        let ctx = format!("HTTPRoute {key}");
        let mut route_errors = Vec::new();
        let mut hostnames = Vec::new();
        for (i, h) in route.spec.hostnames.iter().enumerate() {
            match validate_hostname(h) {
                Ok(p) => hostnames.push(p),
                Err(e) => route_errors.push(format!("{ctx} hostnames[{i}] {h:?}: {e}")),
            }
        }
        if hostnames.is_empty() {
            hostnames.push(HostPattern::Any);
        }
        let default_rules = [resources::HttpRouteRule::default()];
        let src_rules = if route.spec.rules.is_empty() {
            &default_rules[..]
        } else {
            &route.spec.rules[..]
        };
        let mut rules = Vec::new();
        for (ri, rule) in src_rules.iter().enumerate() {
            match compile_rule(&index, &route.metadata, ri, rule, opts) {
                Ok(r) => rules.push(r),
                Err(mut e) => route_errors.append(&mut e),
            }
        }
        // Attach to listeners.
        let mut attached: Vec<&ListenerInfo> = Vec::new();
        if route.spec.parent_refs.is_empty() {
            route_errors.push(format!("{ctx}: parentRefs is empty"));
        }
        for (pi, p) in route.spec.parent_refs.iter().enumerate() {
            let pctx = format!("{ctx} parentRefs[{pi}]");
            let group = p.group.as_deref().unwrap_or(GATEWAY_GROUP);
            let kind = p.kind.as_deref().unwrap_or("Gateway");
            if group != GATEWAY_GROUP || kind != "Gateway" {
                route_errors.push(format!(
                    "{pctx}: parent {group}/{kind} is not supported (only Gateway)"
                ));
                continue;
            }
            let gw = format!(
                "{}/{}",
                p.namespace.as_deref().unwrap_or(route.metadata.ns()),
                p.name
            );
            if !seen_gateways.contains(&gw) {
                route_errors.push(format!("{pctx}: Gateway {gw} not found"));
                continue;
            }
            let candidates: Vec<&ListenerInfo> = listeners
                .iter()
                .filter(|l| l.gateway == gw)
                .filter(|l| p.section_name.as_ref().is_none_or(|s| *s == l.name))
                .filter(|l| p.port.is_none_or(|port| port == l.port))
                .collect();
            if candidates.is_empty() {
                route_errors.push(format!(
                    "{pctx}: Gateway {gw} has no listener{}{}",
                    p.section_name
                        .as_ref()
                        .map(|s| format!(" named {s:?}"))
                        .unwrap_or_default(),
                    p.port.map(|p| format!(" on port {p}")).unwrap_or_default()
                ));
            }
            attached.extend(candidates);
        }
        if !route_errors.is_empty() {
            errors.extend(route_errors);
            continue;
        }
        let mut any_host = false;
        for l in attached {
            for rh in &hostnames {
                let Some(host) = intersect(&l.hostname, rh) else {
                    continue;
                };
                any_host = true;
                let vh = pending
                    .entry((l.port, host.to_string()))
                    .or_insert_with(|| (host.clone(), Vec::new()));
                for (rule, matches) in &rules {
                    for (mi, m) in matches.iter().enumerate() {
                        if !dedup.insert((l.port, host.to_string(), key.clone(), rule.index, mi)) {
                            continue;
                        }
                        vh.1.push(Pending {
                            key: precedence(m, &route.metadata, rule.index, mi),
                            entry: RouteEntry {
                                matcher: m.clone(),
                                rule: rule.clone(),
                            },
                        });
                    }
                }
            }
            let _ = l.protocol;
        }
        if !any_host {
            warnings.push(format!(
                "{ctx}: no hostname intersects the hostnames of its parent listeners; not attached"
            ));
        }
    }

    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    for ((port, _), (host, mut entries)) in pending {
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        if let Some(p) = ports.get_mut(&port) {
            p.virtual_hosts.push(VirtualHost {
                hostname: host,
                routes: entries.into_iter().map(|p| p.entry).collect(),
            });
        }
    }
    for p in ports.values_mut() {
        p.virtual_hosts.sort_by_key(|v| v.hostname.specificity());
        p.tls.sort_by_key(|v| v.hostname.specificity());
    }
    let mesh_upstreams = ports
        .values()
        .flat_map(|p| p.virtual_hosts.iter())
        .flat_map(|vh| vh.routes.iter())
        .flat_map(|r| r.rule.backends.iter())
        .any(|b| b.target.uses_mesh());
    Ok(Table {
        ports,
        warnings,
        mesh_upstreams,
    })
}

fn precedence(m: &RouteMatch, meta: &GatewayApiMeta, rule: usize, mi: usize) -> PrecedenceKey {
    use std::cmp::Reverse;
    let (rank, len) = match &m.path {
        PathMatch::Exact(p) => (0, p.len()),
        PathMatch::RegularExpression(r) => (1, r.as_str().len()),
        PathMatch::PathPrefix(p) => (2, p.len()),
    };
    (
        rank,
        Reverse(len),
        Reverse(m.method.is_some()),
        Reverse(m.headers.len()),
        Reverse(m.query_params.len()),
        meta.creation_timestamp.clone(),
        meta.key(),
        rule,
        mi,
    )
}

/// Intersection of a listener hostname and a route hostname (Gateway API rules).
fn intersect(listener: &HostPattern, route: &HostPattern) -> Option<HostPattern> {
    use HostPattern::*;
    match (listener, route) {
        (Any, r) => Some(r.clone()),
        (l, Any) => Some(l.clone()),
        (Exact(l), Exact(r)) => (l == r).then(|| route.clone()),
        (Wildcard(_), Exact(r)) => listener.matches(r).then(|| route.clone()),
        (Exact(l), Wildcard(_)) => route.matches(l).then(|| listener.clone()),
        (Wildcard(ls), Wildcard(rs)) => {
            if rs.ends_with(ls.as_str()) {
                Some(route.clone())
            } else if ls.ends_with(rs.as_str()) {
                Some(listener.clone())
            } else {
                None
            }
        }
    }
}

fn validate_hostname(h: &str) -> Result<HostPattern, String> {
    let body = h.strip_prefix("*.").unwrap_or(h);
    if h.is_empty() || h.contains(':') || h.parse::<IpAddr>().is_ok() {
        return Err("must be a DNS name (no IP address, no port)".into());
    }
    let ok = body.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !ok {
        return Err("is not a valid hostname (RFC 1123, optional leading \"*.\")".into());
    }
    Ok(HostPattern::parse(h))
}

fn listener_tls(
    index: &Index<'_>,
    gw: &resources::Gateway,
    li: usize,
    ctx: &str,
    hostname: &HostPattern,
    opts: &TranslateOptions,
) -> Result<ListenerTls, String> {
    let l = &gw.spec.listeners[li];
    let Some(t) = &l.tls else {
        return Err(format!("{ctx}: HTTPS listener needs tls.certificateRefs"));
    };
    let mode = t.mode.as_deref().unwrap_or("Terminate");
    if mode != "Terminate" {
        return Err(format!(
            "{ctx}: tls.mode {mode:?} is not supported (only Terminate)"
        ));
    }
    let Some(cref) = t.certificate_refs.first() else {
        return Err(format!("{ctx}: HTTPS listener needs tls.certificateRefs"));
    };
    let kind = cref.kind.as_deref().unwrap_or("Secret");
    if kind != "Secret" || cref.group.as_deref().is_some_and(|g| !g.is_empty()) {
        return Err(format!(
            "{ctx}: tls.certificateRefs[0]: kind {kind:?} is not supported (only core Secret)"
        ));
    }
    let skey = format!(
        "{}/{}",
        cref.namespace.as_deref().unwrap_or(gw.metadata.ns()),
        cref.name
    );
    let secret = index
        .secrets
        .get(&skey)
        .ok_or_else(|| format!("{ctx}: tls.certificateRefs[0]: Secret {skey} not found"))?;
    let sctx = format!("{ctx}: tls.certificateRefs[0] Secret {skey}");
    let crt = secret_value(secret, "tls.crt").map_err(|e| format!("{sctx}: {e}"))?;
    let key = secret_value(secret, "tls.key").map_err(|e| format!("{sctx}: {e}"))?;
    let chain = tls::parse_chain(&crt).map_err(|e| format!("{sctx}: tls.crt: {e}"))?;
    let key = tls::parse_key(&key).map_err(|e| format!("{sctx}: tls.key: {e}"))?;

    let min_version = match t.options.get(tls::MIN_VERSION_OPTION) {
        Some(v) => v
            .parse()
            .map_err(|e| format!("{ctx}: tls.options[{:?}]: {e}", tls::MIN_VERSION_OPTION))?,
        None => opts.default_min_tls_version,
    };

    let mut client_ca = Vec::new();
    let mut roots = Vec::new();
    if let Some(fv) = &t.frontend_validation {
        for (i, r) in fv.ca_certificate_refs.iter().enumerate() {
            let rctx = format!("{ctx}: tls.frontendValidation.caCertificateRefs[{i}]");
            let ns = r.namespace.as_deref().unwrap_or(gw.metadata.ns());
            let rkey = format!("{ns}/{}", r.name);
            let kind = r.kind.as_deref().unwrap_or("ConfigMap");
            let pem = match kind {
                "ConfigMap" => {
                    let cm = index
                        .config_maps
                        .get(&rkey)
                        .ok_or_else(|| format!("{rctx}: ConfigMap {rkey} not found"))?;
                    cm.data
                        .get("ca.crt")
                        .ok_or_else(|| format!("{rctx}: ConfigMap {rkey} has no ca.crt"))?
                        .as_bytes()
                        .to_vec()
                }
                "Secret" => {
                    let s = index
                        .secrets
                        .get(&rkey)
                        .ok_or_else(|| format!("{rctx}: Secret {rkey} not found"))?;
                    secret_value(s, "ca.crt").map_err(|e| format!("{rctx}: Secret {rkey}: {e}"))?
                }
                other => {
                    return Err(format!(
                        "{rctx}: kind {other:?} is not one of ConfigMap, Secret"
                    ));
                }
            };
            let certs = tls::parse_chain(&pem)
                .map_err(|e| format!("{rctx}: {kind} {rkey}: ca.crt: {e}"))?;
            roots.extend(certs);
            client_ca.push(format!("{kind} {rkey}"));
        }
    }
    let config = tls::server_config(
        chain,
        key,
        (!roots.is_empty()).then_some(roots),
        min_version,
    )
    .map_err(|e| format!("{sctx}: {e}"))?;
    Ok(ListenerTls {
        hostname: hostname.clone(),
        config: Arc::new(config),
        summary: TlsSummary {
            listener: format!("{}/{}", gw.metadata.key(), l.name),
            hostname: hostname.to_string(),
            certificate: format!("Secret {skey}"),
            client_ca,
            min_version,
        },
    })
}

fn secret_value(s: &resources::Secret, key: &str) -> Result<Vec<u8>, String> {
    if let Some(v) = s.string_data.get(key) {
        return Ok(v.as_bytes().to_vec());
    }
    let v = s.data.get(key).ok_or_else(|| format!("has no {key}"))?;
    let clean: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| format!("{key}: invalid base64: {e}"))
}

fn compile_rule(
    index: &Index<'_>,
    meta: &GatewayApiMeta,
    ri: usize,
    rule: &resources::HttpRouteRule,
    opts: &TranslateOptions,
) -> Result<(Arc<Rule>, Vec<RouteMatch>), Vec<String>> {
    let ctx = format!("HTTPRoute {} rule {ri}", meta.key());
    let mut errors = Vec::new();
    let mut matches = Vec::new();
    let default_match = [resources::HttpRouteMatch::default()];
    let src_matches = if rule.matches.is_empty() {
        &default_match[..]
    } else {
        &rule.matches[..]
    };
    for (mi, m) in src_matches.iter().enumerate() {
        match compile_match(m, &format!("{ctx} match {mi}")) {
            Ok(m) => matches.push(m),
            Err(mut e) => errors.append(&mut e),
        }
    }
    let filters = compile_filters(&rule.filters, &ctx, &mut errors);
    let prefix_rewrite = matches!(
        filters.rewrite.as_ref().and_then(|r| r.path.as_ref()),
        Some(PathModifier::ReplacePrefixMatch(_))
    ) || matches!(
        filters.redirect.as_ref().and_then(|r| r.path.as_ref()),
        Some(PathModifier::ReplacePrefixMatch(_))
    );
    if prefix_rewrite
        && matches
            .iter()
            .any(|m| !matches!(m.path, PathMatch::PathPrefix(_)))
    {
        errors.push(format!(
            "{ctx}: ReplacePrefixMatch needs every match of the rule to be a PathPrefix match"
        ));
    }
    if filters.redirect.is_some() && filters.rewrite.is_some() {
        errors.push(format!(
            "{ctx}: filters RequestRedirect and URLRewrite cannot be used together"
        ));
    }
    if filters.redirect.is_some() && !rule.backend_refs.is_empty() {
        errors.push(format!(
            "{ctx}: a rule with a RequestRedirect filter cannot have backendRefs"
        ));
    }
    let mut backends = Vec::new();
    for (bi, b) in rule.backend_refs.iter().enumerate() {
        let bctx = format!("{ctx} backendRefs[{bi}]");
        let bfilters = compile_filters(&b.filters, &bctx, &mut errors);
        if bfilters.redirect.is_some() {
            errors.push(format!(
                "{bctx}: RequestRedirect is not allowed on a backendRef"
            ));
        }
        if b.port.is_none() && b.kind.as_deref().unwrap_or("Service") == "Service" {
            errors.push(format!("{bctx}: port is required for a Service"));
            continue;
        }
        let (name, http2, target) = resolve_backend(index, meta, b, opts);
        backends.push(Backend {
            name,
            weight: b.weight.unwrap_or(1),
            http2,
            target,
            filters: bfilters,
        });
    }
    let total_weight = backends.iter().map(|b| b.weight).sum();
    let (mut request_timeout, mut backend_request_timeout) = (None, None);
    if let Some(t) = &rule.timeouts {
        request_timeout =
            parse_timeout(t.request.as_deref(), &ctx, "timeouts.request", &mut errors);
        backend_request_timeout = parse_timeout(
            t.backend_request.as_deref(),
            &ctx,
            "timeouts.backendRequest",
            &mut errors,
        );
        if let (Some(r), Some(b)) = (request_timeout, backend_request_timeout)
            && b > r
        {
            errors.push(format!(
                "{ctx}: timeouts.backendRequest must not be longer than timeouts.request"
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok((
        Arc::new(Rule {
            route: meta.key(),
            index: ri,
            id: format!("{}/{ri}", meta.key()),
            filters,
            backends,
            total_weight,
            request_timeout,
            backend_request_timeout,
        }),
        matches,
    ))
}

fn parse_timeout(
    v: Option<&str>,
    ctx: &str,
    field: &str,
    errors: &mut Vec<String>,
) -> Option<Duration> {
    let v = v?;
    match humantime::parse_duration(v) {
        Ok(d) if d.is_zero() => None,
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(format!("{ctx}: {field} {v:?} is not a duration: {e}"));
            None
        }
    }
}

fn compile_match(m: &resources::HttpRouteMatch, ctx: &str) -> Result<RouteMatch, Vec<String>> {
    let mut errors = Vec::new();
    let (kind, value) = match &m.path {
        Some(p) => (
            p.kind.as_deref().unwrap_or("PathPrefix"),
            p.value.as_deref().unwrap_or("/"),
        ),
        None => ("PathPrefix", "/"),
    };
    let path = match kind {
        "Exact" | "PathPrefix" if !value.starts_with('/') => {
            errors.push(format!("{ctx}: path value {value:?} must start with \"/\""));
            PathMatch::Exact(String::new())
        }
        "Exact" => PathMatch::Exact(value.to_string()),
        "PathPrefix" => PathMatch::PathPrefix(value.trim_end_matches('/').to_string()),
        "RegularExpression" => match anchored(value) {
            Ok(r) => PathMatch::RegularExpression(r),
            Err(e) => {
                errors.push(format!("{ctx}: path regular expression {value:?}: {e}"));
                PathMatch::Exact(String::new())
            }
        },
        other => {
            errors.push(format!(
                "{ctx}: path type {other:?} is not one of Exact, PathPrefix, RegularExpression"
            ));
            PathMatch::Exact(String::new())
        }
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let hctx = format!("{ctx} headers[{i}]");
        let name = match HeaderName::from_bytes(h.name.as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                errors.push(format!("{hctx}: {:?} is not a valid header name", h.name));
                continue;
            }
        };
        if let Some(value) = value_match(h, &hctx, &mut errors) {
            headers.push(HeaderMatch { name, value });
        }
    }
    let mut query_params = Vec::new();
    for (i, q) in m.query_params.iter().enumerate() {
        let qctx = format!("{ctx} queryParams[{i}]");
        if let Some(value) = value_match(q, &qctx, &mut errors) {
            query_params.push(QueryMatch {
                name: q.name.clone(),
                value,
            });
        }
    }
    let method = match &m.method {
        Some(mth) if HTTP_METHODS.contains(&mth.as_str()) => {
            Method::from_bytes(mth.as_bytes()).ok()
        }
        Some(mth) => {
            errors.push(format!(
                "{ctx}: method {mth:?} is not one of {}",
                HTTP_METHODS.join(", ")
            ));
            None
        }
        None => None,
    };
    if errors.is_empty() {
        Ok(RouteMatch {
            path,
            headers,
            query_params,
            method,
        })
    } else {
        Err(errors)
    }
}

fn value_match(
    m: &resources::HttpValueMatch,
    ctx: &str,
    errors: &mut Vec<String>,
) -> Option<ValueMatch> {
    match m.kind.as_deref().unwrap_or("Exact") {
        "Exact" => Some(ValueMatch::Exact(m.value.clone())),
        "RegularExpression" => match anchored(&m.value) {
            Ok(r) => Some(ValueMatch::RegularExpression(r)),
            Err(e) => {
                errors.push(format!("{ctx}: regular expression {:?}: {e}", m.value));
                None
            }
        },
        other => {
            errors.push(format!(
                "{ctx}: type {other:?} is not one of Exact, RegularExpression"
            ));
            None
        }
    }
}

/// Regular expressions match the whole value.
fn anchored(re: &str) -> Result<Regex, String> {
    if let Err(e) = Regex::new(re) {
        // The last line of a regex parse error is the human summary ("error: ...").
        let msg = e.to_string();
        let last = msg.lines().last().unwrap_or_default().trim();
        return Err(last.trim_start_matches("error: ").to_string());
    }
    Regex::new(&format!("^(?:{re})$")).map_err(|e| e.to_string())
}

fn compile_filters(
    filters: &[resources::HttpRouteFilter],
    ctx: &str,
    errors: &mut Vec<String>,
) -> Filters {
    let mut out = Filters::default();
    for (i, f) in filters.iter().enumerate() {
        let fctx = format!("{ctx} filters[{i}]");
        match f.kind.as_str() {
            "RequestHeaderModifier" => match &f.request_header_modifier {
                Some(m) => out.request_headers = Some(header_edits(m, &fctx, errors)),
                None => errors.push(format!("{fctx}: requestHeaderModifier is missing")),
            },
            "ResponseHeaderModifier" => match &f.response_header_modifier {
                Some(m) => out.response_headers = Some(header_edits(m, &fctx, errors)),
                None => errors.push(format!("{fctx}: responseHeaderModifier is missing")),
            },
            "RequestRedirect" => match &f.request_redirect {
                Some(r) => {
                    let status = r.status_code.unwrap_or(302);
                    if status != 301 && status != 302 {
                        errors.push(format!(
                            "{fctx}: requestRedirect.statusCode {status} is not one of 301, 302"
                        ));
                    }
                    if let Some(s) = &r.scheme
                        && s != "http"
                        && s != "https"
                    {
                        errors.push(format!(
                            "{fctx}: requestRedirect.scheme {s:?} is not one of http, https"
                        ));
                    }
                    if let Some(h) = &r.hostname
                        && let Err(e) = validate_hostname(h)
                    {
                        errors.push(format!("{fctx}: requestRedirect.hostname {h:?}: {e}"));
                    }
                    out.redirect = Some(Redirect {
                        scheme: r.scheme.clone(),
                        hostname: r.hostname.clone(),
                        port: r.port,
                        path: r.path.as_ref().and_then(|p| {
                            path_modifier(p, &format!("{fctx} requestRedirect"), errors)
                        }),
                        status,
                    });
                }
                None => errors.push(format!("{fctx}: requestRedirect is missing")),
            },
            "URLRewrite" => match &f.url_rewrite {
                Some(r) => {
                    let hostname = match &r.hostname {
                        Some(h) => match (validate_hostname(h), HeaderValue::from_str(h)) {
                            (Ok(_), Ok(v)) => Some(v),
                            _ => {
                                errors.push(format!(
                                    "{fctx}: urlRewrite.hostname {h:?} is not a valid hostname"
                                ));
                                None
                            }
                        },
                        None => None,
                    };
                    out.rewrite = Some(Rewrite {
                        hostname,
                        path: r
                            .path
                            .as_ref()
                            .and_then(|p| path_modifier(p, &format!("{fctx} urlRewrite"), errors)),
                    });
                }
                None => errors.push(format!("{fctx}: urlRewrite is missing")),
            },
            other => errors.push(format!(
                "{fctx}: filter type {other:?} is not one of RequestHeaderModifier, \
                 ResponseHeaderModifier, RequestRedirect, URLRewrite"
            )),
        }
    }
    out
}

fn path_modifier(
    p: &resources::PathModifier,
    ctx: &str,
    errors: &mut Vec<String>,
) -> Option<PathModifier> {
    match p.kind.as_str() {
        "ReplaceFullPath" => match &p.replace_full_path {
            Some(v) if v.starts_with('/') => Some(PathModifier::ReplaceFullPath(v.clone())),
            _ => {
                errors.push(format!(
                    "{ctx}.path: replaceFullPath must be set and start with \"/\""
                ));
                None
            }
        },
        "ReplacePrefixMatch" => match &p.replace_prefix_match {
            Some(v) if v.starts_with('/') => Some(PathModifier::ReplacePrefixMatch(v.clone())),
            _ => {
                errors.push(format!(
                    "{ctx}.path: replacePrefixMatch must be set and start with \"/\""
                ));
                None
            }
        },
        other => {
            errors.push(format!(
                "{ctx}.path: type {other:?} is not one of ReplaceFullPath, ReplacePrefixMatch"
            ));
            None
        }
    }
}

fn header_edits(m: &resources::HeaderModifier, ctx: &str, errors: &mut Vec<String>) -> HeaderEdits {
    let mut pairs = |list: &[resources::HttpHeader], field: &str| {
        let mut out = Vec::new();
        for (i, h) in list.iter().enumerate() {
            match (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_str(&h.value),
            ) {
                (Ok(n), Ok(v)) => out.push((n, v)),
                _ => errors.push(format!(
                    "{ctx}: {field}[{i}] {:?}: {:?} is not a valid header",
                    h.name, h.value
                )),
            }
        }
        out
    };
    let set = pairs(&m.set, "set");
    let add = pairs(&m.add, "add");
    let mut remove = Vec::new();
    for (i, n) in m.remove.iter().enumerate() {
        match HeaderName::from_bytes(n.as_bytes()) {
            Ok(n) => remove.push(n),
            Err(_) => errors.push(format!(
                "{ctx}: remove[{i}] {n:?} is not a valid header name"
            )),
        }
    }
    HeaderEdits { set, add, remove }
}

/// Resolves a backendRef: (display name, speak h2c, target).
fn resolve_backend(
    index: &Index<'_>,
    meta: &GatewayApiMeta,
    b: &resources::HttpBackendRef,
    opts: &TranslateOptions,
) -> (String, bool, BackendTarget) {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    let ns = b.namespace.as_deref().unwrap_or(meta.ns());
    let port = b.port.unwrap_or(0);
    let name = format!("{kind} {ns}/{}:{port}", b.name);
    if !group.is_empty() || kind != "Service" {
        return (
            name,
            false,
            BackendTarget::Unresolvable(format!(
                "backendRef kind {group}/{kind} is not supported (only core Service)"
            )),
        );
    }
    if ns != meta.ns() {
        return (
            name,
            false,
            BackendTarget::Unresolvable(format!(
                "backendRef to Service {ns}/{} crosses namespaces; ReferenceGrant is not supported",
                b.name
            )),
        );
    }
    let skey = format!("{ns}/{}", b.name);
    let Some(svc) = index.services.get(&skey) else {
        return (
            name,
            false,
            BackendTarget::Unresolvable(format!("Service {skey} not found")),
        );
    };
    let Some(sport) = svc.spec.ports.iter().find(|p| p.port == port) else {
        return (
            name,
            false,
            BackendTarget::Unresolvable(format!("Service {skey} has no port {port}")),
        );
    };
    let http2 = sport
        .app_protocol
        .as_deref()
        .is_some_and(|p| matches!(p, "kubernetes.io/h2c" | "h2c" | "http2" | "grpc"));
    // Validated up front; an invalid policy never reaches here.
    let (mode, identities) = mesh_policy(svc, opts).unwrap_or((UpstreamTls::Disable, Vec::new()));
    let fqdn = format!("{}.{ns}.svc.{}", b.name, opts.cluster_domain);
    let mesh_target = (mode != UpstreamTls::Disable).then(|| {
        Arc::new(MeshTarget {
            sni: MeshTarget::sni_for(port, &fqdn),
            identities,
            http2,
        })
    });
    let port_name = sport.name.clone().unwrap_or_default();
    if let Some(slices) = index.slices.get(&skey) {
        let mut endpoints = Vec::new();
        for slice in slices {
            let Some(target) = slice
                .ports
                .iter()
                .find(|p| p.name.clone().unwrap_or_default() == port_name)
                .and_then(|p| p.port)
            else {
                continue;
            };
            for ep in &slice.endpoints {
                if ep.conditions.ready == Some(false) {
                    continue;
                }
                let mut labels = slice.metadata.labels.clone();
                if let Some(t) = &ep.target_ref
                    && t.kind.as_deref() == Some("Pod")
                {
                    let pkey = format!("{}/{}", t.namespace.as_deref().unwrap_or(ns), t.name);
                    if let Some(pod) = index.pods.get(&pkey) {
                        labels.extend(pod.metadata.labels.clone());
                    }
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        endpoints.push(Endpoint {
                            address: SocketAddr::new(ip, target),
                            transport: Transport::for_endpoint(mode, mesh_target.as_ref(), &labels),
                            labels: labels.clone(),
                        });
                    }
                }
            }
        }
        endpoints.sort_by_key(|e| e.address);
        endpoints.dedup_by_key(|e| e.address);
        return (name, http2, BackendTarget::Endpoints(endpoints));
    }
    let host = match (&svc.spec.kind, &svc.spec.external_name) {
        (Some(k), Some(ext)) if k == "ExternalName" => ext.clone(),
        _ => fqdn,
    };
    // No endpoint labels to look at: only istio-mutual sends mTLS to a DNS backend.
    let transport = Transport::for_endpoint(mode, mesh_target.as_ref(), &BTreeMap::new());
    (
        name,
        http2,
        BackendTarget::Dns {
            host,
            port,
            transport,
        },
    )
}
