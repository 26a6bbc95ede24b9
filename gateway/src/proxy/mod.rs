//! The request path: connection -> listener -> virtual host -> route -> filters ->
//! backend -> endpoint. It reads the current tables lock-free, never parses
//! configuration, and takes no global lock.
//!
//! - [`connection`]: accepted sockets, TLS by SNI, hyper's HTTP/1.1 + HTTP/2 server,
//!   idle timeout.
//! - [`drain`]: graceful drain of HTTP connections.
//! - [`request`]: limits, listener and route selection, redirects.
//! - [`forward`]: the upstream request and the response.
//! - [`attempt`]: the one loop that runs upstream attempts through the hooks.
//! - [`checks`]: what a request must be before it is routed (Host, method).
//! - [`normalize`]: the request path as routes see it (dot segments, percent-encoding).
//! - [`tunnel`]: upgraded connections (WebSocket): slots, idle timeout, drain.
//! - [`proxy_protocol`]: the PROXY protocol header read at accept where a policy asks.
//! - [`sni`]: the ClientHello read first on TLS ports (SNI picks the listener).
//! - [`l4`]: connection routes (TCP, TLS passthrough, TLS terminated then TCP).
//! - [`headers`], [`body`], [`reject`]: helpers of the above.

pub mod attempt;
pub mod body;
pub mod checks;
pub mod connection;
pub mod cors;
pub mod drain;
pub mod flags;
pub mod forward;
pub mod headers;
pub mod l4;
mod mirror;
pub mod normalize;
pub mod policy;
pub mod proxy_protocol;
pub mod reject;
pub mod request;
pub mod rewind;
pub mod sni;
pub mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::dataplane::TableReader;
use crate::observe::access_log::AccessLog;
use crate::observe::debug::RequestLog;
use crate::observe::metrics::Metrics;
use crate::upstream::Upstreams;
use crate::upstream::attempt::AttemptHooks;

pub use connection::serve_connection;
pub use drain::DrainWatch;
pub use tunnel::Tunnels;

/// Limits applied to downstream connections and requests.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request header block (431 above).
    pub max_header_bytes: usize,
    /// Longest URI (414 above).
    pub max_uri_bytes: usize,
    /// Time from accept until the first request has reached the handler (TLS handshake,
    /// HTTP/2 preface and request headers included); also hyper's per-request header
    /// read timeout on HTTP/1.
    pub header_read_timeout: Duration,
    /// Close connections idle this long.
    pub idle_timeout: Duration,
    /// Close a TCP/TLS connection route's connection idle this long.
    pub tcp_idle_timeout: Duration,
    /// Report an open TCP/TLS connection's bytes this often.
    pub tcp_report_interval: Duration,
    /// Close a connection with a request in flight and no bytes either way for this long
    /// (zero: never).
    pub stream_idle_timeout: Duration,
    /// Max open downstream connections (upgraded tunnels included).
    pub max_connections: usize,
    /// HTTP/2 PING interval when the client has sent nothing for that long.
    pub http2_keepalive_interval: Duration,
    /// An HTTP/2 connection whose PING is not acknowledged within this is closed.
    pub http2_keepalive_timeout: Duration,
    /// Merge repeated slashes in request paths (`//a///b` -> `/a/b`) before routing.
    pub merge_slashes: bool,
    /// Keep the client's `x-request-id` (a trusted hop in front, or asked for); else
    /// every request gets a new one.
    pub keep_request_id: bool,
    /// Proxies in front trusted to append `X-Forwarded-For` (`--num-trusted-proxies`).
    pub num_trusted_proxies: u32,
    /// Serve HTTP/1.0 on every port (`--accept-http10`).
    pub accept_http10: bool,
}

/// What the request path uses, as narrow handles (no shared hub). Each worker holds a
/// copy of its own (cloning shares every part): every request clones the context's
/// `Arc`, and one `Arc` for all workers would be a count they all write.
#[derive(Clone)]
pub struct ProxyContext {
    /// The current tables.
    pub tables: TableReader,
    /// Pooled upstream clients, one set per worker ([`crate::workers`]): a worker's
    /// requests use its own pools, so an upstream connection's I/O stays on its thread.
    pub upstreams: Arc<[Upstreams]>,
    /// Per-attempt hooks.
    pub hooks: AttemptHooks,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Access log.
    pub access_log: AccessLog,
    /// OTLP tracing, when an endpoint is configured.
    pub tracing: Option<crate::observe::traces::Tracing>,
    /// Istio's peer-metadata headers for mesh upstreams (mesh integration on).
    pub peer_metadata: Option<crate::observe::peer_metadata::PeerMetadata>,
    /// Recent request explanations.
    pub debug: RequestLog,
    /// Downstream limits.
    pub limits: Limits,
    /// Upgraded tunnels (WebSocket).
    pub tunnels: Tunnels,
    /// hyper server settings (HTTP/1.1 + HTTP/2).
    pub server: Servers,
}

impl ProxyContext {
    /// The calling worker's upstream clients.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams[crate::workers::current() % self.upstreams.len()]
    }
}

/// hyper's servers, with the same settings. A connection whose first bytes (or ALPN
/// `http/1.1`) already say HTTP/1 gets hyper's HTTP/1 server directly; the rest get the
/// auto server, which reads up to 24 bytes to tell HTTP/2's preface from HTTP/1. Those
/// bytes reach hyper's HTTP/1 reader as a first, partial read, and its buffer then
/// doubles to 16 KiB for the connection's life (README, "Memory per connection").
#[derive(Clone)]
pub struct Servers {
    /// HTTP/1.1 or HTTP/2, by the first bytes (h2c prior knowledge, ALPN `h2`, no ALPN).
    pub auto: auto::Builder<TokioExecutor>,
    /// HTTP/1.1 only.
    pub http1: http1::Builder,
}

/// Builds the hyper server settings shared by every connection.
pub fn server_builder(limits: &Limits) -> Servers {
    let max_buf = limits.max_header_bytes.max(8192) + limits.max_uri_bytes + 1024;
    let mut auto = auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(max_buf)
        .keep_alive(true);
    auto.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        .max_header_list_size(
            (limits.max_header_bytes + limits.max_uri_bytes)
                .try_into()
                .unwrap_or(u32::MAX),
        );
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(max_buf)
        .keep_alive(true);
    Servers { auto, http1 }
}
