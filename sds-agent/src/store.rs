//! The agent's one piece of shared state: the current certificate and its version.
//! Sources publish into it; the SDS server and admin read from it ("give me a
//! certificate and tell me when it changes").

use std::sync::Arc;

use mesh::WorkloadCerts;
use tokio::sync::watch;

/// A published certificate with the version SDS announces for it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The certificate, key and roots.
    pub certs: Arc<WorkloadCerts>,
    /// Monotonic within this process; bumped on every publish.
    pub version: u64,
}

/// Current certificate, if any, with change notification.
#[derive(Debug, Clone)]
pub struct Store {
    tx: Arc<watch::Sender<Option<Published>>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Store {
            tx: Arc::new(watch::channel(None).0),
        }
    }

    /// Replaces the current certificate; every subscriber is woken.
    pub fn publish(&self, certs: WorkloadCerts) -> u64 {
        let mut version = 0;
        self.tx.send_modify(|cur| {
            version = cur.as_ref().map_or(1, |p| p.version + 1);
            *cur = Some(Published {
                certs: Arc::new(certs),
                version,
            });
        });
        version
    }

    /// The current certificate, if any.
    pub fn current(&self) -> Option<Published> {
        self.tx.borrow().clone()
    }

    /// A receiver that is notified on every publish.
    pub fn subscribe(&self) -> watch::Receiver<Option<Published>> {
        self.tx.subscribe()
    }
}
