//! Data-plane workers for `--workers N` with N > 1: N threads, each running a
//! current-thread tokio runtime with its own listening socket per port (`SO_REUSEPORT`:
//! the kernel spreads new connections over them), as in Envoy's worker model. A
//! connection is accepted, served and closed on one thread: its downstream I/O, its
//! requests, the upstream pool they draw from (one per worker) and their timers. No work
//! stealing and no hand-off: nothing crosses threads on the request path. The control
//! plane (providers, translate, admin, SDS, the listener manager) runs on the main
//! runtime. With one worker there are no extra threads: the main current-thread runtime
//! accepts and serves everything on a single socket per port.

use std::cell::Cell;
use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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
            _stop: stop,
        })
    }

    /// How many threads serve connections (1 when the caller's runtime does).
    pub fn count(&self) -> usize {
        self.handles.len().max(1)
    }

    /// Runs a task made by `make` on every thread: each worker's, and the caller's runtime
    /// (the only one with one worker).
    pub fn spawn_on_every_thread<F, T>(&self, make: F)
    where
        F: Fn() -> T,
        T: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(make());
        for h in &self.handles {
            h.spawn(make());
        }
    }

    /// Runs `task` on worker `i` (`i < count()`), or on the caller's runtime with one
    /// worker. What the task spawns stays on that worker's thread.
    pub fn spawn_on<F>(&self, i: usize, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.handles.get(i % self.handles.len().max(1)) {
            Some(h) => h.spawn(task),
            None => tokio::spawn(task),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Where a task spawned on worker `i` runs, and where what it spawns runs.
    async fn runs_on(workers: &Workers, i: usize) -> [(usize, String); 2] {
        let here = || {
            let name = std::thread::current().name().unwrap_or("").to_string();
            (current(), name)
        };
        workers
            .spawn_on(i, async move {
                let inner = tokio::spawn(async move { here() }).await.unwrap();
                [here(), inner]
            })
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn each_worker_runs_its_tasks_and_their_spawns_on_its_own_thread() {
        let workers = Workers::start(3).unwrap();
        assert_eq!(workers.count(), 3);
        let mut names = BTreeSet::new();
        for i in 0..3 {
            let [task, spawned] = runs_on(&workers, i).await;
            assert_eq!(task.0, i);
            assert_eq!(task, spawned, "a worker's spawns stay on its thread");
            names.insert(task.1);
        }
        assert_eq!(
            names,
            BTreeSet::from(["worker-0".into(), "worker-1".into(), "worker-2".into()])
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_task_for_every_thread_runs_on_each_worker_and_the_caller() {
        let workers = Workers::start(2).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        workers.spawn_on_every_thread(|| {
            let tx = tx.clone();
            async move {
                let name = std::thread::current().name().unwrap_or("").to_string();
                let _ = tx.send(name);
            }
        });
        drop(tx);
        let mut names = BTreeSet::new();
        while let Some(name) = rx.recv().await {
            names.insert(name);
        }
        let caller = std::thread::current().name().unwrap_or("").to_string();
        assert_eq!(
            names,
            BTreeSet::from([caller, "worker-0".into(), "worker-1".into()])
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_worker_runs_on_the_callers_runtime() {
        let workers = Workers::start(1).unwrap();
        assert_eq!(workers.count(), 1);
        let caller = std::thread::current().name().unwrap_or("").to_string();
        let [task, spawned] = runs_on(&workers, 0).await;
        assert_eq!(task, (0, caller.clone()));
        assert_eq!(spawned, (0, caller));
    }
}
