//! Wires the parts together: source -> store -> SDS server(s) and admin server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::TcpIncoming;

use crate::admin::{self, AdminState};
use crate::config::{Config, SourceConfig};
use crate::metrics::Metrics;
use crate::sds;
use crate::source::{self, SourceContext};
use crate::store::Store;
use crate::unix_socket::{self, SocketFile};

/// How long shutdown waits for servers to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running agent.
pub struct Agent {
    /// Bound admin address (useful with port 0).
    pub admin_addr: SocketAddr,
    /// Bound SDS TCP address, if enabled.
    pub sds_tcp_addr: Option<SocketAddr>,
    store: Store,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    _socket: SocketFile,
}

impl Agent {
    /// Binds every listener and starts the source; fails only on what cannot be retried
    /// (a socket or port that cannot be bound).
    pub async fn start(config: Config) -> anyhow::Result<Agent> {
        let metrics = Arc::new(Metrics::new());
        let store = Store::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();

        let unix = unix_socket::bind_unix(&config.sds_socket)?;
        let socket = SocketFile(config.sds_socket.clone());
        let tcp = match config.sds_tcp_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind SDS TCP address {addr}"))?,
            ),
            None => None,
        };
        let sds_tcp_addr = tcp.as_ref().map(|l| l.local_addr()).transpose()?;
        let admin = tokio::net::TcpListener::bind(config.admin_addr)
            .await
            .with_context(|| format!("cannot bind admin address {}", config.admin_addr))?;
        let admin_addr = admin.local_addr()?;
        if !admin_addr.ip().is_loopback() {
            tracing::warn!(%admin_addr, "admin server is not on loopback; it exposes certificate metadata");
        }

        let service = sds::Server::new(store.clone(), metrics.clone(), shutdown_rx.clone());
        let stopped = {
            let rx = shutdown_rx.clone();
            move || {
                let mut rx = rx.clone();
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                }
            }
        };
        {
            let svc = service.clone().into_service();
            let stop = stopped();
            tasks.spawn(async move {
                if let Err(e) = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming_shutdown(UnixListenerStream::new(unix), stop)
                    .await
                {
                    tracing::error!("SDS unix server failed: {e}");
                }
            });
        }
        if let Some(tcp) = tcp {
            let svc = service.into_service();
            let stop = stopped();
            tasks.spawn(async move {
                if let Err(e) = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming_shutdown(
                        // Small SDS pushes must not wait for the client's delayed ACK.
                        TcpIncoming::from(tcp).with_nodelay(Some(true)),
                        stop,
                    )
                    .await
                {
                    tracing::error!("SDS TCP server failed: {e}");
                }
            });
        }

        let source_name = match &config.source {
            SourceConfig::Istiod(_) => "istiod",
            SourceConfig::Spiffe { .. } => "spiffe",
            SourceConfig::Files { .. } => "files",
        };
        tasks.spawn(admin::serve(
            admin,
            AdminState {
                store: store.clone(),
                metrics: metrics.clone(),
                source: source_name,
            },
            shutdown_rx.clone(),
        ));

        let ctx = SourceContext {
            store: store.clone(),
            metrics,
            shutdown: shutdown_rx,
        };
        match config.source {
            SourceConfig::Istiod(cfg) => {
                tracing::info!(identity = %cfg.identity, ca = %cfg.ca_addr, server_name = %cfg.ca_server_name, "fetching workload certificates from istiod");
                tasks.spawn(source::istiod::run(*cfg, config.watch_interval, ctx));
            }
            SourceConfig::Spiffe { endpoint } => {
                tracing::info!(%endpoint, "fetching workload certificates from the SPIFFE Workload API");
                tasks.spawn(source::spiffe::run(endpoint, ctx));
            }
            SourceConfig::Files { dir } => {
                tracing::info!(dir = %dir.display(), "serving workload certificates from files");
                tasks.spawn(source::files::run(dir, config.watch_interval, ctx));
            }
        }
        tracing::info!(sds_socket = %config.sds_socket.display(), ?sds_tcp_addr, %admin_addr, "sds-agent started");
        Ok(Agent {
            admin_addr,
            sds_tcp_addr,
            store,
            shutdown,
            tasks,
            _socket: socket,
        })
    }

    /// The certificate store (for in-process embedding and tests).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops the source and the servers, ending open SDS streams.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("shutdown grace period elapsed; aborting remaining tasks");
            self.tasks.abort_all();
        }
        tracing::info!("sds-agent stopped");
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// Installs the tracing subscriber.
pub fn init_logging(format: crate::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
        crate::config::LogFormat::Text => builder.try_init(),
    };
}
