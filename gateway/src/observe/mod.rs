//! What operators see: Prometheus [`metrics`] (the gateway's own and Istio's standard
//! [`istio_metrics`]), Istio's [`peer_metadata`] headers towards mesh upstreams, the JSON
//! [`access_log`] (and its OTLP export, [`otlp_logs`]), OTLP [`traces`], and recent
//! request explanations ([`debug`]). The per-request families are [`sharded`] by worker.

pub mod access_log;
pub mod debug;
pub mod istio_metrics;
pub mod metrics;
pub mod otlp_logs;
pub mod peer_metadata;
pub mod sharded;
pub mod traces;
