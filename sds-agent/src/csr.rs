//! A fresh key and certificate signing request for each rotation.

use mesh::Identity;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData, SanType};

/// A private key and the CSR that asks for it to be certified.
pub struct KeyAndCsr {
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
    /// PKCS#10 request, PEM.
    pub csr_pem: String,
    /// SubjectPublicKeyInfo of the key, DER.
    pub spki: Vec<u8>,
}

/// Generates an ECDSA P-256 key and a CSR with an empty subject and one URI SAN, as Istio does.
pub fn generate(identity: &Identity) -> Result<KeyAndCsr, rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
        spki: key.subject_public_key_info(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_has_empty_subject_and_one_uri_san() {
        let id = Identity::new("cluster.local", "ns", "sa").unwrap();
        let k = generate(&id).unwrap();
        assert!(
            k.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
            "PKCS#8"
        );
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&k.csr_pem).unwrap();
        assert_eq!(parsed.params.distinguished_name.iter().count(), 0);
        assert_eq!(parsed.params.subject_alt_names.len(), 1);
        match &parsed.params.subject_alt_names[0] {
            SanType::URI(u) => assert_eq!(u.as_str(), id.to_string()),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
}
