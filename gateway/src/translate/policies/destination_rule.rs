//! Istio DestinationRules -> [`ir::BackendPolicy`] per Service, looked up as Istio does:
//! a rule in the gateway's namespace first, then one in the Service's namespace, then
//! one in the root namespace `istio-system`; a rule is seen only where its `exportTo`
//! exports it (empty or `*`: everywhere; `.`: its own namespace; else the names listed).
//! Within one namespace an exact host beats a wildcard, then the older rule wins.
//!
//! An invalid rule is left out whole (its errors name the rule and the field); the
//! Services it would have covered keep their defaults.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::super::{Findings, TranslateOptions};
use super::destination_tls::{self, CredentialSource};
use crate::api::ObjectKey;
use crate::api::Snapshot;
use crate::api::istio::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRule, LoadBalancerSettings,
    OutlierDetection, TrafficPolicy,
};
use crate::ir::{self, BackendPolicy, ConnectionLimits, HashKey, LoadBalancer, PoolSettings};

/// Istio's root namespace, whose rules apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// One valid rule, ready for lookups.
#[derive(Debug)]
struct Compiled {
    namespace: String,
    /// Lower-case FQDN or `*.suffix` pattern.
    host: ir::HostPattern,
    export_to: Vec<String>,
    created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    policy: Arc<BackendPolicy>,
    /// The rule has a `trafficPolicy` (in a merge, the oldest that has one applies).
    has_policy: bool,
    /// Subsets by name: the labels an endpoint must carry and the subset's own
    /// `trafficPolicy` fields (laid over the port's policy at lookup, as Istio merges).
    subsets: HashMap<String, Subset>,
    /// `portLevelSettings` by Service port: its fields over the rule's.
    ports: HashMap<u16, Arc<BackendPolicy>>,
}

/// A compiled subset.
#[derive(Debug, Clone)]
struct Subset {
    labels: std::collections::BTreeMap<String, String>,
    /// Only the fields the subset sets.
    own: Arc<BackendPolicy>,
}

/// The valid DestinationRules, by namespace.
#[derive(Debug, Default)]
pub struct DestinationRules {
    by_namespace: HashMap<String, Vec<Compiled>>,
}

/// What applies to one Service.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The policy.
    pub policy: Arc<BackendPolicy>,
    /// The rule's subsets: name -> (labels, policy).
    subsets: HashMap<String, Subset>,
}

impl Applied {
    /// A subset's endpoint labels and policy (with its `tls`), when the rule has it: the
    /// subset's fields over the port's policy over the rule's, as Istio merges them.
    pub fn subset(
        &self,
        name: &str,
    ) -> Option<(
        &std::collections::BTreeMap<String, String>,
        Arc<BackendPolicy>,
    )> {
        let s = self.subsets.get(name)?;
        let mut policy = BackendPolicy::clone(&self.policy);
        overlay(&mut policy, BackendPolicy::clone(&s.own));
        policy.source = s.own.source.clone();
        Some((&s.labels, Arc::new(policy)))
    }
}

impl DestinationRules {
    /// Compiles every rule of the snapshot; invalid ones are reported and left out.
    pub fn compile(
        snap: &Snapshot,
        opts: &TranslateOptions,
        secrets: &HashMap<String, &crate::api::Secret>,
        f: &mut Findings,
    ) -> Self {
        let mut out = DestinationRules::default();
        let src = CredentialSource { secrets, opts };
        for dr in &snap.destination_rules {
            if let Some(c) = compile_rule(dr, &src, f) {
                out.by_namespace
                    .entry(c.namespace.clone())
                    .or_default()
                    .push(c);
            }
        }
        out
    }

