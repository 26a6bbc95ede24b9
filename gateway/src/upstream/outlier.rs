//! DestinationRule `outlierDetection`: per-endpoint consecutive-error counters, kept per
//! process across reloads. An endpoint reaching `consecutive5xxErrors` (5xx answers and
//! connection failures) or `consecutiveGatewayErrors` (502/503/504 and failures) is
//! ejected for `baseEjectionTime` times the number of its ejections, unless
//! `maxEjectionPercent` of the backend is already out (one endpoint may always be).
//! Ejection ends when its time is up (checked when endpoints are picked).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::attempt::Outcome;
use crate::ir::OutlierDetection;

/// Milliseconds since the process's first look at the clock.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Health of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Ejected until this `now_ms` (0: never ejected).
    ejected_until: AtomicU64,
    /// Ejections so far (the multiplier of the ejection time).
    ejections: AtomicU32,
    /// Attempts in flight to it (for LEAST_REQUEST).
    pub active: AtomicU32,
}

/// What the admin page shows of an endpoint.
#[derive(Debug, serde::Serialize)]
pub struct HealthReport {
    /// `healthy` or `ejected`.
    pub state: &'static str,
    /// How long the ejection still lasts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_for_ms: Option<u64>,
    /// Ejections so far.
    pub ejections: u32,
    /// Current run of 5xx answers and failures.
    pub consecutive_5xx: u32,
    /// Attempts in flight.
    pub active: u32,
}

/// Counts one attempt in flight to an endpoint until dropped: a request cancelled while
/// it waits (its client gone) is uncounted too.
pub struct AttemptInFlight<'a>(&'a EndpointHealth);

impl Drop for AttemptInFlight<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EndpointHealth {
    /// Counts an attempt in flight (LEAST_REQUEST's load) until the guard drops.
    pub fn start(&self) -> AttemptInFlight<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        AttemptInFlight(self)
    }

    /// Ejected right now?
    pub fn is_ejected(&self) -> bool {
        now_ms() < self.ejected_until.load(Ordering::Relaxed)
    }

    /// For the admin page.
    pub fn report(&self) -> HealthReport {
        let until = self.ejected_until.load(Ordering::Relaxed);
        let now = now_ms();
        HealthReport {
            state: if now < until { "ejected" } else { "healthy" },
            ejected_for_ms: (now < until).then(|| until - now),
            ejections: self.ejections.load(Ordering::Relaxed),
            consecutive_5xx: self.consecutive_5xx.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
        }
    }

    /// Counts an attempt's outcome; true when the endpoint has reached a threshold
    /// (the caller decides whether the backend can spare it).
    pub fn record(&self, od: &OutlierDetection, outcome: Outcome) -> bool {
        let (is_5xx, is_gateway) = match outcome {
            Outcome::Response(s) => ((500..=599).contains(&s), matches!(s, 502..=504)),
            // Not the endpoint's doing.
            Outcome::DownstreamError | Outcome::Cancelled(_) => return false,
            _ => (true, true),
        };
        let bump = |c: &AtomicU32, hit: bool| {
            if hit {
                c.fetch_add(1, Ordering::Relaxed) + 1
            } else {
                // Every worker's successes land here: a store of the 0 already there
                // would still take the line from the other cores.
                if c.load(Ordering::Relaxed) != 0 {
                    c.store(0, Ordering::Relaxed);
                }
                0
            }
        };
        let n5 = bump(&self.consecutive_5xx, is_5xx);
        let ng = bump(&self.consecutive_gateway, is_gateway);
        (od.consecutive_5xx > 0 && n5 >= od.consecutive_5xx)
            || (od.consecutive_gateway > 0 && ng >= od.consecutive_gateway)
    }

    /// Ejects the endpoint: the n-th ejection lasts n × `baseEjectionTime`; each
    /// `interval` spent healthy since the last one takes one off the count first.
    pub fn eject(&self, od: &OutlierDetection) -> Duration {
        let now = now_ms();
        let last_until = self.ejected_until.load(Ordering::Relaxed);
        let interval = od.interval.as_millis().max(1) as u64;
        let healthy_intervals = now.saturating_sub(last_until) / interval;
        let prior = self.ejections.load(Ordering::Relaxed);
        let n = prior
            .saturating_sub(u32::try_from(healthy_intervals).unwrap_or(u32::MAX))
            .saturating_add(1);
        self.ejections.store(n, Ordering::Relaxed);
        // Envoy's default cap on one ejection.
        let time =
            (od.base_ejection_time * n).min(Duration::from_secs(300).max(od.base_ejection_time));
        self.ejected_until
            .store(now + time.as_millis() as u64, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        time
    }
}

/// May one more of `total` endpoints be ejected while `ejected` are out? Envoy's rule
/// (without `always_eject_one_host`, which Istio never sets): only while the share
/// ejected, this one included, stays within `maxEjectionPercent`, so with the default
/// 10% fewer than ten endpoints are never ejected.
pub fn can_eject(od: &OutlierDetection, ejected: usize, total: usize) -> bool {
    (ejected + 1) * 100 <= total * od.max_ejection_percent as usize
}

/// Whether ejections are honoured: suspended while fewer than `minHealthPercent` of the
/// endpoints are healthy.
pub fn honour_ejections(od: Option<&OutlierDetection>, healthy: usize, total: usize) -> bool {
    match od {
        None => true,
        Some(od) => total == 0 || healthy * 100 >= total * od.min_health_percent as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn od() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 2,
            consecutive_gateway: 0,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }

    #[test]
    fn consecutive_5xx_reach_the_threshold_and_a_success_resets_the_run() {
        let h = EndpointHealth::default();
        let od = od();
        assert!(!h.record(&od, Outcome::Response(500)));
        assert!(!h.record(&od, Outcome::Response(200)));
        assert!(!h.record(&od, Outcome::ConnectFailure));
        assert!(h.record(&od, Outcome::Response(503)));
    }

    #[test]
    fn a_repeated_ejection_lasts_longer() {
        let h = EndpointHealth::default();
        let od = od();
        assert_eq!(h.eject(&od), Duration::from_secs(30));
        assert!(h.is_ejected());
        assert_eq!(h.eject(&od), Duration::from_secs(60));
    }

    #[test]
    fn ejections_stay_within_max_ejection_percent_as_in_envoy() {
        let mut od = od();
        // 10% of 2 endpoints is none; of 20, two.
        assert!(!can_eject(&od, 0, 2));
        assert!(can_eject(&od, 1, 20));
        assert!(!can_eject(&od, 2, 20));
        od.max_ejection_percent = 100;
        assert!(can_eject(&od, 1, 2));
        assert!(!can_eject(&od, 2, 2));
        assert!(!can_eject(&od, 0, 0));
    }
}
