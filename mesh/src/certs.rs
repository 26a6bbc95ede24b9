//! Workload certificates: parsing, validation, and the bundle every program shares.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use crate::identity::Identity;

/// Why a certificate, key or chain was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no PEM certificate found in {0}")]
    NoCertificate(&'static str),
    #[error("malformed PEM in {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("malformed certificate {index} in {what}: {reason}")]
    X509 {
        what: &'static str,
        index: usize,
        reason: String,
    },
    #[error("malformed private key: {0}")]
    Key(String),
    #[error("leaf certificate has no SPIFFE URI SAN")]
    NoSpiffeId,
    #[error("leaf certificate has an invalid SPIFFE URI SAN: {0}")]
    BadSpiffeId(String),
    #[error("certificate is for {got}, expected {expected}")]
    WrongIdentity { expected: String, got: String },
    #[error("leaf certificate's public key does not match the private key")]
    KeyMismatch,
    #[error("certificate {index} in chain is not signed by certificate {next}")]
    BrokenChain { index: usize, next: usize },
    #[error("chain does not end at a trusted root (tail subject {0:?})")]
    UntrustedRoot(String),
    #[error("certificate is not valid until {0}")]
    NotYetValid(String),
    #[error("certificate expired at {0}")]
    Expired(String),
}

impl CertError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            CertError::NoCertificate(_) | CertError::Pem { .. } | CertError::X509 { .. } => {
                "malformed_certificate"
            }
            CertError::Key(_) => "malformed_key",
            CertError::NoSpiffeId | CertError::BadSpiffeId(_) => "bad_identity",
            CertError::WrongIdentity { .. } => "wrong_identity",
            CertError::KeyMismatch => "key_mismatch",
            CertError::BrokenChain { .. } | CertError::UntrustedRoot(_) => "untrusted_chain",
            CertError::NotYetValid(_) | CertError::Expired(_) => "outside_validity",
        }
    }
}

/// Parses every certificate in a PEM text; `what` names the source in errors.
pub fn parse_pem_certs(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate(what));
    }
    for (index, der) in certs.iter().enumerate() {
        X509Certificate::from_der(der).map_err(|e| CertError::X509 {
            what,
            index,
            reason: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// Encodes DER certificates as one PEM text.
pub fn to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|c| pem_block("CERTIFICATE", c.as_ref()))
        .collect()
}

/// SHA-256 of DER bytes, lowercase hex (the form Envoy puts in XFCC `Hash=`).
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The SubjectPublicKeyInfo (DER) of a PKCS#8 private key in PEM.
pub fn key_spki(key_pem: &str) -> Result<Vec<u8>, CertError> {
    use rcgen::PublicKeyData;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| CertError::Key(e.to_string()))?;
    Ok(key.subject_public_key_info())
}

/// A validated workload certificate with its key and trust roots: what SDS serves.
#[derive(Clone)]
pub struct WorkloadCerts {
    /// Identity in the leaf's URI SAN.
    pub identity: Identity,
    /// Leaf first, then intermediates, as PEM (a self-signed root at the tail is dropped).
    pub chain_pem: String,
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
    /// Trusted roots, PEM (the mesh's ROOTCA).
    pub roots_pem: String,
    /// Leaf serial number, lowercase hex.
    pub serial: String,
    /// Start of the leaf's validity.
    pub not_before: SystemTime,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
    /// SHA-256 of the leaf DER, lowercase hex.
    pub leaf_sha256: String,
    /// SHA-256 of each trusted root DER, lowercase hex.
    pub root_fingerprints: Vec<String>,
}

