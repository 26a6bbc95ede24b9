//! Connections to upstreams: pooled hyper-util clients per transport ([`Upstreams`]), the
//! connector doing TCP and mesh mTLS ([`connector`]), and the per-attempt hook every
//! upstream feature plugs into ([`attempt`]).
//!
//! A mesh pool belongs to one (target, SDS credentials version): when SDS delivers new
//! credentials the next request gets a fresh pool whose rustls `ClientConfig` is built
//! once, so new connections present the new certificate at once; requests in flight finish
//! on their old connections, which close when the old pool is dropped.
//!
//! A backend whose DestinationRule sets `connectTimeout`, `idleTimeout` or
//! `maxRequestsPerConnection` gets pools of its own, keyed by those settings with the
//! transport, so they never leak into another backend's connections.

pub mod attempt;
mod authorities;
pub mod backend_state;
mod backend_tls;
mod body;
pub mod connector;
pub mod lb;
pub mod outlier;
pub mod pool_limits;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::Client;
pub use hyper_util::client::legacy::connect::{CaptureConnection, capture_connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

/// A connect error of any layer (TCP, TLS, mesh identity).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use body::{DownstreamBodyError, Replayable, RequestBody};
pub use connector::{Connector, MeshConnectError};

use crate::identity::{MeshCreds, MeshIdentity};
use crate::ir::{MeshTarget, PoolSettings, TlsTarget, Transport};
use crate::observe::metrics::Metrics;

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

/// A pooled upstream client. It sends the body behind a pointer: each upstream
/// connection keeps two blocks of hyper's request queue, 32 slots each. With the body
/// inline a slot is 320 bytes and a block 10,272, which mimalloc rounds up to 12 KiB;
/// boxed, 256 and 8,224, rounded to 10 KiB. One small allocation per request buys 4 KiB
/// per upstream connection (README, "Memory per connection").
pub type UpstreamClient = Client<Connector, Box<RequestBody>>;

/// Per mesh target: the credentials its pool was built with, and the pool.
type MeshClients = HashMap<Arc<MeshTarget>, (Option<Arc<MeshCreds>>, UpstreamClient)>;

/// Per BackendTLSPolicy target: its pool.
type TlsClients = HashMap<Arc<TlsTarget>, UpstreamClient>;

/// Pools with settings of their own, by (transport, HTTP/2, settings), with the mesh
/// credentials they were built with.
type OwnClients =
    HashMap<(Transport, bool, PoolSettings), (Option<Arc<MeshCreds>>, UpstreamClient)>;

/// Connectors of connection routes (TCP, TLS), by transport, with the mesh credentials
/// they were built with: their rustls config is built once, not per connection.
type StreamConnectors = HashMap<Transport, (Option<Arc<MeshCreds>>, Connector)>;

/// Pooled clients: one per protocol for plaintext, one per mesh target for mTLS (a
/// target's SNI and expected identities are fixed, so its pool never mixes peers).
///
/// A mesh pool belongs to one SDS credentials version. When SDS delivers new ones the
/// next request gets a fresh pool, so new connections present the new certificate at
/// once; requests in flight finish on their old connections, which close when the old
/// pool is dropped.
#[derive(Clone)]
pub struct Upstreams {
    http1: UpstreamClient,
    http2: UpstreamClient,
    builder: hyper_util::client::legacy::Builder,
    plain: Connector,
    identity: Option<Arc<MeshIdentity>>,
    /// Copy-on-write: lookups are lock-free; a new target (rare) clones the map.
    mesh: Arc<ArcSwap<MeshClients>>,
    /// Pools per BackendTLSPolicy target (copy-on-write, like `mesh`).
    tls: Arc<ArcSwap<TlsClients>>,
    /// Connectors for connection routes (copy-on-write, like `mesh`).
    streams: Arc<ArcSwap<StreamConnectors>>,
    /// Pools of backends with connection settings of their own (copy-on-write).
    own: Arc<ArcSwap<OwnClients>>,
    /// This worker's copies of endpoint authorities ([`Upstreams::local_authority`]).
    authorities: Arc<authorities::LocalAuthorities>,
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
            tls: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            streams: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            own: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            authorities: Arc::default(),
        }
    }

    /// `authority` as this worker's own copy, for a request's URI: the pool clones it
    /// about a dozen times per request, and the endpoint's own is shared by every worker
    /// ([`authorities`]).
    pub fn local_authority(&self, authority: &http::uri::Authority) -> http::uri::Authority {
        self.authorities.get(authority)
    }

    /// A new (unpooled) connection for a connection route: TCP (within the backend's
    /// DestinationRule `connectTimeout`, else `--connect-timeout`), then mesh mTLS (ALPN
    /// `istio`) or backend TLS, as the endpoint's transport says.
    pub async fn connect_stream(
        &self,
        transport: &Transport,
        authority: &http::uri::Authority,
        pool: &PoolSettings,
    ) -> Result<TokioIo<connector::CountedIo>, BoxError> {
        let mut connector = self.stream_connector(transport);
        // Clones sharing the built TLS config: only the TCP settings differ.
        if let Some(t) = pool.connect_timeout {
            connector = connector.with_connect_timeout(t);
        }
        if let Some(k) = &pool.tcp_keepalive {
            connector = connector.with_tcp_keepalive(k);
        }
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query("/")
            .build()?;
        let io = tower_service::Service::call(&mut connector, uri).await?;
        Ok(TokioIo::new(io))
    }

    /// The connector for a connection route's transport, built once per transport and
    /// mesh credentials version (a new certificate from SDS gives a new one).
    fn stream_connector(&self, transport: &Transport) -> Connector {
        let creds = match transport {
            Transport::Plaintext => return self.plain.clone(),
            Transport::Mesh(_) => self.identity.as_ref().and_then(|i| i.current()),
            Transport::Tls(_) => None,
        };
        if let Some((built_with, c)) = self.streams.load().get(transport)
            && same_creds(built_with, &creds)
        {
            return c.clone();
        }
        let connector = match transport {
            Transport::Mesh(target) => self.plain.for_mesh(target, creds.as_deref()),
            Transport::Tls(target) => self.plain.for_backend_tls(target),
            Transport::Plaintext => self.plain.clone(),
        };
        self.streams.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(transport.clone(), (creds.clone(), connector.clone()));
            map
        });
        connector
    }

    /// The pooled client for an endpoint's transport, the backend's protocol and its
    /// connection settings (shared pools when it has none of its own).
    pub fn client(
        &self,
        transport: &Transport,
        http2: bool,
        pool: &PoolSettings,
    ) -> UpstreamClient {
        if !pool.is_shared() {
            return self.own_client(transport, http2, pool);
        }
        match transport {
            Transport::Plaintext if http2 => self.http2.clone(),
            Transport::Plaintext => self.http1.clone(),
            Transport::Mesh(target) => {
                let creds = self.identity.as_ref().and_then(|i| i.current());
                if let Some((built_with, c)) = self.mesh.load().get(target)
                    && same_creds(built_with, &creds)
                {
                    return c.clone();
                }
                let connector = self.plain.for_mesh(target, creds.as_deref());
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
            Transport::Tls(target) => {
                if let Some(c) = self.tls.load().get(target) {
                    return c.clone();
                }
                let mut b = self.builder.clone();
                if target.http2 {
                    b.http2_only(true).timer(TokioTimer::new());
                }
                let client = b.build(self.plain.for_backend_tls(target));
                self.tls.rcu(|map| {
                    let mut map = HashMap::clone(map);
                    map.insert(target.clone(), client.clone());
                    map
                });
                client
            }
        }
    }
}

