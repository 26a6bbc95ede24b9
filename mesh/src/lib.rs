//! Types shared by meshgate's programs: the workload's SPIFFE identity, the mesh's
//! well-known constants, Istio's certificate-service protocol, workload certificates
//! and the SDS secrets built from them.

pub mod admin;
pub mod ca;
pub mod certs;
pub mod consts;
pub mod identity;
pub mod sds;
pub mod workload_api;

pub use certs::WorkloadCerts;
pub use identity::Identity;
