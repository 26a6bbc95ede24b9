//! The upstream connector: TCP (nodelay, connect timeout), then Istio mTLS for mesh
//! targets with the pool's ready-built client config; counts open connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::UpstreamSettings;
use super::backend_tls::{self, BackendTlsError};
use crate::identity::{MeshCreds, mesh_tls};
use crate::ir::{MeshTarget, TlsTarget};
use crate::observe::metrics::Metrics;

/// A backend TLS pool's client config, or why it could not be built.
type BackendTlsConfig = Result<Arc<rustls::ClientConfig>, Arc<BackendTlsError>>;

/// What a backend TLS connector needs per connection, built once per pool.
pub struct BackendTls {
    sni: String,
    policy: String,
    config: BackendTlsConfig,
}

/// A backend TLS handshake failed (untrusted chain, a name that does not match...).
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {sni} ({policy}) failed: {detail}")]
pub struct BackendHandshakeError {
    /// The SNI sent.
    pub sni: String,
    /// The policy that asked for TLS (`DestinationRule ns/name`).
    pub policy: String,
    /// What went wrong.
    pub detail: String,
}

/// TCP connector (plus mesh mTLS for a mesh target) that counts open upstream connections.
///
/// One `Arc` built by the worker that owns the pool: hyper-util's client clones its
/// connector twice per request (with the client, and for a connect it may not need), so
/// that is the one count a request writes here, and no other worker writes it. The parts
/// inside (the metrics, the TLS configs) are shared by every worker; cloning them per
/// request made every request write counts that all workers write.
#[derive(Clone)]
pub struct Connector(Arc<Parts>);

/// What a [`Connector`] holds.
#[derive(Clone)]
struct Parts {
    inner: HttpConnector,
    metrics: Arc<Metrics>,
    /// Mesh target and the client config of this connector's pool (`None` inside: no
    /// credentials yet, so every connect fails with [`MeshConnectError::NoIdentity`]).
    mesh: Option<(Arc<MeshTarget>, Option<Arc<rustls::ClientConfig>>)>,
    /// Backend TLS (BackendTLSPolicy, DestinationRule SIMPLE/MUTUAL): the SNI, the
    /// policy, and the pool's client config, or why the config could not be built (every
    /// connect then fails with it).
    tls: Option<Arc<BackendTls>>,
    /// Count the requests on each connection (`maxRequestsPerConnection`).
    count_requests: bool,
}

/// Requests sent on one connection so far; carried in its `Connected` extras so that
/// the request path can count and retire it.
#[derive(Clone, Debug, Default)]
pub struct RequestsOnConnection(pub Arc<std::sync::atomic::AtomicU32>);

impl Connector {
    /// A plaintext connector.
    pub fn new(settings: &UpstreamSettings, metrics: Arc<Metrics>) -> Connector {
        let mut inner = HttpConnector::new();
        inner.set_nodelay(true);
        inner.set_connect_timeout(Some(settings.connect_timeout));
        inner.enforce_http(true);
        Connector(Arc::new(Parts {
            inner,
            metrics,
            mesh: None,
            tls: None,
            count_requests: false,
        }))
    }

    /// A new connector: this one's parts, changed by `f`.
    fn with(&self, f: impl FnOnce(&mut Parts)) -> Connector {
        let mut parts = Parts::clone(&self.0);
        f(&mut parts);
        Connector(Arc::new(parts))
    }

    /// The same connector, counting requests per connection when `count`.
    pub fn counting_requests(&self, count: bool) -> Connector {
        self.with(|p| p.count_requests = count)
    }

    /// The same connector doing TLS to a BackendTLSPolicy target; its config is built
    /// here, once for the pool's lifetime.
    pub fn for_backend_tls(&self, target: &TlsTarget) -> Connector {
        let config = backend_tls::client_config(target).map_err(Arc::new);
        self.with(|p| {
            p.tls = Some(Arc::new(BackendTls {
                sni: target.hostname.clone(),
                policy: target.policy.clone(),
                config,
            }))
        })
    }

    /// The same connector setting SO_KEEPALIVE with `k`'s timings on its connections
    /// (unset timings: Linux's defaults, 7200 s idle, 75 s apart, 9 probes).
    pub fn with_tcp_keepalive(&self, k: &crate::ir::TcpKeepalive) -> Connector {
        self.with(|p| {
            p.inner
                .set_keepalive(Some(k.time.unwrap_or(std::time::Duration::from_secs(7200))));
            p.inner.set_keepalive_interval(k.interval);
            p.inner.set_keepalive_retries(k.probes);
        })
    }

    /// The same connector with its own TCP connect timeout.
    pub fn with_connect_timeout(&self, timeout: std::time::Duration) -> Connector {
        self.with(|p| p.inner.set_connect_timeout(Some(timeout)))
    }

    /// The same connector doing mesh mTLS to `target`; the client config is built here,
    /// once for the pool's lifetime.
    pub fn for_mesh(&self, target: &Arc<MeshTarget>, creds: Option<&MeshCreds>) -> Connector {
        let config = creds.map(|c| mesh_tls::client_config(c, target));
        self.with(|p| p.mesh = Some((target.clone(), config)))
    }
}

