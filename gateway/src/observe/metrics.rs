//! Prometheus metrics (prometheus-client), rendered by the admin server at `/metrics`.

use std::sync::Arc;

use hashbrown::Equivalent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::sharded::{Count, LabelKey, Observations, ShardedFamily};
use crate::observe::istio_metrics::{IstioMetrics, Workload};

/// Labels of a proxied request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `namespace/name/rule` of the HTTPRoute rule, or empty when none matched.
    pub route: Arc<str>,
    /// HTTP status code sent to the client.
    pub code: u16,
}

/// Labels of a route-only metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// As in [`RequestLabels`].
    pub route: Arc<str>,
}

/// Labels of an upstream attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// `Service ns/name:port` (bounded by configuration).
    pub backend: Arc<str>,
    /// `2xx`..`5xx` for a response, else the response flag (`UF`, `UT`, `UC`, mesh codes).
    pub outcome: &'static str,
}

/// The request metrics' label sets borrowed ([`LabelKey`]s): a finished request looks
/// its series up by the route id and backend name it holds, without cloning their
/// `Arc<str>`s (the tables', shared by every worker). Each hashes as the owned labels
/// do (`Arc<str>` hashes as its `str`).
#[derive(Hash)]
struct RequestKey<'a> {
    route: &'a str,
    code: u16,
}

impl Equivalent<RequestLabels> for RequestKey<'_> {
    fn equivalent(&self, l: &RequestLabels) -> bool {
        self.code == l.code && self.route == &*l.route
    }
}

impl LabelKey<RequestLabels> for RequestKey<'_> {
    fn to_labels(&self) -> RequestLabels {
        RequestLabels {
            route: Arc::from(self.route),
            code: self.code,
        }
    }
}

/// [`RouteLabels`] borrowed (see [`RequestKey`]).
#[derive(Hash)]
struct RouteKey<'a> {
    route: &'a str,
}

impl Equivalent<RouteLabels> for RouteKey<'_> {
    fn equivalent(&self, l: &RouteLabels) -> bool {
        self.route == &*l.route
    }
}

impl LabelKey<RouteLabels> for RouteKey<'_> {
    fn to_labels(&self) -> RouteLabels {
        RouteLabels {
            route: Arc::from(self.route),
        }
    }
}

/// [`AttemptLabels`] borrowed (see [`RequestKey`]).
#[derive(Hash)]
struct AttemptKey<'a> {
    backend: &'a str,
    outcome: &'static str,
}

impl Equivalent<AttemptLabels> for AttemptKey<'_> {
    fn equivalent(&self, l: &AttemptLabels) -> bool {
        self.outcome == l.outcome && self.backend == &*l.backend
    }
}

impl LabelKey<AttemptLabels> for AttemptKey<'_> {
    fn to_labels(&self) -> AttemptLabels {
        AttemptLabels {
            backend: Arc::from(self.backend),
            outcome: self.outcome,
        }
    }
}

/// Labels of a traffic-policy event on a backend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyEventLabels {
    /// `Service ns/name:port`.
    pub backend: String,
    /// `retry`, `retry_budget_exhausted`, `overflow` (UO), `outlier_ejection`.
    pub event: String,
}

/// Label of a mesh mTLS failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `no_mesh_identity`, `identity_mismatch`, `untrusted_upstream`, `handshake_failed`, `upstream_requires_mtls`.
    pub reason: String,
}

/// Label of a downstream connection closed by a timeout.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    /// `first_request` (no complete first request within the header read timeout),
    /// `idle` (a connection or tunnel without traffic for the idle timeout).
    pub kind: String,
}

/// Label of a request refused because of what the client sent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DownstreamErrorLabels {
    /// The reason code sent (`DPE`, `invalid_host`, `method_too_long`, ...).
    pub code: String,
}

