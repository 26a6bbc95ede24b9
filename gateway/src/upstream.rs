//! Connections to upstreams: pooled hyper-util clients and the per-endpoint transport.
//!
//! [`Transport`] is the seam for mesh mTLS: `translate` picks one per endpoint from its
//! labels, and [`Upstreams::client`] hands out the pooled client for it. Today every
//! endpoint is plaintext; the mesh issue adds a `MeshTls` variant (identity, SNI) and a
//! client whose connector wraps the TCP stream in rustls.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpStream;

use crate::metrics::Metrics;

/// How the gateway connects to one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Transport {
    /// Plain TCP.
    Plaintext,
}

impl Transport {
    /// Chooses the transport for an endpoint from its labels. The mesh issue maps
    /// `security.istio.io/tlsMode: istio` to mesh mTLS here.
    pub fn for_endpoint(_labels: &BTreeMap<String, String>) -> Transport {
        Transport::Plaintext
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

/// Pooled clients, one per (transport, protocol).
#[derive(Clone)]
pub struct Upstreams {
    http1: Client<Connector, Incoming>,
    http2: Client<Connector, Incoming>,
}

impl Upstreams {
    pub fn new(settings: &UpstreamSettings, metrics: Arc<Metrics>) -> Upstreams {
        let connector = Connector::new(settings, metrics);
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host);
        let http1 = b.clone().build(connector.clone());
        let http2 = b.http2_only(true).timer(TokioTimer::new()).build(connector);
        Upstreams { http1, http2 }
    }

    /// The pooled client for an endpoint's transport and the backend's protocol.
    pub fn client(&self, transport: Transport, http2: bool) -> &Client<Connector, Incoming> {
        match (transport, http2) {
            (Transport::Plaintext, false) => &self.http1,
            (Transport::Plaintext, true) => &self.http2,
        }
    }
}

/// TCP connector that counts open upstream connections.
#[derive(Clone)]
pub struct Connector {
    inner: HttpConnector,
    metrics: Arc<Metrics>,
}

impl Connector {
    fn new(settings: &UpstreamSettings, metrics: Arc<Metrics>) -> Connector {
        let mut inner = HttpConnector::new();
        inner.set_nodelay(true);
        inner.set_connect_timeout(Some(settings.connect_timeout));
        inner.enforce_http(true);
        Connector { inner, metrics }
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
        Box::pin(async move {
            let io = fut.await?;
            metrics.upstream_connections.inc();
            metrics.upstream_connections_total.inc();
            Ok(CountedIo { io, metrics })
        })
    }
}

/// An upstream connection; decrements the open-connections gauge when dropped.
pub struct CountedIo {
    io: TokioIo<TcpStream>,
    metrics: Arc<Metrics>,
}

impl Drop for CountedIo {
    fn drop(&mut self) {
        self.metrics.upstream_connections.dec();
    }
}

impl Connection for CountedIo {
    fn connected(&self) -> Connected {
        self.io.connected()
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