/// Why a mesh mTLS connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MeshConnectError {
    /// The sds-agent has not delivered a certificate yet.
    #[error(
        "no mesh identity yet: the gateway has not received its certificate over SDS (is the sds-agent running and ready?)"
    )]
    NoIdentity,
    /// The handshake failed; `reason` is the metric label.
    #[error("mesh mTLS handshake with {sni} failed: {detail}")]
    Handshake {
        /// `identity_mismatch`, `untrusted_upstream` or `handshake_failed`.
        reason: &'static str,
        /// The SNI sent (names the service and port).
        sni: String,
        /// What went wrong, for a person (log and debug endpoint only).
        detail: String,
    },
}

impl MeshConnectError {
    /// The reason code given to the edge client.
    pub fn code(&self) -> &'static str {
        match self {
            MeshConnectError::NoIdentity => "mesh_no_identity",
            MeshConnectError::Handshake { reason, .. } => match *reason {
                "identity_mismatch" => "mesh_identity_mismatch",
                "untrusted_upstream" => "mesh_untrusted_upstream",
                _ => "mesh_handshake_failed",
            },
        }
    }
}

/// The stream under an upstream connection.
pub enum UpstreamStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// Mesh mTLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Wraps `tcp` in TLS to a backend TLS target.
async fn backend_handshake(
    tcp: TcpStream,
    t: &BackendTls,
) -> Result<UpstreamStream, Box<dyn std::error::Error + Send + Sync>> {
    let config = t
        .config
        .as_ref()
        .map_err(|e| Box::new(BackendTlsError::clone(e)))?;
    let name = rustls_pki_types::ServerName::try_from(t.sni.clone())?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| BackendHandshakeError {
            sni: t.sni.clone(),
            policy: t.policy.clone(),
            detail: backend_tls::describe_handshake_failure(&e),
        })?;
    Ok(UpstreamStream::Tls(Box::new(tls)))
}

/// Wraps `tcp` in mesh mTLS for `target` with the pool's client config.
async fn mesh_handshake(
    tcp: TcpStream,
    target: &MeshTarget,
    config: Option<&Arc<rustls::ClientConfig>>,
    metrics: &Metrics,
) -> Result<UpstreamStream, MeshConnectError> {
    let Some(config) = config else {
        metrics.tls_error("no_mesh_identity");
        return Err(MeshConnectError::NoIdentity);
    };
    let failed = |reason, detail| MeshConnectError::Handshake {
        reason,
        sni: target.sni.clone(),
        detail,
    };
    let name = rustls_pki_types::ServerName::try_from(target.sni.clone())
        .map_err(|e| failed("handshake_failed", e.to_string()))?;
    match tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
    {
        Ok(tls) => Ok(UpstreamStream::Tls(Box::new(tls))),
        Err(e) => {
            let (reason, detail) = describe_tls_failure(&e);
            metrics.tls_error(reason);
            Err(failed(reason, detail))
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = CountedIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<CountedIo, Self::Error>> + Send>>;

    // Per connection, not per request: the clones of the shared parts are made here.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.inner.clone().poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let p = &*self.0;
        // A TLS target whose config could not be built (its credentials are missing)
        // fails before any TCP connection is made.
        if let Some(Err(e)) = p.tls.as_ref().map(|t| &t.config) {
            let e = BackendTlsError::clone(e);
            return Box::pin(async move { Err(e.into()) });
        }
        let fut = p.inner.clone().call(uri);
        let metrics = p.metrics.clone();
        let mesh = p.mesh.clone();
        let tls = p.tls.clone();
        let requests = p.count_requests.then(RequestsOnConnection::default);
        Box::pin(async move {
            let tcp = fut.await?.into_inner();
            let stream = match (&mesh, &tls) {
                (Some((target, config)), _) => {
                    mesh_handshake(tcp, target, config.as_ref(), &metrics).await?
                }
                (None, Some(t)) => backend_handshake(tcp, t).await?,
                (None, None) => UpstreamStream::Plain(tcp),
            };
            metrics.upstream_connections.inc();
            metrics.upstream_connections_total.inc();
            Ok(CountedIo {
                io: TokioIo::new(stream),
                metrics,
                requests,
            })
        })
    }
}

/// An upstream connection; decrements the open-connections gauge when dropped.
pub struct CountedIo {
    io: TokioIo<UpstreamStream>,
    metrics: Arc<Metrics>,
    /// Requests carried, when the pool counts them.
    requests: Option<RequestsOnConnection>,
}

impl Drop for CountedIo {
    fn drop(&mut self) {
        self.metrics.upstream_connections.dec();
    }
}

impl Connection for CountedIo {
    fn connected(&self) -> Connected {
        let c = match self.io.inner() {
            UpstreamStream::Plain(s) => s.connected(),
            UpstreamStream::Tls(s) => s.get_ref().0.connected(),
        };
        match &self.requests {
            Some(n) => c.extra(n.clone()),
            None => c,
        }
    }
}

impl hyper::rt::Read for CountedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for CountedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// A metric reason and a sentence for a failed mesh handshake.
fn describe_tls_failure(e: &std::io::Error) -> (&'static str, String) {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            match other.0.downcast_ref::<mesh_tls::IdentityMismatch>() {
                Some(m) => ("identity_mismatch", m.to_string()),
                None => (
                    "untrusted_upstream",
                    format!("upstream certificate rejected: {}", other.0),
                ),
            }
        }
        Some(rustls::Error::InvalidCertificate(c)) => (
            "untrusted_upstream",
            format!(
                "upstream certificate rejected ({c:?}); is it signed by the mesh root (ROOTCA)?"
            ),
        ),
        Some(other) => ("handshake_failed", other.to_string()),
        None => ("handshake_failed", e.to_string()),
    }
}