    /// The rule for port `port` of Service `svc_ns/svc_name` as seen from the gateway's
    /// namespace (the port's `portLevelSettings` over the rule's policy).
    pub fn lookup(
        &self,
        gateway_ns: &str,
        svc_ns: &str,
        svc_name: &str,
        port: u16,
        cluster_domain: &str,
    ) -> Option<Applied> {
        let fqdn = format!("{svc_name}.{svc_ns}.svc.{cluster_domain}");
        [gateway_ns, svc_ns, ROOT_NAMESPACE]
            .into_iter()
            .find_map(|ns| {
                let rules = self.by_namespace.get(ns)?;
                let mut matching: Vec<&Compiled> = rules
                    .iter()
                    .filter(|c| c.host.matches(&fqdn) && exported(c, gateway_ns))
                    .collect();
                matching.sort_by_key(|c| (c.host.specificity(), c.created.clone()));
                let (c, others) = matching.split_first()?;
                let merged: Vec<&Compiled> = std::iter::once(*c)
                    .chain(others.iter().copied().filter(|o| o.host == c.host))
                    .collect();
                // Istio merges the rules of one host in one namespace (mergeDestinationRule):
                // the oldest's traffic policy (a newer one's when the oldest has none),
                // and every rule's subsets (the first of a name wins).
                let p = merged.iter().find(|r| r.has_policy).unwrap_or(c);
                let policy = p.ports.get(&port).unwrap_or(&p.policy).clone();
                let mut subsets = c.subsets.clone();
                for o in &merged[1..] {
                    for (name, s) in &o.subsets {
                        subsets.entry(name.clone()).or_insert_with(|| s.clone());
                    }
                }
                Some(Applied { policy, subsets })
            })
    }
}

fn exported(c: &Compiled, to: &str) -> bool {
    c.export_to.is_empty()
        || c.export_to
            .iter()
            .any(|e| e == "*" || (e == "." && c.namespace == to) || (e != "." && e == to))
}

/// The host as an FQDN pattern: short names are in the rule's namespace.
fn host_pattern(host: &str, ns: &str, domain: &str) -> ir::HostPattern {
    let h = host.to_ascii_lowercase();
    let fqdn = if h.starts_with('*') || h.ends_with(&format!(".svc.{domain}")) {
        h
    } else {
        match h.split('.').count() {
            1 => format!("{h}.{ns}.svc.{domain}"),
            2 => format!("{h}.svc.{domain}"),
            _ => h,
        }
    };
    ir::HostPattern::parse(&fqdn)
}

fn compile_rule(
    dr: &DestinationRule,
    src: &CredentialSource<'_>,
    f: &mut Findings,
) -> Option<Compiled> {
    let opts = src.opts;
    let key = dr.metadata.key();
    let ctx = format!("DestinationRule {key}");
    let before = f.errors.len();
    let spec = &dr.spec;
    f.unsupported(&ctx, &spec.unsupported);
    if spec.host.is_empty() {
        f.errors.push(format!("{ctx}: host is required"));
    }
    let tp = spec.traffic_policy.clone().unwrap_or_default();
    let policy = traffic_policy(&tp, &format!("{ctx} trafficPolicy"), dr, src, f);
    let subsets = subsets(dr, src, f);
    let ports = port_policies(dr, &tp, &policy, src, f);
    if f.errors.len() > before {
        return None;
    }
    let ns = dr.metadata.ns().to_string();
    Some(Compiled {
        host: host_pattern(&spec.host, &ns, &opts.cluster_domain),
        export_to: spec.export_to.clone(),
        created: dr.metadata.creation_timestamp.clone(),
        policy: Arc::new(policy),
        has_policy: spec.traffic_policy.is_some(),
        namespace: ns,
        subsets,
        ports,
    })
}

