//! DestinationRule `connectionPool` limits per backend, per process: requests in flight
//! (`http2MaxRequests`), HTTP/1.1 requests holding a connection (`tcp.maxConnections`;
//! one request per HTTP/1.1 connection) and requests queued for one
//! (`http1MaxPendingRequests`). Past the queue a request is refused at once with 503
//! `UO`, as Envoy's circuit breakers do; nothing waits without a bound. The queue is
//! first come, first served, as Envoy's pending list is: a released connection goes to
//! the oldest waiting attempt, and no newcomer takes one while attempts wait.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

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
    /// The waiting attempts, oldest first; a released connection is handed to the first
    /// still waiting (a timed-out one has dropped its receiver).
    waiters: Mutex<VecDeque<oneshot::Sender<()>>>,
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

    /// Gives up a connection: to the oldest waiting attempt, else back to the pool.
    fn release_connection(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(next) = waiters.pop_front() {
            // Handed over: the count stays, the slot is the waiter's now.
            if next.send(()).is_ok() {
                return;
            }
        }
        self.connections.fetch_sub(1, Ordering::Relaxed);
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
            c.release_connection();
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
    // Taken at once only while nobody waits: the queue is served in order.
    if c.pending.load(Ordering::Acquire) == 0
        && try_increment(&c.connections, limits.max_connections)
    {
        permit.connection = true;
        return Ok(permit);
    }
    if !try_increment(&c.pending, limits.max_pending_requests) {
        return Err("UO");
    }
    let _pending = Decrement(&c.pending);
    let handed = {
        let mut waiters = c.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock a release cannot slip between this check and the queueing.
        if waiters.is_empty() && try_increment(&c.connections, limits.max_connections) {
            None
        } else {
            // Waiters that stopped waiting are dropped here as well as at releases, so
            // that a backend holding its connections long keeps about as many senders
            // as attempts queued.
            let queued = c.pending.load(Ordering::Relaxed) as usize;
            if waiters.len() > 2 * queued + 16 {
                waiters.retain(|w| !w.is_closed());
            }
            let (tx, rx) = oneshot::channel();
            waiters.push_back(tx);
            Some(Handed { rx, pool: c })
        }
    };
    if let Some(mut handed) = handed {
        // A sender is dropped unsent only once its receiver is gone, or with the pool.
        (&mut handed.rx).await.map_err(|_| "UO")?;
    }
    permit.connection = true;
    Ok(permit)
}

/// A queued attempt's end of the hand-over: an attempt that stops waiting (its route's
/// timeout) after a connection was handed to it passes the connection on.
struct Handed<'a> {
    rx: oneshot::Receiver<()>,
    pool: &'a PoolCounters,
}

impl Drop for Handed<'_> {
    fn drop(&mut self) {
        // Closed first: a release on another worker either sent before (the value is
        // here) or finds the receiver gone and tries the next waiter.
        self.rx.close();
        if self.rx.try_recv().is_ok() {
            self.pool.release_connection();
        }
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

    /// Waits (yielding) until `n` attempts are queued.
    async fn queued(s: &BackendState, n: u32) {
        while s.pool.snapshot().2 != n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn released_connections_go_to_the_oldest_waiter_and_newcomers_queue_behind() {
        let s = Arc::new(BackendState::default());
        let l = limits(1, 3);
        let first = admit(&s, &l, false).await.unwrap();
        let (done, mut order) = tokio::sync::mpsc::unbounded_channel();
        let wait = |name: &'static str| {
            let (s, l, done) = (s.clone(), l.clone(), done.clone());
            tokio::spawn(async move {
                let permit = admit(&s, &l, false).await.unwrap();
                done.send((name, permit)).unwrap();
            })
        };
        wait("a");
        queued(&s, 1).await;
        wait("b");
        queued(&s, 2).await;
        drop(first);
        let (name, a) = order.recv().await.unwrap();
        assert_eq!(name, "a");
        // A newcomer while b waits does not take the connection a gives back.
        wait("c");
        queued(&s, 2).await;
        drop(a);
        // Nor does one that comes before b has run again.
        {
            let overtaking = std::pin::pin!(admit(&s, &l, false));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(
                overtaking.poll(&mut cx).is_pending(),
                "a newcomer overtook b"
            );
        }
        let (name, b) = order.recv().await.unwrap();
        assert_eq!(name, "b");
        assert_eq!(s.pool.snapshot(), (2, 1, 1), "b holds it, c waits");
        drop(b);
        let (name, c) = order.recv().await.unwrap();
        assert_eq!(name, "c");
        drop(c);
        assert_eq!(s.pool.snapshot(), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_waiter_gone_after_the_hand_over_passes_the_connection_on() {
        let s = Arc::new(BackendState::default());
        let l = limits(1, 2);
        let first = admit(&s, &l, false).await.unwrap();
        let gone = tokio::spawn({
            let (s, l) = (s.clone(), l.clone());
            async move { admit(&s, &l, false).await.map(|_| ()) }
        });
        queued(&s, 1).await;
        let next = tokio::spawn({
            let (s, l) = (s.clone(), l.clone());
            async move { admit(&s, &l, false).await.map(drop) }
        });
        queued(&s, 2).await;
        // Handed to the first waiter, which is cancelled before it runs again (its
        // route's timeout): the connection goes on to the next one.
        drop(first);
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        assert_eq!(next.await.unwrap(), Ok(()));
        assert_eq!(s.pool.snapshot(), (0, 0, 0));
    }
}
