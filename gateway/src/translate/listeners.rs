//! Gateways -> the port table: one protocol per port, listeners with their hostnames, TLS
//! material as DER, and client-certificate validation from `spec.tls.frontend`.

use std::collections::{BTreeMap, BTreeSet};

use super::grants::{self, Reference};
use super::rules::Pending;
use super::status::{Condition, ConditionType as C, Reason, failed, ok};
use super::{Findings, Index, TranslateOptions};
use crate::api::gateway_api::{self, Gateway, LabelSelector};
use crate::api::{ObjectKey, Snapshot};
use crate::ir::{self, HostPattern, Protocol};

/// Listener option naming the minimum TLS version (`1.2` or `1.3`).
pub const MIN_VERSION_OPTION: &str = "meshgate.io/min-tls-version";

/// Where routes attached to a listener may come from (`allowedRoutes.namespaces`).
#[derive(Debug, Clone)]
pub enum AllowedFrom {
    /// The Gateway's namespace only (the default).
    Same,
    /// Any namespace.
    All,
    /// Namespaces whose labels match.
    Selector(LabelSelector),
    /// One namespace (an Istio server host's `namespace/` prefix).
    Namespace(String),
}

/// One accepted listener, as routes see it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// Listener name.
    pub name: String,
    /// Port.
    pub port: u16,
    /// The port as its object wrote it (an Istio server's number, which is the gateway
    /// Service's port; `port` is then its targetPort).
    pub declared_port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Hostname.
    pub hostname: HostPattern,
    /// Namespaces routes may come from.
    pub allowed_from: AllowedFrom,
    /// Route kinds that may attach (`HTTPRoute`, `GRPCRoute`).
    pub kinds: Vec<&'static str>,
}

impl ListenerInfo {
    /// `namespace/gateway/listener`.
    pub fn full_name(&self) -> String {
        [self.gateway.as_str(), "/", self.name.as_str()].concat()
    }
}

/// Route entries of one listener by hostname.
pub type PendingHosts = BTreeMap<String, (HostPattern, Vec<Pending>)>;

/// The port table under construction.
#[derive(Debug, Default)]
pub struct Gateways {
    /// Gateways seen (`namespace/name`).
    pub names: BTreeSet<String>,
    /// Accepted listeners (shared: every route attached to one holds it).
    pub listeners: Vec<std::sync::Arc<ListenerInfo>>,
    /// Gateway API listeners accepted but not programmed (a certificate that does not
    /// resolve): routes attach to them and are counted in their `attachedRoutes`, as
    /// the spec requires, but nothing is served there.
    pub unprogrammed: Vec<std::sync::Arc<ListenerInfo>>,
    /// Ports with their listeners (virtual hosts filled by attachment).
    pub ports: BTreeMap<u16, ir::Port>,
    /// Route entries per (port, listener full name), then per host.
    pub pending: BTreeMap<(u16, String), PendingHosts>,
    /// Connection routes per (port, listener full name), then per SNI host.
    pub l4_pending: super::l4::PendingL4,
}

impl Gateways {
    /// Sorts everything into precedence order and produces the IR.
    pub fn finish(mut self, warnings: Vec<String>) -> ir::Config {
        for ((port, listener), hosts) in std::mem::take(&mut self.pending) {
            let Some(l) = self
                .ports
                .get_mut(&port)
                .and_then(|p| p.listeners.iter_mut().find(|l| l.name == listener))
            else {
                continue;
            };
            let mut hosts: Vec<(HostPattern, Vec<Pending>)> = hosts.into_values().collect();
            if l.across_hostnames {
                super::host_ranks::rank_across_hostnames(&mut hosts);
            }
            for (hostname, mut entries) in hosts {
                entries.sort_by(|a, b| a.key.cmp(&b.key));
                l.virtual_hosts.push(ir::VirtualHost {
                    hostname,
                    routes: entries.into_iter().map(|p| p.entry).collect(),
                });
            }
        }
        for ((port, listener), hosts) in std::mem::take(&mut self.l4_pending) {
            if let Some(l) = self
                .ports
                .get_mut(&port)
                .and_then(|p| p.listeners.iter_mut().find(|l| l.name == listener))
            {
                l.l4_routes.extend(hosts.into_values());
            }
        }
        for p in self.ports.values_mut() {
            p.listeners.sort_by_key(|l| l.hostname.specificity());
            for l in &mut p.listeners {
                l.virtual_hosts.sort_by_key(|v| v.hostname.specificity());
                l.l4_routes.sort_by_key(|r| r.hostname.specificity());
            }
        }
        let listeners = || self.ports.values().flat_map(|p| p.listeners.iter());
        let http = listeners()
            .flat_map(|l| l.virtual_hosts.iter())
            .flat_map(|vh| vh.routes.iter())
            .flat_map(|r| r.rule.backends.iter());
        let l4 = listeners()
            .flat_map(|l| l.l4_routes.iter())
            .flat_map(|r| r.backends.iter());
        let mesh_upstreams = http.chain(l4).any(|b| b.target.uses_mesh());
        ir::Config {
            ports: self.ports,
            warnings,
            mesh_upstreams,
            authorization: None,
        }
    }
}

