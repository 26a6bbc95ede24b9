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
/// While a certificate is held, one retry waits at most this share of its remaining
/// validity (1/4): the attempts crowd towards expiry instead of leaping past it.
pub const RETRY_SHARE_OF_REMAINING: u32 = 4;
/// ...but not less than this, so the last moments before expiry do not spin.
pub const RETRY_FLOOR: Duration = Duration::from_millis(100);

/// When to renew `certs`, received at `received`: half way from then to its expiry (as
/// Istio's agent, not from its backdated `notBefore`), jittered so a fleet does not renew
/// in step.
pub fn renew_at(certs: &WorkloadCerts, received: SystemTime) -> SystemTime {
    let jitter = (fastrand::f64() * 2.0 - 1.0) * RENEW_JITTER;
    certs.refresh_at(received, RENEW_RATIO, jitter)
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

/// The wait before the next attempt after a failure: the backoff step, capped while a
/// certificate is held (`remaining` is its validity left) at a quarter of what remains
/// (at least [`RETRY_FLOOR`], never past expiry). A CA that returns before the held
/// certificate lapses is then used before it lapses, not a whole backoff step later.
pub fn retry_delay(backoff: Duration, remaining: Option<Duration>) -> Duration {
    match remaining {
        Some(left) if !left.is_zero() => {
            let cap = (left / RETRY_SHARE_OF_REMAINING).max(RETRY_FLOOR).min(left);
            backoff.min(cap)
        }
        // Nothing held (or it has lapsed): nothing to protect, plain backoff.
        _ => backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_waits_at_most_a_quarter_of_the_remaining_validity() {
        let s = Duration::from_secs;
        // Far from expiry the backoff step rules.
        assert_eq!(retry_delay(s(8), Some(s(3600))), s(8));
        // 8 s step, 4 s left: retry after 1 s, not 4 s after expiry.
        assert_eq!(retry_delay(s(8), Some(s(4))), s(1));
        // Near expiry: the floor, but never past expiry.
        assert_eq!(
            retry_delay(s(8), Some(Duration::from_millis(200))),
            RETRY_FLOOR
        );
        assert_eq!(
            retry_delay(s(8), Some(Duration::from_millis(30))),
            Duration::from_millis(30)
        );
        // Nothing held, or lapsed: the backoff step.
        assert_eq!(retry_delay(s(8), None), s(8));
        assert_eq!(retry_delay(s(8), Some(Duration::ZERO)), s(8));
    }

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