/// `trafficPolicy.portLevelSettings`: per Service port, its fields over the rule's.
fn port_policies(
    dr: &DestinationRule,
    tp: &TrafficPolicy,
    base: &BackendPolicy,
    src: &CredentialSource<'_>,
    f: &mut Findings,
) -> HashMap<u16, Arc<BackendPolicy>> {
    let key = dr.metadata.key();
    let mut out = HashMap::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let ctx = format!("DestinationRule {key} trafficPolicy.portLevelSettings[{i}]");
        let Some(port) = pl.port.as_ref().and_then(|p| u16::try_from(p.number).ok()) else {
            f.errors
                .push(format!("{ctx}: port.number is required (1-65535)"));
            continue;
        };
        let own = traffic_policy(
            &TrafficPolicy {
                load_balancer: pl.load_balancer.clone(),
                connection_pool: pl.connection_pool.clone(),
                outlier_detection: pl.outlier_detection.clone(),
                tls: pl.tls.clone(),
                port_level_settings: Vec::new(),
                unsupported: pl.unsupported.clone(),
            },
            &ctx,
            dr,
            src,
            f,
        );
        let mut policy = base.clone();
        overlay(&mut policy, own);
        policy.source = format!("DestinationRule {key} port {port}");
        if out.insert(port, Arc::new(policy)).is_some() {
            f.errors.push(format!("{ctx}: port {port} is listed twice"));
        }
    }
    out
}

/// The fields `own` sets replace those of `policy`.
fn overlay(policy: &mut BackendPolicy, own: BackendPolicy) {
    policy.load_balancer = own.load_balancer.or(policy.load_balancer.take());
    policy.limits = own.limits.or(policy.limits.take());
    policy.outlier = own.outlier.or(policy.outlier.take());
    // The mode and its settings go together.
    if own.tls_mode.is_some() {
        policy.tls_mode = own.tls_mode;
        policy.tls_origination = own.tls_origination;
    }
}

/// The rule's subsets (VirtualService destinations select them): each subset's
/// `trafficPolicy` fields replace the port's and the rule's, field by field.
fn subsets(
    dr: &DestinationRule,
    src: &CredentialSource<'_>,
    f: &mut Findings,
) -> HashMap<String, Subset> {
    let key = dr.metadata.key();
    let mut out = HashMap::new();
    for (i, sub) in dr.spec.subsets.iter().enumerate() {
        let ctx = format!("DestinationRule {key} subsets[{i}]");
        f.unsupported(&ctx, &sub.unsupported);
        if sub.name.is_empty() {
            f.errors.push(format!("{ctx}: name is required"));
            continue;
        }
        let tp = sub.traffic_policy.clone().unwrap_or_default();
        let tctx = format!("{ctx} trafficPolicy");
        if !tp.port_level_settings.is_empty() {
            f.errors.push(format!(
                "{tctx}: field \"portLevelSettings\" is not supported by meshgate in a subset"
            ));
        }
        let mut own = traffic_policy(&tp, &tctx, dr, src, f);
        own.source = format!("DestinationRule {key} subset {}", sub.name);
        let subset = Subset {
            labels: sub.labels.clone(),
            own: Arc::new(own),
        };
        if out.insert(sub.name.clone(), subset).is_some() {
            f.errors
                .push(format!("{ctx}: subset name {:?} is used twice", sub.name));
        }
    }
    out
}

fn traffic_policy(
    tp: &TrafficPolicy,
    ctx: &str,
    dr: &DestinationRule,
    src: &CredentialSource<'_>,
    f: &mut Findings,
) -> BackendPolicy {
    let key = dr.metadata.key();
    f.unsupported(&ctx, &tp.unsupported);
    let load_balancer = tp
        .load_balancer
        .as_ref()
        .and_then(|lb| load_balancer(lb, &format!("{ctx}.loadBalancer"), f));
    let limits = tp
        .connection_pool
        .as_ref()
        .map(|cp| limits(cp, &format!("{ctx}.connectionPool"), f));
    let outlier = tp
        .outlier_detection
        .as_ref()
        .map(|od| outlier(od, &format!("{ctx}.outlierDetection"), f));
    let (tls_mode, tls_origination) = match &tp.tls {
        Some(t) => tls(t, &format!("{ctx}.tls"), dr, src, f),
        None => (None, None),
    };
    BackendPolicy {
        source: format!("DestinationRule {key}"),
        load_balancer,
        limits,
        outlier,
        tls_mode,
        tls_origination,
    }
}

