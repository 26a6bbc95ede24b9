//! Upgraded connections (WebSocket and other `101 Switching Protocols` tunnels). Once
//! upgraded, a connection leaves hyper and its graceful-shutdown watcher, so the tunnel
//! takes over what the connection had: a `--max-connections` slot, the idle timeout,
//! and an end at the drain deadline.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::connection::{Activity, ActivityIo};
use super::reject::{Reject, reject};
use crate::observe::metrics::Metrics;

/// The gateway's upgraded tunnels; cheap to clone.
#[derive(Clone)]
pub struct Tunnels {
    inner: Arc<Inner>,
}

struct Inner {
    /// The `--max-connections` slots, shared with the accept loops.
    permits: Arc<Semaphore>,
    /// An upgraded tunnel with no bytes either way for this long is closed.
    idle_timeout: Duration,
    /// The same for a TCP/TLS connection route (Envoy's tcp_proxy default: 1 hour).
    tcp_idle_timeout: Duration,
    metrics: Arc<Metrics>,
    /// Set at the drain deadline: every tunnel closes.
    closing: watch::Sender<bool>,
    /// Open tunnels, for the drain to wait on.
    open: watch::Sender<usize>,
}

/// A connection slot reserved for a tunnel (released when the tunnel ends).
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Tunnels {
    /// Tunnels sharing `permits` with the accept loops; `idle_timeouts`: upgraded
    /// tunnels', then connection routes'.
    pub fn new(
        permits: Arc<Semaphore>,
        idle_timeouts: (Duration, Duration),
        metrics: Arc<Metrics>,
    ) -> Self {
        Tunnels {
            inner: Arc::new(Inner {
                permits,
                idle_timeout: idle_timeouts.0,
                tcp_idle_timeout: idle_timeouts.1,
                metrics,
                closing: watch::Sender::new(false),
                open: watch::Sender::new(0),
            }),
        }
    }

    /// Reserves a slot before the upgrade is forwarded: the downstream connection gives
    /// its own slot back once hyper hands the socket over, so the tunnel needs one of its
    /// own. None free: 503 `UO` (Envoy's overflow flag), and nothing reaches the upstream.
    pub fn reserve(&self) -> Result<Slot, Reject> {
        match self.inner.permits.clone().try_acquire_owned() {
            Ok(p) => Ok(Slot { _permit: p }),
            Err(_) => {
                self.inner.metrics.tunnels_rejected.inc();
                Err(reject(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UO",
                    "upgrade refused: every --max-connections slot is taken, and an upgraded \
                     tunnel needs one of its own",
                ))
            }
        }
    }

    /// Once both sides have switched protocols, copies bytes both ways until either side
    /// closes, the tunnel idles out, or the drain deadline passes.
    pub fn splice(&self, slot: Slot, down: OnUpgrade, up: OnUpgrade) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _open = OpenTunnel::new(inner.clone(), Some(slot));
            let (d, u) = match tokio::try_join!(down, up) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let activity = Arc::new(Activity::new());
            let mut d = ActivityIo::new(TokioIo::new(d), activity.clone());
            let mut u = TokioIo::new(u);
            let idle = inner.idle_timeout;
            run(&inner, idle, &activity, &mut d, &mut u, TUNNEL_BUFFER_BYTES).await;
        });
    }

    /// Copies bytes both ways for a connection route (TCP, TLS); the connection keeps the
    /// slot its accept took. Counted as an open tunnel, so the drain waits for it and
    /// closes it at the deadline; closed when idle for the idle timeout.
    pub async fn pipe<D, U>(&self, activity: &Activity, down: &mut D, up: &mut U)
    where
        D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let _open = OpenTunnel::new(self.inner.clone(), None);
        let idle = self.inner.tcp_idle_timeout;
        run(&self.inner, idle, activity, down, up, L4_BUFFER_BYTES).await;
    }

    /// Waits until no tunnel is open.
    pub async fn closed(&self) {
        let mut open = self.inner.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// Closes every tunnel now (the drain deadline has passed).
    pub fn close_all(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Tunnels open now.
    pub fn open(&self) -> usize {
        *self.inner.open.borrow()
    }
}

/// Copy buffer per direction of an upgraded tunnel (tokio's default): WebSocket messages
/// are small and such tunnels are many.
const TUNNEL_BUFFER_BYTES: usize = 8 * 1024;

/// Copy buffer per direction of a TCP/TLS connection route: bulk transfers with 8 KiB
/// buffers cost a syscall pair per 8 KiB (`scripts/bench-tcp`, strace); 64 KiB cuts that
/// eightfold for 128 KiB per open connection.
const L4_BUFFER_BYTES: usize = 64 * 1024;

/// The copy loop; returning drops (closes) both sockets.
async fn run<D, U>(
    inner: &Inner,
    idle: Duration,
    activity: &Activity,
    down: &mut D,
    up: &mut U,
    buf: usize,
) where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut closing = inner.closing.subscribe();
    let tick = (idle / 4).max(Duration::from_millis(50));
    let copy = tokio::io::copy_bidirectional_with_sizes(down, up, buf, buf);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            r = copy.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "tunnel ended with error");
                }
                return;
            }
            _ = closing.wait_for(|c| *c) => {
                tracing::debug!("closing tunnel at the drain deadline");
                return;
            }
            _ = tokio::time::sleep(tick) => {
                if activity.idle_for() >= idle {
                    tracing::debug!("closing idle tunnel");
                    inner.metrics.downstream_timeout("idle");
                    return;
                }
            }
        }
    }
}

/// Counts a tunnel (and holds the slot of an upgraded one) for its lifetime.
struct OpenTunnel {
    inner: Arc<Inner>,
    /// An upgraded tunnel's own slot; `None` for a connection route.
    slot: Option<Slot>,
}

impl OpenTunnel {
    fn new(inner: Arc<Inner>, slot: Option<Slot>) -> Self {
        inner.open.send_modify(|n| *n += 1);
        if slot.is_some() {
            inner.metrics.tunnels_active.inc();
        }
        OpenTunnel { inner, slot }
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        if self.slot.is_some() {
            self.inner.metrics.tunnels_active.dec();
        }
        self.inner.open.send_modify(|n| *n -= 1);
    }
}
