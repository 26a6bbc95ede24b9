//! Downstream connections: TLS by SNI (the ClientHello is read first and picks the
//! listener, kept for the connection: HTTPS, TLS Terminate or TLS Passthrough), TCP
//! listeners handed to [`l4`], hyper's HTTP/1 server where the first bytes or ALPN say
//! HTTP/1 and its auto server otherwise (HTTP/2, h2c), the first-request deadline, the
//! idle timeout, and the drain's watcher ([`super::drain`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::Either;
use http::Version;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::drain::{self, Drainable, Held, Stage, Watcher};
use super::rewind::{self, Rewind};
use super::{ProxyContext, l4, proxy_protocol, request, sni};
use crate::dataplane::Protocol;
use crate::dataplane::l4::L4Route;

/// Which hyper server serves an HTTP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    /// Known to be HTTP/1 (its first bytes, or ALPN `http/1.1`): hyper's HTTP/1 server.
    Http1,
    /// Not known yet: the auto server reads the first bytes for HTTP/2's preface.
    Sniff,
}

/// HTTP/2's connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Codec {
    /// HTTP/1 unless `first` (a connection's first bytes) is or begins HTTP/2's preface.
    fn of_first_bytes(first: &[u8]) -> Codec {
        let n = first.len().min(H2_PREFACE.len());
        if n > 0 && first[..n] != H2_PREFACE[..n] {
            Codec::Http1
        } else {
            Codec::Sniff
        }
    }
}