/// `tls`: the mode, and for SIMPLE and MUTUAL what the connection needs.
fn tls(
    t: &ClientTlsSettings,
    ctx: &str,
    dr: &DestinationRule,
    src: &CredentialSource<'_>,
    f: &mut Findings,
) -> (Option<String>, Option<Arc<ir::TlsTarget>>) {
    f.unsupported(&ctx, &t.unsupported);
    match t.mode.as_deref() {
        // `mode` is an enum whose zero value is DISABLE: Istio reads the block so.
        None => {
            let unused: Vec<&str> = [
                ("credentialName", t.credential_name.is_some()),
                ("caCertificates", t.ca_certificates.is_some()),
                ("clientCertificate", t.client_certificate.is_some()),
                ("privateKey", t.private_key.is_some()),
                ("sni", t.sni.is_some()),
                ("subjectAltNames", !t.subject_alt_names.is_empty()),
                ("insecureSkipVerify", t.insecure_skip_verify.is_some()),
            ]
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect();
            f.warnings.push(format!(
                "{ctx}: mode is not set, which Istio reads as DISABLE (plaintext, no \
                 auto-mTLS){}",
                if unused.is_empty() {
                    String::new()
                } else {
                    format!("; {} have no effect", unused.join(", "))
                }
            ));
            (Some("DISABLE".to_string()), None)
        }
        Some(m @ ("DISABLE" | "ISTIO_MUTUAL")) => (Some(m.to_string()), None),
        Some(m @ ("SIMPLE" | "MUTUAL")) => {
            let target = destination_tls::origination(t, m == "MUTUAL", dr, ctx, src, f);
            (Some(m.to_string()), target)
        }
        Some(m) => {
            f.errors.push(format!(
                "{ctx}: mode {m:?} is not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL"
            ));
            (None, None)
        }
    }
}

fn load_balancer(lb: &LoadBalancerSettings, ctx: &str, f: &mut Findings) -> Option<LoadBalancer> {
    f.unsupported(&ctx, &lb.unsupported);
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        f.errors.push(format!(
            "{ctx}: simple and consistentHash cannot both be set"
        ));
        return None;
    }
    if let Some(ch) = &lb.consistent_hash {
        let hctx = format!("{ctx}.consistentHash");
        f.unsupported(&hctx, &ch.unsupported);
        let mut keys = Vec::new();
        if let Some(h) = &ch.http_header_name {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                f.errors
                    .push(format!("{hctx}: httpHeaderName {h:?} is not a header name"));
            }
            keys.push(HashKey::Header(h.to_ascii_lowercase()));
        }
        if let Some(c) = &ch.http_cookie {
            f.unsupported(&format!("{hctx}.httpCookie"), &c.unsupported);
            if c.name.is_empty() {
                f.errors
                    .push(format!("{hctx}: httpCookie.name is required"));
            }
            keys.push(HashKey::Cookie(c.name.clone()));
        }
        if ch.use_source_ip == Some(true) {
            keys.push(HashKey::SourceIp);
        }
        if let Some(q) = &ch.http_query_parameter_name {
            keys.push(HashKey::QueryParameter(q.clone()));
        }
        if keys.len() != 1 {
            f.errors.push(format!(
                "{hctx}: exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName must be set"
            ));
            return None;
        }
        return keys.pop().map(LoadBalancer::ConsistentHash);
    }
    match lb.simple.as_deref() {
        None | Some("UNSPECIFIED") => None,
        Some("ROUND_ROBIN") => Some(LoadBalancer::RoundRobin),
        Some("LEAST_REQUEST" | "LEAST_CONN") => Some(LoadBalancer::LeastRequest),
        Some("RANDOM") => Some(LoadBalancer::Random),
        Some("PASSTHROUGH") => {
            f.errors.push(format!(
                "{ctx}: simple PASSTHROUGH is not supported by meshgate"
            ));
            None
        }
        Some(other) => {
            f.errors.push(format!(
                "{ctx}: simple {other:?} is not one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, PASSTHROUGH"
            ));
            None
        }
    }
}

