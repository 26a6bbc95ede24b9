//! Data-plane workers for `--workers N` with N > 1: N threads, each running a
//! current-thread tokio runtime, serve the connections the accept loops hand them, each to
//! its end. A connection's downstream I/O, its requests, the upstream pool they draw from
//! (one per worker) and their timers stay on one thread, as in Envoy's worker model: no
//! work stealing, no cross-thread wakeups between a request and its upstream connection.
//! The control plane (providers, translate, admin, SDS, the accept loops) runs on the main
//! runtime. With one worker there are no extra threads: the main current-thread runtime
//! serves everything and nothing is handed over.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The calling thread's worker index: `0..N` on a worker thread, 0 on any other thread.
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// The worker threads (none with one worker).
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropped with `Workers`: each worker's runtime then stops, cancelling what is left
    /// (the drain has run by then).
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` worker threads; `n <= 1` starts none (the caller's runtime serves).
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let threads = if n > 1 { n } else { 0 };
        let mut handles = Vec::with_capacity(threads);
        let mut stop = Vec::with_capacity(threads);
        for i in 0..threads {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, rx) = oneshot::channel::<()>();
            handles.push(rt.handle().clone());
            stop.push(tx);
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    INDEX.with(|c| c.set(i));
                    rt.block_on(async {
                        let _ = rx.await;
                    });
                })?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    /// How many threads serve connections (1 when the caller's runtime does).
    pub fn count(&self) -> usize {
        self.handles.len().max(1)
    }

    /// Serves an accepted connection on the next worker, round-robin (on the caller's
    /// runtime with one worker). The socket moves to the worker's reactor, so its I/O
    /// never wakes another thread.
    pub fn serve<F, Fut>(&self, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.handles.is_empty() {
            tokio::spawn(serve(tcp));
            return;
        }
        let std = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand an accepted connection to a worker");
                return;
            }
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(async move {
            // Registered with this worker's reactor (still non-blocking from tokio).
            match TcpStream::from_std(std) {
                Ok(tcp) => serve(tcp).await,
                Err(e) => tracing::warn!(error = %e, "cannot register a connection on its worker"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Accepts `n` connections through `workers` and returns the worker index and thread
    /// name each was served on.
    async fn served_on(workers: &Workers, n: usize) -> Vec<(usize, String)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..n {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            workers.serve(tcp, move |mut tcp| async move {
                let name = std::thread::current().name().unwrap_or("").to_string();
                seen.lock().unwrap().push((current(), name));
                tcp.write_all(b"x").await.unwrap();
            });
            let mut b = [0u8; 1];
            client.read_exact(&mut b).await.unwrap();
        }
        seen.lock().unwrap().clone()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_go_round_robin_to_worker_threads_and_are_served_there() {
        let workers = Workers::start(3).unwrap();
        assert_eq!(workers.count(), 3);
        let seen = served_on(&workers, 6).await;
        let indexes: Vec<usize> = seen.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [0, 1, 2, 0, 1, 2]);
        let names: BTreeSet<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            BTreeSet::from(["worker-0", "worker-1", "worker-2"]),
            "each connection runs on its worker's own thread"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_worker_serves_on_the_callers_runtime() {
        let workers = Workers::start(1).unwrap();
        assert_eq!(workers.count(), 1);
        let caller = std::thread::current().name().unwrap_or("").to_string();
        let seen = served_on(&workers, 2).await;
        assert_eq!(seen, [(0, caller.clone()), (0, caller)]);
    }
}
