//! When to renew and how long to wait after a failure. Pure policy, no I/O.

use std::time::{Duration, SystemTime};

use mesh::WorkloadCerts;

/// Fraction of the lifetime after which Istio renews.
pub const RENEW_RATIO: f64 = 0.5;
/// Largest shift of the renewal point, as a fraction of the lifetime (either way).
pub const RENEW_JITTER: f64 = 0.02;
/// First retry delay after a failure.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(150);

/// When to renew `certs`: at half its lifetime, jittered so a fleet does not renew in step.
pub fn renew_at(certs: &WorkloadCerts) -> SystemTime {
    let jitter = (fastrand::f64() * 2.0 - 1.0) * RENEW_JITTER;
    certs.refresh_at(RENEW_RATIO, jitter)
}

/// Exponential backoff, doubling from [`BACKOFF_INITIAL`] to [`BACKOFF_MAX`], jittered.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }
}

impl Backoff {
    /// The delay before the next attempt (between 80% and 100% of the nominal step).
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        nominal.mul_f64(0.8 + fastrand::f64() * 0.2)
    }

    /// Back to the first step after a success.
    pub fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= BACKOFF_INITIAL && delays[0] >= BACKOFF_INITIAL.mul_f64(0.8));
        assert!(delays[1] >= Duration::from_millis(800) && delays[1] <= Duration::from_secs(1));
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(
            delays[11] >= BACKOFF_MAX.mul_f64(0.8),
            "reaches the cap: {:?}",
            delays[11]
        );
        b.reset();
        assert!(b.next_delay() <= BACKOFF_INITIAL);
    }
}
