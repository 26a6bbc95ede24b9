//! BackendTLSPolicy: which Services' pods are reached over TLS, and how their certificates
//! are validated. Precedence (DESIGN): DestinationRule tls > BackendTLSPolicy >
//! `meshgate.io/*` annotations > auto (tlsMode label).

use std::sync::Arc;

use super::listeners::parse_chain;
use super::{Findings, Index};
use crate::api::gateway_api::BackendTlsPolicy;
use crate::api::{ObjectKey, Snapshot};
use crate::ir::{SanMatch, TlsTarget};

/// The policy for a Service port, if one targets it: the TLS target, or why the policy
/// cannot be used (the backend then answers 500).
pub fn for_service(
    snap: &Snapshot,
    index: &Index<'_>,
    ns: &str,
    service: &str,
    port_name: &str,
    http2: bool,
) -> Option<Result<Arc<TlsTarget>, String>> {
    let targets = |p: &&BackendTlsPolicy| {
        p.metadata.ns() == ns
            && p.spec.target_refs.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Service"
                    && t.name == service
                    && t.section_name.as_deref().is_none_or(|s| s == port_name)
            })
    };
    // Oldest first, then by name, as Gateway API's policy conflict rules say.
    let policy = snap
        .backend_tls_policies
        .iter()
        .filter(targets)
        .min_by_key(|p| (p.metadata.creation_timestamp.clone(), p.metadata.key()))?;
    Some(target(index, policy, http2))
}

fn target(index: &Index<'_>, p: &BackendTlsPolicy, http2: bool) -> Result<Arc<TlsTarget>, String> {
    let ctx = format!("BackendTLSPolicy {}", p.metadata.key());
    if let Some(name) = p.spec.unsupported.keys().next() {
        return Err(format!(
            "{ctx}: field {name:?} is not supported by meshgate"
        ));
    }
    let v = &p.spec.validation;
    let system = match v.well_known_ca_certificates.as_deref() {
        None => false,
        Some("System") => true,
        Some(other) => {
            return Err(format!(
                "{ctx}: validation.wellKnownCACertificates {other:?} is not System"
            ));
        }
    };
    if system != v.ca_certificate_refs.is_empty() {
        return Err(format!(
            "{ctx}: validation needs exactly one of caCertificateRefs and wellKnownCACertificates"
        ));
    }
    if super::listeners::validate_hostname(&v.hostname).is_err() || v.hostname.starts_with('*') {
        return Err(format!(
            "{ctx}: validation.hostname {:?} is not a DNS name",
            v.hostname
        ));
    }
    let mut ca_certs = Vec::new();
    for (i, r) in v.ca_certificate_refs.iter().enumerate() {
        let rctx = format!("{ctx} validation.caCertificateRefs[{i}]");
        let kind = r.kind.as_deref().unwrap_or("ConfigMap");
        if kind != "ConfigMap" {
            return Err(format!("{rctx}: kind {kind:?} is not ConfigMap"));
        }
        let key = format!("{}/{}", p.metadata.ns(), r.name);
        let pem = index
            .config_maps
            .get(&key)
            .and_then(|cm| cm.data.as_ref())
            .and_then(|d| d.get("ca.crt"))
            .ok_or_else(|| format!("{rctx}: ConfigMap {key} with ca.crt not found"))?;
        ca_certs.extend(parse_chain(pem.as_bytes()).map_err(|e| format!("{rctx}: {e}"))?);
    }
    let mut sans = Vec::new();
    for (i, s) in v.subject_alt_names.iter().enumerate() {
        let san = match (s.kind.as_str(), &s.hostname, &s.uri) {
            ("Hostname", Some(h), None) => SanMatch::Hostname(h.to_ascii_lowercase()),
            ("URI", None, Some(u)) => SanMatch::Uri(u.clone()),
            _ => {
                return Err(format!(
                    "{ctx}: validation.subjectAltNames[{i}]: type Hostname with hostname, or URI with uri"
                ));
            }
        };
        sans.push(san);
    }
    Ok(Arc::new(TlsTarget {
        policy: format!("BackendTLSPolicy {}", p.metadata.key()),
        hostname: v.hostname.to_ascii_lowercase(),
        ca_certs,
        system_roots: system,
        subject_alt_names: sans,
        http2,
        client_cert: None,
        insecure_skip_verify: false,
        unavailable: None,
    }))
}

/// Reports policies whose fields cannot be used (the backends they target answer 500).
pub fn validate(snap: &Snapshot, index: &Index<'_>, f: &mut Findings) {
    for p in &snap.backend_tls_policies {
        if let Err(e) = target(index, p, false) {
            f.errors.push(e);
        }
    }
}