/// Why a listener was left out: the condition it gets and the message.
struct ListenerError {
    kind: C,
    reason: Reason,
    message: String,
}

/// The conditions of a listener left out: an unresolved reference leaves it Accepted but
/// not Programmed; a conflict or an invalid field leaves it not Accepted.
fn listener_conditions(e: ListenerError) -> Vec<Condition> {
    let programmed = failed(C::Programmed, Reason::Invalid, e.message.clone());
    match e.kind {
        C::ResolvedRefs => vec![
            ok(C::Accepted, Reason::Accepted),
            failed(C::ResolvedRefs, e.reason, e.message),
            programmed,
        ],
        C::Conflicted => {
            let mut conflicted = ok(C::Conflicted, e.reason);
            conflicted.message = e.message.clone();
            // Accepted=False with reason Invalid, as the conformance suite expects
            // (GatewayListenerProtocolAndRouteKindConflicts).
            vec![
                conflicted,
                failed(C::Accepted, Reason::Invalid, e.message),
                programmed,
            ]
        }
        _ => vec![failed(C::Accepted, e.reason, e.message), programmed],
    }
}

/// A Gateway's listeners that are not distinct (Gateway API: the same port with protocols
/// that cannot share it, or the same hostname), each with its reason. Every member of a
/// conflicting set is refused: the spec forbids picking one of them as the winner.
fn conflicts_within(listeners: &[gateway_api::Listener]) -> BTreeMap<usize, (Reason, String)> {
    let parsed: Vec<Option<(Protocol, HostPattern)>> = listeners
        .iter()
        .map(|l| {
            let protocol = match l.protocol.as_str() {
                "HTTP" => Protocol::Http,
                "HTTPS" => Protocol::Https,
                "TLS" => Protocol::Tls,
                "TCP" => Protocol::Tcp,
                _ => return None,
            };
            // A listener invalid on its own is refused for that, and takes no valid
            // sibling down with it.
            if l.port == 0
                || (matches!(protocol, Protocol::Https | Protocol::Tls) && l.tls.is_none())
            {
                return None;
            }
            let hostname = match &l.hostname {
                Some(h) if protocol != Protocol::Tcp => validate_hostname(h).ok()?,
                _ => HostPattern::Any,
            };
            Some((protocol, hostname))
        })
        .collect();
    let mut out = BTreeMap::new();
    for (i, a) in listeners.iter().enumerate() {
        let Some((pa, ha)) = &parsed[i] else { continue };
        for (j, b) in listeners.iter().enumerate() {
            let Some((pb, hb)) = &parsed[j] else { continue };
            if i == j || a.port != b.port || a.name == b.name {
                continue;
            }
            let reason = if !pa.shares_port_with(*pb) || (ha == hb && pa != pb) {
                Reason::ProtocolConflict
            } else if ha == hb {
                Reason::HostnameConflict
            } else {
                continue;
            };
            let msg = match reason {
                Reason::ProtocolConflict if pa.shares_port_with(*pb) => format!(
                    "conflicts with listener {:?} ({} on port {} with the same hostname {ha}): \
                     neither is served",
                    b.name,
                    pb.name(),
                    b.port
                ),
                Reason::ProtocolConflict => format!(
                    "conflicts with listener {:?} ({} on the same port {}): neither is served",
                    b.name,
                    pb.name(),
                    b.port
                ),
                _ => format!(
                    "has the same hostname {ha} on port {} as listener {:?}: neither is served",
                    b.port, b.name
                ),
            };
            out.entry(i).or_insert((reason, msg));
        }
    }
    out
}

fn refuse(kind: C, reason: Reason, message: String) -> ListenerError {
    ListenerError {
        kind,
        reason,
        message,
    }
}

