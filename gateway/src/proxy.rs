//! Downstream connections and the request path.
//!
//! One accept loop per listening port (see `server`); each connection is served by
//! hyper-util's auto builder (HTTP/1.1 and HTTP/2, h2c prior knowledge, ALPN on TLS).
//! A request reads the route table with one `ArcSwap::load`, matches, applies filters and
//! forwards through the pooled upstream client, streaming both bodies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::access_log::Entry;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::routing::{BackendTarget, Protocol, RequestView};
use crate::server::Shared;
use crate::tls;

/// Header carrying the request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Client certificate details set by mesh proxies; never accepted from edge clients.
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Builds the hyper server settings shared by every connection.
pub fn server_builder(limits: &crate::config::Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192) + limits.max_uri_bytes + 1024)
        .keep_alive(true);
    b.http2().timer(TokioTimer::new()).max_header_list_size(
        (limits.max_header_bytes + limits.max_uri_bytes)
            .try_into()
            .unwrap_or(u32::MAX),
    );
    b
}

/// Serves one accepted TCP connection on `port` until it closes, idles out or drains.
pub async fn serve_connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, port: u16) {
    let _ = tcp.set_nodelay(true);
    let table = shared.table.load_full();
    let Some(pt) = table.ports.get(&port) else {
        return;
    };
    let scheme = pt.protocol;
    match scheme {
        Protocol::Http => {
            // Requests load the current table themselves; don't pin this one.
            drop(table);
            serve_io(shared.clone(), tcp, peer, port, scheme).await
        }
        Protocol::Https => {
            let hrt = shared.limits.header_read_timeout;
            let acceptor =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
            let start = match tokio::time::timeout(hrt, acceptor).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS ClientHello failed");
                    return;
                }
                Err(_) => return,
            };
            let sni = start.client_hello().server_name().map(str::to_owned);
            let Some(lt) = tls::select(&pt.tls, sni.as_deref()) else {
                return;
            };
            let config = lt.config.clone();
            drop(table);
            let stream = match tokio::time::timeout(hrt, start.into_stream(config)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, ?sni, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            serve_io(shared, stream, peer, port, scheme).await
        }
    }
}

