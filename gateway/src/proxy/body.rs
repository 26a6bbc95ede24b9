//! The response body sent downstream, and the per-request record (metrics, access log,
//! debug explanation) completed when that body ends or is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::ProxyContext;
use super::connection::InFlight;
use crate::dataplane::routes::{Backend, Rule, Target};
use crate::observe::access_log::Entry;
use crate::observe::istio_metrics::{Destination, RequestRecord, UNKNOWN};
use crate::observe::traces::{RequestSpan, SpanEnd};

/// What the gateway knows about one request; logged once, when the response ends.
pub struct Completion {
    pub(super) ctx: Arc<ProxyContext>,
    pub(super) start: Instant,
    pub(super) method: Method,
    pub(super) authority: String,
    /// Path and query as received; only kept when access logs are on.
    pub(super) path: Option<PathAndQuery>,
    pub(super) version: Version,
    pub(super) status: u16,
    /// The rule that matched. Its id, the backend's name and the destination labels are
    /// read from it when the request ends: one reference count written per request
    /// instead of one per label, counts that every worker writes. A streamed response
    /// keeps it (its backends' state included) until the stream ends, across reloads.
    pub(super) rule: Option<Arc<Rule>>,
    /// The backend picked, by index in the rule's backends.
    pub(super) backend: Option<usize>,
    /// The endpoint of the last attempt, by index in the backend's endpoints.
    pub(super) endpoint: Option<usize>,
    pub(super) upstream_address: Option<Authority>,
    pub(super) request_id: HeaderValue,
    pub(super) peer: SocketAddr,
    /// The connection's local address.
    pub(super) local: SocketAddr,
    /// The local address of the last attempt's upstream connection.
    pub(super) upstream_local: Option<SocketAddr>,
    /// The connection's TLS SNI (HTTPS).
    pub(super) sni: Option<Arc<str>>,
    /// Response flags (in the order set, comma-separated: [`super::flags`]) or reason
    /// codes, when the request did not simply succeed.
    pub(super) code: Option<&'static str>,
    /// The explanation behind `code`.
    pub(super) reason: Option<String>,
    pub(super) attempts: u32,
    /// The client speaks gRPC: the gateway's own errors are gRPC statuses.
    pub(super) grpc: bool,
    /// The last attempt went over mesh mTLS.
    pub(super) mutual_tls: bool,
    /// Request header bytes (request line included, approximately as sent).
    pub(super) request_header_bytes: u64,
    /// Request body bytes (from `content-length`).
    pub(super) request_body_bytes: u64,
    /// A body of unknown length (chunked, HTTP/2 without content-length): its bytes as
    /// they are streamed upstream.
    pub(super) request_body_counted: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Response header bytes (approximately as sent).
    pub(super) response_header_bytes: u64,
    /// From the request's forwarding to the response headers, across attempts (unset
    /// when the last attempt got no answer).
    pub(super) upstream_service_time: Option<std::time::Duration>,
    /// The client's `x-forwarded-for`, as received (only kept when access logs are on).
    pub(super) x_forwarded_for: Option<String>,
    /// The client's `user-agent` (only kept when access logs are on).
    pub(super) user_agent: Option<String>,
    /// The request's SERVER span, when tracing is on.
    pub(super) trace: Option<RequestSpan>,
    /// Response body bytes sent (set when the body is dropped).
    pub(super) bytes_sent: u64,
    /// `grpc-status` of the response (set when the body is dropped).
    pub(super) grpc_status: Option<u8>,
    /// Keeps the connection from idling out while the request is in flight.
    pub(super) in_flight: InFlight,
    /// The answer sent is the upstream's (Envoy's `via_upstream`), not the gateway's.
    pub(super) via_upstream: bool,
    /// The DestinationRule connection-pool slots of the answer being sent, released
    /// when it ends.
    pub(super) pool_permit: Option<crate::upstream::pool_limits::PoolPermit>,
}

impl Completion {
    /// The matched route's id.
    fn route(&self) -> Option<&str> {
        self.rule.as_deref().map(|r| &*r.id)
    }

    /// The backend picked.
    fn backend(&self) -> Option<&Backend> {
        self.rule.as_deref()?.backends.get(self.backend?)
    }

    /// The picked backend's name.
    fn upstream(&self) -> Option<&str> {
        self.backend().map(|b| &*b.name)
    }

    /// Istio's destination labels: the Service, then the endpoint's workload once one is
    /// picked; `unknown` until a backend is chosen.
    pub(super) fn destination(&self) -> &Arc<Destination> {
        let Some(backend) = self.backend() else {
            return Destination::unknown_ref();
        };
        match (&backend.target, self.endpoint) {
            (Target::Endpoints(eps), Some(i)) => {
                eps.get(i).map_or(&backend.destination, |e| &e.destination)
            }
            _ => &backend.destination,
        }
    }

