//! The one set of test helpers for every crate's tests: waiting on conditions, child
//! processes, curl, YAML fixtures and the sds-agent launcher.
//!
//! `use e2e::testing::*;` brings in:
//! - [`eventually`] (async) and [`eventually_blocking`] (sync): poll a condition until it
//!   yields `Some` or a timeout passes; never a fixed sleep;
//! - [`ChildGuard`]: a child process killed on drop, output in a log file;
//!   [`free_port`], [`wait_for_port`];
//! - [`curl`] / [`curl_async`] and [`CurlResult`];
//! - [`yaml`]: Service + EndpointSlice, Gateway and multi-document fixtures;
//! - [`AgentFiles`] and [`start_agent`]: the real sds-agent against the test CA.

use std::future::Future;
use std::time::{Duration, Instant};

pub use crate::agent::{AgentFiles, start_agent};
pub use crate::curl::{CurlResult, curl, curl_async};
pub use crate::fixtures as yaml;
pub use crate::process::{ChildGuard, SIGINT, SIGTERM, free_port, wait_for_port};

/// How often conditions are re-checked.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Some` (returned) or `timeout` passes (`None`). The
/// check runs at least once, and once more at the deadline.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for synchronous tests: blocks the thread between checks.
pub fn eventually_blocking<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_value_the_condition_yields() {
        let mut calls = 0;
        let got = eventually(Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(got, Some(3));
    }

    #[tokio::test]
    async fn eventually_gives_up_with_none_after_checking_at_the_deadline() {
        let mut calls = 0;
        let got: Option<()> = eventually(Duration::ZERO, || {
            calls += 1;
            async { None }
        })
        .await;
        assert_eq!((got, calls), (None, 1));
    }

    #[test]
    fn eventually_blocking_returns_the_first_value_the_condition_yields() {
        let mut calls = 0;
        let got = eventually_blocking(Duration::from_secs(5), || {
            calls += 1;
            (calls == 2).then_some("ready")
        });
        assert_eq!(got, Some("ready"));
    }
}
