//! The istiod source: caches the certificate, renews at half-life, retries with backoff.
//! Knows nothing of gRPC: it asks a [`CertificateAuthority`] for certificates.
//!
//! Times are kept on tokio's clock: a certificate's validity is turned into [`Instant`]s
//! once, when it arrives, so the schedule can be tested with paused time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh::WorkloadCerts;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{SourceContext, publish};
use crate::ca_client::{CertificateAuthority, IssueError, IstiodCa};
use crate::config::IstiodConfig;
use crate::roots::{self, MeshRoots};
use crate::rotation::{Backoff, renew_at, retry_delay};

/// Runs the istiod source until shutdown.
pub async fn run(cfg: IstiodConfig, watch_interval: Duration, ctx: SourceContext) {
    let cfg = Arc::new(cfg);
    let roots_rx = roots::watch(cfg.root_cert.clone(), watch_interval, ctx.metrics.clone()).await;
    keep_fresh(IstiodCa::new(cfg), roots_rx, ctx).await;
}

/// The certificate being served, on tokio's clock.
struct Held {
    /// Serial, for the log.
    serial: String,
    /// When it stops being valid.
    expires: Instant,
}

/// Keeps a certificate from `ca` in the store until shutdown: renews at half-life (with
/// jitter), retries failures with backoff (never waiting past the held certificate's
/// expiry), and pushes new mesh roots to SDS clients as soon as they change. The held
/// certificate keeps serving until a new one arrives.
pub async fn keep_fresh<C: CertificateAuthority>(
    mut ca: C,
    mut roots_rx: watch::Receiver<Option<Arc<MeshRoots>>>,
    mut ctx: SourceContext,
) {
    let mut backoff = Backoff::default();
    let mut next_attempt = Instant::now();
    let mut held: Option<Held> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_attempt) => {}
            changed = roots_rx.changed() => {
                if changed.is_err() { return; }
                push_new_roots(&roots_rx, &ctx);
                continue;
            }
            _ = ctx.stopped() => return,
        }
        let roots = roots_rx.borrow_and_update().clone();
        let issued = match roots.as_deref() {
            Some(roots) => ca.issue(roots).await,
            None => Err(IssueError::NoRoots),
        };
        match issued {
            Ok(certs) => {
                let (renew, expires) = schedule(&certs);
                held = Some(Held {
                    serial: certs.serial.clone(),
                    expires,
                });
                publish(&ctx.store, &ctx.metrics, certs, "istiod");
                backoff.reset();
                next_attempt = renew;
            }
            Err(e) => {
                let delay = after_failure(&e, &mut backoff, held.as_ref());
                ctx.metrics.error(e.reason());
                next_attempt = Instant::now() + delay;
            }
        }
    }
}

/// When to renew `certs`, just received, and when it expires, as tokio instants.
fn schedule(certs: &WorkloadCerts) -> (Instant, Instant) {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let until = |t: SystemTime| now + t.duration_since(wall).unwrap_or_default();
    (until(renew_at(certs, wall)), until(certs.not_after))
}

/// Logs a failed attempt and returns how long to wait before the next.
fn after_failure(e: &IssueError, backoff: &mut Backoff, held: Option<&Held>) -> Duration {
    let now = Instant::now();
    let valid = held.filter(|h| h.expires > now);
    let delay = retry_delay(
        backoff.next_delay(),
        valid.map(|h| h.expires.saturating_duration_since(now)),
    );
    tracing::error!(
        reason = e.reason(),
        retry_in = ?delay,
        still_serving = valid.map_or("nothing", |h| h.serial.as_str()),
        "certificate renewal failed: {e}"
    );
    delay
}

/// Republishes the held certificate with new roots: new trust roots reach SDS clients
/// now, not at the next renewal.
fn push_new_roots(roots_rx: &watch::Receiver<Option<Arc<MeshRoots>>>, ctx: &SourceContext) {
    let roots = roots_rx.borrow().clone();
    if let (Some(roots), Some(current)) = (roots, ctx.store.current()) {
        tracing::info!(fingerprint = %roots.fingerprint, "mesh roots changed; pushing the new ROOTCA");
        ctx.store.publish(current.certs.with_roots(&roots.certs));
    }
}

