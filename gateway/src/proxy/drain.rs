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

/// Where the drain is. Ordered: a connection's watcher waits for the next stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Serving as usual.
    Serving,
    /// Finish the requests in flight, take no new ones, then close.
    Draining,
    /// The drain's deadline passed: close now. The requests still in flight are cut
    /// short and recorded as such (`DC`), as Envoy does when it closes a connection.
    Closing,
}

/// Hands out watchers until the drain starts.
#[derive(Clone)]
pub struct DrainWatch {
    stage: Arc<watch::Sender<Stage>>,
    /// Its receivers are held by the connections and what outlives their tasks (an HTTP/2
    /// request's own task, an upgraded tunnel): all gone, every request is recorded.
    open: Arc<watch::Sender<()>>,
}

impl Default for DrainWatch {
    fn default() -> Self {
        DrainWatch {
            stage: Arc::new(watch::channel(Stage::Serving).0),
            open: Arc::new(watch::channel(()).0),
        }
    }
}

impl DrainWatch {
    /// A watcher for a new connection; `None` once draining (the connection is refused).
    pub fn watcher(&self) -> Option<Watcher> {
        // Subscribed before the check: a drain that starts in between is seen by one
        // or the other, never missed.
        let stage = self.stage.subscribe();
        let serving = *stage.borrow() == Stage::Serving;
        serving.then(|| Watcher {
            stage,
            open: Some(self.open.subscribe()),
        })
    }

    /// Starts the drain: every watched connection is told to finish its requests and
    /// close. Returns what to await (with a deadline): it ends when the last watcher is
    /// gone. `None` if the drain had already started.
    pub fn start(&self) -> Option<impl Future<Output = ()> + use<>> {
        if self.stage.send_replace(Stage::Draining) != Stage::Serving {
            return None;
        }
        let stage = self.stage.clone();
        Some(async move { stage.closed().await })
    }

    /// The deadline passed: every connection still open closes now. Returns what to
    /// await: it ends when nothing holds a connection's [`Held`] any more (its requests
    /// are recorded).
    pub fn close(&self) -> impl Future<Output = ()> + use<> {
        self.stage.send_replace(Stage::Closing);
        let open = self.open.clone();
        async move { open.closed().await }
    }
}

/// One connection's view of the drain; the drain waits while it is alive.
pub struct Watcher {
    stage: watch::Receiver<Stage>,
    /// Until [`Watcher::hold`] hands it on.
    open: Option<watch::Receiver<()>>,
}

impl Watcher {
    /// Resolves once the drain is past `seen` (its handle gone reads as `Closing`: the
    /// process is ending). The connection then calls [`Drainable::drain`] and runs to its
    /// end, or at `Closing` returns at once.
    pub async fn past(&mut self, seen: Stage) -> Stage {
        match self.stage.wait_for(|stage| *stage > seen).await {
            Ok(stage) => *stage,
            Err(_) => Stage::Closing,
        }
    }

    /// The connection's hold, for what outlives its task (its requests);
    /// [`DrainWatch::close`] waits for the last. Handed on once (moved, not cloned).
    pub fn hold(&mut self) -> Option<Held> {
        self.open.take().map(Held)
    }
}

/// Keeps [`DrainWatch::close`] waiting while alive.
pub struct Held(#[expect(dead_code, reason = "held for its drop")] watch::Receiver<()>);

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

    #[tokio::test]
    async fn a_watcher_sees_each_stage_and_the_close_waits_for_the_last_hold() {
        let drain = DrainWatch::default();
        let mut w = drain.watcher().expect("a watcher before the drain");
        let _draining = drain.start().expect("the first start");
        assert_eq!(w.past(Stage::Serving).await, Stage::Draining);
        let held = w.hold().expect("the connection's hold");
        assert!(w.hold().is_none(), "handed on once");
        let closed = drain.close();
        assert_eq!(w.past(Stage::Draining).await, Stage::Closing);
        drop(w);
        let mut closed = std::pin::pin!(closed);
        assert!(
            futures_util::FutureExt::now_or_never(closed.as_mut()).is_none(),
            "a hold on the connection is still alive"
        );
        drop(held);
        closed.await;
    }
}
