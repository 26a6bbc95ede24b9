//! Fault injection for tests: answer errors (5xx, or 429 with Retry-After) for a number of
//! requests or a while, or stall requests, as an overloaded or restarting server does.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::status::ApiError;

/// The faults in force.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<FaultState>,
    /// Injected error replies sent so far.
    injected: AtomicU64,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Status code to answer with, how many more times (None: until `until`), and Retry-After.
    fail: Option<Failure>,
    /// Requests wait until then before being served.
    stall_until: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Failure {
    code: u16,
    remaining: Option<u32>,
    until: Option<Instant>,
    retry_after: Option<u64>,
}

impl Faults {
    /// Answers the next `count` requests with `code` (429 carries `Retry-After: 1`).
    pub fn fail_next(&self, code: u16, count: u32) {
        let retry_after = (code == 429).then_some(1);
        self.lock().fail = Some(Failure {
            code,
            remaining: Some(count),
            until: None,
            retry_after,
        });
    }

    /// Answers every request with `code` for `duration`.
    pub fn fail_for(&self, code: u16, duration: Duration) {
        let retry_after = (code == 429).then_some(1);
        self.lock().fail = Some(Failure {
            code,
            remaining: None,
            until: Some(Instant::now() + duration),
            retry_after,
        });
    }

    /// Holds every request for `duration` before serving it.
    pub fn stall_for(&self, duration: Duration) {
        self.lock().stall_until = Some(Instant::now() + duration);
    }

    /// How many injected error replies have been sent.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Lifts every fault.
    pub fn clear(&self) {
        *self.lock() = FaultState::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called before serving a request: waits out a stall, then fails it if a failure is due.
    pub async fn before_request(&self) -> Result<(), ApiError> {
        let stall = self.lock().stall_until.filter(|t| *t > Instant::now());
        if let Some(until) = stall {
            tokio::time::sleep_until(until.into()).await;
        }
        let mut st = self.lock();
        let Some(mut f) = st.fail else { return Ok(()) };
        let due = match (f.remaining, f.until) {
            (Some(0), _) => false,
            (Some(n), _) => {
                f.remaining = Some(n - 1);
                true
            }
            (None, Some(until)) => Instant::now() < until,
            (None, None) => true,
        };
        st.fail = due.then_some(f);
        if !due {
            return Ok(());
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        let message = match f.code {
            429 => "Too many requests, please try again later.".to_string(),
            503 => "the server is currently unable to handle the request".to_string(),
            c => format!("injected failure (HTTP {c})"),
        };
        Err(ApiError::Injected {
            code: f.code,
            message,
            retry_after: f.retry_after,
        })
    }
}
