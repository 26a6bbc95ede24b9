//! Graceful drain of downstream HTTP connections: every connection holds a watcher; on
//! the drain signal it finishes the requests it has and closes, and the drain waits for
//! the last watcher to go. hyper-util's `GracefulShutdown` watches its auto server but
//! not hyper's own HTTP/1 connection with upgrades, which serves a connection already
//! known to be HTTP/1 (see [`super::connection`]); this drains both.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;

use hyper::body::{Body, Incoming};
use hyper::rt::{Read, Write};
use hyper::service::HttpService;
use hyper_util::server::conn::auto::{self, HttpServerConnExec};
use tokio::sync::watch;

/// A connection's error, whichever server served it.
pub type ConnError = Box<dyn StdError + Send + Sync>;

/// Hands out watchers until the drain starts.
#[derive(Clone)]
pub struct DrainWatch(Arc<watch::Sender<bool>>);

impl Default for DrainWatch {
    fn default() -> Self {
        DrainWatch(Arc::new(watch::channel(false).0))
    }
}

impl DrainWatch {
    /// A watcher for a new connection; `None` once draining (the connection is refused).
    pub fn watcher(&self) -> Option<Watcher> {
        // Subscribed before the check: a drain that starts in between is seen by one
        // or the other, never missed.
        let rx = self.0.subscribe();
        let draining = *rx.borrow();
        (!draining).then_some(Watcher(rx))
    }

    /// Starts the drain: every watched connection is told to finish its requests and
    /// close. Returns what to await (with a deadline): it ends when the last watcher is
    /// gone. `None` if the drain had already started.
    pub fn start(&self) -> Option<impl Future<Output = ()> + use<>> {
        if self.0.send_replace(true) {
            return None;
        }
        let tx = self.0.clone();
        Some(async move { tx.closed().await })
    }
}

/// One connection's view of the drain; the drain waits while it is alive.
pub struct Watcher(watch::Receiver<bool>);

impl Watcher {
    /// Resolves once the drain has started (or its handle is gone: the process is
    /// ending). The connection then calls [`Drainable::drain`] and runs to its end.
    pub async fn draining(&mut self) {
        let _ = self.0.wait_for(|draining| *draining).await;
    }
}

/// A hyper server connection that can be asked to finish its requests and close. (A
/// method on the connection the task already holds, not a future wrapping it: an async
/// wrapper would keep a second copy of the connection's state in every task.)
pub trait Drainable {
    /// Stops taking new requests; the connection ends once those in flight are answered.
    fn drain(self: Pin<&mut Self>);
}

impl<A: Drainable, B: Drainable> Drainable for Either<A, B> {
    fn drain(self: Pin<&mut Self>) {
        match self.as_pin_mut() {
            Either::Left(a) => a.drain(),
            Either::Right(b) => b.drain(),
        }
    }
}

/// Polls whichever server's connection `conn` is, with one error type.
pub fn poll_either<A, B, E>(
    conn: Pin<&mut Either<A, B>>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), ConnError>>
where
    A: Future<Output = Result<(), E>>,
    E: Into<ConnError>,
    B: Future<Output = Result<(), ConnError>>,
{
    match conn.as_pin_mut() {
        Either::Left(a) => a.poll(cx).map_err(Into::into),
        Either::Right(b) => b.poll(cx),
    }
}

impl<I, S, B> Drainable for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<ConnError>,
    I: Read + Write + Unpin,
    B: Body + 'static,
    B::Error: Into<ConnError>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Drainable for auto::UpgradeableConnection<'_, I, S, E>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<ConnError>,
    I: Read + Write + Unpin,
    B: Body + 'static,
    B::Error: Into<ConnError>,
    E: HttpServerConnExec<S::Future, B>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_watcher_once_draining_and_the_drain_waits_for_the_last_watcher() {
        let drain = DrainWatch::default();
        let w = drain.watcher().expect("a watcher before the drain");
        let done = drain.start().expect("the first start");
        assert!(drain.start().is_none(), "the drain starts once");
        assert!(
            drain.watcher().is_none(),
            "no new connection while draining"
        );
        let mut done = std::pin::pin!(done);
        assert!(
            futures_util::FutureExt::now_or_never(done.as_mut()).is_none(),
            "a watcher is still alive"
        );
        drop(w);
        done.await;
    }
}
