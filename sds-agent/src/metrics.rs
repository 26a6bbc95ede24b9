//! Prometheus metrics of the agent.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of a CA or source error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Short stable cause, e.g. `unauthenticated`, `ca_unreachable`, `wrong_identity`.
    pub reason: String,
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Unix time at which the served certificate expires.
    pub cert_expiry: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Certificates published (first one included).
    pub rotations: Counter<u64, AtomicU64>,
    /// Failures to obtain or accept a certificate, by reason.
    pub ca_errors: Family<ReasonLabel, Counter>,
    /// Open SDS streams.
    pub sds_streams: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Discovery responses sent.
    pub sds_pushes: Counter<u64, AtomicU64>,
    /// NACKs received from SDS clients.
    pub sds_nacks: Counter<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers all metrics under the `sds_agent` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sds_agent");
        let m = Metrics {
            cert_expiry: Gauge::default(),
            rotations: Counter::default(),
            ca_errors: Family::default(),
            sds_streams: Gauge::default(),
            sds_pushes: Counter::default(),
            sds_nacks: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "cert_expiry_timestamp_seconds",
            "Unix time at which the served workload certificate expires",
            m.cert_expiry.clone(),
        );
        registry.register(
            "cert_rotations",
            "Workload certificates published",
            m.rotations.clone(),
        );
        registry.register(
            "ca_errors",
            "Failures to obtain or accept a certificate, by reason",
            m.ca_errors.clone(),
        );
        registry.register("sds_streams", "Open SDS streams", m.sds_streams.clone());
        registry.register(
            "sds_pushes",
            "SDS discovery responses sent",
            m.sds_pushes.clone(),
        );
        registry.register("sds_nacks", "SDS NACKs received", m.sds_nacks.clone());
        Metrics { registry, ..m }
    }

    /// Counts an error with its reason label.
    pub fn error(&self, reason: &str) {
        self.ca_errors
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
