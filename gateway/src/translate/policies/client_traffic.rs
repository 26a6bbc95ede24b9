//! Envoy Gateway ClientTrafficPolicy -> the PROXY protocol and HTTP/1.0 (`http1.http10`)
//! on the ports of the targeted Gateway API Gateway (or of one listener, by
//! `sectionName`). The header comes before TLS and HTTP, and the HTTP/1 codec is the
//! connection's, so both are properties of the port: a policy on one listener applies to
//! every listener sharing its port. Among PROXY protocol policies on the same port the
//! oldest wins; the others get a warning. Other fields are reported by name and leave the
//! policy out.

use super::super::Findings;
use super::super::listeners::Gateways;
use crate::api::envoy_gateway::{ClientTrafficPolicy, ListenerTargetReference};
use crate::api::{ObjectKey, Snapshot};
use crate::ir::ProxyProtocol;

/// Sets `proxy_protocol` on the ports the valid policies target.
pub fn apply(snap: &Snapshot, gateways: &mut Gateways, f: &mut Findings) {
    let mut policies: Vec<&ClientTrafficPolicy> = snap.client_traffic_policies.iter().collect();
    policies.sort_by_key(|p| (p.metadata.creation_timestamp.clone(), p.metadata.key()));
    for p in policies {
        let Some((settings, targets)) = compile(p, f) else {
            continue;
        };
        for port in ports(p, &targets, gateways, f) {
            let Some(entry) = gateways.ports.get_mut(&port) else {
                continue;
            };
            entry.accept_http10 |= settings.http10;
            let Some(pp) = &settings.proxy_protocol else {
                continue;
            };
            match &entry.proxy_protocol {
                Some(older) if older.source != pp.source => f.warnings.push(format!(
                    "{}: port {port} already has the PROXY protocol from the older {}",
                    pp.source, older.source
                )),
                _ => entry.proxy_protocol = Some(pp.clone()),
            }
        }
    }
}

/// What a valid policy sets on its ports.
struct Settings {
    proxy_protocol: Option<ProxyProtocol>,
    http10: bool,
}

fn compile(
    p: &ClientTrafficPolicy,
    f: &mut Findings,
) -> Option<(Settings, Vec<ListenerTargetReference>)> {
    let obj = format!("ClientTrafficPolicy {}", p.metadata.key());
    let before = f.errors.len();
    f.unsupported(&obj, &p.spec.unsupported);
    let optional = match (&p.spec.proxy_protocol, p.spec.enable_proxy_protocol) {
        (Some(pp), _) => {
            f.unsupported(&format!("{obj} proxyProtocol"), &pp.unsupported);
            Some(pp.optional.unwrap_or(false))
        }
        (None, Some(true)) => Some(false),
        (None, _) => None,
    };
    let http10 = p.spec.http1.as_ref().is_some_and(|h| {
        f.unsupported(&format!("{obj} http1"), &h.unsupported);
        h.http10.as_ref().is_some_and(|h10| {
            f.unsupported(&format!("{obj} http1.http10"), &h10.unsupported);
            if h10.use_default_host == Some(true) {
                f.errors.push(format!(
                    "{obj} http1.http10.useDefaultHost: true is not supported by meshgate"
                ));
            }
            true
        })
    });
    let targets: Vec<_> = p
        .spec
        .target_refs
        .iter()
        .chain(&p.spec.target_ref)
        .cloned()
        .collect();
    if targets.is_empty() {
        f.errors.push(format!("{obj}: targetRefs is empty"));
    }
    for (i, t) in targets.iter().enumerate() {
        if t.kind != "Gateway" || !matches!(t.group.as_str(), "" | "gateway.networking.k8s.io") {
            f.errors.push(format!(
                "{obj} targetRefs[{i}]: {}/{} is not a Gateway (gateway.networking.k8s.io)",
                t.group, t.kind
            ));
        }
    }
    if f.errors.len() > before {
        return None;
    }
    if optional.is_none() && !http10 {
        return None;
    }
    let proxy_protocol = optional.map(|optional| ProxyProtocol {
        source: obj,
        optional,
    });
    Some((
        Settings {
            proxy_protocol,
            http10,
        },
        targets,
    ))
}

/// The ports of the targeted Gateways (or listeners) that this pod serves.
fn ports(
    p: &ClientTrafficPolicy,
    targets: &[ListenerTargetReference],
    gateways: &Gateways,
    f: &mut Findings,
) -> Vec<u16> {
    let ns = p.metadata.ns();
    let mut out = Vec::new();
    for t in targets {
        let gw = format!("{ns}/{}", t.name);
        let matching: Vec<u16> = gateways
            .listeners
            .iter()
            .filter(|l| l.gateway == gw)
            .filter(|l| t.section_name.as_ref().is_none_or(|s| *s == l.name))
            .map(|l| l.port)
            .collect();
        if matching.is_empty() && gateways.names.contains(&gw) {
            f.warnings.push(format!(
                "ClientTrafficPolicy {}: Gateway {gw} has no listener {:?}",
                p.metadata.key(),
                t.section_name.as_deref().unwrap_or("")
            ));
        }
        out.extend(matching);
    }
    out.sort_unstable();
    out.dedup();
    out
}
