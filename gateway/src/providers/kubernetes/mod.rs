//! Kubernetes provider: watches the API server and produces [`Snapshot`]s for the same
//! translate path as files.
//!
//! - [`client`]: the kube client (kubeconfig or in-cluster) and discovery of which kinds
//!   are installed (a missing CRD is reported and retried, never blocks readiness).
//! - [`watches`]: one kube-rs watcher per kind (with backoff, relist on 410 Gone) feeding
//!   a [`cache::Cache`]; objects are decoded one at a time, so one undecodable object is
//!   reported on its own and never stalls a watch.
//! - [`snapshot`]: the caches -> the objects this pod serves (its Gateway, if its
//!   GatewayClass is ours; the routes that name it; referenced Secrets and ConfigMaps).
//! - [`quarantine`]: one translation pass (translate accepts per object, so a bad route
//!   is left out with `Accepted=False` and the rest is served), plus `Accepted=False` for
//!   routes that could not be decoded at all.
//! - [`status`], [`policy_status`] and [`lease`]: the Lease holder writes GatewayClass,
//!   Gateway, route (HTTPRoute, GRPCRoute, TCPRoute, TLSRoute) and BackendTLSPolicy status.
//!
//! The provider sends nothing until every watch has listed once, so `/ready` (which needs
//! a first table) waits for a complete view. A broken watch keeps its last objects: the
//! served table never loses endpoints because the API server went away.

pub mod cache;
pub mod client;
pub mod lease;
pub mod policy_status;
pub mod quarantine;
pub mod snapshot;
pub mod status;
pub mod watches;
pub mod writer;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::Update;
use crate::api::Snapshot;
use crate::translate::TranslateOptions;

/// `spec.controllerName` of the GatewayClasses this gateway serves.
pub const CONTROLLER_NAME: &str = "meshgate.io/gateway-controller";
/// Field manager of the gateway's server-side applies.
pub const FIELD_MANAGER: &str = "meshgate";

/// The Gateway a pod serves: `--gateway namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRef {
    /// Namespace of the Gateway.
    pub namespace: String,
    /// Name of the Gateway.
    pub name: String,
}

impl FromStr for GatewayRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(GatewayRef {
                    namespace: ns.into(),
                    name: name.into(),
                })
            }
            _ => Err(format!("{s:?} is not namespace/name")),
        }
    }
}

impl std::fmt::Display for GatewayRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the Kubernetes provider needs from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Gateway served.
    pub gateway: GatewayRef,
    /// Kubeconfig file; none infers (in-cluster, `$KUBECONFIG`, `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces whose Secrets and ConfigMaps are watched.
    pub secret_namespaces: Vec<String>,
    /// This pod's namespace (Istio `credentialName` Secrets live there).
    pub pod_namespace: Option<String>,
    /// This replica's holder identity in the status Lease.
    pub identity: String,
    /// Addresses written to the Gateway's `status.addresses`.
    pub status_addresses: Vec<String>,
    /// Lease duration (renewed at a third of it).
    pub lease_duration: Duration,
    /// Quiet time before re-translating after a change.
    pub debounce: Duration,
}

/// Why the provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The kubeconfig could not be read or the client not built.
    #[error("Kubernetes client ({source_of_config}): {message}")]
    Client {
        /// Kubeconfig path or "inferred".
        source_of_config: String,
        /// Why.
        message: String,
    },
}

/// What the status writer is told after each translation: the report of the snapshot
/// just sent, and the routes it concerns.
pub type StatusFeed = watch::Receiver<Option<Arc<status::Desired>>>;

/// Starts the watches and the snapshot loop; returns the feed the status writer reads.
/// Updates go on `tx` (the same channel type the file provider uses).
pub async fn start(
    settings: Settings,
    opts: TranslateOptions,
    tx: watch::Sender<Option<Update>>,
) -> Result<(kube::Client, StatusFeed), ProviderError> {
    let client = client::connect(settings.kubeconfig.as_deref()).await?;
    let changed = Arc::new(Notify::new());
    let caches = Arc::new(snapshot::Caches::new(&settings));
    watches::start_all(&client, &settings, &caches, &changed);
    let (status_tx, status_rx) = watch::channel(None);
    tokio::spawn(snapshot_loop(
        settings, opts, caches, changed, tx, status_tx,
    ));
    Ok((client, status_rx))
}

/// Waits for changes, lets them settle for the debounce time, then (once every watch has
/// listed) assembles, translates once and sends a snapshot and the status it implies.
async fn snapshot_loop(
    settings: Settings,
    opts: TranslateOptions,
    caches: Arc<snapshot::Caches>,
    changed: Arc<Notify>,
    tx: watch::Sender<Option<Update>>,
    status_tx: watch::Sender<Option<Arc<status::Desired>>>,
) {
    let mut last_notes = Vec::new();
    loop {
        changed.notified().await;
        // Debounce: keep waiting while changes keep coming, so a burst (a relist, a
        // `kubectl apply -f dir/`) is translated once.
        while tokio::time::timeout(settings.debounce, changed.notified())
            .await
            .is_ok()
        {}
        if let Some(unsynced) = caches.first_unsynced() {
            tracing::debug!(kind = unsynced, "waiting for every watch to list once");
            continue;
        }
        let assembled = caches.assemble(&settings.gateway);
        if assembled.notes != last_notes {
            for n in &assembled.notes {
                tracing::warn!("{n}");
            }
            last_notes = assembled.notes.clone();
        }
        let translated = quarantine::apply(assembled.snapshot, &assembled.undecodable, &opts);
        let desired = status::Desired::new(&settings.gateway, &caches, &translated);
        if tx.send(Some(Ok(translated.snapshot))).is_err() {
            return;
        }
        let _ = status_tx.send(Some(Arc::new(desired)));
    }
}

/// A snapshot assembled from the caches, before translation.
#[derive(Debug, Default)]
pub struct Assembled {
    /// The objects served.
    pub snapshot: Snapshot,
    /// Routes naming our Gateway that could not be decoded.
    pub undecodable: Vec<snapshot::Undecodable>,
    /// Why objects were left out (logged when they change).
    pub notes: Vec<String>,
}