impl Upstreams {
    /// A pool of the backend's own, built once per (transport, protocol, settings) and
    /// mesh credentials version.
    fn own_client(
        &self,
        transport: &Transport,
        http2: bool,
        pool: &PoolSettings,
    ) -> UpstreamClient {
        let creds = match transport {
            Transport::Mesh(_) => self.identity.as_ref().and_then(|i| i.current()),
            _ => None,
        };
        let key = (transport.clone(), http2, *pool);
        if let Some((built_with, c)) = self.own.load().get(&key)
            && same_creds(built_with, &creds)
        {
            return c.clone();
        }
        let mut base = self
            .plain
            .counting_requests(pool.max_requests_per_connection.is_some());
        if let Some(t) = pool.connect_timeout {
            base = base.with_connect_timeout(t);
        }
        if let Some(k) = &pool.tcp_keepalive {
            base = base.with_tcp_keepalive(k);
        }
        let (connector, h2) = match transport {
            Transport::Plaintext => (base, http2),
            Transport::Mesh(t) => (base.for_mesh(t, creds.as_deref()), t.http2),
            Transport::Tls(t) => (base.for_backend_tls(t), t.http2),
        };
        let mut b = self.builder.clone();
        // `0s` turns the idle timeout off, as in Envoy: kept until the upstream closes.
        if let Some(t) = pool.idle_timeout {
            b.pool_idle_timeout((!t.is_zero()).then_some(t));
        }
        if h2 {
            b.http2_only(true).timer(TokioTimer::new());
        }
        let client = b.build(connector);
        self.own.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(key.clone(), (creds.clone(), client.clone()));
            map
        });
        client
    }
}

/// Retires the connection a request went out on once it has carried `max` requests
/// (`maxRequestsPerConnection`): the pool never hands it out again, and it closes when
/// the response is done. Only connections of a counting connector are counted.
pub fn count_request_on(capture: &CaptureConnection, max: u32) {
    let meta = capture.connection_metadata();
    let Some(conn) = meta.as_ref() else { return };
    let mut ext = http::Extensions::new();
    conn.get_extras(&mut ext);
    if let Some(n) = ext.get::<connector::RequestsOnConnection>()
        && n.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= max
    {
        conn.poison();
    }
}

/// Whether a pool or connector was built with the credentials current now.
fn same_creds(built_with: &Option<Arc<MeshCreds>>, now: &Option<Arc<MeshCreds>>) -> bool {
    match (built_with, now) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}
