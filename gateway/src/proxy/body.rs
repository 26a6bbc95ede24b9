//! The response body sent downstream, and the per-request record (metrics, access log,
//! debug explanation) completed when that body ends or is dropped.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::Version;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::ProxyContext;
use super::connection::InFlight;
use crate::observe::access_log::Entry;
use crate::observe::metrics::{RequestLabels, RouteLabels};

/// What the gateway knows about one request; logged once, when the response ends.
pub struct Completion {
    pub(super) ctx: Arc<ProxyContext>,
    pub(super) start: Instant,
    pub(super) start_time: SystemTime,
    pub(super) method: String,
    pub(super) authority: String,
    pub(super) path: String,
    pub(super) version: Version,
    pub(super) status: u16,
    pub(super) route: Option<String>,
    pub(super) upstream: Option<String>,
    pub(super) upstream_address: Option<String>,
    pub(super) request_id: String,
    pub(super) peer: SocketAddr,
    /// Response flag or reason code when the request did not simply succeed.
    pub(super) code: Option<&'static str>,
    /// The explanation behind `code`.
    pub(super) reason: Option<String>,
    pub(super) attempts: u32,
    /// The client speaks gRPC: the gateway's own errors are gRPC statuses.
    pub(super) grpc: bool,
    /// Keeps the connection from idling out while the request is in flight.
    pub(super) _in_flight: InFlight,
}

impl Completion {
    fn finish(self, bytes_sent: u64) {
        let elapsed = self.start.elapsed();
        let m = &self.ctx.metrics;
        let route = self.route.clone().unwrap_or_default();
        m.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                code: self.status,
            })
            .inc();
        m.request_duration
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
        if let (Some(code), Some(reason)) = (self.code, &self.reason) {
            self.ctx.debug.record(
                &self.request_id,
                serde_json::json!({
                    "request_id": self.request_id,
                    "status": self.status,
                    "response_flags": code,
                    "reason": reason,
                    "route": self.route,
                    "upstream": self.upstream,
                    "upstream_address": self.upstream_address,
                    "attempts": self.attempts,
                }),
            );
        }
        let log = &self.ctx.access_log;
        if log.enabled() {
            let peer = self.peer.to_string();
            log.log(&Entry {
                start_time: humantime::format_rfc3339_millis(self.start_time).to_string(),
                method: &self.method,
                authority: &self.authority,
                path: &self.path,
                protocol: version_str(self.version),
                status: self.status,
                response_flags: self.code,
                route: self.route.as_deref(),
                upstream: self.upstream.as_deref(),
                upstream_address: self.upstream_address.as_deref(),
                attempts: self.attempts,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                bytes_sent,
                request_id: &self.request_id,
                downstream_remote_address: &peer,
                reason: self.reason.as_deref(),
            });
        }
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// Response body: streamed from upstream or generated here; records the request when it
/// ends (or is dropped).
pub struct ProxyBody {
    pub(super) kind: BodyKind,
    pub(super) bytes: u64,
    pub(super) completion: Option<Box<Completion>>,
}

/// Where the bytes come from.
pub enum BodyKind {
    /// The upstream response.
    Upstream(Incoming),
    /// Made by the gateway.
    Full(Option<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let r = match &mut this.kind {
            BodyKind::Upstream(b) => Pin::new(b).poll_frame(cx),
            BodyKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        };
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            this.bytes += d.len() as u64;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Upstream(b) => b.is_end_stream(),
            BodyKind::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Upstream(b) => b.size_hint(),
            BodyKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(c) = self.completion.take() {
            c.finish(self.bytes);
        }
    }
}
