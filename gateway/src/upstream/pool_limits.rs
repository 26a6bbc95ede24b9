//! DestinationRule `connectionPool` limits per backend, per process: requests in flight
//! (`http2MaxRequests`), HTTP/1.1 requests holding a connection (`tcp.maxConnections`;
//! one request per HTTP/1.1 connection) and requests queued for one
//! (`http1MaxPendingRequests`). Past the queue a request is refused at once with 503
//! `UO`, as Envoy's circuit breakers do; nothing waits without a bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::Notify;

use super::backend_state::BackendState;
use crate::ir::ConnectionLimits;

/// Counters of one backend.
#[derive(Debug, Default)]
pub struct PoolCounters {
    /// Attempts in flight.
    requests: AtomicU32,
    /// HTTP/1.1 attempts holding a connection.
    connections: AtomicU32,
    /// Attempts waiting for a connection.
    pending: AtomicU32,
    /// Wakes a waiting attempt when a connection is released.
    released: Notify,
}

impl PoolCounters {
    /// (requests, connections, pending), for the admin page.
    pub fn snapshot(&self) -> (u32, u32, u32) {
        (
            self.requests.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
            self.pending.load(Ordering::Relaxed),
        )
    }
}

/// An admitted attempt; releases its slots when dropped (when its response has ended, or
/// when the attempt failed or is retried).
pub struct PoolPermit {
    state: Arc<BackendState>,
    connection: bool,
}

impl Drop for PoolPermit {
    fn drop(&mut self) {
        let c = &self.state.pool;
        c.requests.fetch_sub(1, Ordering::Relaxed);
        if self.connection {
            c.connections.fetch_sub(1, Ordering::Relaxed);
            c.released.notify_one();
        }
    }
}

/// Admits one attempt under `limits`, queueing it (up to the pending limit) for an
/// HTTP/1.1 connection; `Err("UO")` on overflow.
pub async fn admit(
    state: &Arc<BackendState>,
    limits: &ConnectionLimits,
    http2: bool,
) -> Result<PoolPermit, &'static str> {
    let c = &state.pool;
    if !try_increment(&c.requests, limits.max_requests) {
        return Err("UO");
    }
    let mut permit = PoolPermit {
        state: state.clone(),
        connection: false,
    };
    if http2 {
        return Ok(permit);
    }
    if try_increment(&c.connections, limits.max_connections) {
        permit.connection = true;
        return Ok(permit);
    }
    if !try_increment(&c.pending, limits.max_pending_requests) {
        return Err("UO");
    }
    let _pending = Decrement(&c.pending);
    loop {
        let released = c.released.notified();
        if try_increment(&c.connections, limits.max_connections) {
            permit.connection = true;
            return Ok(permit);
        }
        released.await;
    }
}

/// Increments `n` unless it has reached `max`.
fn try_increment(n: &AtomicU32, max: u32) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
        (v < max).then_some(v + 1)
    })
    .is_ok()
}

struct Decrement<'a>(&'a AtomicU32);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(conns: u32, pending: u32) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: conns,
            max_pending_requests: pending,
            max_requests: u32::MAX,
            max_retries: u32::MAX,
            pool: Default::default(),
        }
    }

    #[tokio::test]
    async fn past_the_connections_and_the_queue_an_attempt_overflows_at_once() {
        let s = Arc::new(BackendState::default());
        let l = limits(1, 1);
        let first = admit(&s, &l, false).await.unwrap();
        let queued = tokio::spawn({
            let s = s.clone();
            let l = l.clone();
            async move { admit(&s, &l, false).await.map(|_| ()) }
        });
        while s.pool.snapshot().2 == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(admit(&s, &l, false).await.err(), Some("UO"));
        drop(first);
        assert_eq!(queued.await.unwrap(), Ok(()));
    }
}
