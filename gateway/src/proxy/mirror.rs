//! RequestMirror: fire-and-forget copies of a request to other backends. A copy never
//! delays or changes the client's answer; its own outcome is only logged.

use std::time::Duration;

use http::Request;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use hyper::body::{Body, Incoming};
use tokio::sync::mpsc;

use super::ProxyContext;
use super::attempt::{add_peer_metadata, pick, upstream_uri};
use crate::dataplane::routes::Backend;
use crate::upstream::RequestBody;

/// Chunks a mirror may lag behind the client's body before it loses its copy.
const MIRROR_BUFFER: usize = 32;
/// How long a mirrored request may take.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// Rolls each mirror's share and sends the chosen copies; returns the client's body,
/// teed when a copy needs it.
pub fn send(
    ctx: &ProxyContext,
    mirrors: &[&(Backend, u32)],
    parts: &Parts,
    path_and_query: &PathAndQuery,
    body: Incoming,
) -> RequestBody {
    let chosen: Vec<&Backend> = mirrors
        .iter()
        .filter(|(_, ppm)| fastrand::u32(0..1_000_000) < *ppm)
        .map(|(b, _)| b)
        .collect();
    if chosen.is_empty() {
        return RequestBody::Streaming(body);
    }
    let streamed = !body.is_end_stream();
    let mut copies = Vec::new();
    for backend in chosen {
        let copy_body = if streamed {
            let (tx, rx) = mpsc::channel(MIRROR_BUFFER);
            copies.push(tx);
            RequestBody::Copy(rx)
        } else {
            RequestBody::empty()
        };
        spawn_copy(ctx, backend, parts, path_and_query, copy_body);
    }
    if copies.is_empty() {
        RequestBody::Streaming(body)
    } else {
        RequestBody::Tee(body, copies, None)
    }
}

fn spawn_copy(
    ctx: &ProxyContext,
    backend: &Backend,
    parts: &Parts,
    path_and_query: &PathAndQuery,
    body: RequestBody,
) {
    let Ok(ep) = pick(backend) else {
        tracing::debug!(backend = %backend.name, "mirror has no endpoint; copy dropped");
        return;
    };
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.uri_mut() = upstream_uri(
        ctx.upstreams().local_authority(ep.authority),
        path_and_query,
    );
    // As Envoy and Istio do, the copy's Host says it is a shadow.
    if let Some(host) = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        && let Ok(v) = HeaderValue::from_str(&shadow_host(host))
    {
        req.headers_mut().insert(header::HOST, v);
    }
    add_peer_metadata(ctx, ep.transport, req.headers_mut());
    let client = ctx
        .upstreams()
        .client(ep.transport, backend.http2, backend.pool());
    let name = backend.name.clone();
    tokio::spawn(async move {
        match tokio::time::timeout(MIRROR_TIMEOUT, client.request(req.map(Box::new))).await {
            Ok(Ok(resp)) => {
                tracing::debug!(backend = %name, status = resp.status().as_u16(), "mirror answered")
            }
            Ok(Err(e)) => tracing::debug!(backend = %name, error = %e, "mirror failed"),
            Err(_) => tracing::debug!(backend = %name, "mirror timed out"),
        }
    });
}

/// `host[:port]` -> `host-shadow[:port]`.
fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{h}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    }
}