/// A count field: unset or 0 means Istio's default (unlimited); negative is an error.
fn count(v: Option<i64>, ctx: &str, field: &str, f: &mut Findings) -> u32 {
    match v {
        None | Some(0) => u32::MAX,
        Some(n) if n < 0 => {
            f.errors
                .push(format!("{ctx}: {field} {n} must not be negative"));
            u32::MAX
        }
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
    }
}

/// `fields` less those set to a value that asks for what meshgate does anyway (Istio's
/// defaults written out): those are not worth refusing a rule for.
fn without_defaults(
    fields: &crate::api::Unsupported,
    noop: &[(&str, &[&str])],
) -> crate::api::Unsupported {
    let mut rest = fields.clone();
    for (name, values) in noop {
        let same = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => values.contains(&s.as_str()),
            other => values.contains(&other.to_string().as_str()),
        };
        if rest.get(*name).is_some_and(same) {
            rest.remove(*name);
        }
    }
    rest
}

fn limits(cp: &ConnectionPoolSettings, ctx: &str, f: &mut Findings) -> ConnectionLimits {
    f.unsupported(&ctx, &cp.unsupported);
    let tcp = cp.tcp.clone().unwrap_or_default();
    let http = cp.http.clone().unwrap_or_default();
    let tctx = format!("{ctx}.tcp");
    let hctx = format!("{ctx}.http");
    f.unsupported(&tctx, &tcp.unsupported);
    f.unsupported(
        &hctx,
        &without_defaults(
            &http.unsupported,
            &[
                // What meshgate does anyway: an HTTP/1.1 request is sent as HTTP/1.1.
                ("h2UpgradePolicy", &["DEFAULT", "DO_NOT_UPGRADE"]),
                ("useClientProtocol", &["false"]),
            ],
        ),
    );
    // These need connections of the backend's own: a backend that sets any gets its own
    // pool (upstream::Upstreams keys pools by them).
    let pool = PoolSettings {
        connect_timeout: tcp
            .connect_timeout
            .as_deref()
            .map(|v| duration(Some(v), Duration::ZERO, &tctx, "connectTimeout", f)),
        tcp_keepalive: tcp
            .tcp_keepalive
            .as_ref()
            .map(|k| keepalive(k, &format!("{tctx}.tcpKeepalive"), f)),
        // `0s` turns the idle timeout off, as in Envoy (connections are kept until the
        // upstream closes them).
        idle_timeout: http
            .idle_timeout
            .as_deref()
            .map(|v| duration(Some(v), Duration::ZERO, &hctx, "idleTimeout", f)),
        // 0 is Istio's "unset" (unlimited), as for the other counts.
        max_requests_per_connection: match count(
            http.max_requests_per_connection,
            &hctx,
            "maxRequestsPerConnection",
            f,
        ) {
            u32::MAX => None,
            n => Some(n),
        },
    };
    ConnectionLimits {
        max_connections: count(tcp.max_connections, &tctx, "maxConnections", f),
        max_pending_requests: count(
            http.http1_max_pending_requests,
            &hctx,
            "http1MaxPendingRequests",
            f,
        ),
        max_requests: count(http.http2_max_requests, &hctx, "http2MaxRequests", f),
        max_retries: count(http.max_retries, &hctx, "maxRetries", f),
        pool,
    }
}

