//! The workload's SPIFFE identity, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

use spiffe::SpiffeId;

/// Why an identity could not be built or parsed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid SPIFFE id {0:?}: {1}")]
    Invalid(String, String),
    #[error(
        "SPIFFE id {0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    NotKubernetes(String),
}

/// A Kubernetes workload identity in Istio's SPIFFE form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    id: SpiffeId,
    namespace: String,
    service_account: String,
}

impl Identity {
    /// Builds the identity of `service_account` in `namespace` under `trust_domain`.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        self.id.trust_domain_name()
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The underlying SPIFFE id.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.id
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id = SpiffeId::new(s).map_err(|e| IdentityError::Invalid(s.into(), e.to_string()))?;
        let segments: Vec<&str> = id.path().trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["ns", ns, "sa", sa] if !ns.is_empty() && !sa.is_empty() => Ok(Identity {
                namespace: (*ns).to_string(),
                service_account: (*sa).to_string(),
                id,
            }),
            _ => Err(IdentityError::NotKubernetes(s.into())),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_istio_shaped_identity() {
        let id = Identity::new("cluster.local", "gateway-system", "gateway-proxy").unwrap();
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/gateway-system/sa/gateway-proxy"
        );
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "gateway-system");
        assert_eq!(id.service_account(), "gateway-proxy");
    }

    #[test]
    fn rejects_non_kubernetes_paths_and_bad_ids() {
        assert!(matches!(
            "spiffe://cluster.local/workload/x".parse::<Identity>(),
            Err(IdentityError::NotKubernetes(_))
        ));
        assert!(matches!(
            "http://cluster.local/ns/a/sa/b".parse::<Identity>(),
            Err(IdentityError::Invalid(..))
        ));
        assert!(Identity::new("Bad Domain", "a", "b").is_err());
    }
}
