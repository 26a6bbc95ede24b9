//! Istio Gateways -> listeners. Each (server, host) is one listener named
//! `<namespace>/<gateway>/<server name or servers[i]>/<host>`, so Istio's per-server
//! TLS (one server SIMPLE, another MUTUAL on the same port) keeps its own handshake.

use std::collections::BTreeMap;

use super::gateway_name;
use crate::api::istio_gateway::{IstioGateway, Server, ServerTlsSettings};
use crate::api::{ObjectKey, Snapshot};
use crate::ir::{self, HostPattern, Protocol};
use crate::translate::listeners::{
    AllowedFrom, Gateways, ListenerInfo, parse_chain, parse_key, secret_value, validate_hostname,
};
use crate::translate::{Findings, Index, TranslateOptions};

/// The route kind Istio listeners accept.
pub const KIND: &str = "VirtualService";

/// Istio listeners that answer every request with a redirect to https, by full name.
#[derive(Debug, Default)]
pub struct Redirects(pub Vec<ListenerInfo>);

/// Compiles the Istio Gateways that select this pod.
pub fn compile(
    snap: &Snapshot,
    index: &Index<'_>,
    opts: &TranslateOptions,
    out: &mut Gateways,
    f: &mut Findings,
) -> Redirects {
    let mut redirects = Redirects::default();
    let mut gateways: Vec<&IstioGateway> = snap.istio_gateways.iter().collect();
    gateways.sort_by_key(|g| (g.metadata.creation_timestamp.clone(), g.metadata.key()));
    for gw in gateways {
        let obj = gateway_name(&gw.metadata.key());
        f.unsupported(&format!("{obj} spec"), &gw.spec.unsupported);
        if !selects(&gw.spec.selector, &opts.pod_labels) {
            f.warnings.push(format!(
                "{obj}: selector {:?} does not match this pod's labels (--pod-labels); not served",
                gw.spec.selector
            ));
            continue;
        }
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let ctx = format!("{obj} servers[{i}]");
            let before = f.errors.len();
            f.unsupported(&ctx, &server.unsupported);
            f.unsupported(&format!("{ctx}.port"), &server.port.unsupported);
            if f.errors.len() > before {
                continue;
            }
            if let Err(e) = compile_server(snap, index, opts, gw, i, server, out, &mut redirects) {
                f.errors.push(format!("{ctx}: {e}"));
            }
        }
    }
    redirects
}

/// Kubernetes selector semantics on a plain map: every label must match; an empty
/// selector selects every gateway pod.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What a server's TLS settings make of it.
enum ServerTls {
    /// Plain HTTP or TCP.
    None,
    /// HTTP answering with a redirect to https.
    Redirect,
    /// TLS passed through.
    Passthrough,
    /// TLS terminated with this certificate.
    Terminate(Box<ir::TlsServer>),
}

