//! A DestinationRule's `tls` in `SIMPLE` or `MUTUAL` mode -> the [`TlsTarget`] its
//! endpoints are reached with (the same target, pool and rustls config path as a
//! BackendTLSPolicy's).
//!
//! Credentials are read as Istio reads them for gateways: `credentialName` names a Secret
//! in the gateway pod's namespace (`--pod-namespace`) holding `tls.crt`/`tls.key`/`ca.crt`
//! (type `kubernetes.io/tls`) or `cert`/`key`/`cacert` (generic); the CA may instead sit
//! in a Secret named `<credentialName>-cacert`. `caCertificates`, `clientCertificate` and
//! `privateKey` are files in the gateway pod, read when the configuration is translated.
//! Without any CA the server is verified against the system's CAs (Istio's
//! `VERIFY_CERTIFICATE_AT_CLIENT`), unless `insecureSkipVerify`.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::listeners::{parse_chain, parse_key, secret_value};
use super::super::{Findings, TranslateOptions};
use crate::api::istio::ClientTlsSettings;
use crate::api::{ObjectKey, Secret};
use crate::ir::{ClientCert, Der, SanMatch, TlsTarget};

/// Where a rule's credentials are looked up.
pub struct CredentialSource<'a> {
    /// Secrets by `namespace/name`.
    pub secrets: &'a HashMap<String, &'a Secret>,
    /// Command-line options (`--pod-namespace`).
    pub opts: &'a TranslateOptions,
}

/// What a Secret (or the files) gave: CAs and a client certificate, each if present.
#[derive(Default)]
struct Credentials {
    ca: Option<Vec<Der>>,
    client: Option<ClientCert>,
}

/// The TLS target of a `SIMPLE` (`mutual` false) or `MUTUAL` rule; errors name `ctx`
/// (`DestinationRule ns/name trafficPolicy.tls`) and the field.
pub fn origination(
    t: &ClientTlsSettings,
    mutual: bool,
    rule: &crate::api::istio::DestinationRule,
    ctx: &str,
    src: &CredentialSource<'_>,
    f: &mut Findings,
) -> Option<Arc<TlsTarget>> {
    let files = [&t.ca_certificates, &t.client_certificate, &t.private_key];
    if t.credential_name.is_some() && files.iter().any(|v| v.is_some()) {
        f.errors.push(format!(
            "{ctx}: credentialName cannot be combined with caCertificates, clientCertificate or privateKey"
        ));
        return None;
    }
    // A mistake in the rule itself is refused; credentials that cannot be had are not.
    if mutual
        && t.credential_name.is_none()
        && (t.client_certificate.is_none() || t.private_key.is_none())
    {
        f.errors.push(format!(
            "{ctx}: MUTUAL needs a client certificate: credentialName, or clientCertificate and privateKey"
        ));
        return None;
    }
    let creds = match &t.credential_name {
        Some(name) => from_secret(name, rule, src, mutual),
        None => from_files(t, mutual),
    };
    // Credentials that cannot be had (yet: a Secret cert-manager has not issued) fail the
    // backend's connections closed; the rest of the rule still applies.
    let (creds, unavailable) = match creds {
        Ok(c) => (c, None),
        Err(e) => {
            f.warnings.push(format!(
                "{ctx}: {e}; connections to the host fail until it is fixed"
            ));
            (Credentials::default(), Some(format!("{ctx}: {e}")))
        }
    };
    let sni = t.sni.clone().unwrap_or_default().to_ascii_lowercase();
    if !sni.is_empty() && rustls_pki_types::ServerName::try_from(sni.as_str()).is_err() {
        f.errors
            .push(format!("{ctx}: sni {sni:?} is not a DNS name"));
        return None;
    }
    let insecure = t.insecure_skip_verify == Some(true);
    Some(Arc::new(TlsTarget {
        policy: format!("DestinationRule {}", rule.metadata.key()),
        hostname: sni,
        system_roots: creds.ca.is_none() && !insecure,
        ca_certs: creds.ca.unwrap_or_default(),
        subject_alt_names: t.subject_alt_names.iter().map(|s| san(s)).collect(),
        http2: false,
        client_cert: creds.client,
        insecure_skip_verify: insecure,
        unavailable,
    }))
}