/// Every metric the gateway exports.
pub struct Metrics {
    /// Requests by route and status code (recorded by every worker: sharded).
    pub requests: ShardedFamily<RequestLabels, Count>,
    /// Request duration (seconds, until the response body ends), by route (sharded).
    pub request_duration: ShardedFamily<RouteLabels, Observations>,
    /// Open downstream connections.
    pub active_connections: Gauge,
    /// Downstream connections accepted.
    pub connections_total: Counter,
    /// Downstream connections refused because of the max-connections limit.
    pub connections_rejected: Counter,
    /// Downstream connections closed by the gateway's timeouts, by kind.
    pub downstream_timeouts: Family<TimeoutLabels, Counter>,
    /// Requests refused because the client sent something malformed (400, 414, 431).
    pub downstream_errors: Family<DownstreamErrorLabels, Counter>,
    /// Open upgraded tunnels (WebSocket); each holds a max-connections slot.
    pub tunnels_active: Gauge,
    /// Upgrades refused because no max-connections slot was free.
    pub tunnels_rejected: Counter,
    /// Open upstream connections (pooled or busy).
    pub upstream_connections: Gauge,
    /// Upstream connections opened.
    pub upstream_connections_total: Counter,
    /// Configuration changes applied.
    pub config_reloads: Counter,
    /// Configuration changes rejected (the last good table kept serving).
    pub config_rejections: Counter,
    /// Objects left out of the current configuration (invalid, or refused attachment).
    pub config_objects_rejected: Gauge,
    /// 1 if the last configuration change was applied, 0 if rejected.
    pub config_last_reload_ok: Gauge,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    /// Mesh mTLS failures towards upstreams, by reason.
    pub upstream_tls_errors: Family<ReasonLabels, Counter>,
    /// Upstream attempts by backend and outcome (sharded).
    pub upstream_attempts: ShardedFamily<AttemptLabels, Count>,
    /// SDS versions accepted (mesh identity loaded or rotated).
    pub sds_updates: Counter,
    /// SDS versions refused (NACKed).
    pub sds_rejections: Counter,
    /// SDS stream reconnects.
    pub sds_reconnects: Counter,
    /// Traffic-policy events (retries, overflows, ejections) by backend.
    pub upstream_policy_events: Family<PolicyEventLabels, Counter>,
    /// Istio's standard request metrics (`istio_*`).
    pub istio: IstioMetrics,
    registry: Registry,
}

impl Metrics {
    /// Registers every metric; the Istio metrics name an unknown source workload.
    pub fn new() -> Metrics {
        Metrics::with_source(Workload::unknown(), true)
    }