#[allow(clippy::too_many_arguments)]
fn compile_server(
    snap: &Snapshot,
    index: &Index<'_>,
    opts: &TranslateOptions,
    gw: &IstioGateway,
    i: usize,
    server: &Server,
    out: &mut Gateways,
    redirects: &mut Redirects,
) -> Result<(), String> {
    let protocol = match server.port.protocol.to_ascii_uppercase().as_str() {
        "HTTP" | "HTTP2" | "GRPC" => Protocol::Http,
        "HTTPS" => Protocol::Https,
        "TLS" => Protocol::Tls,
        "TCP" => Protocol::Tcp,
        other => {
            return Err(format!(
                "port.protocol {other:?} is not one of HTTP, HTTP2, GRPC, HTTPS, TLS, TCP"
            ));
        }
    };
    let number = u16::try_from(server.port.number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("port.number {} is not 1-65535", server.port.number))?;
    let port = target_port(snap, opts, number);
    let tls = server_tls(index, gw, server, protocol, opts)?;
    let protocol = match (&tls, protocol) {
        // Istio treats an HTTPS server in PASSTHROUGH mode as a TLS one.
        (ServerTls::Passthrough, Protocol::Https) => Protocol::Tls,
        (_, p) => p,
    };
    if server.hosts.is_empty() {
        return Err("hosts is empty".to_string());
    }
    let server_name = server
        .name
        .clone()
        .unwrap_or_else(|| format!("servers[{i}]"));
    for (hi, h) in server.hosts.iter().enumerate() {
        let (allowed_from, host) =
            split_host(h, gw.metadata.ns()).map_err(|e| format!("hosts[{hi}] {h:?}: {e}"))?;
        let hostname = if protocol == Protocol::Tcp {
            HostPattern::Any
        } else {
            host
        };
        let info = ListenerInfo {
            gateway: gw.metadata.key(),
            name: format!("{server_name}/{hostname}"),
            port,
            declared_port: number,
            protocol,
            hostname,
            allowed_from,
            kinds: if matches!(tls, ServerTls::Redirect) {
                vec![]
            } else {
                vec![KIND]
            },
        };
        let terminate = match &tls {
            ServerTls::Terminate(t) => Some((**t).clone()),
            _ => None,
        };
        if let Err((reason, msg)) = out.add(info.clone(), terminate) {
            return Err(format!("hosts[{hi}] {h:?}: conflicted ({reason:?}): {msg}"));
        }
        if matches!(tls, ServerTls::Redirect) {
            redirects.0.push(info);
        }
    }
    Ok(())
}

/// Istio listens on the gateway Service's `targetPort` for a server's port number when a
/// Service selecting this pod exposes that port; else on the number itself.
fn target_port(snap: &Snapshot, opts: &TranslateOptions, number: u16) -> u16 {
    for svc in &snap.services {
        let Some(spec) = &svc.spec else { continue };
        let selector = spec.selector.clone().unwrap_or_default();
        if selector.is_empty() || !selects(&selector, &opts.pod_labels) {
            continue;
        }
        for p in spec.ports.iter().flatten() {
            if p.port == i32::from(number) {
                use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
                if let Some(IntOrString::Int(t)) = p.target_port
                    && let Ok(t) = u16::try_from(t)
                {
                    return t;
                }
            }
        }
    }
    number
}

/// `namespace/host` -> where VirtualServices may come from, and the host.
fn split_host(h: &str, gw_ns: &str) -> Result<(AllowedFrom, HostPattern), String> {
    let (from, host) = match h.split_once('/') {
        Some(("*", host)) => (AllowedFrom::All, host),
        Some((".", host)) => (AllowedFrom::Namespace(gw_ns.to_string()), host),
        Some((ns, host)) => (AllowedFrom::Namespace(ns.to_string()), host),
        None => (AllowedFrom::All, h),
    };
    if host == "*" {
        return Ok((from, HostPattern::Any));
    }
    Ok((from, validate_hostname(host)?))
}

/// The server's TLS: certificate, client validation, minimum version.
fn server_tls(
    index: &Index<'_>,
    gw: &IstioGateway,
    server: &Server,
    protocol: Protocol,
    opts: &TranslateOptions,
) -> Result<ServerTls, String> {
    let Some(t) = &server.tls else {
        return match protocol {
            Protocol::Https | Protocol::Tls => Err(format!(
                "tls is required on a {} server",
                server.port.protocol
            )),
            _ => Ok(ServerTls::None),
        };
    };
    if let Some(name) = t.unsupported.keys().next() {
        return Err(format!("tls.{name} is not supported by meshgate"));
    }
    if !t.cipher_suites.is_empty() {
        return Err(
            "tls.cipherSuites is not supported by meshgate (rustls's suites are used)".into(),
        );
    }
    match (protocol, t.mode.as_deref().unwrap_or("PASSTHROUGH")) {
        (Protocol::Http, _) if t.https_redirect => Ok(ServerTls::Redirect),
        (Protocol::Http | Protocol::Tcp, _) => {
            Err("tls is only allowed on HTTPS and TLS servers (or httpsRedirect on HTTP)".into())
        }
        (_, "PASSTHROUGH") => Ok(ServerTls::Passthrough),
        (_, mode @ ("SIMPLE" | "MUTUAL")) => terminate(index, gw, t, mode == "MUTUAL", opts)
            .map(|s| ServerTls::Terminate(Box::new(s))),
        (_, other) => Err(format!(
            "tls.mode {other:?} is not one of SIMPLE, MUTUAL, PASSTHROUGH (ISTIO_MUTUAL and \
             OPTIONAL_MUTUAL are not supported)"
        )),
    }
}