/// `tcp.tcpKeepalive`: each timing at least a second (the kernel's unit), probes 1..=127.
fn keepalive(
    k: &crate::api::istio::TcpKeepalive,
    ctx: &str,
    f: &mut Findings,
) -> crate::ir::TcpKeepalive {
    f.unsupported(&ctx, &k.unsupported);
    let secs = |v: Option<&String>, field: &str, f: &mut Findings| {
        let d = duration(Some(v?.as_str()), Duration::ZERO, ctx, field, f);
        if d < Duration::from_secs(1) && d != Duration::ZERO {
            f.errors.push(format!(
                "{ctx}: {field} {d:?} is under a second, the kernel's unit"
            ));
        }
        Some(d)
    };
    let probes = match k.probes {
        None => None,
        Some(n @ 1..=127) => Some(n as u32),
        Some(n) => {
            f.errors
                .push(format!("{ctx}: probes {n} is not between 1 and 127"));
            None
        }
    };
    crate::ir::TcpKeepalive {
        time: secs(k.time.as_ref(), "time", f),
        interval: secs(k.interval.as_ref(), "interval", f),
        probes,
    }
}

fn duration(
    v: Option<&str>,
    default: Duration,
    ctx: &str,
    field: &str,
    f: &mut Findings,
) -> Duration {
    let Some(v) = v else { return default };
    match humantime::parse_duration(v) {
        Ok(d) if d >= Duration::from_millis(1) => d,
        Ok(_) => {
            f.errors
                .push(format!("{ctx}: {field} {v:?} must be at least 1ms"));
            default
        }
        Err(e) => {
            f.errors
                .push(format!("{ctx}: {field} {v:?} is not a duration: {e}"));
            default
        }
    }
}

fn percent(v: Option<i32>, default: u32, ctx: &str, field: &str, f: &mut Findings) -> u32 {
    match v {
        None => default,
        Some(p @ 0..=100) => p as u32,
        Some(p) => {
            f.errors.push(format!(
                "{ctx}: {field} {p} is not a percentage between 0 and 100"
            ));
            default
        }
    }
}

fn outlier(od: &OutlierDetection, ctx: &str, f: &mut Findings) -> ir::OutlierDetection {
    // Local-origin failures count with the 5xx, as Istio's default (false) has it.
    let noop = [("splitExternalLocalOriginErrors", &["false"][..])];
    f.unsupported(&ctx, &without_defaults(&od.unsupported, &noop));
    ir::OutlierDetection {
        // Istio's defaults: 5 consecutive 5xx, gateway errors off, 10s, 30s, 10%, 0%.
        consecutive_5xx: od.consecutive_5xx_errors.unwrap_or(5),
        consecutive_gateway: od.consecutive_gateway_errors.unwrap_or(0),
        interval: duration(
            od.interval.as_deref(),
            Duration::from_secs(10),
            ctx,
            "interval",
            f,
        ),
        base_ejection_time: duration(
            od.base_ejection_time.as_deref(),
            Duration::from_secs(30),
            ctx,
            "baseEjectionTime",
            f,
        ),
        // Istio passes it on only when above 0, so 0 means Envoy's default 10.
        max_ejection_percent: match percent(
            od.max_ejection_percent,
            10,
            ctx,
            "maxEjectionPercent",
            f,
        ) {
            0 => 10,
            p => p,
        },
        min_health_percent: percent(od.min_health_percent, 0, ctx, "minHealthPercent", f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_namespaced_hosts_become_fqdns_in_the_rules_namespace() {
        let p = host_pattern("httpbin", "apps", "cluster.local");
        assert!(p.matches("httpbin.apps.svc.cluster.local"));
        let p = host_pattern("httpbin.other", "apps", "cluster.local");
        assert!(p.matches("httpbin.other.svc.cluster.local"));
        let p = host_pattern("*.apps.svc.cluster.local", "x", "cluster.local");
        assert!(p.matches("httpbin.apps.svc.cluster.local"));
    }
}
