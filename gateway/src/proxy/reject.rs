//! Answers the gateway makes itself. The client gets `<status> <code> (request id <id>)`,
//! never addresses or identities; the explanation goes to the access log, the metrics and
//! `GET /debug/requests/<id>`.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::BodyKind;

/// An error answered by the gateway.
#[derive(Debug)]
pub struct Reject {
    /// Status sent.
    pub status: StatusCode,
    /// Envoy-style response flag (`NR`, `UF`, `UH`, ...) or our reason code.
    pub code: &'static str,
    /// The explanation, for the log and the debug endpoint only.
    pub detail: String,
    /// The client went away before the answer: it is recorded as Envoy records it
    /// (response code 0 and the flag `code`), not as the status sent into the void.
    pub client_gone: bool,
}

impl Reject {
    /// The request was cut short by its client (`DC`, `DR`) before any answer.
    pub fn client_gone(code: &'static str) -> Reject {
        Reject {
            status: StatusCode::BAD_REQUEST,
            code,
            detail: String::new(),
            client_gone: true,
        }
    }
}

/// Builds a [`Reject`].
pub fn reject(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Reject {
    Reject {
        status,
        code,
        detail: detail.into(),
        client_gone: false,
    }
}

/// The body sent to the client.
pub fn body(status: StatusCode, code: &str, request_id: &str) -> String {
    format!("{} {code} (request id {request_id})\n", status.as_u16())
}

/// The gRPC status an HTTP status stands for (Envoy's `httpToGrpcStatus`, after gRPC's
/// http-grpc-status-mapping): also what Envoy and Istio record for a gRPC answer that
/// carried no `grpc-status`.
pub fn grpc_status_for_http(status: u16) -> u8 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// A gRPC "Trailers-Only" answer (HTTP 200, `grpc-status` in the headers, no body) for
/// an error the gateway makes itself, with Envoy's mapping of the HTTP status; the
/// message is the same `<status> <code> (request id <id>)` line, percent-encoded.
pub fn grpc_trailers_only(status: StatusCode, message: &str) -> Response<BodyKind> {
    let grpc_status = grpc_status_for_http(status.as_u16());
    let mut r = Response::new(BodyKind::Full(None));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(grpc_status)));
    let encoded: String = message
        .bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'%' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        h.insert("grpc-message", v);
    }
    r
}