/// A SIMPLE or MUTUAL server's certificate from `credentialName` (a Secret in the
/// Gateway's namespace) and, for MUTUAL, the client CA from its `ca.crt` or from the
/// `<credentialName>-cacert` Secret, as Istio reads them.
fn terminate(
    index: &Index<'_>,
    gw: &IstioGateway,
    t: &ServerTlsSettings,
    mutual: bool,
    opts: &TranslateOptions,
) -> Result<ir::TlsServer, String> {
    let name = t
        .credential_name
        .as_deref()
        .ok_or("tls.credentialName is required with SIMPLE and MUTUAL")?;
    // Istio reads credentialName Secrets from the gateway workload's namespace.
    let ns = opts.pod_namespace.as_deref().unwrap_or(gw.metadata.ns());
    let key = format!("{ns}/{name}");
    let secret = index.secrets.get(&key).ok_or_else(|| {
        format!("tls.credentialName: Secret {key} not found (Secrets are read from the gateway pod's namespace, --pod-namespace)")
    })?;
    let sctx = format!("tls.credentialName Secret {key}");
    let crt = secret_value(secret, "tls.crt").map_err(|e| format!("{sctx}: {e}"))?;
    let pem_key = secret_value(secret, "tls.key").map_err(|e| format!("{sctx}: {e}"))?;
    let cert_chain = parse_chain(&crt).map_err(|e| format!("{sctx}: tls.crt: {e}"))?;
    let key_der = parse_key(&pem_key).map_err(|e| format!("{sctx}: tls.key: {e}"))?;
    let client_validation = if mutual {
        Some(client_ca(index, ns, name)?)
    } else {
        None
    };
    let min_version = match &t.min_protocol_version {
        None => opts.default_min_tls_version,
        Some(v) if v == "TLS_AUTO" => opts.default_min_tls_version,
        Some(v) => v
            .parse()
            .map_err(|e| format!("tls.minProtocolVersion {v:?}: {e}"))?,
    };
    Ok(ir::TlsServer {
        certificate_ref: format!("Secret {key}"),
        cert_chain,
        key: key_der,
        client_validation,
        min_version,
    })
}

fn client_ca(index: &Index<'_>, ns: &str, name: &str) -> Result<ir::ClientValidation, String> {
    let own = index.secrets.get(&format!("{ns}/{name}"));
    let separate = format!("{ns}/{name}-cacert");
    let (from, pem) = match own.and_then(|s| secret_value(s, "ca.crt").ok()) {
        Some(pem) => (format!("Secret {ns}/{name}"), pem),
        None => {
            let s = index.secrets.get(&separate).ok_or_else(|| {
                format!(
                    "MUTUAL needs the client CA: Secret {ns}/{name} has no ca.crt and Secret \
                     {separate} was not found"
                )
            })?;
            let pem = secret_value(s, "ca.crt")
                .or_else(|_| secret_value(s, "cacert"))
                .map_err(|e| format!("Secret {separate}: {e}"))?;
            (format!("Secret {separate}"), pem)
        }
    };
    let ca_certs = parse_chain(&pem).map_err(|e| format!("{from}: ca.crt: {e}"))?;
    Ok(ir::ClientValidation {
        ca_refs: vec![from],
        ca_certs,
        mode: ir::ValidationMode::AllowValidOnly,
    })
}
