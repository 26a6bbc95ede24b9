//! Per-backend runtime state that outlives configuration reloads: in-flight requests and
//! retries (the retry budget). One registry per process, shared by every worker, so a
//! limit holds for the pod rather than per thread; tables built from a new configuration
//! find the same state by backend name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::outlier::EndpointHealth;
use super::pool_limits::PoolCounters;

/// Every backend's state, by backend name (`Service ns/name:port`).
#[derive(Clone, Default)]
pub struct BackendStates(Arc<Mutex<HashMap<String, Weak<BackendState>>>>);

impl BackendStates {
    /// The state of `backend`, created on first use; held by the tables that use it
    /// (state no table uses any more is dropped).
    pub fn get(&self, backend: &str) -> Arc<BackendState> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(backend).and_then(Weak::upgrade) {
            return s;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let s = Arc::new(BackendState::default());
        map.insert(backend.to_owned(), Arc::downgrade(&s));
        s
    }
}

/// Counters of one backend.
#[derive(Debug, Default)]
pub struct BackendState {
    /// Requests in flight to this backend (first attempts and retries).
    active: AtomicU32,
    /// Retries in flight.
    retries: AtomicU32,
    /// Connection-pool counters (DestinationRule `connectionPool`).
    pub pool: PoolCounters,
    /// Next ROUND_ROBIN position.
    round_robin: AtomicUsize,
    /// Endpoint health by `ip:port`, kept while any table uses it.
    endpoints: Mutex<HashMap<String, Weak<EndpointHealth>>>,
}

/// Counts one request in flight until dropped. It borrows the state: a reference count
/// here would be one more count that every worker writes on every request.
pub struct Active<'a>(&'a BackendState);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one retry in flight until dropped.
pub struct RetrySlot(Arc<BackendState>);

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BackendState {
    /// Counts a request as active until the guard drops.
    pub fn start(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self)
    }

    /// A retry slot, if the budget allows one more: at most `percent` of the active
    /// requests may be retries, but `min` concurrent retries are always allowed (Envoy's
    /// retry budget), so retries cannot multiply an outage; never more than `max`
    /// (DestinationRule `maxRetries`).
    pub fn try_retry(self: &Arc<Self>, percent: u32, min: u32, max: u32) -> Option<RetrySlot> {
        let active = self.active.load(Ordering::Relaxed);
        let allowed = (active.saturating_mul(percent) / 100).max(min).min(max);
        let taken = self.retries.fetch_add(1, Ordering::Relaxed);
        if taken < allowed {
            Some(RetrySlot(self.clone()))
        } else {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }

    /// Requests in flight.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// The next ROUND_ROBIN position.
    pub fn next_round_robin(&self) -> usize {
        self.round_robin.fetch_add(1, Ordering::Relaxed)
    }

    /// The health record of endpoint `ip:port`, created on first use.
    pub fn endpoint(&self, key: &str) -> Arc<EndpointHealth> {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = map.get(key).and_then(Weak::upgrade) {
            return h;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let h = Arc::new(EndpointHealth::default());
        map.insert(key.to_owned(), Arc::downgrade(&h));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_the_minimum_then_a_share_of_active_requests() {
        let s = Arc::new(BackendState::default());
        let _active: Vec<_> = (0..50).map(|_| s.start()).collect();
        // 20% of 50 = 10 concurrent retries.
        let slots: Vec<_> = (0..10)
            .filter_map(|_| s.try_retry(20, 3, u32::MAX))
            .collect();
        assert_eq!(slots.len(), 10);
        assert!(s.try_retry(20, 3, u32::MAX).is_none());
        drop(slots);
        let s2 = Arc::new(BackendState::default());
        let few: Vec<_> = (0..5)
            .filter_map(|_| s2.try_retry(20, 3, u32::MAX))
            .collect();
        assert_eq!(few.len(), 3, "the minimum holds with no active requests");
    }

    #[test]
    fn the_same_backend_name_gets_the_same_state_while_held() {
        let reg = BackendStates::default();
        let a = reg.get("Service default/a:80");
        let _g = a.start();
        assert_eq!(reg.get("Service default/a:80").active(), 1);
    }
}
