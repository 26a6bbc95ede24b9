//! Process wiring: shared state, admin server, config provider, one accept loop per
//! listener port (reconciled on every table change), and graceful drain on SIGTERM.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access_log::AccessLog;
use crate::config::{Config, Limits};
use crate::metrics::Metrics;
use crate::provider::FileProvider;
use crate::routing::Table;
use crate::upstream::Upstreams;
use crate::{admin, proxy};

/// State shared by every task; the request path only reads `table` (lock-free).
pub struct Shared {
    /// The current route table, swapped atomically on a good config change.
    pub table: ArcSwap<Table>,
    /// Bumped after each swap; wakes the listener manager.
    pub table_changed: watch::Sender<u64>,
    /// A valid configuration has been loaded at least once.
    pub config_loaded: AtomicBool,
    /// Every port of the current table is bound.
    pub listeners_ok: AtomicBool,
    /// Set on SIGTERM: stop accepting, finish in-flight requests, close connections.
    pub drain: watch::Sender<bool>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Access log writer.
    pub access_log: AccessLog,
    /// Pooled upstream clients.
    pub upstreams: Upstreams,
    /// The gateway's mesh identity from SDS (mesh integration on).
    pub identity: Option<Arc<crate::sds::MeshIdentity>>,
    /// Downstream limits.
    pub limits: Limits,
    /// hyper server settings (HTTP/1.1 + HTTP/2).
    pub server: auto::Builder<TokioExecutor>,
}

impl Shared {
    /// Builds the shared state (needs a Tokio runtime when the access log is on).
    pub fn new(config: &Config) -> Arc<Shared> {
        let metrics = Arc::new(Metrics::new());
        let identity = config
            .sds_socket
            .as_ref()
            .map(|_| Arc::new(crate::sds::MeshIdentity::default()));
        let access_log = if config.access_log {
            AccessLog::stdout(metrics.clone())
        } else {
            AccessLog::disabled(metrics.clone())
        };
        Arc::new(Shared {
            table: ArcSwap::from_pointee(Table::default()),
            table_changed: watch::Sender::new(0),
            config_loaded: AtomicBool::new(false),
            listeners_ok: AtomicBool::new(false),
            drain: watch::Sender::new(false),
            upstreams: Upstreams::new(&config.upstream, metrics.clone(), identity.clone()),
            identity,
            metrics,
            access_log,
            limits: config.limits.clone(),
            server: proxy::server_builder(&config.limits),
        })
    }
}

/// Runs the gateway until SIGTERM/SIGINT, then drains.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shared = Shared::new(&config);
    let admin = TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding admin address {}", config.admin_addr))?;
    tracing::info!(addr = %config.admin_addr, "admin server listening");
    tokio::spawn(admin::serve(admin, shared.clone()));
    if let (Some(socket), Some(identity)) = (&config.sds_socket, &shared.identity) {
        tracing::info!(socket = %socket.display(), "mesh integration on: fetching the gateway's identity over SDS");
        tokio::spawn(crate::sds::run(
            crate::sds::SdsClientConfig {
                socket: socket.clone(),
            },
            identity.clone(),
            shared.metrics.clone(),
        ));
    }

    let mut provider = FileProvider::new(config.config_path.clone(), config.translate.clone());
    let s = shared.clone();
    provider = tokio::task::spawn_blocking(move || {
        provider.poll(&s);
        provider
    })
    .await?;
    tokio::spawn(provider.run(shared.clone(), config.poll_interval));
    let listeners = tokio::spawn(manage_listeners(shared.clone(), config.bind_address));

    shutdown_signal().await;
    tracing::info!(timeout = ?config.drain_timeout, "draining");
    shared.drain.send_replace(true);
    let _ = listeners.await;
    let deadline = Instant::now() + config.drain_timeout;
    while shared.metrics.active_connections.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(
        open = shared.metrics.active_connections.get(),
        "drained; exiting"
    );
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Keeps one accept loop per port of the current table; stops all on drain.
async fn manage_listeners(shared: Arc<Shared>, bind: IpAddr) {
    let mut changed = shared.table_changed.subscribe();
    let mut drain = shared.drain.subscribe();
    let mut running: HashMap<u16, JoinHandle<()>> = HashMap::new();
    loop {
        let wanted: BTreeSet<u16> = shared.table.load().ports.keys().copied().collect();
        running.retain(|port, h| {
            let keep = wanted.contains(port);
            if !keep {
                h.abort();
                tracing::info!(port, "listener closed");
            }
            keep
        });
        let mut ok = true;
        for port in wanted {
            if running.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(bind, port);
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!(%addr, "listener bound");
                    running.insert(port, tokio::spawn(accept_loop(l, port, shared.clone())));
                }
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot bind listener; retrying");
                    ok = false;
                }
            }
        }
        shared.listeners_ok.store(ok, Ordering::SeqCst);
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = drain.changed() => {
                for (_, h) in running.drain() {
                    h.abort();
                }
                shared.listeners_ok.store(false, Ordering::SeqCst);
                return;
            }
            _ = tokio::time::sleep(Duration::from_secs(2)), if !ok => {}
        }
    }
}

async fn accept_loop(listener: TcpListener, port: u16, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(port, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let open = shared.metrics.active_connections.get().max(0) as usize;
        if open >= shared.limits.max_connections {
            shared.metrics.connections_rejected.inc();
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let _guard = ConnectionGuard::new(&shared.metrics);
            proxy::serve_connection(shared.clone(), tcp, peer, port).await;
        });
    }
}

/// Counts an open downstream connection for its lifetime.
struct ConnectionGuard<'a>(&'a Metrics);

impl<'a> ConnectionGuard<'a> {
    fn new(m: &'a Metrics) -> Self {
        m.active_connections.inc();
        m.connections_total.inc();
        ConnectionGuard(m)
    }
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.active_connections.dec();
    }
}