/// What a request handler knows about its connection.
pub struct ConnInfo {
    /// Client address (set with [`ConnInfo::set_peer`]).
    pub peer: SocketAddr,
    /// The socket's local address, or a PROXY protocol header's destination (Envoy's
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`).
    pub local: SocketAddr,
    /// The client's IP as a header value, formatted once for the connection's requests
    /// (`x-forwarded-for`).
    pub peer_ip: http::HeaderValue,
    /// Local port.
    pub port: u16,
    /// `http` or `https`.
    pub scheme: Protocol,
    /// HTTP/1.0 requests are served (else 426).
    pub http10: bool,
    /// The SNI of the TLS handshake (HTTPS only), for the access log.
    pub sni: Option<Arc<str>>,
    /// The listener chosen at the TLS handshake (HTTPS only).
    pub listener: Option<Arc<str>>,
    /// Activity and in-flight requests, for the idle timeout.
    pub activity: Arc<Activity>,
}

impl ConnInfo {
    /// The client is `peer` (the PROXY protocol's source address).
    fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = peer;
        self.peer_ip = ip_header(peer);
    }
}

fn ip_header(peer: SocketAddr) -> http::HeaderValue {
    http::HeaderValue::from_str(&peer.ip().to_string())
        .expect("an IP address is a valid header value")
}

/// Serves one accepted TCP connection on `port` until it closes, idles out or drains.
pub async fn serve_connection(
    ctx: Arc<ProxyContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    port: u16,
    mut watcher: Watcher,
) {
    // The first-request deadline runs from accept: a client that trickles its PROXY
    // header, TLS handshake, HTTP/2 preface or first request line gets no extra time.
    let first_request_by = tokio::time::Instant::now() + ctx.limits.header_read_timeout;
    let _ = tcp.set_nodelay(true);
    let (scheme, proxy, http10) = match ctx.tables.load().ports.get(&port) {
        Some(p) => (
            p.protocol,
            p.proxy_protocol.as_ref().map(|pp| pp.optional),
            p.accept_http10 || ctx.limits.accept_http10,
        ),
        None => return,
    };
    let conn = ConnInfo {
        peer,
        local: tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], port))),
        peer_ip: ip_header(peer),
        port,
        scheme,
        http10,
        sni: None,
        listener: None,
        activity: Arc::new(Activity::holding(watcher.hold())),
    };
    match proxy {
        // One read where hyper would make two ([`rewind::read_first`]). Inline, not a
        // function of its own: each async call level keeps its own copy of the
        // arguments in every connection's task.
        None if scheme == Protocol::Http => {
            let mut tcp = tcp;
            match rewind::read_first(&mut tcp, first_request_by).await {
                Ok(Some(first)) => {
                    let codec = Codec::of_first_bytes(&first);
                    let stream = Rewind::new(first, tcp);
                    dispatch(ctx, stream, conn, watcher, first_request_by, codec).await
                }
                Ok(None) => {}
                Err(e) => first_read_failed(&ctx, &conn, e),
            }
        }
        None => dispatch(ctx, tcp, conn, watcher, first_request_by, Codec::Sniff).await,
        // Boxed, like the TLS and TCP arms in `dispatch`.
        Some(optional) => {
            Box::pin(after_proxy_header(
                ctx,
                tcp,
                conn,
                watcher,
                first_request_by,
                optional,
            ))
            .await
        }
    }
}

/// Counts and logs a plain HTTP connection closed before its first bytes arrived.
fn first_read_failed(ctx: &ProxyContext, conn: &ConnInfo, e: rewind::FirstReadError) {
    if matches!(e, rewind::FirstReadError::Timeout) {
        ctx.metrics.downstream_timeout("first_request");
    }
    tracing::debug!(peer = %conn.peer, error = %e, "connection closed");
}

/// Reads the PROXY protocol header, then serves the connection as from its source.
async fn after_proxy_header(
    ctx: Arc<ProxyContext>,
    mut tcp: TcpStream,
    mut conn: ConnInfo,
    watcher: Watcher,
    first_request_by: tokio::time::Instant,
    optional: bool,
) {
    match proxy_protocol::read(&mut tcp, first_request_by, optional).await {
        Ok(a) => {
            if let Some(source) = a.source {
                conn.set_peer(source);
            }
            if let Some(destination) = a.destination {
                conn.local = destination;
            }
            let mut first = a.leftover;
            // A load balancer sends its header before the client's bytes arrive, so the
            // leftover is often empty: read the request's first bytes, as on a plain
            // port, so that an HTTP/1 connection need not go through the sniff.
            if first.is_empty() && conn.scheme == Protocol::Http {
                match rewind::read_first(&mut tcp, first_request_by).await {
                    Ok(Some(read)) => first = read,
                    Ok(None) => return,
                    Err(e) => return first_read_failed(&ctx, &conn, e),
                }
            }
            let codec = Codec::of_first_bytes(&first);
            let stream = Rewind::new(first, tcp);
            dispatch(ctx, stream, conn, watcher, first_request_by, codec).await
        }
        Err(e) => {
            match e {
                proxy_protocol::ProxyHeaderError::Timeout => {
                    ctx.metrics.downstream_timeout("first_request")
                }
                _ => ctx.metrics.downstream_error("proxy_protocol"),
            }
            tracing::debug!(peer = %conn.peer, error = %e, "connection closed");
        }
    }
}

/// Serves a connection by its port's protocol: HTTP (by `codec`), TCP, or TLS (by SNI).
async fn dispatch<S>(
    ctx: Arc<ProxyContext>,
    stream: S,
    conn: ConnInfo,
    watcher: Watcher,
    first_request_by: tokio::time::Instant,
    codec: Codec,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match conn.scheme {
        Protocol::Http => serve_io(ctx, stream, conn, watcher, first_request_by, codec).await,
        Protocol::Tcp => {
            let route = {
                let tables = ctx.tables.load();
                let pt = tables.ports.get(&conn.port);
                pt.and_then(|p| p.listeners.first())
                    .and_then(|l| l.l4.find(None).cloned())
            };
            // Boxed, as is the TLS arm: a task's future is as large as its largest
            // state, and every plain HTTP connection would carry theirs (README,
            // "Memory per connection").
            Box::pin(l4::serve(&ctx, stream, route, downstream(&conn, None))).await
        }
        Protocol::Https | Protocol::Tls => {
            Box::pin(serve_tls(ctx, stream, conn, watcher, first_request_by)).await
        }
    }
}

fn downstream(conn: &ConnInfo, sni: Option<String>) -> l4::Downstream {
    l4::Downstream {
        peer: conn.peer,
        local: conn.local,
        sni,
        accepted: Instant::now(),
        start_time: std::time::SystemTime::now(),
        fin_is_eof: false,
    }
}

/// What the ClientHello's SNI selected on a TLS port.
enum TlsTarget {
    /// An HTTPS listener: its TLS config and name.
    Https(Arc<rustls::ServerConfig>, Arc<str>),
    /// A TLS Terminate listener: its TLS config and the SNI's route (`None`: none).
    Terminate(Arc<rustls::ServerConfig>, Option<Arc<L4Route>>),
    /// A TLS Passthrough listener's route (`None`: no route for this SNI).
    Passthrough(Option<Arc<L4Route>>),
}

/// A TLS port: the ClientHello is read first, its SNI picks the listener, and the
/// connection is served as HTTPS, passed through, or terminated and proxied as TCP.
async fn serve_tls<S>(
    ctx: Arc<ProxyContext>,
    mut tcp: S,
    mut conn: ConnInfo,
    watcher: Watcher,
    deadline: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let accepted = downstream(&conn, None);
    let hello = match sni::peek(&mut tcp, deadline).await {
        Ok(h) => h,
        Err(e) => {
            if matches!(e, sni::PeekError::Timeout) {
                ctx.metrics.downstream_timeout("first_request");
            } else {
                // Counted, not logged per connection (a client picks how often).
                ctx.metrics.downstream_error("tls_client_hello");
            }
            tracing::debug!(%peer, error = %e, "TLS ClientHello failed");
            return;
        }
    };
    let Some(target) = tls_target(&ctx, conn.port, hello.sni.as_deref()) else {
        return;
    };
    let d = l4::Downstream {
        sni: hello.sni.clone(),
        ..accepted
    };
    let stream = Rewind::new(hello.buffered, tcp);
    match target {
        TlsTarget::Passthrough(route) => l4::serve(&ctx, stream, route, d).await,
        TlsTarget::Terminate(config, route) => {
            if let Some(tls) = handshake(&ctx, stream, config, peer, deadline).await {
                let d = l4::Downstream {
                    fin_is_eof: true,
                    ..d
                };
                l4::serve(&ctx, tls, route, d).await
            }
        }
        TlsTarget::Https(config, listener) => {
            if let Some(tls) = handshake(&ctx, stream, config, peer, deadline).await {
                conn.listener = Some(listener);
                conn.sni = hello.sni.as_deref().map(Arc::from);
                let codec = match tls.get_ref().1.alpn_protocol() {
                    Some(b"http/1.1") => Codec::Http1,
                    _ => Codec::Sniff,
                };
                serve_io(ctx, tls, conn, watcher, deadline, codec).await
            }
        }
    }
}

/// The listener (and, on TLS listeners, the route) an SNI selects on `port`.
fn tls_target(ctx: &ProxyContext, port: u16, sni: Option<&str>) -> Option<TlsTarget> {
    let tables = ctx.tables.load();
    let pt = tables.ports.get(&port)?;
    let l = &pt.listeners[pt.listener_for_sni(sni)?];
    let route = || l.l4.find(sni).cloned();
    Some(match (&l.tls, l.protocol) {
        (None, _) => TlsTarget::Passthrough(route()),
        (Some(c), Protocol::Tls) => TlsTarget::Terminate(c.clone(), route()),
        (Some(c), _) => TlsTarget::Https(c.clone(), l.name.as_str().into()),
    })
}

/// Completes the TLS handshake (the ClientHello is replayed from `stream`).
async fn handshake<S>(
    ctx: &ProxyContext,
    stream: S,
    config: Arc<rustls::ServerConfig>,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let result = tokio::time::timeout_at(deadline, async {
        acceptor.await?.into_stream(config).await
    })
    .await;
    match result {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            ctx.metrics.downstream_timeout("first_request");
            None
        }
    }
}

/// Serves HTTP on an accepted (and, for HTTPS, decrypted) stream until it ends, idles
/// out, misses the first-request deadline, or drains.
async fn serve_io<I>(
    ctx: Arc<ProxyContext>,
    io: I,
    conn: ConnInfo,
    watcher: Watcher,
    first_request_by: tokio::time::Instant,
    codec: Codec,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = conn.activity.clone();
    let peer = conn.peer;
    let io = TokioIo::new(ActivityIo::new(io, activity.clone()));
    let conn = Arc::new(conn);
    let handler_ctx = ctx.clone();
    let svc = hyper::service::service_fn(move |req| {
        request::handle(handler_ctx.clone(), conn.clone(), req).map(Ok::<_, Infallible>)
    });
    let served = match codec {
        Codec::Http1 => Either::Left(ctx.server.http1.serve_connection(io, svc).with_upgrades()),
        Codec::Sniff => Either::Right(ctx.server.auto.serve_connection_with_upgrades(io, svc)),
    };
    tokio::pin!(served);
    // Declared after `served`, so dropped before it: a request hyper still holds when the
    // connection goes (HTTP/2 drops them after, in their own tasks) sees it closed.
    let _ended = MarkEnded(&activity);
    let idle = ctx.limits.idle_timeout;
    let stream_idle = Some(ctx.limits.stream_idle_timeout).filter(|t| !t.is_zero());
    let tick = (idle.min(stream_idle.unwrap_or(idle)) / 4).max(Duration::from_millis(50));
    let mut watcher = watcher;
    let mut stage = Stage::Serving;
    loop {
        tokio::select! {
            // The connection first: a request already read (still in `Rewind`, or in a
            // connection that started as the drain did) is taken in before the drain
            // turns keep-alive off, and then answered; drained first, hyper would close
            // a connection that has not read anything yet.
            biased;
            r = std::future::poll_fn(|cx| drain::poll_either(served.as_mut(), cx)) => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with error");
                }
                return;
            }
            // The drain started: answer what is in flight, take nothing new, then close.
            // Past its deadline, close now: what is still in flight is recorded cut short.
            next = watcher.past(stage) => {
                stage = next;
                if stage == Stage::Closing {
                    tracing::debug!(%peer, "closing connection: the drain deadline passed");
                    return;
                }
                served.as_mut().drain();
            }
            // hyper's own header timeout covers an HTTP/1 request head, and on the auto
            // server starts only once it has read the preface; HTTP/2 has none. Without
            // this a silent or trickling client would hold a connection slot forever.
            _ = tokio::time::sleep_until(first_request_by), if activity.requests() == 0 => {
                if activity.requests() == 0 {
                    tracing::debug!(%peer, "closing connection: no request within the header read timeout");
                    ctx.metrics.downstream_timeout("first_request");
                    return;
                }
            }
            _ = tokio::time::sleep(tick) => {
                // Idle means no bytes and no request in flight (a slow upstream is not idle).
                let quiet = activity.idle_for();
                if quiet >= idle && activity.in_flight() == 0 {
                    tracing::debug!(%peer, "closing idle connection");
                    ctx.metrics.downstream_timeout("idle");
                    return;
                }
                // A request in flight with nothing moving either way (a stalled body, an
                // upstream that never answers): Envoy's stream idle timeout.
                if stream_idle.is_some_and(|t| quiet >= t) && activity.in_flight() > 0 {
                    activity.close(Closed::StreamIdle);
                    tracing::debug!(%peer, "closing connection: its request moved no bytes within the stream idle timeout");
                    ctx.metrics.downstream_timeout("stream_idle");
                    return;
                }
            }
        }
    }
}

/// Last read/write time and requests in flight of a connection.
pub struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests that reached the handler (the first-request deadline checks it).
    started: AtomicU64,
    /// Why the connection's serving ended (a `Closed` as its `u8`); `Open` until then.
    closed: AtomicU8,
    /// Past the drain's deadline, the drain waits for this (held by every request).
    _held: Option<Held>,
}

/// Whether a connection still serves, and if not, why it stopped: what a request cut
/// short is flagged with (Envoy's `DR`, `DC`, `SI`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Closed {
    /// Still serving: a request dropped now had its own HTTP/2 stream reset.
    Open = 0,
    /// The client closed the connection, or it failed.
    Ended = 1,
    /// The gateway closed it: a request in flight moved no bytes within the stream idle
    /// timeout.
    StreamIdle = 2,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            closed: AtomicU8::new(Closed::Open as u8),
            _held: None,
        }
    }

    /// An HTTP connection's, whose requests the drain waits for at its deadline.
    fn holding(held: Option<Held>) -> Activity {
        Activity {
            _held: held,
            ..Activity::new()
        }
    }

    /// Records why serving ended, before the connection (and any request hyper still
    /// holds) is dropped; the first reason stays.
    fn close(&self, why: Closed) {
        let open = Closed::Open as u8;
        let _ =
            (self.closed).compare_exchange(open, why as u8, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether the connection still serves, or why it stopped.
    fn closed(&self) -> Closed {
        match self.closed.load(Ordering::Relaxed) {
            0 => Closed::Open,
            2 => Closed::StreamIdle,
            _ => Closed::Ended,
        }
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub(super) fn idle_for(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn requests(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Marks a request in flight until the guard is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// Marks its connection ended (unless a reason is already recorded) when serving stops,
/// however it stops.
struct MarkEnded<'a>(&'a Activity);

impl Drop for MarkEnded<'_> {
    fn drop(&mut self) {
        self.0.close(Closed::Ended);
    }
}

/// A request in flight on a connection.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// Envoy's flag for this request cut short before it ended: `DR` when the client
    /// reset its HTTP/2 stream (the connection still serves), `SI` when the gateway
    /// closed the connection at the stream idle timeout, else `DC` (the client closed
    /// the connection: the only way an HTTP/1 request is cut).
    pub fn cut_short_flag(&self, version: Version) -> &'static str {
        match self.0.closed() {
            Closed::StreamIdle => "SI",
            Closed::Open if version == Version::HTTP_2 => "DR",
            Closed::Open | Closed::Ended => "DC",
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// IO wrapper recording activity for the idle timeout, and the bytes read.
pub(super) struct ActivityIo<I> {
    inner: I,
    activity: Arc<Activity>,
    read: u64,
}

impl<I> ActivityIo<I> {
    pub(super) fn new(inner: I, activity: Arc<Activity>) -> ActivityIo<I> {
        ActivityIo {
            inner,
            activity,
            read: 0,
        }
    }

    /// Bytes read from the inner stream so far.
    pub(super) fn bytes_read(&self) -> u64 {
        self.read
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ActivityIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read += n as u64;
            self.activity.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ActivityIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_of_an_http1_request_pick_the_http1_server() {
        for first in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"POST /upload HTTP/1.1\r\n",
            b"PUT",
            b"PRX",
        ] {
            assert_eq!(Codec::of_first_bytes(first), Codec::Http1, "{first:?}");
        }
    }

    #[test]
    fn http2_preface_or_a_part_of_it_leaves_the_choice_to_the_auto_server() {
        for first in [
            H2_PREFACE,
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04"[..],
            b"PRI * HT",
            b"P",
            b"",
        ] {
            assert_eq!(Codec::of_first_bytes(first), Codec::Sniff, "{first:?}");
        }
    }
}
