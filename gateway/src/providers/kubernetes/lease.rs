//! Leader election on a `coordination.k8s.io/v1` Lease, one per served Gateway, so that
//! of several replicas exactly one writes status.
//!
//! As client-go does, expiry is judged by this replica's own clock: a Lease whose record
//! (holder, resourceVersion) has not changed for a whole lease duration, as observed
//! here, is taken over. Every write carries the resourceVersion read, so two replicas
//! taking over at once cannot both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

/// A Lease this replica tries to hold.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The last record seen (holder, resourceVersion) and when it was first seen.
    observed: Option<(String, String, Instant)>,
}

impl LeaseLock {
    /// A lock on Lease `namespace/name` for `identity`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            observed: None,
        }
    }

    /// Acquires or renews the Lease; returns whether this replica holds it now.
    pub async fn try_hold(&mut self) -> Result<bool, kube::Error> {
        let Some(current) = self.api.get_opt(&self.name).await? else {
            return self.write(None, 0).await;
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        if holder == self.identity {
            return self.write(Some(current), transitions).await;
        }
        let rv = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let now = Instant::now();
        let seen_since = match &self.observed {
            Some((h, v, since)) if *h == holder && *v == rv => *since,
            _ => {
                self.observed = Some((holder.clone(), rv, now));
                now
            }
        };
        if !holder.is_empty() && now.duration_since(seen_since) < self.duration {
            return Ok(false);
        }
        tracing::info!(lease = %self.name, previous = %holder, "status Lease expired; taking over");
        self.write(Some(current), transitions + 1).await
    }

    /// Creates the Lease (none yet) or replaces it with us as holder; a conflict means
    /// another replica wrote first.
    async fn write(
        &mut self,
        current: Option<Lease>,
        transitions: i32,
    ) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let renewing = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        let acquired = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.acquire_time.clone())
            .filter(|_| renewing)
            .unwrap_or_else(|| now.clone());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: current.and_then(|l| l.metadata.resource_version),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
                acquire_time: Some(acquired),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        };
        let pp = PostParams::default();
        let result = match lease.metadata.resource_version {
            Some(_) => self.api.replace(&self.name, &pp, &lease).await,
            None => self.api.create(&pp, &lease).await,
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown) so another replica takes over at once.
    pub async fn release(&mut self) {
        if let Ok(Some(mut l)) = self.api.get_opt(&self.name).await
            && l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str())
        {
            if let Some(s) = l.spec.as_mut() {
                s.holder_identity = None;
            }
            let _ = self
                .api
                .replace(&self.name, &PostParams::default(), &l)
                .await;
        }
    }
}