    /// Registers every metric; `source` is the gateway's workload in the Istio metrics,
    /// which are recorded and exposed only when `istio` is on.
    pub fn with_source(source: Workload, istio: bool) -> Metrics {
        let requests = ShardedFamily::counters();
        let request_duration = ShardedFamily::histograms([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        let m = Metrics {
            requests,
            request_duration,
            active_connections: Gauge::default(),
            connections_total: Counter::default(),
            connections_rejected: Counter::default(),
            downstream_timeouts: Family::default(),
            downstream_errors: Family::default(),
            tunnels_active: Gauge::default(),
            tunnels_rejected: Counter::default(),
            upstream_connections: Gauge::default(),
            upstream_connections_total: Counter::default(),
            config_reloads: Counter::default(),
            config_rejections: Counter::default(),
            config_last_reload_ok: Gauge::default(),
            config_objects_rejected: Gauge::default(),
            access_log_dropped: Counter::default(),
            upstream_tls_errors: Family::default(),
            upstream_attempts: ShardedFamily::counters(),
            sds_updates: Counter::default(),
            sds_rejections: Counter::default(),
            sds_reconnects: Counter::default(),
            upstream_policy_events: Family::default(),
            istio: IstioMetrics::new(source, istio),
            registry: Registry::default(),
        };
        let mut root = Registry::default();
        if istio {
            m.istio.register(&mut root);
        }
        let reg = root.sub_registry_with_prefix("gateway");
        reg.register(
            "requests",
            "Requests by route and status code",
            m.requests.clone(),
        );
        reg.register(
            "request_duration_seconds",
            "Request duration until the response body ends",
            m.request_duration.clone(),
        );
        reg.register(
            "downstream_connections_active",
            "Open downstream connections",
            m.active_connections.clone(),
        );
        reg.register(
            "downstream_connections",
            "Downstream connections accepted",
            m.connections_total.clone(),
        );
        reg.register(
            "downstream_connections_rejected",
            "Downstream connections refused by the max-connections limit",
            m.connections_rejected.clone(),
        );
        reg.register(
            "downstream_connection_timeouts",
            "Downstream connections closed by a timeout, by kind",
            m.downstream_timeouts.clone(),
        );
        reg.register(
            "downstream_request_errors",
            "Requests refused for what the client sent, by reason code",
            m.downstream_errors.clone(),
        );
        reg.register(
            "downstream_tunnels_active",
            "Open upgraded tunnels (each holds a max-connections slot)",
            m.tunnels_active.clone(),
        );
        reg.register(
            "downstream_tunnels_rejected",
            "Upgrades refused because no max-connections slot was free",
            m.tunnels_rejected.clone(),
        );
        reg.register(
            "upstream_connections_active",
            "Open upstream connections",
            m.upstream_connections.clone(),
        );
        reg.register(
            "upstream_connections",
            "Upstream connections opened",
            m.upstream_connections_total.clone(),
        );
        reg.register(
            "config_reloads",
            "Configuration changes applied",
            m.config_reloads.clone(),
        );
        reg.register(
            "config_rejections",
            "Configuration changes rejected",
            m.config_rejections.clone(),
        );
        reg.register(
            "config_objects_rejected",
            "Objects left out of the current configuration",
            m.config_objects_rejected.clone(),
        );
        reg.register(
            "config_last_reload_success",
            "1 if the last configuration change was applied",
            m.config_last_reload_ok.clone(),
        );
        reg.register(
            "access_log_dropped",
            "Access log lines dropped",
            m.access_log_dropped.clone(),
        );
        reg.register(
            "upstream_tls_errors",
            "Mesh mTLS failures towards upstreams, by reason",
            m.upstream_tls_errors.clone(),
        );
        reg.register(
            "upstream_attempts",
            "Upstream attempts by backend and outcome",
            m.upstream_attempts.clone(),
        );
        reg.register(
            "sds_updates",
            "SDS versions accepted",
            m.sds_updates.clone(),
        );
        reg.register(
            "sds_rejections",
            "SDS versions refused (NACK)",
            m.sds_rejections.clone(),
        );
        reg.register(
            "sds_reconnects",
            "SDS stream reconnects",
            m.sds_reconnects.clone(),
        );
        reg.register(
            "upstream_policy_events",
            "Traffic-policy events by backend: retry, retry_budget_exhausted, overflow, outlier_ejection",
            m.upstream_policy_events.clone(),
        );
        Metrics {
            registry: root,
            ..m
        }
    }

    /// Counts a downstream connection closed by a timeout (`first_request`, `idle`,
    /// `stream_idle`).
    pub fn downstream_timeout(&self, kind: &str) {
        self.downstream_timeouts
            .get_or_create(&TimeoutLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Counts a request refused for what the client sent.
    pub fn downstream_error(&self, code: &str) {
        self.downstream_errors
            .get_or_create(&DownstreamErrorLabels {
                code: code.to_string(),
            })
            .inc();
    }

    /// Counts a mesh mTLS failure.
    pub fn tls_error(&self, reason: &str) {
        self.upstream_tls_errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one upstream attempt.
    pub fn attempt(&self, backend: &Arc<str>, outcome: crate::upstream::attempt::Outcome) {
        use crate::upstream::attempt::Outcome;
        let outcome = match outcome {
            // A status code is three digits (100..=999).
            Outcome::Response(s) => {
                const CLASSES: [&str; 10] = [
                    "0xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "7xx", "8xx", "9xx",
                ];
                CLASSES[usize::from(s / 100).min(9)]
            }
            other => other.code(),
        };
        self.upstream_attempts.inc(&AttemptKey { backend, outcome });
    }

    /// Counts a finished request (`route` empty when none matched) and observes its
    /// duration.
    pub fn request_finished(&self, route: &str, code: u16, seconds: f64) {
        self.requests.inc(&RequestKey { route, code });
        self.request_duration.observe(&RouteKey { route }, seconds);
    }

    /// Counts a traffic-policy event on a backend.
    pub fn policy_event(&self, backend: &str, event: &str) {
        self.upstream_policy_events
            .get_or_create(&PolicyEventLabels {
                backend: backend.to_string(),
                event: event.to_string(),
            })
            .inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, RandomState};

    use super::*;

    /// A borrowed key must hash as its labels do, or every request would miss its series
    /// and clone the labels again (still counted right, so only this catches it).
    #[test]
    fn borrowed_keys_hash_and_compare_as_their_labels() {
        let h = RandomState::new();
        let request = RequestKey {
            route: "default/httpbin/0",
            code: 200,
        };
        assert_eq!(h.hash_one(&request), h.hash_one(request.to_labels()));
        assert!(request.equivalent(&request.to_labels()));
        let route = RouteKey { route: "r" };
        assert_eq!(h.hash_one(&route), h.hash_one(route.to_labels()));
        assert!(route.equivalent(&route.to_labels()));
        let attempt = AttemptKey {
            backend: "Service default/httpbin:80",
            outcome: "2xx",
        };
        assert_eq!(h.hash_one(&attempt), h.hash_one(attempt.to_labels()));
        assert!(attempt.equivalent(&attempt.to_labels()));
        assert!(!attempt.equivalent(&AttemptLabels {
            backend: Arc::from("Service default/httpbin:80"),
            outcome: "5xx",
        }));
    }

    #[test]
    fn a_finished_request_counts_by_route_and_code() {
        let m = Metrics::new();
        m.request_finished("default/a/0", 200, 0.001);
        m.request_finished("default/a/0", 200, 0.002);
        m.request_finished("", 404, 0.0);
        let labels = |route: &str, code| RequestLabels {
            route: Arc::from(route),
            code,
        };
        assert_eq!(m.requests.get(&labels("default/a/0", 200)), 2);
        assert_eq!(m.requests.get(&labels("", 404)), 1);
        assert_eq!(m.requests.get(&labels("default/a/0", 404)), 0);
    }
}