#[cfg(test)]
mod tests {
    //! The schedule on tokio's paused clock: hours of rotation in milliseconds. The CA is
    //! the test CA's signer called in-process, so certificates and validation are real.

    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    use e2e::ca::TestCa;
    use mesh::Identity;
    use mesh::certs::pkcs8_pem;
    use tokio::sync::mpsc;

    use super::*;
    use crate::ca_client::CaError;
    use crate::metrics::Metrics;
    use crate::rotation::{BACKOFF_INITIAL, BACKOFF_MAX, RENEW_JITTER, RENEW_RATIO};
    use crate::store::{Published, Store};

    /// One call the manager made.
    #[derive(Debug)]
    struct Attempt {
        at: Instant,
        /// Whether the CA answered with a certificate.
        issued: bool,
    }

    /// The test CA's signer, in-process, with a switch to take it down.
    struct InProcessCa {
        ca: Arc<TestCa>,
        identity: Identity,
        ttl: Duration,
        up: Arc<AtomicBool>,
        attempts: mpsc::UnboundedSender<Attempt>,
    }

    impl CertificateAuthority for InProcessCa {
        async fn issue(&mut self, roots: &MeshRoots) -> Result<WorkloadCerts, IssueError> {
            let up = self.up.load(Ordering::SeqCst);
            let _ = self.attempts.send(Attempt {
                at: Instant::now(),
                issued: up,
            });
            if !up {
                return Err(IssueError::Ca(CaError::Rpc {
                    addr: "in-process".into(),
                    code: tonic::Code::Unavailable,
                    message: "the CA is down".into(),
                    reason: "ca_unreachable",
                }));
            }
            let (leaf, key) = self.ca.issue_direct(&self.identity, self.ttl);
            Ok(WorkloadCerts::validate(
                &[leaf.into()],
                &pkcs8_pem(&key),
                &roots.certs,
                Some(&self.identity),
                SystemTime::now(),
            )?)
        }
    }

    /// A running manager over an [`InProcessCa`].
    struct Rig {
        store: Store,
        up: Arc<AtomicBool>,
        attempts: mpsc::UnboundedReceiver<Attempt>,
        _roots: watch::Sender<Option<Arc<MeshRoots>>>,
        _shutdown: watch::Sender<bool>,
    }

    impl Rig {
        async fn start(ttl: Duration, up: bool) -> Rig {
            let ca = Arc::new(TestCa::start().await);
            let roots = roots::parse(Path::new("test root"), ca.root_pem()).unwrap();
            let (roots_tx, roots_rx) = watch::channel(Some(Arc::new(roots)));
            let (shutdown_tx, shutdown) = watch::channel(false);
            let (attempts_tx, attempts) = mpsc::unbounded_channel();
            let up = Arc::new(AtomicBool::new(up));
            let store = Store::new();
            let ctx = SourceContext {
                store: store.clone(),
                metrics: Arc::new(Metrics::new()),
                shutdown,
            };
            let in_process = InProcessCa {
                ca,
                identity: Identity::new("cluster.local", "gateway-system", "gateway-proxy")
                    .unwrap(),
                ttl,
                up: up.clone(),
                attempts: attempts_tx,
            };
            tokio::spawn(keep_fresh(in_process, roots_rx, ctx));
            Rig {
                store,
                up,
                attempts,
                _roots: roots_tx,
                _shutdown: shutdown_tx,
            }
        }

        async fn next_attempt(&mut self) -> Attempt {
            self.attempts.recv().await.expect("the manager runs")
        }

        /// The next successful issuance and what the store then serves.
        async fn next_issued(&mut self) -> (Attempt, Published) {
            loop {
                let attempt = self.next_attempt().await;
                if attempt.issued {
                    let mut rx = self.store.subscribe();
                    // The manager publishes right after the CA answers.
                    let published = rx.wait_for(|p| p.is_some()).await.unwrap().clone();
                    return (attempt, published.unwrap());
                }
            }
        }

        fn serving(&self) -> Option<String> {
            self.store.current().map(|p| p.certs.serial.clone())
        }
    }