/// Istio compares a subjectAltName with the certificate's DNS and URI names; a name
/// with a scheme can only be a URI.
fn san(s: &str) -> SanMatch {
    if s.contains("://") {
        SanMatch::Uri(s.to_string())
    } else {
        SanMatch::Hostname(s.to_ascii_lowercase())
    }
}

/// Credentials from `credentialName`, in the gateway pod's namespace (the rule's own
/// when `--pod-namespace` is not given).
fn from_secret(
    name: &str,
    rule: &crate::api::istio::DestinationRule,
    src: &CredentialSource<'_>,
    mutual: bool,
) -> Result<Credentials, String> {
    let ns = src
        .opts
        .pod_namespace
        .as_deref()
        .unwrap_or(rule.metadata.ns());
    let key = format!("{ns}/{name}");
    let secret = src.secrets.get(&key).ok_or_else(|| {
        format!(
            "credentialName: Secret {key} not found (Secrets are read from the gateway pod's namespace, --pod-namespace)"
        )
    })?;
    let sctx = format!("credentialName Secret {key}");
    let pair = [("tls.crt", "tls.key"), ("cert", "key")]
        .into_iter()
        .find(|(c, k)| secret_value(secret, c).is_ok() && secret_value(secret, k).is_ok());
    let client = match pair {
        Some((c, k)) if mutual => {
            let chain = secret_value(secret, c).and_then(|p| parse_chain(&p));
            let chain = chain.map_err(|e| format!("{sctx}: {c}: {e}"))?;
            let pem = secret_value(secret, k)?;
            let key_der = parse_key(&pem).map_err(|e| format!("{sctx}: {k}: {e}"))?;
            Some(ClientCert {
                source: format!("Secret {key}"),
                chain,
                key: key_der,
            })
        }
        None if mutual => {
            return Err(format!(
                "{sctx}: MUTUAL needs a client certificate: tls.crt and tls.key, or cert and key"
            ));
        }
        _ => None,
    };
    let ca = match ca_of(secret) {
        Some(pem) => Some(parse_chain(&pem).map_err(|e| format!("{sctx}: CA: {e}"))?),
        None => match src.secrets.get(&format!("{key}-cacert")) {
            Some(s) => {
                let pem = ca_of(s).ok_or_else(|| {
                    format!("credentialName Secret {key}-cacert has no ca.crt or cacert")
                })?;
                Some(parse_chain(&pem).map_err(|e| format!("Secret {key}-cacert: CA: {e}"))?)
            }
            None => None,
        },
    };
    Ok(Credentials { ca, client })
}

fn ca_of(s: &Secret) -> Option<Vec<u8>> {
    secret_value(s, "ca.crt")
        .or_else(|_| secret_value(s, "cacert"))
        .ok()
}

/// Credentials from files in the gateway pod.
fn from_files(t: &ClientTlsSettings, mutual: bool) -> Result<Credentials, String> {
    let read = |field: &str, path: &str| {
        std::fs::read(path).map_err(|e| format!("{field} {path:?} cannot be read: {e}"))
    };
    let ca = match &t.ca_certificates {
        Some(p) => Some(
            parse_chain(&read("caCertificates", p)?)
                .map_err(|e| format!("caCertificates {p:?}: {e}"))?,
        ),
        None => None,
    };
    let client = match (&t.client_certificate, &t.private_key) {
        (Some(c), Some(k)) if mutual => Some(ClientCert {
            source: format!("file {c}"),
            chain: parse_chain(&read("clientCertificate", c)?)
                .map_err(|e| format!("clientCertificate {c:?}: {e}"))?,
            key: parse_key(&read("privateKey", k)?)
                .map_err(|e| format!("privateKey {k:?}: {e}"))?,
        }),
        _ => None,
    };
    Ok(Credentials { ca, client })
}