/// Compiles every Gateway's listeners into the port table; an invalid listener is left
/// out with its condition, the others are served.
pub fn compile(
    snap: &Snapshot,
    index: &Index<'_>,
    opts: &TranslateOptions,
    f: &mut Findings,
) -> Gateways {
    let mut out = Gateways::default();
    if snap.gateways.is_empty() && snap.istio_gateways.is_empty() && snap.gloo_gateways.is_empty() {
        f.fatal
            .push("no Gateway found in the configuration".to_string());
    }
    for gw in &snap.gateways {
        let gw_key = gw.metadata.key();
        let obj = format!("Gateway {gw_key}");
        if !out.names.insert(gw_key.clone()) {
            f.errors.push(format!(
                "{obj}: defined more than once; the first one is used"
            ));
            continue;
        }
        let before = f.errors.len();
        f.unsupported(&format!("{obj} spec"), &gw.spec.unsupported);
        if let Some(e) = f.errors.get(before) {
            let c = failed(C::Accepted, Reason::Invalid, e.clone());
            f.report.object_condition(&obj, c);
            continue;
        }
        let frontend = frontend_validations(snap, index, gw, f);
        let mut conflicts = conflicts_within(&gw.spec.listeners);
        let mut names = BTreeSet::new();
        let mut invalid = 0;
        for (i, l) in gw.spec.listeners.iter().enumerate() {
            let ctx = format!("{obj} listener {:?}", l.name);
            let result = if !names.insert(l.name.clone()) {
                let msg = format!("{ctx}: listener name used more than once");
                Err(refuse(C::Accepted, Reason::Invalid, msg))
            } else if let Some((reason, msg)) = conflicts.remove(&i) {
                Err(refuse(C::Conflicted, reason, format!("{ctx}: {msg}")))
            } else {
                compile_listener(snap, index, gw, l, &ctx, &frontend, opts, &mut out, f)
            };
            match result {
                Ok(_) => {
                    for c in [
                        ok(C::Accepted, Reason::Accepted),
                        ok(C::ResolvedRefs, Reason::ResolvedRefs),
                        failed(C::Conflicted, Reason::NoConflicts, ""),
                    ] {
                        f.report.listener_condition(&obj, &l.name, c);
                    }
                }
                Err(e) => {
                    invalid += 1;
                    f.errors.push(e.message.clone());
                    for c in listener_conditions(e) {
                        f.report.listener_condition(&obj, &l.name, c);
                    }
                }
            }
        }
        if frontend.insecure_fallback() {
            let mut c = ok(
                C::InsecureFrontendValidationMode,
                Reason::ConfigurationChanged,
            );
            c.message = "spec.tls.frontend uses AllowInsecureFallback: HTTPS clients without a \
                         valid certificate are accepted"
                .into();
            f.report.object_condition(&obj, c);
        }
        let c = if invalid == 0 {
            ok(C::Accepted, Reason::Accepted)
        } else {
            let mut c = ok(C::Accepted, Reason::ListenersNotValid);
            c.message = format!("{invalid} listener(s) not valid; the others are served");
            c
        };
        f.report.object_condition(&obj, c);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn compile_listener(
    snap: &Snapshot,
    index: &Index<'_>,
    gw: &Gateway,
    l: &gateway_api::Listener,
    ctx: &str,
    frontend: &Frontend,
    opts: &TranslateOptions,
    out: &mut Gateways,
    f: &mut Findings,
) -> Result<ListenerInfo, ListenerError> {
    if let Some(name) = l.unsupported.keys().next() {
        let msg = format!("{ctx}: field {name:?} is not supported by meshgate");
        return Err(refuse(C::Accepted, Reason::UnsupportedValue, msg));
    }
    let protocol = match l.protocol.as_str() {
        "HTTP" => Protocol::Http,
        "HTTPS" => Protocol::Https,
        "TLS" => Protocol::Tls,
        "TCP" => Protocol::Tcp,
        other => {
            let msg = format!("{ctx}: protocol {other:?} is not one of HTTP, HTTPS, TLS, TCP");
            return Err(refuse(C::Accepted, Reason::UnsupportedProtocol, msg));
        }
    };
    if l.port == 0 {
        let msg = format!("{ctx}: port must be 1-65535");
        return Err(refuse(C::Accepted, Reason::UnsupportedValue, msg));
    }
    let hostname = match &l.hostname {
        // Gateway API: the hostname of a TCP listener is ignored (there is no SNI).
        Some(_) if protocol == Protocol::Tcp => HostPattern::Any,
        Some(h) => validate_hostname(h).map_err(|e| {
            let msg = format!("{ctx}: hostname {h:?}: {e}");
            refuse(C::Accepted, Reason::UnsupportedValue, msg)
        })?,
        None => HostPattern::Any,
    };
    let info = |(allowed_from, kinds): (AllowedFrom, Vec<&'static str>)| ListenerInfo {
        gateway: gw.metadata.key(),
        name: l.name.clone(),
        port: l.port,
        declared_port: l.port,
        protocol,
        hostname: hostname.clone(),
        allowed_from,
        kinds,
    };
    let tls = match listener_tls_for(snap, index, gw, l, ctx, protocol, frontend, opts) {
        Ok(tls) => tls,
        Err(e) if e.kind == C::ResolvedRefs => {
            let served = route_kinds(protocol, tls_mode(l) != Some("Passthrough"));
            if let Ok(allowed) = allowed_routes(gw, l, ctx, served, f) {
                out.unprogrammed.push(std::sync::Arc::new(info(allowed)));
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    // GatewayTLSConfig: certificateRefs are "optional" outside Terminate; unused here.
    if tls_mode(l) == Some("Passthrough")
        && l.tls
            .as_ref()
            .is_some_and(|t| !t.certificate_refs.is_empty())
    {
        f.warnings.push(format!(
            "{ctx}: tls.certificateRefs are not used with mode Passthrough (the backend \
             presents its own certificate)"
        ));
    }
    let served = route_kinds(protocol, tls.is_some());
    let info = info(allowed_routes(gw, l, ctx, served, f)?);
    let (reason, msg) = match out.add(info.clone(), tls) {
        Ok(()) => return Ok(info),
        Err(e) => e,
    };
    Err(refuse(C::Conflicted, reason, format!("{ctx}: {msg}")))
}

impl Gateways {
    /// Adds a listener to the port table: a port holds one protocol (HTTPS and TLS may
    /// share one) and each hostname once. Errors: the reason and why.
    pub fn add(
        &mut self,
        info: ListenerInfo,
        tls: Option<ir::TlsServer>,
    ) -> Result<(), (Reason, String)> {
        let port = self.ports.entry(info.port).or_insert_with(|| ir::Port {
            port: info.port,
            proxy_protocol: None,
            accept_http10: false,
            protocol: info.protocol,
            listeners: Vec::new(),
        });
        if !port.protocol.shares_port_with(info.protocol) {
            let first = port.listeners.first().map_or("", |l| l.name.as_str());
            let msg = format!(
                "port {} is already used with protocol {} (listener {first})",
                info.port,
                port.protocol.name()
            );
            return Err((Reason::ProtocolConflict, msg));
        }
        if let Some(o) = port.listeners.iter().find(|o| o.hostname == info.hostname) {
            let msg = format!(
                "another listener on port {} has the same hostname {} ({})",
                info.port, info.hostname, o.name
            );
            return Err((Reason::HostnameConflict, msg));
        }
        let gateway_api = info
            .kinds
            .iter()
            .any(|k| matches!(*k, "HTTPRoute" | "GRPCRoute"));
        port.listeners.push(ir::Listener {
            name: info.full_name(),
            hostname: info.hostname.clone(),
            protocol: info.protocol,
            tls,
            virtual_hosts: Vec::new(),
            l4_routes: Vec::new(),
            across_hostnames: gateway_api,
        });
        self.listeners.push(std::sync::Arc::new(info));
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn listener_tls_for(
    snap: &Snapshot,
    index: &Index<'_>,
    gw: &Gateway,
    l: &gateway_api::Listener,
    ctx: &str,
    protocol: Protocol,
    frontend: &Frontend,
    opts: &TranslateOptions,
) -> Result<Option<ir::TlsServer>, ListenerError> {
    match protocol {
        Protocol::Https => {}
        Protocol::Tls if tls_mode(l) == Some("Passthrough") => {
            return passthrough_tls(l, ctx);
        }
        Protocol::Tls => {}
        Protocol::Http | Protocol::Tcp => {
            if l.tls.is_some() {
                let msg = format!("{ctx}: tls is only allowed on HTTPS and TLS listeners");
                return Err(refuse(C::Accepted, Reason::UnsupportedValue, msg));
            }
            return Ok(None);
        }
    }
    let validation = match frontend.for_port(l.port) {
        Some(Err(e)) => {
            let msg = format!(
                "{ctx}: client-certificate validation for port {}: {e}",
                l.port
            );
            return Err(refuse(
                C::ResolvedRefs,
                Reason::InvalidCACertificateRef,
                msg,
            ));
        }
        Some(Ok(v)) => Some(v),
        None => None,
    };
    listener_tls(snap, index, gw, l, ctx, validation, opts).map(Some)
}

/// Route kinds an HTTP or HTTPS listener serves.
const HTTP_KINDS: &[&str] = &["HTTPRoute", "GRPCRoute"];

/// The route kinds a listener serves: HTTP ones on HTTP and HTTPS, TLSRoute on TLS (and,
/// once terminated, TCPRoute), TCPRoute on TCP.
fn route_kinds(protocol: Protocol, terminates: bool) -> &'static [&'static str] {
    match protocol {
        Protocol::Http | Protocol::Https => HTTP_KINDS,
        Protocol::Tls if terminates => &["TLSRoute", "TCPRoute"],
        Protocol::Tls => &["TLSRoute"],
        Protocol::Tcp => &["TCPRoute"],
    }
}

/// `tls.mode` as written.
fn tls_mode(l: &gateway_api::Listener) -> Option<&str> {
    l.tls.as_ref().and_then(|t| t.mode.as_deref())
}

/// A TLS listener in Passthrough mode: no certificate, nothing terminated.
fn passthrough_tls(
    l: &gateway_api::Listener,
    ctx: &str,
) -> Result<Option<ir::TlsServer>, ListenerError> {
    let t = l.tls.as_ref().expect("mode was read from tls");
    if let Some(name) = t.unsupported.keys().next() {
        let msg = format!("{ctx}: tls: field {name:?} is not supported by meshgate");
        return Err(refuse(C::Accepted, Reason::UnsupportedValue, msg));
    }
    Ok(None)
}

fn allowed_routes(
    gw: &Gateway,
    l: &gateway_api::Listener,
    ctx: &str,
    served: &[&'static str],
    f: &mut Findings,
) -> Result<(AllowedFrom, Vec<&'static str>), ListenerError> {
    let Some(ar) = &l.allowed_routes else {
        return Ok((AllowedFrom::Same, served.to_vec()));
    };
    let invalid = |msg: String| refuse(C::Accepted, Reason::UnsupportedValue, msg);
    let from = match ar.namespaces.as_ref().and_then(|n| n.from.as_deref()) {
        None | Some("Same") => AllowedFrom::Same,
        Some("All") => AllowedFrom::All,
        Some("Selector") => match ar.namespaces.as_ref().and_then(|n| n.selector.clone()) {
            Some(s) => AllowedFrom::Selector(s),
            None => {
                return Err(invalid(format!(
                    "{ctx}: allowedRoutes.namespaces.selector is required with from: Selector"
                )));
            }
        },
        Some(other) => {
            return Err(invalid(format!(
                "{ctx}: allowedRoutes.namespaces.from {other:?} is not one of Same, All, Selector"
            )));
        }
    };
    if ar.kinds.is_empty() {
        return Ok((from, served.to_vec()));
    }
    let group = super::attachment::GATEWAY_GROUP;
    let mut kinds = Vec::new();
    let mut ignored = Vec::new();
    for (i, k) in ar.kinds.iter().enumerate() {
        let known = served.iter().find(|r| **r == k.kind);
        match known {
            Some(r) if k.group.as_deref().unwrap_or(group) == group => kinds.push(*r),
            _ => {
                ignored.push(format!("kinds[{i}] {:?}", k.kind));
                f.warnings.push(format!(
                    "{ctx}: allowedRoutes.kinds[{i}] {:?} is not a route kind this listener \
                     serves",
                    k.kind
                ));
            }
        }
    }
    if kinds.is_empty() {
        let asked: Vec<&str> = ar.kinds.iter().map(|k| k.kind.as_str()).collect();
        let msg = format!(
            "{ctx}: allowedRoutes.kinds {asked:?}: none is a route kind this listener serves \
             ({})",
            served.join(", ")
        );
        return Err(refuse(C::ResolvedRefs, Reason::InvalidRouteKinds, msg));
    }
    if !ignored.is_empty() {
        // Some kinds valid, some not: the listener serves the valid ones (Accepted and
        // Programmed) but says it ignores the others, as conformance test
        // gateway-invalid-route-kind has it. A False condition is kept over the True one
        // `compile` sets.
        let msg = format!(
            "{ctx}: allowedRoutes.{}: not a route kind this listener serves ({}); ignored",
            ignored.join(", "),
            served.join(", ")
        );
        let obj = ["Gateway ", &gw.metadata.key()].concat();
        let c = failed(C::ResolvedRefs, Reason::InvalidRouteKinds, msg);
        f.report.listener_condition(&obj, &l.name, c);
    }
    Ok((from, kinds))
}

/// Validates a listener or route hostname (RFC 1123, optional leading `*.`).
pub fn validate_hostname(h: &str) -> Result<HostPattern, String> {
    let body = h.strip_prefix("*.").unwrap_or(h);
    if h.is_empty() || h.contains(':') || h.parse::<std::net::IpAddr>().is_ok() {
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

/// Client validation from `spec.tls.frontend`: the default and per-port overrides; an
/// entry that cannot be used is an error for the HTTPS listeners it covers.
#[derive(Debug, Default)]
struct Frontend {
    default: Option<Result<ir::ClientValidation, String>>,
    per_port: BTreeMap<u16, Result<ir::ClientValidation, String>>,
}

impl Frontend {
    /// Whether any port's validation accepts clients without a valid certificate.
    fn insecure_fallback(&self) -> bool {
        self.default.iter().chain(self.per_port.values()).any(|v| {
            v.as_ref()
                .is_ok_and(|v| v.mode == ir::ValidationMode::AllowInsecureFallback)
        })
    }

    fn for_port(&self, port: u16) -> Option<Result<&ir::ClientValidation, &String>> {
        self.per_port
            .get(&port)
            .or(self.default.as_ref())
            .map(|r| r.as_ref())
    }
}

fn frontend_validations(
    snap: &Snapshot,
    index: &Index<'_>,
    gw: &Gateway,
    f: &mut Findings,
) -> Frontend {
    let mut out = Frontend::default();
    let ctx = format!("Gateway {} spec.tls", gw.metadata.key());
    let Some(tls) = &gw.spec.tls else {
        return out;
    };
    f.unsupported(&ctx, &tls.unsupported);
    let Some(frontend) = &tls.frontend else {
        return out;
    };
    f.unsupported(&format!("{ctx}.frontend"), &frontend.unsupported);
    if let Some(d) = &frontend.default {
        out.default = validation(snap, index, gw, d, &format!("{ctx}.frontend.default"));
    }
    for (i, p) in frontend.per_port.iter().enumerate() {
        let pctx = format!("{ctx}.frontend.perPort[{i}]");
        let v = validation(snap, index, gw, &p.tls, &format!("{pctx}.tls"));
        if let Some(v) = v
            && out.per_port.insert(p.port, v).is_some()
        {
            let msg = format!("{pctx}: port {} is listed more than once", p.port);
            out.per_port.insert(p.port, Err(msg));
        }
    }
    if let Some(Err(e)) = &out.default {
        f.errors.push(e.clone());
    }
    out.per_port
        .values()
        .filter_map(|v| v.as_ref().err())
        .for_each(|e| f.errors.push(e.clone()));
    out
}

fn validation(
    snap: &Snapshot,
    index: &Index<'_>,
    gw: &Gateway,
    t: &gateway_api::TlsConfig,
    ctx: &str,
) -> Option<Result<ir::ClientValidation, String>> {
    if let Some(name) = t.unsupported.keys().next() {
        return Some(Err(format!(
            "{ctx}: field {name:?} is not supported by meshgate"
        )));
    }
    let v = t.validation.as_ref()?;
    let ctx = format!("{ctx}.validation");
    if let Some(name) = v.unsupported.keys().next() {
        return Some(Err(format!(
            "{ctx}: field {name:?} is not supported by meshgate"
        )));
    }
    let mode = match v.mode.as_deref() {
        None | Some("AllowValidOnly") => ir::ValidationMode::AllowValidOnly,
        Some("AllowInsecureFallback") => ir::ValidationMode::AllowInsecureFallback,
        Some(other) => {
            return Some(Err(format!(
                "{ctx}.mode {other:?} is not one of AllowValidOnly, AllowInsecureFallback"
            )));
        }
    };
    if v.ca_certificate_refs.is_empty() {
        return Some(Err(format!(
            "{ctx}.caCertificateRefs must name at least one CA"
        )));
    }
    let mut out = ir::ClientValidation {
        ca_refs: Vec::new(),
        ca_certs: Vec::new(),
        mode,
    };
    for (i, r) in v.ca_certificate_refs.iter().enumerate() {
        let rctx = format!("{ctx}.caCertificateRefs[{i}]");
        match ca_bundle(snap, index, gw, r, &rctx) {
            Ok((name, certs)) => {
                out.ca_refs.push(name);
                out.ca_certs.extend(certs);
            }
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(out))
}

fn ca_bundle(
    snap: &Snapshot,
    index: &Index<'_>,
    gw: &Gateway,
    r: &gateway_api::ObjectReference,
    rctx: &str,
) -> Result<(String, Vec<ir::Der>), String> {
    let ns = r.namespace.as_deref().unwrap_or(gw.metadata.ns());
    let rkey = format!("{ns}/{}", r.name);
    let kind = r.kind.as_deref().unwrap_or("ConfigMap");
    if !gateway_may_refer(snap, gw, kind, ns, &r.name) {
        return Err(format!(
            "{rctx}: {kind} {rkey} is in another namespace and no ReferenceGrant there allows it"
        ));
    }
    let pem = match kind {
        "ConfigMap" => {
            let cm = index
                .config_maps
                .get(&rkey)
                .ok_or_else(|| format!("{rctx}: ConfigMap {rkey} not found"))?;
            cm.data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
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
    let certs = parse_chain(&pem).map_err(|e| format!("{rctx}: {kind} {rkey}: ca.crt: {e}"))?;
    Ok((format!("{kind} {rkey}"), certs))
}

/// Whether the Gateway may use a Secret or ConfigMap in `ns` (its own namespace, or a
/// ReferenceGrant there from this Gateway's namespace).
fn gateway_may_refer(snap: &Snapshot, gw: &Gateway, kind: &str, ns: &str, name: &str) -> bool {
    let r = Reference {
        from_group: super::attachment::GATEWAY_GROUP,
        from_kind: "Gateway",
        from_namespace: gw.metadata.ns(),
        to_group: "",
        to_kind: kind,
        to_namespace: ns,
        to_name: name,
    };
    grants::permitted(snap, &r)
}

fn listener_tls(
    snap: &Snapshot,
    index: &Index<'_>,
    gw: &Gateway,
    l: &gateway_api::Listener,
    ctx: &str,
    validation: Option<&ir::ClientValidation>,
    opts: &TranslateOptions,
) -> Result<ir::TlsServer, ListenerError> {
    let invalid = |m: String| refuse(C::Accepted, Reason::UnsupportedValue, m);
    let bad_ref = |m: String| refuse(C::ResolvedRefs, Reason::InvalidCertificateRef, m);
    let Some(t) = &l.tls else {
        return Err(invalid(format!(
            "{ctx}: {} listener needs tls.certificateRefs",
            l.protocol
        )));
    };
    if t.unsupported.contains_key("frontendValidation") {
        return Err(invalid(format!(
            "{ctx}: tls.frontendValidation is not part of Gateway API v1.6; client-certificate \
             validation is configured per Gateway in spec.tls.frontend (default or perPort)"
        )));
    }
    if let Some(name) = t.unsupported.keys().next() {
        return Err(invalid(format!(
            "{ctx}: tls: field {name:?} is not supported by meshgate"
        )));
    }
    match t.mode.as_deref().unwrap_or("Terminate") {
        "Terminate" => {}
        "Passthrough" => {
            return Err(invalid(format!(
                "{ctx}: tls.mode Passthrough needs protocol TLS (an HTTPS listener terminates)"
            )));
        }
        other => {
            return Err(invalid(format!(
                "{ctx}: tls.mode {other:?} is not one of Terminate, Passthrough"
            )));
        }
    }
    let Some(cref) = t.certificate_refs.first() else {
        return Err(invalid(format!(
            "{ctx}: {} listener needs tls.certificateRefs",
            l.protocol
        )));
    };
    let kind = cref.kind.as_deref().unwrap_or("Secret");
    if kind != "Secret" || cref.group.as_deref().is_some_and(|g| !g.is_empty()) {
        return Err(bad_ref(format!(
            "{ctx}: tls.certificateRefs[0]: kind {kind:?} is not supported (only core Secret)"
        )));
    }
    let ns = cref.namespace.as_deref().unwrap_or(gw.metadata.ns());
    let skey = format!("{ns}/{}", cref.name);
    if !gateway_may_refer(snap, gw, "Secret", ns, &cref.name) {
        return Err(refuse(
            C::ResolvedRefs,
            Reason::RefNotPermitted,
            format!(
                "{ctx}: tls.certificateRefs[0]: Secret {skey} is in another namespace and no \
                 ReferenceGrant there allows it"
            ),
        ));
    }
    let secret = index.secrets.get(&skey).ok_or_else(|| {
        bad_ref(format!(
            "{ctx}: tls.certificateRefs[0]: Secret {skey} not found"
        ))
    })?;
    let sctx = format!("{ctx}: tls.certificateRefs[0] Secret {skey}");
    let field = |k: &str| secret_value(secret, k).map_err(|e| bad_ref(format!("{sctx}: {e}")));
    let (crt, key) = (field("tls.crt")?, field("tls.key")?);
    let cert_chain = parse_chain(&crt).map_err(|e| bad_ref(format!("{sctx}: tls.crt: {e}")))?;
    let key = parse_key(&key).map_err(|e| bad_ref(format!("{sctx}: tls.key: {e}")))?;
    let min_version = match t.options.get(MIN_VERSION_OPTION) {
        Some(v) => v
            .parse()
            .map_err(|e| invalid(format!("{ctx}: tls.options[{MIN_VERSION_OPTION:?}]: {e}")))?,
        None => opts.default_min_tls_version,
    };
    Ok(ir::TlsServer {
        certificate_ref: format!("Secret {skey}"),
        cert_chain,
        key,
        client_validation: validation.cloned(),
        min_version,
    })
}

/// A Secret's value by key: `stringData` first, then `data` (bytes).
pub fn secret_value(s: &crate::api::Secret, key: &str) -> Result<Vec<u8>, String> {
    if let Some(v) = s.string_data.as_ref().and_then(|d| d.get(key)) {
        return Ok(v.as_bytes().to_vec());
    }
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .ok_or_else(|| format!("has no {key}"))
}

/// Parses a PEM certificate chain (leaf first) into DER.
pub fn parse_chain(pem: &[u8]) -> Result<Vec<ir::Der>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let chain = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| ir::Der(c.to_vec())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM certificate: {e}"))?;
    if chain.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(chain)
}

/// Parses a PEM private key (PKCS#8, PKCS#1 or SEC1) into DER.
pub fn parse_key(pem: &[u8]) -> Result<ir::PrivateKey, String> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem)
        .map(ir::PrivateKey)
        .map_err(|e| format!("invalid PEM private key: {e}"))
}

#[cfg(test)]
mod tests {
    use crate::providers::file::parse_str;
    use crate::translate::status::{ConditionType as C, Reason};

    #[test]
    fn a_listener_with_valid_and_invalid_route_kinds_serves_the_valid_ones() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
            metadata: {name: gw, namespace: default}\n\
            spec: {listeners: [{name: http, port: 8080, protocol: HTTP, \
            allowedRoutes: {kinds: [{kind: InvalidRoute}, {kind: HTTPRoute}]}}]}\n---\n\
            apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
            metadata: {name: web, namespace: default}\nspec: {parentRefs: [{name: gw}]}\n";
        let out = super::super::translate(&parse_str(yaml).unwrap(), &Default::default());
        let gw = &out.status.objects["Gateway default/gw"];
        let l = &gw.listeners["http"];
        let cond = |k| l.conditions.iter().find(|c| c.kind == k).unwrap();
        let resolved = cond(C::ResolvedRefs);
        assert_eq!(
            (resolved.status, resolved.reason),
            (false, Reason::InvalidRouteKinds)
        );
        // Conformance (gateway-supported-and-invalid-route-kind): the listener and its
        // Gateway stay accepted, and HTTPRoutes attach.
        let accepted = cond(C::Accepted);
        assert_eq!((accepted.status, accepted.reason), (true, Reason::Accepted));
        assert!(!l.conditions.iter().any(|c| c.kind == C::Programmed));
        let gw_accepted = gw
            .conditions
            .iter()
            .find(|c| c.kind == C::Accepted)
            .unwrap();
        assert_eq!(
            (gw_accepted.status, gw_accepted.reason),
            (true, Reason::Accepted)
        );
        assert_eq!(l.attached_routes, 1);
        assert_eq!(out.config.ports[&8080].listeners[0].virtual_hosts.len(), 1);
    }
}
