//! Connections to upstreams: pooled hyper-util clients and the per-endpoint transport.
//!
//! [`Transport`] is chosen per endpoint by `translate` (from the upstream TLS mode and the
//! endpoint's `security.istio.io/tlsMode` label), and [`Upstreams::client`] hands out the
//! pooled client for it: one per protocol for plaintext, one per [`MeshTarget`] for mesh
//! mTLS, whose connector wraps the TCP stream in rustls with the current SDS identity.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::mesh_tls::{self, MeshTarget};
use crate::metrics::Metrics;
use crate::sds::{MeshCreds, MeshIdentity};

/// How the gateway connects to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Transport {
    /// Plain TCP.
    Plaintext,
    /// Istio mutual TLS with the gateway's SDS identity.
    Mesh(Arc<MeshTarget>),
}

/// Upstream TLS mode of a backend (global default, or per Service by annotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    /// mTLS to endpoints labelled `security.istio.io/tlsMode=istio`, plaintext to the rest.
    Auto,
    /// Always mTLS (`ISTIO_MUTUAL`).
    IstioMutual,
    /// Always plaintext (`DISABLE`).
    Disable,
}

impl UpstreamTls {
    /// Parses an annotation value; accepts Istio's spellings too.
    pub fn parse(s: &str) -> Option<UpstreamTls> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "auto" => Some(UpstreamTls::Auto),
            "istio-mutual" => Some(UpstreamTls::IstioMutual),
            "disable" => Some(UpstreamTls::Disable),
            _ => None,
        }
    }
}

impl Transport {
    /// Plain TCP?
    pub fn is_plaintext(&self) -> bool {
        matches!(self, Transport::Plaintext)
    }

    /// Chooses the transport for an endpoint: `mode` says whether to use mTLS, the
    /// endpoint's `security.istio.io/tlsMode` label decides for `auto`.
    pub fn for_endpoint(
        mode: UpstreamTls,
        target: Option<&Arc<MeshTarget>>,
        labels: &BTreeMap<String, String>,
    ) -> Transport {
        let in_mesh = labels
            .get(mesh::consts::TLS_MODE_LABEL)
            .is_some_and(|v| v == "istio");
        match (mode, target) {
            (UpstreamTls::IstioMutual, Some(t)) => Transport::Mesh(t.clone()),
            (UpstreamTls::Auto, Some(t)) if in_mesh => Transport::Mesh(t.clone()),
            _ => Transport::Plaintext,
        }
    }
}

/// Upstream client settings.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Max idle pooled connections per upstream address.
    pub pool_max_idle_per_host: usize,
}

/// Per mesh target: the credentials its pool was built with, and the pool.
type MeshClients = HashMap<Arc<MeshTarget>, (Option<Arc<MeshCreds>>, Client<Connector, Incoming>)>;

/// Pooled clients: one per protocol for plaintext, one per mesh target for mTLS (a
/// target's SNI and expected identities are fixed, so its pool never mixes peers).
///
/// A mesh pool belongs to one SDS credentials version. When SDS delivers new ones the
/// next request gets a fresh pool, so new connections present the new certificate at
/// once; requests in flight finish on their old connections, which close when the old
/// pool is dropped.
#[derive(Clone)]
pub struct Upstreams {
    http1: Client<Connector, Incoming>,
    http2: Client<Connector, Incoming>,
    builder: hyper_util::client::legacy::Builder,
    plain: Connector,
    identity: Option<Arc<MeshIdentity>>,
    /// Copy-on-write: lookups are lock-free; a new target (rare) clones the map.
    mesh: Arc<ArcSwap<MeshClients>>,
}