    /// `certs`'s expiry on tokio's clock, taken as it arrives (paused time stands still).
    fn expiry(certs: &WorkloadCerts) -> Instant {
        Instant::now()
            + certs
                .not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn renews_at_half_life_within_the_jitter() {
        let ttl = Duration::from_secs(1000);
        let mut rig = Rig::start(ttl, true).await;
        let (mut last, first) = rig.next_issued().await;
        let mut serial = first.certs.serial.clone();
        let mut intervals = Vec::new();
        for _ in 0..10 {
            let attempt = rig.next_attempt().await;
            assert!(attempt.issued);
            intervals.push(attempt.at - last.at);
            last = attempt;
            let now_serving = rig.serving().unwrap();
            assert_ne!(now_serving, serial, "each renewal serves a new certificate");
            serial = now_serving;
        }
        // X.509 times are whole seconds: the lifetime starts up to 1 s before issuance.
        let earliest = ttl.mul_f64(RENEW_RATIO - RENEW_JITTER) - Duration::from_secs(1);
        let latest = ttl.mul_f64(RENEW_RATIO + RENEW_JITTER);
        for interval in &intervals {
            assert!(
                *interval >= earliest && *interval <= latest,
                "renewed after {interval:?}, not within {earliest:?}..={latest:?}: {intervals:?}"
            );
        }
        assert!(
            intervals.windows(2).any(|w| w[0] != w[1]),
            "jittered, not in lock step: {intervals:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_from_half_a_second_doubling_to_150s() {
        let mut rig = Rig::start(Duration::from_secs(3600), false).await;
        let mut last = rig.next_attempt().await;
        let mut nominal = BACKOFF_INITIAL;
        for _ in 0..12 {
            let attempt = rig.next_attempt().await;
            assert!(!attempt.issued);
            let gap = attempt.at - last.at;
            // Jittered between 80% and 100% of the nominal step.
            assert!(
                gap >= nominal.mul_f64(0.8) && gap <= nominal,
                "waited {gap:?} for a nominal {nominal:?}"
            );
            nominal = (nominal * 2).min(BACKOFF_MAX);
            last = attempt;
        }
        assert_eq!(nominal, BACKOFF_MAX, "reached the cap");
        assert_eq!(rig.serving(), None);

        rig.up.store(true, Ordering::SeqCst);
        let (_, published) = rig.next_issued().await;
        assert_eq!(published.version, 1, "served once the CA answers");
    }

    #[tokio::test(start_paused = true)]
    async fn held_certificate_keeps_serving_through_an_outage_until_it_expires() {
        let mut rig = Rig::start(Duration::from_secs(100), true).await;
        let (_, first) = rig.next_issued().await;
        let expires = expiry(&first.certs);
        rig.up.store(false, Ordering::SeqCst);
        let mut failed = 0;
        loop {
            let attempt = rig.next_attempt().await;
            assert!(!attempt.issued);
            if attempt.at >= expires {
                break;
            }
            failed += 1;
            assert_eq!(
                rig.serving(),
                Some(first.certs.serial.clone()),
                "attempt {failed} failed; the held certificate is still served"
            );
        }
        assert!(failed >= 2, "retried during the outage ({failed} attempts)");
    }

    /// The outage seen in the field: the CA came back shortly before the held certificate
    /// expired, but the next retry was a whole backoff step (8 s here) away, so the
    /// certificate lapsed for seconds while the CA was up.
    #[tokio::test(start_paused = true)]
    async fn retry_after_an_outage_is_never_scheduled_past_the_held_certificates_expiry() {
        // Renewal at ~10 s; failures at ~10, 10.5, 11.5, 13.5 and 17.5 s; uncapped, the
        // next would be ~25.5 s, past expiry at 20 s.
        let mut rig = Rig::start(Duration::from_secs(20), true).await;
        let (_, first) = rig.next_issued().await;
        let expires = expiry(&first.certs);
        rig.up.store(false, Ordering::SeqCst);
        let up = rig.up.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(expires - Duration::from_secs(1)).await;
            up.store(true, Ordering::SeqCst);
        });
        let (renewed, second) = rig.next_issued().await;
        assert_ne!(second.certs.serial, first.certs.serial);
        assert!(
            renewed.at < expires,
            "renewed {:?} after the held certificate expired",
            renewed.at - expires
        );
    }
}
