//! Answers the gateway makes itself. The client gets `<status> <code> (request id <id>)`,
//! never addresses or identities; the explanation goes to the access log, the metrics and
//! `GET /debug/requests/<id>`.

use http::StatusCode;

/// An error answered by the gateway.
#[derive(Debug)]
pub struct Reject {
    /// Status sent.
    pub status: StatusCode,
    /// Envoy-style response flag (`NR`, `UF`, `UH`, ...) or our reason code.
    pub code: &'static str,
    /// The explanation, for the log and the debug endpoint only.
    pub detail: String,
}

/// Builds a [`Reject`].
pub fn reject(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Reject {
    Reject {
        status,
        code,
        detail: detail.into(),
    }
}

/// The body sent to the client.
pub fn body(status: StatusCode, code: &str, request_id: &str) -> String {
    format!("{} {code} (request id {request_id})\n", status.as_u16())
}