impl Upstreams {
    /// Clients sharing `settings`; `identity` is the SDS identity when mesh integration is on.
    pub fn new(
        settings: &UpstreamSettings,
        metrics: Arc<Metrics>,
        identity: Option<Arc<MeshIdentity>>,
    ) -> Upstreams {
        let connector = Connector::new(settings, metrics);
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host);
        let http1 = b.clone().build(connector.clone());
        let http2 = b
            .clone()
            .http2_only(true)
            .timer(TokioTimer::new())
            .build(connector.clone());
        Upstreams {
            http1,
            http2,
            builder: b,
            plain: connector,
            identity,
            mesh: Arc::new(ArcSwap::from_pointee(HashMap::new())),
        }
    }

    /// The pooled client for an endpoint's transport and the backend's protocol.
    pub fn client(&self, transport: &Transport, http2: bool) -> Client<Connector, Incoming> {
        match transport {
            Transport::Plaintext if http2 => self.http2.clone(),
            Transport::Plaintext => self.http1.clone(),
            Transport::Mesh(target) => {
                let creds = self.identity.as_ref().and_then(|i| i.current());
                let same = |a: &Option<Arc<MeshCreds>>| match (a, &creds) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if let Some((built_with, c)) = self.mesh.load().get(target)
                    && same(built_with)
                {
                    return c.clone();
                }
                let connector = Connector {
                    mesh: Some((target.clone(), creds.clone())),
                    ..self.plain.clone()
                };
                let mut b = self.builder.clone();
                if target.http2 {
                    b.http2_only(true).timer(TokioTimer::new());
                }
                let client = b.build(connector);
                self.mesh.rcu(|map| {
                    let mut map = HashMap::clone(map);
                    map.insert(target.clone(), (creds.clone(), client.clone()));
                    map
                });
                client
            }
        }
    }
}

/// TCP connector (plus mesh mTLS for a mesh target) that counts open upstream connections.
#[derive(Clone)]
pub struct Connector {
    inner: HttpConnector,
    metrics: Arc<Metrics>,
    /// Mesh target and the credentials this connector's pool uses (`None`: not yet loaded).
    mesh: Option<(Arc<MeshTarget>, Option<Arc<MeshCreds>>)>,
}

impl Connector {
    fn new(settings: &UpstreamSettings, metrics: Arc<Metrics>) -> Connector {
        let mut inner = HttpConnector::new();
        inner.set_nodelay(true);
        inner.set_connect_timeout(Some(settings.connect_timeout));
        inner.enforce_http(true);
        Connector {
            inner,
            metrics,
            mesh: None,
        }
    }
}

/// Why a mesh mTLS connection could not be made (the 503 body says this).
#[derive(Debug, thiserror::Error)]
pub enum MeshConnectError {
    #[error(
        "no mesh identity yet: the gateway has not received its certificate over SDS (is the sds-agent running and ready?)"
    )]
    NoIdentity,
    #[error("mesh mTLS handshake with {sni} failed: {detail}")]
    Handshake {
        /// The SNI sent (names the service and port).
        sni: String,
        /// What went wrong, for a person.
        detail: String,
    },
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

/// Wraps `tcp` in mesh mTLS for `target` with `creds`.
async fn mesh_handshake(
    tcp: TcpStream,
    target: &MeshTarget,
    creds: Option<&MeshCreds>,
    metrics: &Metrics,
) -> Result<UpstreamStream, MeshConnectError> {
    let Some(creds) = creds else {
        metrics.tls_error("no_mesh_identity");
        return Err(MeshConnectError::NoIdentity);
    };
    let config = mesh_tls::client_config(creds, target);
    let name = rustls_pki_types::ServerName::try_from(target.sni.clone()).map_err(|e| {
        MeshConnectError::Handshake {
            sni: target.sni.clone(),
            detail: e.to_string(),
        }
    })?;
    match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        Ok(tls) => Ok(UpstreamStream::Tls(Box::new(tls))),
        Err(e) => {
            let (reason, detail) = describe_tls_failure(&e);
            metrics.tls_error(reason);
            Err(MeshConnectError::Handshake {
                sni: target.sni.clone(),
                detail,
            })
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = CountedIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<CountedIo, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let fut = self.inner.call(uri);
        let metrics = self.metrics.clone();
        let mesh = self.mesh.clone();
        Box::pin(async move {
            let tcp = fut.await?.into_inner();
            let stream = match &mesh {
                None => UpstreamStream::Plain(tcp),
                Some((target, creds)) => {
                    mesh_handshake(tcp, target, creds.as_deref(), &metrics).await?
                }
            };
            metrics.upstream_connections.inc();
            metrics.upstream_connections_total.inc();
            Ok(CountedIo {
                io: TokioIo::new(stream),
                metrics,
            })
        })
    }
}

/// An upstream connection; decrements the open-connections gauge when dropped.
pub struct CountedIo {
    io: TokioIo<UpstreamStream>,
    metrics: Arc<Metrics>,
}

impl Drop for CountedIo {
    fn drop(&mut self) {
        self.metrics.upstream_connections.dec();
    }
}

impl Connection for CountedIo {
    fn connected(&self) -> Connected {
        match self.io.inner() {
            UpstreamStream::Plain(s) => s.connected(),
            UpstreamStream::Tls(s) => s.get_ref().0.connected(),
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