    /// The request id as text (it was checked to be visible ASCII when taken).
    pub(super) fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }

    /// Marks how the request ended badly: the flag goes after those already set, as
    /// Envoy lists them (`URX,DC`), and the explanation after theirs.
    fn flag(&mut self, code: &'static str, reason: impl Into<String>) {
        self.code = Some(super::flags::then(self.code, code));
        let reason = reason.into();
        self.reason = Some(match self.reason.take() {
            Some(earlier) => format!("{earlier}; then {reason}"),
            None => reason,
        });
    }

    /// Flags a request cut short as Envoy does (`DC`, `DR` or `SI`: see
    /// [`InFlight::cut_short_flag`]). `when` says how far the response had got.
    fn cut_short(&mut self, when: &str) {
        let code = self.in_flight.cut_short_flag(self.version);
        let reason = match code {
            "SI" => format!(
                "nothing moved within the stream idle timeout {when}: the gateway closed the connection"
            ),
            "DR" => format!("the client reset its HTTP/2 stream {when}"),
            _ => format!("the client went away {when}"),
        };
        self.flag(code, reason);
    }

    /// Records the request (metrics, trace, debug explanation, access log): once, when
    /// the record is dropped.
    fn record(&mut self) {
        let bytes_sent = self.bytes_sent;
        // No grpc-status in the headers or trailers: inferred from the HTTP status, as
        // Envoy's getGrpcStatus does (a 503 from a gRPC upstream counts as 14).
        let grpc_status = self.grpc_status.or_else(|| {
            (self.grpc && self.status != 0)
                .then(|| super::reject::grpc_status_for_http(self.status))
        });
        if let Some(n) = &self.request_body_counted {
            self.request_body_bytes = n.load(std::sync::atomic::Ordering::Relaxed);
        }
        let trace_ids = self.trace.take().map(|t| {
            let (ids, sampled) = (t.ids(), t.sampled());
            t.finish(|| self.span_end(bytes_sent));
            (ids.0, ids.1, sampled)
        });
        let elapsed = self.start.elapsed();
        let m = &self.ctx.metrics;
        m.istio.record(&RequestRecord {
            destination: self.destination(),
            grpc: self.grpc,
            response_code: self.status,
            grpc_status,
            response_flags: self.code.unwrap_or("-"),
            mutual_tls: self.mutual_tls,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            request_bytes: self.request_header_bytes + self.request_body_bytes,
            response_bytes: self.response_header_bytes + bytes_sent,
        });
        m.request_finished(
            self.route().unwrap_or(""),
            self.status,
            elapsed.as_secs_f64(),
        );
        if let (Some(code), Some(reason)) = (self.code, &self.reason) {
            self.ctx.debug.record(
                self.request_id(),
                serde_json::json!({
                    "request_id": self.request_id(),
                    "status": self.status,
                    "response_flags": code,
                    "reason": reason,
                    "route": self.route(),
                    "upstream": self.upstream(),
                    "upstream_address": self.upstream_address.as_ref().map(Authority::as_str),
                    "attempts": self.attempts,
                }),
            );
        }
        self.log(elapsed, bytes_sent, trace_ids.as_ref());
    }

    fn log(
        &self,
        elapsed: std::time::Duration,
        bytes_sent: u64,
        ids: Option<&(String, String, bool)>,
    ) {
        let log = &self.ctx.access_log;
        if !log.wants(self.status, self.code) {
            return;
        }
        let (peer, local) = (self.peer.to_string(), self.local.to_string());
        let upstream_local = self.upstream_local.map(|a| a.to_string());
        let upstream_cluster = self.upstream_cluster();
        // As Envoy logs %REQ(X-FORWARDED-FOR)%: after its own append of the peer.
        let xff = match &self.x_forwarded_for {
            Some(received) => format!("{received}, {}", self.peer.ip()),
            None => self.peer.ip().to_string(),
        };
        // The wall clock is read once, here: start = now - elapsed.
        let start_time = SystemTime::now()
            .checked_sub(elapsed)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        log.log(&Entry {
            start_time: humantime::format_rfc3339_millis(start_time).to_string(),
            method: Some(self.method.as_str()),
            path: Some(self.path.as_ref().map_or("/", PathAndQuery::as_str)),
            protocol: Some(version_str(self.version)),
            response_code: self.status,
            response_flags: self.code.unwrap_or("-"),
            bytes_received: self.request_body_bytes,
            bytes_sent,
            duration: elapsed.as_millis() as u64,
            upstream_service_time: self
                .upstream_service_time
                .map(|d| d.as_millis().to_string()),
            upstream_host: self.upstream_address.as_ref().map(Authority::as_str),
            upstream_local_address: upstream_local.as_deref(),
            downstream_local_address: &local,
            upstream_transport_failure_reason: None,
            connection_termination_details: None,
            upstream_cluster: upstream_cluster.as_deref(),
            x_forwarded_for: Some(&xff),
            user_agent: self.user_agent.as_deref(),
            request_id: Some(self.request_id()),
            authority: Some(&self.authority),
            requested_server_name: self.sni.as_deref(),
            attempts: self.attempts,
            downstream_remote_address: &peer,
            route: self.route(),
            route_name: self.route(),
            response_code_details: Some(self.response_code_details()),
            upstream: self.upstream(),
            reason: self.reason.as_deref(),
            trace_id: ids.map(|i| i.0.as_str()),
            span_id: ids.map(|i| i.1.as_str()),
            trace_sampled: ids.is_some_and(|i| i.2),
        });
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%`: `via_upstream` for the upstream's answer, else
    /// what the gateway answered for (Envoy's names for its flags, the gateway's reason
    /// code otherwise).
    fn response_code_details(&self) -> &'static str {
        if self.via_upstream {
            return "via_upstream";
        }
        // The attempt's own flag is the last of a list (`URX,UF`).
        match self.code.map(|c| c.rsplit(',').next().unwrap_or(c)) {
            None => "direct_response",
            Some("NR") => "route_not_found",
            Some("NC") => "cluster_not_found",
            Some("UH") => "no_healthy_upstream",
            Some("UF") => "upstream_reset_before_response_started{remote_connection_failure}",
            Some("UO") => "upstream_reset_before_response_started{overflow}",
            Some("UC") => "upstream_reset_before_response_started{connection_termination}",
            Some("UT") => "upstream_response_timeout",
            Some("DC") => "downstream_remote_disconnect",
            Some("RL") => "local_rate_limited",
            Some(other) => other,
        }
    }

    /// What the SERVER span is named and tagged with at the end (Istio's operation name:
    /// the destination Service's host and port).
    fn span_end(&self, bytes_sent: u64) -> SpanEnd<'_> {
        let upstream = self.upstream();
        let port = upstream.and_then(|u| u.rsplit_once(':')).map(|(_, p)| p);
        let d = self.destination();
        let operation = match port {
            Some(p) if &*d.service_name != UNKNOWN => Some(format!("{}:{p}/*", d.service)),
            _ => None,
        };
        SpanEnd {
            route: self.route(),
            status: self.status,
            flag: self.code,
            request_id: self.request_id(),
            operation,
            upstream_cluster: self.upstream_cluster(),
            protocol: version_str(self.version),
            peer: self.peer,
            sizes: (self.request_body_bytes, bytes_sent),
        }
    }

    /// Envoy's cluster name for the picked backend (`outbound|<port>|<subset>|<host>`);
    /// none for a destination without a cluster, as Envoy records none (log and span).
    fn upstream_cluster(&self) -> Option<String> {
        let b = self.backend()?;
        if matches!(b.target, Target::NoCluster(_)) {
            return None;
        }
        Some(b.cluster_name(self.destination()))
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
    /// `grpc-status` of the response (headers of a trailers-only response, or trailers).
    pub(super) grpc_status: Option<u8>,
    /// The body ended or failed (anything short of that when it is dropped: the client
    /// went away).
    pub(super) ended: bool,
    pub(super) completion: Option<Box<Completion>>,
}

/// Where the bytes come from.
pub enum BodyKind {
    /// The upstream response.
    Upstream(Incoming),
    /// The upstream response, which must end by a route timeout's deadline.
    UpstreamUntil(Incoming, Box<ResponseDeadline>),
    /// Made by the gateway.
    Full(Option<Bytes>),
}

/// When a response body must have ended (Gateway API's `timeouts.request` and
/// `backendRequest` cover the whole response, as Envoy's route timeout does).
pub struct ResponseDeadline {
    /// Fires at the deadline.
    pub sleep: Pin<Box<tokio::time::Sleep>>,
    /// The field that set it, and its configured value (for the explanation).
    pub field: &'static str,
    /// The configured timeout.
    pub configured: std::time::Duration,
}

/// Why a response body stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    /// The upstream's body failed.
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
    /// A route timeout ran out while the body was streaming: the response is cut (HTTP/1
    /// closes the connection, HTTP/2 resets the stream), as Envoy does after headers.
    #[error("the response did not end within {field} ({configured:?})")]
    Timeout {
        /// `timeouts.request` or `timeouts.backendRequest`.
        field: &'static str,
        /// Its value.
        configured: std::time::Duration,
    },
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let this = &mut *self;
        let r = match &mut this.kind {
            BodyKind::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            BodyKind::UpstreamUntil(b, d) => match Pin::new(b).poll_frame(cx) {
                Poll::Pending => timed_out(d, cx, this.completion.as_deref_mut()),
                r => r.map_err(Into::into),
            },
            BodyKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        };
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                } else if let Some(t) = f.trailers_ref() {
                    this.grpc_status = grpc_status(t).or(this.grpc_status);
                    // Trailers are the last frame: hyper sends them and drops the body
                    // without polling it again.
                    this.ended = true;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.ended = true;
                if let (ResponseBodyError::Upstream(e), Some(c)) = (e, &mut this.completion) {
                    let why = format!("the upstream's response body failed: {e}");
                    c.flag(upstream_body_flag(e), why);
                }
            }
            Poll::Ready(None) => this.ended = true,
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Upstream(b) | BodyKind::UpstreamUntil(b, _) => b.is_end_stream(),
            BodyKind::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Upstream(b) | BodyKind::UpstreamUntil(b, _) => b.size_hint(),
            BodyKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Pending body: an error once the deadline has passed, recording `UT` and why.
fn timed_out(
    d: &mut ResponseDeadline,
    cx: &mut Context<'_>,
    completion: Option<&mut Completion>,
) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
    if d.sleep.as_mut().poll(cx).is_pending() {
        return Poll::Pending;
    }
    let err = ResponseBodyError::Timeout {
        field: d.field,
        configured: d.configured,
    };
    if let Some(c) = completion {
        c.flag("UT", err.to_string());
    }
    Poll::Ready(Some(Err(err)))
}

impl Drop for ProxyBody {
    /// Hands what was sent to the record, which records the request as it drops. A body
    /// dropped before its end (hyper drops it when the client goes away) is flagged
    /// `DC`, `DR` or `SI`, the status kept, as Envoy logs it.
    fn drop(&mut self) {
        let ended = self.ended || self.is_end_stream();
        let rest = self.size_hint().exact();
        let Some(c) = self.completion.as_deref_mut() else {
            return;
        };
        // All of a declared length is a whole answer to an HTTP/1 client: hyper's HTTP/1
        // server stops polling there, though an HTTP/2 upstream's END_STREAM may still be
        // on its way. Its HTTP/2 server waits for the end: dropped before, the client
        // reset its stream.
        let whole = ended || (rest == Some(0) && c.version != Version::HTTP_2);
        let cut = !whole;
        c.bytes_sent = self.bytes;
        c.grpc_status = self.grpc_status;
        if cut && has_body(&c.method, c.status) {
            c.cut_short("before the response body ended");
        }
    }
}

impl Drop for Completion {
    /// Every request is recorded exactly once, here. A record dropped with no status
    /// was never given a response: hyper dropped the request's future because the
    /// client closed its connection or reset its stream first (or the gateway closed
    /// the connection at the stream idle timeout), which Envoy logs as response code 0
    /// with flag `DC` (`DR`, `SI`).
    fn drop(&mut self) {
        if self.status == 0 {
            (self.code, self.reason) = (None, None);
            self.cut_short("before the response started");
        }
        self.record();
    }
}

/// Whether a response with this status, to this method, carries a body hyper sends
/// (it sends none for HEAD, 1xx, 204 and 304, and drops the body unpolled).
fn has_body(method: &Method, status: u16) -> bool {
    *method != Method::HEAD && !matches!(status, 100..=199 | 204 | 304)
}

/// Envoy's response flag for an upstream body that failed after its headers were sent
/// (what Envoy derives from the stream's reset reason): `UR` for an HTTP/2 stream the
/// upstream reset, `UC` for a connection closed or reset mid-body, else `UPE`.
fn upstream_body_flag(e: &hyper::Error) -> &'static str {
    if e.is_incomplete_message() {
        return "UC";
    }
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            if h2.is_reset() && h2.is_remote() {
                return "UR";
            }
            return if h2.is_go_away() || h2.is_io() {
                "UC"
            } else {
                "UPE"
            };
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            let lost = matches!(
                io.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
            );
            return if lost { "UC" } else { "UPE" };
        }
        source = err.source();
    }
    "UPE"
}

/// The `grpc-status` in a header or trailer map.
pub(super) fn grpc_status(h: &http::HeaderMap) -> Option<u8> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Approximate bytes of a header block as HTTP/1.1 sends it (`name: value\r\n`).
pub(super) fn header_bytes(h: &http::HeaderMap) -> u64 {
    h.iter()
        .map(|(n, v)| (n.as_str().len() + v.len() + 4) as u64)
        .sum()
}