impl std::fmt::Debug for WorkloadCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the key.
        f.debug_struct("WorkloadCerts")
            .field("identity", &self.identity)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadCerts {
    /// Validates a chain (leaf first), its private key and trust roots, and builds the bundle.
    ///
    /// Checks: the leaf's URI SAN is a SPIFFE identity (equal to `expected` if given), the
    /// leaf's public key is the key's, each certificate is signed by the next, the tail is
    /// (or is signed by) one of `roots`, and `now` is inside the leaf's validity.
    pub fn validate(
        chain: &[CertificateDer<'_>],
        key_pem: &str,
        roots: &[CertificateDer<'_>],
        expected: Option<&Identity>,
        now: SystemTime,
    ) -> Result<Self, CertError> {
        let parsed = parse_ders(chain, "certificate chain")?;
        let leaf = parsed
            .first()
            .ok_or(CertError::NoCertificate("certificate chain"))?;

        let identity = spiffe_identity(leaf)?;
        if let Some(expected) = expected
            && *expected != identity
        {
            return Err(CertError::WrongIdentity {
                expected: expected.to_string(),
                got: identity.to_string(),
            });
        }
        if leaf.public_key().raw != key_spki(key_pem)?.as_slice() {
            return Err(CertError::KeyMismatch);
        }
        for (index, pair) in parsed.windows(2).enumerate() {
            pair[0]
                .verify_signature(Some(pair[1].public_key()))
                .map_err(|_| CertError::BrokenChain {
                    index,
                    next: index + 1,
                })?;
        }
        let tail_index = parsed.len() - 1;
        let tail = &parsed[tail_index];
        let parsed_roots = parse_ders(roots, "trust roots")?;
        let anchored = roots
            .iter()
            .any(|r| r.as_ref() == chain[tail_index].as_ref())
            || parsed_roots
                .iter()
                .any(|r| tail.verify_signature(Some(r.public_key())).is_ok());
        if !anchored {
            return Err(CertError::UntrustedRoot(tail.subject().to_string()));
        }

        let validity = leaf.validity();
        let not_before = to_system_time(validity.not_before);
        let not_after = to_system_time(validity.not_after);
        if now < not_before {
            return Err(CertError::NotYetValid(validity.not_before.to_string()));
        }
        if now >= not_after {
            return Err(CertError::Expired(validity.not_after.to_string()));
        }

        // Serve leaf + intermediates; a self-signed root at the tail adds nothing to a handshake.
        let served = if parsed.len() > 1 && tail.subject() == tail.issuer() {
            &chain[..tail_index]
        } else {
            chain
        };
        Ok(WorkloadCerts {
            identity,
            chain_pem: to_pem(served),
            key_pem: key_pem.to_string(),
            roots_pem: to_pem(roots),
            serial: hex::encode(leaf.raw_serial()),
            not_before,
            not_after,
            leaf_sha256: sha256_hex(&chain[0]),
            root_fingerprints: roots.iter().map(|r| sha256_hex(r)).collect(),
        })
    }

    /// When to renew: at `ratio` (Istio renews at half), shifted by `jitter`, of the time
    /// from `received` (when the agent got the certificate) to `notAfter`. Istio's agent
    /// counts from receipt too: istiod backdates `notBefore` by two minutes against
    /// clock skew, so counting from `notBefore` would renew early, and at once (over and
    /// over) for lifetimes under about two minutes.
    pub fn refresh_at(&self, received: SystemTime, ratio: f64, jitter: f64) -> SystemTime {
        // max then min, not clamp: no panic on a (never validated) inverted window.
        let from = received.max(self.not_before).min(self.not_after);
        let lifetime = self.not_after.duration_since(from).unwrap_or_default();
        let offset = lifetime.as_secs_f64() * (ratio + jitter).clamp(0.0, 1.0);
        from + Duration::from_secs_f64(offset)
    }

    /// Whether the leaf is inside its validity window at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// The same certificate with a new set of trust roots.
    pub fn with_roots(&self, roots: &[CertificateDer<'_>]) -> Self {
        WorkloadCerts {
            roots_pem: to_pem(roots),
            root_fingerprints: roots.iter().map(|r| sha256_hex(r)).collect(),
            ..self.clone()
        }
    }
}

/// Seconds since the Unix epoch, for metrics and JSON.
pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn parse_ders<'a>(
    ders: &'a [CertificateDer<'_>],
    what: &'static str,
) -> Result<Vec<X509Certificate<'a>>, CertError> {
    ders.iter()
        .enumerate()
        .map(|(index, der)| {
            X509Certificate::from_der(der)
                .map(|(_, c)| c)
                .map_err(|e| CertError::X509 {
                    what,
                    index,
                    reason: e.to_string(),
                })
        })
        .collect()
}

fn to_system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH
    }
}

fn spiffe_identity(cert: &X509Certificate<'_>) -> Result<Identity, CertError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::BadSpiffeId(e.to_string()))?
        .ok_or(CertError::NoSpiffeId)?;
    let uri = san
        .value
        .general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(u) if u.starts_with("spiffe://") => Some(*u),
            _ => None,
        })
        .ok_or(CertError::NoSpiffeId)?;
    uri.parse()
        .map_err(|e: crate::identity::IdentityError| CertError::BadSpiffeId(e.to_string()))
}

/// The URI SAN identity of a DER certificate.
pub fn identity_of(der: &CertificateDer<'_>) -> Result<Identity, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::X509 {
        what: "certificate",
        index: 0,
        reason: e.to_string(),
    })?;
    spiffe_identity(&cert)
}

/// Encodes a PKCS#8 DER private key as PEM.
pub fn pkcs8_pem(der: &[u8]) -> String {
    pem_block("PRIVATE KEY", der)
}

/// One PEM block with Unix line endings (what files and ConfigMaps in the mesh use).
fn pem_block(tag: &str, der: &[u8]) -> String {
    let config = ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF);
    ::pem::encode_config(&::pem::Pem::new(tag, der.to_vec()), config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(not_before: SystemTime, not_after: SystemTime) -> WorkloadCerts {
        WorkloadCerts {
            identity: "spiffe://cluster.local/ns/default/sa/x".parse().unwrap(),
            chain_pem: String::new(),
            key_pem: String::new(),
            roots_pem: String::new(),
            serial: String::new(),
            not_before,
            not_after,
            leaf_sha256: String::new(),
            root_fingerprints: Vec::new(),
        }
    }

    #[test]
    fn renewal_counts_from_receipt_not_from_a_backdated_not_before() {
        let received = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let secs = Duration::from_secs;
        // istiod: valid from two minutes before issuance, for 4 s after it.
        let certs = window(received - secs(120), received + secs(4));
        assert_eq!(certs.refresh_at(received, 0.5, 0.0), received + secs(2));
        assert_eq!(
            certs.refresh_at(received, 0.5, 0.02),
            received + secs(2) + Duration::from_millis(80)
        );
        // Received before notBefore (a clock behind the CA's): counted from notBefore.
        let ahead = window(received + secs(10), received + secs(20));
        assert_eq!(ahead.refresh_at(received, 0.5, 0.0), received + secs(15));
        // An inverted window (never validated) does not panic.
        let inverted = window(received + secs(5), received);
        assert_eq!(inverted.refresh_at(received, 0.5, 0.0), received);
    }
}