async fn serve_io<I>(shared: Arc<Shared>, io: I, peer: SocketAddr, port: u16, scheme: Protocol)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(ActivityIo {
        inner: io,
        activity: activity.clone(),
    });
    let conn_ctx = Arc::new(ConnCtx {
        shared: shared.clone(),
        peer,
        port,
        scheme,
    });
    let svc = hyper::service::service_fn(move |req| {
        let ctx = conn_ctx.clone();
        async move { Ok::<_, Infallible>(handle(ctx, req).await) }
    });
    let conn = shared.server.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let mut drain = shared.drain.subscribe();
    let mut draining = *drain.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let idle = shared.limits.idle_timeout;
    let tick = (idle / 4).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with error");
                }
                return;
            }
            _ = drain.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(tick) => {
                if activity.idle_for() >= idle && !draining {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Per-connection context for the request handler.
struct ConnCtx {
    shared: Arc<Shared>,
    peer: SocketAddr,
    port: u16,
    scheme: Protocol,
}

/// An error the gateway answers itself, with the reason given to client and log.
struct Reject {
    status: StatusCode,
    reason: String,
}

fn reject(status: StatusCode, reason: impl Into<String>) -> Reject {
    Reject {
        status,
        reason: reason.into(),
    }
}

/// Per-request record, completed when the response body ends.
struct Completion {
    shared: Arc<Shared>,
    start: Instant,
    start_time: SystemTime,
    method: String,
    authority: String,
    path: String,
    version: Version,
    status: u16,
    route: Option<String>,
    upstream: Option<String>,
    upstream_address: Option<String>,
    request_id: String,
    peer: SocketAddr,
    reason: Option<String>,
}

impl Completion {
    fn finish(self, bytes_sent: u64) {
        let elapsed = self.start.elapsed();
        let m = &self.shared.metrics;
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
        let log = &self.shared.access_log;
        if log.enabled() {
            let peer = self.peer.to_string();
            log.log(&Entry {
                start_time: humantime::format_rfc3339_millis(self.start_time).to_string(),
                method: &self.method,
                authority: &self.authority,
                path: &self.path,
                protocol: version_str(self.version),
                status: self.status,
                route: self.route.as_deref(),
                upstream: self.upstream.as_deref(),
                upstream_address: self.upstream_address.as_deref(),
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
    kind: BodyKind,
    bytes: u64,
    completion: Option<Box<Completion>>,
}

enum BodyKind {
    Upstream(Incoming),
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

async fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Response<ProxyBody> {
    let start = Instant::now();
    let request_id = req
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let authority = request_authority(&req).unwrap_or_default();
    let mut completion = Box::new(Completion {
        shared: ctx.shared.clone(),
        start,
        start_time: SystemTime::now(),
        method: req.method().as_str().to_owned(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into()),
        authority,
        version: req.version(),
        status: 0,
        route: None,
        upstream: None,
        upstream_address: None,
        request_id,
        peer: ctx.peer,
        reason: None,
    });
    match forward(&ctx, req, &mut completion).await {
        Ok(resp) => {
            let (parts, kind) = resp.into_parts();
            completion.status = parts.status.as_u16();
            Response::from_parts(
                parts,
                ProxyBody {
                    kind,
                    bytes: 0,
                    completion: Some(completion),
                },
            )
        }
        Err(Reject { status, reason }) => {
            completion.status = status.as_u16();
            let body = format!(
                "meshgate: {} {reason} (request id {})\n",
                status.as_u16(),
                completion.request_id
            );
            completion.reason = Some(reason);
            let mut resp = Response::new(ProxyBody {
                kind: BodyKind::Full(Some(Bytes::from(body))),
                bytes: 0,
                completion: None,
            });
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            if let Ok(v) = HeaderValue::from_str(&completion.request_id) {
                resp.headers_mut().insert(X_REQUEST_ID, v);
            }
            resp.body_mut().completion = Some(completion);
            resp
        }
    }
}

/// Host of the request: `:authority` (HTTP/2, absolute-form) or the Host header.
fn request_authority(req: &Request<Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
}

/// Strips the port (and IPv6 brackets kept) and lowercases.
fn host_without_port(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        authority
            .split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_owned()
    };
    host.to_ascii_lowercase()
}

/// Matches, applies filters and forwards; `Err` is an answer the gateway makes itself.
async fn forward(
    ctx: &ConnCtx,
    mut req: Request<Incoming>,
    completion: &mut Completion,
) -> Result<Response<BodyKind>, Reject> {
    let shared = &ctx.shared;
    let limits = &shared.limits;
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return Err(reject(
            StatusCode::URI_TOO_LONG,
            format!(
                "request URI is {uri_len} bytes, limit is {}",
                limits.max_uri_bytes
            ),
        ));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers are {header_bytes} bytes, limit is {}",
                limits.max_header_bytes
            ),
        ));
    }
    let host = host_without_port(&completion.authority);

    // Route lookup on the current table; the rule is kept alive by its Arc even if the
    // table is swapped while the request is in flight.
    let table = shared.table.load();
    let Some(pt) = table.ports.get(&ctx.port) else {
        return Err(reject(StatusCode::NOT_FOUND, "no listener on this port"));
    };
    let Some(vh) = pt.virtual_host(&host) else {
        return Err(reject(
            StatusCode::NOT_FOUND,
            format!("no route for host {host:?}"),
        ));
    };
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let view = RequestView {
        method: req.method(),
        path: &path,
        query: query.as_deref(),
        headers: req.headers(),
    };
    let Some(entry) = vh.find(&view) else {
        return Err(reject(
            StatusCode::NOT_FOUND,
            format!("no route for host {host:?} path {path:?}"),
        ));
    };
    let rule = entry.rule.clone();
    completion.route = Some(rule.id.clone());
    let matched_path = &entry.matcher.path;

    if let Some(r) = &rule.filters.redirect {
        let scheme = r.scheme.as_deref().unwrap_or(ctx.scheme.scheme());
        let rhost = r.hostname.as_deref().unwrap_or(&host);
        let port = match (r.port, &r.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => Some(ctx.port),
        };
        let port = port.filter(|p| !matches!((scheme, *p), ("http", 80) | ("https", 443)));
        let new_path = r
            .path
            .as_ref()
            .map_or_else(|| path.clone(), |m| m.apply(&path, matched_path));
        let mut location = format!("{scheme}://{rhost}");
        if let Some(p) = port {
            location.push_str(&format!(":{p}"));
        }
        location.push_str(&new_path);
        if let Some(q) = &query {
            location.push('?');
            location.push_str(q);
        }
        drop(table);
        return redirect_response(r.status, &location);
    }

    if rule.backends.is_empty() {
        return Err(reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("route {} has no backendRefs", rule.id),
        ));
    }
    let Some(backend) = rule.pick_backend() else {
        return Err(reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("every backendRef of route {} has weight 0", rule.id),
        ));
    };
    completion.upstream = Some(backend.name.clone());
    let (address, transport) = match &backend.target {
        BackendTarget::Unresolvable(why) => {
            return Err(reject(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("backendRef {} unresolvable: {why}", backend.name),
            ));
        }
        BackendTarget::Endpoints(eps) if eps.is_empty() => {
            return Err(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no ready endpoints for {}", backend.name),
            ));
        }
        BackendTarget::Endpoints(eps) => {
            let ep = &eps[fastrand::usize(..eps.len())];
            (ep.address.to_string(), ep.transport.clone())
        }
        BackendTarget::Dns {
            host,
            port,
            transport,
        } => (format!("{host}:{port}"), transport.clone()),
    };
    completion.upstream_address = Some(address.clone());

    // Build the upstream request.
    let downstream_upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let mut path_and_query = path.clone();
    let rewrite = rule
        .filters
        .rewrite
        .as_ref()
        .or(backend.filters.rewrite.as_ref());
    if let Some(m) = rewrite.and_then(|r| r.path.as_ref()) {
        path_and_query = m.apply(&path, matched_path);
    }
    if let Some(q) = &query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let host_header = match rewrite.and_then(|r| r.hostname.clone()) {
        Some(h) => h,
        None => HeaderValue::from_str(&completion.authority)
            .map_err(|_| reject(StatusCode::BAD_REQUEST, "invalid Host"))?,
    };
    let uri: Uri = format!("http://{address}{path_and_query}")
        .parse()
        .map_err(|_| reject(StatusCode::BAD_REQUEST, "request path cannot be forwarded"))?;

    let headers = req.headers_mut();
    let upgrade_headers = downstream_upgrade.as_ref().map(|_| {
        (
            headers.get(header::CONNECTION).cloned(),
            headers.get(header::UPGRADE).cloned(),
        )
    });
    remove_hop_by_hop(headers);
    if let Some((c, u)) = upgrade_headers {
        if let Some(c) = c {
            headers.insert(header::CONNECTION, c);
        }
        if let Some(u) = u {
            headers.insert(header::UPGRADE, u);
        }
    }
    headers.remove(X_FORWARDED_CLIENT_CERT);
    let peer_ip = ctx.peer.ip().to_string();
    let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {peer_ip}"),
        None => peer_ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(ctx.scheme.scheme()),
    );
    if let Ok(v) = HeaderValue::from_str(&completion.authority) {
        headers.insert(X_FORWARDED_HOST, v);
    }
    if let Ok(v) = HeaderValue::from_str(&completion.request_id) {
        headers.insert(X_REQUEST_ID, v);
    }
    headers.insert(header::HOST, host_header);
    if let Some(e) = &rule.filters.request_headers {
        e.apply(headers);
    }
    if let Some(e) = &backend.filters.request_headers {
        e.apply(headers);
    }
    *req.uri_mut() = uri;
    *req.version_mut() = if backend.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let client = shared.upstreams.client(&transport, backend.http2);
    let (request_timeout, backend_timeout) = (rule.request_timeout, rule.backend_request_timeout);
    drop(table);

    let fut = client.request(req);
    let timeout = match (request_timeout, backend_timeout) {
        (Some(r), Some(b)) if b < r => Some((b, "timeouts.backendRequest")),
        (Some(r), _) => Some((r, "timeouts.request")),
        (None, Some(b)) => Some((b, "timeouts.backendRequest")),
        (None, None) => None,
    };
    let result = match timeout {
        Some((t, which)) => {
            let remaining = t.saturating_sub(completion.start.elapsed());
            match tokio::time::timeout(remaining, fut).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(reject(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "upstream {address} did not answer within {} ({which})",
                            humantime::format_duration(t)
                        ),
                    ));
                }
            }
        }
        None => fut.await,
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) if e.is_connect() => {
            return Err(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("upstream connect failure to {address}: {}", error_chain(&e)),
            ));
        }
        Err(e) if transport.is_plaintext() && closed_without_answer(&e) => {
            // What an Istio STRICT sidecar does to plaintext: accept, then close.
            shared.metrics.tls_error("upstream_requires_mtls");
            return Err(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "upstream requires mTLS: {address} closed the plaintext connection without answering \
                     (an Istio STRICT sidecar does this); set Service annotation \
                     meshgate.io/upstream-tls to auto or istio-mutual ({})",
                    error_chain(&e)
                ),
            ));
        }
        Err(e) => {
            return Err(reject(
                StatusCode::BAD_GATEWAY,
                format!("upstream {address} failed: {}", error_chain(&e)),
            ));
        }
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(down) = downstream_upgrade {
            let up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(down, up) {
                    Ok((d, u)) => {
                        let mut d = TokioIo::new(d);
                        let mut u = TokioIo::new(u);
                        let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
        }
    } else {
        remove_hop_by_hop(resp.headers_mut());
    }
    if let Some(e) = &rule.filters.response_headers {
        e.apply(resp.headers_mut());
    }
    if let Some(e) = &backend.filters.response_headers {
        e.apply(resp.headers_mut());
    }
    Ok(resp.map(BodyKind::Upstream))
}

fn redirect_response(status: u16, location: &str) -> Result<Response<BodyKind>, Reject> {
    let mut resp = Response::new(BodyKind::Full(None));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    let loc = HeaderValue::from_str(location)
        .map_err(|_| reject(StatusCode::BAD_REQUEST, "redirect location is not valid"))?;
    resp.headers_mut().insert(header::LOCATION, loc);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(resp)
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Removes hop-by-hop headers (RFC 9110 7.6.1) and any named in `Connection`.
fn remove_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        if n != header::TE {
            h.remove(n);
        }
    }
    for n in [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TRAILER,
    ] {
        h.remove(n);
    }
    // TE is hop-by-hop, but "trailers" must reach gRPC servers.
    let keep_trailers = h
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    h.remove(header::TE);
    if keep_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// A random UUID v4 string.
fn new_request_id() -> String {
    let v = fastrand::u128(..);
    let v = (v & !(0xf << 76)) | (0x4 << 76);
    let v = (v & !(0x3 << 62)) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Last read/write time of a connection.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// IO wrapper recording activity for the idle timeout.
struct ActivityIo<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for ActivityIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
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

/// The upstream accepted the connection and closed (or reset) it before any response.
fn closed_without_answer(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        source = err.source();
    }
    false
}
