//! What operators see: Prometheus [`metrics`], the JSON [`access_log`], and recent request
//! explanations ([`debug`]).

pub mod access_log;
pub mod debug;
pub mod metrics;
