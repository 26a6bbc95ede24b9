//! Connection routes: a TCP listener's connections, TLS passed through by SNI, or TLS
//! terminated and then proxied as TCP. One upstream connection per downstream one
//! (TCP, mesh mTLS with ALPN `istio`, or BackendTLSPolicy TLS), bytes copied both ways
//! with half-close, closed when idle or at the drain deadline; one access-log line and
//! Istio's `istio_tcp_*` metrics per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};

use super::ProxyContext;
use super::connection::{Activity, ActivityIo};
use crate::dataplane::l4::L4Route;
use crate::dataplane::routes::{Backend, Target};
use crate::ir::Transport;
use crate::observe::access_log::Entry;
use crate::observe::istio_metrics::{ConnectionRecord, Destination};
use crate::upstream::lb;

/// The downstream side of a routed connection.
pub struct Downstream {
    /// Client address.
    pub peer: SocketAddr,
    /// The socket's local address.
    pub local: SocketAddr,
    /// SNI, for TLS listeners.
    pub sni: Option<String>,
    /// When the connection was accepted.
    pub accepted: Instant,
    /// Wall-clock time of the accept, for the log.
    pub start_time: SystemTime,
    /// A terminated TLS connection: a client's TCP FIN without a TLS close_notify, which
    /// tokio-rustls reports as `UnexpectedEof`, is read as end of stream, the half-close
    /// Envoy's tcp_proxy makes of it (the upstream sees EOF, and what it sends after still
    /// reaches the client) instead of an error that ends both directions.
    pub fin_is_eof: bool,
}

/// How a connection ended, for the log and metrics.
struct Ended<'a> {
    route: Option<&'a str>,
    backend: Option<&'a Backend>,
    upstream_host: Option<String>,
    /// The upstream connection's local address.
    upstream_local: Option<std::net::SocketAddr>,
    destination: Arc<Destination>,
    mutual_tls: bool,
    /// Envoy's response flag, `-` when none.
    flag: &'static str,
    reason: Option<String>,
    received: u64,
    sent: u64,
}

/// Why no upstream connection was made: Envoy's flag and the reason.
type Refused = (&'static str, String);

/// Proxies one connection along `route` (`None`: nothing serves it, and it is closed).
pub async fn serve<D>(ctx: &ProxyContext, down: D, route: Option<Arc<L4Route>>, d: Downstream)
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let Some(route) = route else {
        let why = match &d.sni {
            Some(sni) => format!("no TLSRoute serves SNI {sni:?} on this listener"),
            None => "no route serves this listener".to_string(),
        };
        return finish(ctx, &d, Ended::refused(None, None, ("NR", why)));
    };
    let Some(backend) = route.pick_backend() else {
        let why = format!("{} has no backend with weight", route.route);
        return finish(
            ctx,
            &d,
            Ended::refused(Some(&route.route), None, ("NR", why)),
        );
    };
    let (up, host, destination, mutual_tls) = match connect(ctx, backend).await {
        Ok(ok) => ok,
        Err(refused) => {
            let ended = Ended::refused(Some(&route.route), Some(backend), refused);
            return finish(ctx, &d, ended);
        }
    };
    let upstream_local = local_address(up.inner());
    let activity = Arc::new(Activity::new());
    let counts = Arc::new(Counts::default());
    let down = Counted {
        io: down,
        counts: counts.clone(),
        slot: 0,
        fin_is_eof: d.fin_is_eof,
    };
    let up = Counted {
        io: up,
        counts: counts.clone(),
        slot: 1,
        fin_is_eof: false,
    };
    let mut down = ActivityIo::new(down, activity.clone());
    let mut up = ActivityIo::new(up, activity.clone());
    let mut report = Report::new(&destination, mutual_tls);
    report.send(ctx, &counts, false);
    // Istio reports a long connection's bytes every tcp_reporting_duration, not only at
    // its end, so dashboards see it while it lasts.
    let every = ctx.limits.tcp_report_interval;
    let reports = async {
        loop {
            tokio::time::sleep(every).await;
            report.send(ctx, &counts, false);
        }
    };
    tokio::select! {
        () = ctx.tunnels.pipe(&activity, &mut down, &mut up) => {}
        () = reports => {}
    }
    report.send(ctx, &counts, true);
    let ended = Ended {
        route: Some(&route.route),
        backend: Some(backend),
        upstream_host: Some(host),
        upstream_local,
        destination,
        mutual_tls,
        flag: "-",
        reason: None,
        received: down.bytes_read(),
        sent: up.bytes_read(),
    };
    finish(ctx, &d, ended);
}

/// The local address of an upstream connection, as its connector recorded it.
fn local_address(io: &crate::upstream::connector::CountedIo) -> Option<std::net::SocketAddr> {
    use hyper_util::client::legacy::connect::{Connection, HttpInfo};
    let mut extensions = http::Extensions::new();
    io.connected().get_extras(&mut extensions);
    extensions.get::<HttpInfo>().map(HttpInfo::local_addr)
}

/// Bytes read from the client (0) and from the upstream (1) so far, shared with the
/// periodic report.
#[derive(Default)]
struct Counts([std::sync::atomic::AtomicU64; 2]);

