//! sds-agent: gets the pod's workload certificate (from istiod's CA, a SPIFFE Workload
//! API, or files), keeps it fresh, and serves it over Envoy's SDS API.

pub mod admin;
pub mod app;
pub mod auth;
pub mod ca_client;
pub mod config;
pub mod csr;
pub mod metrics;
pub mod roots;
pub mod rotation;
pub mod sds;
pub mod source;
pub mod store;
pub mod unix_socket;
