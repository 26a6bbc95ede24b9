//! The SPIFFE Workload API, `SpiffeWorkloadAPI` (what a SPIRE agent serves).
//!
//! Generated at build time from `proto/spiffe/workload.proto`. The sds-agent reads SVIDs
//! through the `spiffe` crate's own client; this module gives test doubles the server
//! side and its messages. Unimplemented calls answer `UNIMPLEMENTED`.

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("_");
}

pub use generated::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
pub use generated::{X509svid, X509svidRequest, X509svidResponse};

/// The gRPC service name (the proto has no package).
pub const SERVICE: &str = "SpiffeWorkloadAPI";