/// One side of a routed connection: what is read from it is counted into `counts`
/// slot `slot`; with `fin_is_eof` (see [`Downstream::fin_is_eof`]) an `UnexpectedEof`
/// reads as end of stream.
struct Counted<S> {
    io: S,
    counts: Arc<Counts>,
    slot: usize,
    fin_is_eof: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = match std::pin::Pin::new(&mut self.io).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e))
                if self.fin_is_eof && e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        };
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.counts.0[self.slot].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The Istio TCP series of one open connection: what has been reported so far.
struct Report {
    destination: Arc<Destination>,
    mutual_tls: bool,
    reported: [u64; 2],
    opened: bool,
}

impl Report {
    fn new(destination: &Arc<Destination>, mutual_tls: bool) -> Report {
        Report {
            destination: destination.clone(),
            mutual_tls,
            reported: [0, 0],
            opened: false,
        }
    }

    /// Reports the bytes moved since the last report (opened with the first, closed
    /// with the last when `closing`).
    fn send(&mut self, ctx: &ProxyContext, counts: &Counts, closing: bool) {
        let now = counts
            .0
            .each_ref()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed));
        ctx.metrics.istio.record_connection(&ConnectionRecord {
            destination: self.destination.clone(),
            response_flags: "-",
            mutual_tls: self.mutual_tls,
            received_bytes: now[0] - self.reported[0],
            sent_bytes: now[1] - self.reported[1],
            opened: !self.opened,
            closed: closing,
        });
        self.reported = now;
        self.opened = true;
    }
}

/// Picks an endpoint and connects to it.
async fn connect(
    ctx: &ProxyContext,
    backend: &Backend,
) -> Result<
    (
        hyper_util::rt::TokioIo<crate::upstream::connector::CountedIo>,
        String,
        Arc<Destination>,
        bool,
    ),
    Refused,
> {
    let (authority, transport, destination) = match &backend.target {
        Target::Endpoints(eps) if eps.is_empty() => {
            return Err(("UH", format!("{} has no ready endpoint", backend.name)));
        }
        Target::Endpoints(eps) => {
            let Some(i) = lb::pick(backend.policy.as_deref(), &backend.state, eps, None, None)
            else {
                let why = format!("every endpoint of {} is ejected", backend.name);
                return Err(("UH", why));
            };
            let ep = &eps[i];
            (&ep.authority, &ep.transport, ep.destination.clone())
        }
        Target::Dns {
            authority,
            transport,
        } => (authority, transport, backend.destination.clone()),
        Target::Unresolvable(why) | Target::NoCluster(why) => return Err(("NC", why.clone())),
    };
    match ctx
        .upstreams()
        .connect_stream(transport, authority, backend.pool())
        .await
    {
        Ok(io) => {
            let mesh = matches!(transport, Transport::Mesh(_));
            Ok((io, authority.to_string(), destination, mesh))
        }
        Err(e) => Err(("UF", format!("connecting to {authority} failed: {e}"))),
    }
}

impl<'a> Ended<'a> {
    fn refused(route: Option<&'a str>, backend: Option<&'a Backend>, (flag, why): Refused) -> Self {
        Ended {
            route,
            backend,
            upstream_host: None,
            upstream_local: None,
            destination: backend.map_or_else(Destination::unknown, |b| b.destination.clone()),
            mutual_tls: false,
            flag,
            reason: Some(why),
            received: 0,
            sent: 0,
        }
    }
}

/// Metrics and the access-log line of a closed connection.
fn finish(ctx: &ProxyContext, d: &Downstream, e: Ended<'_>) {
    if let Some(why) = &e.reason {
        tracing::debug!(peer = %d.peer, flag = e.flag, "connection refused: {why}");
    }
    // A connection that reached its upstream was reported as it went (`Report`); a
    // refused one is, in one report, here.
    if e.upstream_host.is_none() {
        ctx.metrics.istio.record_connection(&ConnectionRecord {
            destination: e.destination.clone(),
            response_flags: e.flag,
            mutual_tls: e.mutual_tls,
            received_bytes: e.received,
            sent_bytes: e.sent,
            opened: true,
            closed: true,
        });
    }
    let flag = (e.flag != "-").then_some(e.flag);
    if !ctx.access_log.wants(0, flag) {
        return;
    }
    let (peer, local) = (d.peer.to_string(), d.local.to_string());
    let upstream_local = e.upstream_local.map(|a| a.to_string());
    let cluster = e.backend.map(|b| b.cluster_name(&e.destination));
    ctx.access_log.log(&Entry {
        start_time: humantime::format_rfc3339_millis(d.start_time).to_string(),
        method: None,
        path: None,
        protocol: None,
        response_code: 0,
        response_flags: e.flag,
        bytes_received: e.received,
        bytes_sent: e.sent,
        duration: d.accepted.elapsed().as_millis() as u64,
        upstream_service_time: None,
        upstream_host: e.upstream_host.as_deref(),
        upstream_local_address: upstream_local.as_deref(),
        downstream_local_address: &local,
        upstream_transport_failure_reason: None,
        connection_termination_details: None,
        upstream_cluster: cluster.as_deref(),
        x_forwarded_for: None,
        user_agent: None,
        request_id: None,
        authority: None,
        requested_server_name: d.sni.as_deref(),
        attempts: u32::from(e.upstream_host.is_some()),
        downstream_remote_address: &peer,
        route: e.route,
        // Envoy's tcp_proxy has no route: `%ROUTE_NAME%` is null (`route` names ours).
        route_name: None,
        // A connection ends without a response: Envoy's tcp_proxy logs none.
        response_code_details: None,
        upstream: e.backend.map(|b| &*b.name),
        reason: e.reason.as_deref(),
        trace_id: None,
        span_id: None,
        trace_sampled: false,
    });
}
