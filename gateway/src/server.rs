//! Process wiring: builds each module's handles, runs the admin server, the SDS client,
//! the configuration pipeline (provider -> translate -> data-plane build -> swap), an
//! accept loop per port of the current tables and worker, and graceful drain on SIGTERM.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::admin::{self, AdminContext, BindState, Readiness};
use crate::cli::{Config, Provider};
use crate::dataplane::{self, TableReader};
use crate::identity::{self, MeshIdentity};
use crate::observe::access_log::AccessLog;
use crate::observe::debug::RequestLog;
use crate::observe::metrics::Metrics;
use crate::observe::peer_metadata::PeerMetadata;
use crate::providers::kubernetes::{self, writer::StatusWriter};
use crate::providers::{self, file::FileProvider};
use crate::proxy::{self, DrainWatch, ProxyContext, Tunnels};
use crate::translate::{self, TranslateOptions, status::Report};
use crate::upstream::Upstreams;
use crate::upstream::attempt::{AttemptHooks, AttemptMetrics};
use crate::upstream::backend_state::BackendStates;
use crate::workers::Workers;

/// Runs the gateway until SIGTERM/SIGINT, then drains.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::with_source(
        config.source_workload.clone(),
        config.istio_metrics,
    ));
    let trusted_parents = config.translate.num_trusted_proxies > 0;
    let tracing = crate::observe::traces::Tracing::from_env(
        trusted_parents,
        config.trace_client_sampling,
        &config.trace_resource,
        crate::observe::traces::istio_tags(&config.node_metadata),
    )?;
    if tracing.is_some() {
        tracing::info!("OTLP tracing on");
    }
    let identity = config
        .sds_socket
        .as_ref()
        .map(|_| Arc::new(MeshIdentity::default()));
    // Only a gateway that originates Istio mTLS speaks to sidecars as a mesh peer.
    let peer_metadata = identity
        .as_ref()
        .map(|_| PeerMetadata::new(&config.node_metadata))
        .transpose()?;
    let tables = TableReader::default();
    let readiness = Arc::new(Readiness::default());
    let status = Arc::new(ArcSwap::from_pointee(Report::default()));
    let binds = BindState::default();
    let debug = RequestLog::default();
    let mut access_log = if config.access_log {
        AccessLog::stdout(metrics.clone(), config.access_log_filter)
    } else {
        AccessLog::disabled(metrics.clone())
    };
    if config.access_log_otlp {
        let otlp = crate::observe::otlp_logs::OtlpLogs::from_env(&config.trace_resource)?;
        tracing::info!("access log exported over OTLP");
        access_log = access_log.with_otlp(otlp, config.access_log_filter);
    }
    let access_log = access_log.sampled(config.access_log_sample);
    let access_log_flush = access_log.clone();
    // One pool of connection slots for accepted connections and upgraded tunnels alike.
    let permits = Arc::new(Semaphore::new(config.limits.max_connections));
    let idle = (config.limits.idle_timeout, config.limits.tcp_idle_timeout);
    let tunnels = Tunnels::new(permits.clone(), idle, metrics.clone());
    let workers = Arc::new(Workers::start(config.workers).context("starting the workers")?);
    let release = config.memory_release_interval;
    workers.spawn_on_every_thread(move || crate::memory::release_freed(release));
    let proxy = Arc::new(ProxyContext {
        tables: tables.clone(),
        upstreams: (0..workers.count())
            .map(|_| Upstreams::new(&config.upstream, metrics.clone(), identity.clone()))
            .collect(),
        hooks: AttemptHooks::new(vec![Arc::new(AttemptMetrics(metrics.clone()))]),
        metrics: metrics.clone(),
        access_log,
        tracing: tracing.clone(),
        peer_metadata,
        debug: debug.clone(),
        server: proxy::server_builder(&config.limits),
        limits: config.limits.clone(),
        tunnels,
    });
    let admin = TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding admin address {}", config.admin_addr))?;
    if !config.admin_addr.ip().is_loopback() {
        tracing::warn!(addr = %config.admin_addr, "the admin server is bound off loopback: anyone who can reach it sees the configuration and certificates' metadata");
    }
    tracing::info!(addr = %config.admin_addr, "admin server listening");
    if let Some(addr) = config.stats_addr {
        let stats = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding stats address {addr}"))?;
        tracing::info!(%addr, "metrics server listening");
        tokio::spawn(admin::serve_stats(stats, metrics.clone()));
    }
    tokio::spawn(admin::serve(
        admin,
        AdminContext {
            readiness: readiness.clone(),
            tables: tables.clone(),
            status: status.clone(),
            binds: binds.clone(),
            identity: identity.clone(),
            metrics: metrics.clone(),
            debug,
        },
    ));
    if let (Some(socket), Some(identity)) = (&config.sds_socket, &identity) {
        tracing::info!(socket = %socket.display(), "mesh integration on: fetching the gateway's identity over SDS");
        let cfg = identity::sds::SdsClientConfig {
            socket: socket.clone(),
        };
        tokio::spawn(identity::sds::run(cfg, identity.clone(), metrics.clone()));
    }
    let status_handle = status.clone();
    let source = match &config.provider {
        Provider::File => config.config_path.display().to_string(),
        Provider::Kubernetes(k) => format!("kubernetes Gateway {}", k.gateway),
    };
    let data_plane = (tables.clone(), binds.clone());
    let applier = ConfigApplier {
        opts: config.translate.clone(),
        tables,
        status,
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        changed: watch::Sender::new(0),
        source,
        backend_states: BackendStates::default(),
    };
    let changed = applier.changed.subscribe();
    let (stop_tx, stop_rx) = watch::channel(false);
    let status_writer = match &config.provider {
        Provider::File => {
            start_provider(&config, applier).await?;
            None
        }
        Provider::Kubernetes(settings) => {
            let stop = stop_rx.clone();
            Some(start_kubernetes(settings, &config, applier, data_plane, stop).await?)
        }
    };
    let accept = AcceptShared {
        per_worker: (0..workers.count())
            .map(|_| Arc::new(ProxyContext::clone(&proxy)))
            .collect(),
        proxy,
        drain: DrainWatch::default(),
        permits,
        workers,
    };
    let listeners = tokio::spawn(manage_listeners(
        accept.clone(),
        changed,
        stop_rx,
        (config.bind_address, config.listen_backlog),
        ListenerReports {
            binds,
            status: status_handle,
            readiness: readiness.clone(),
        },
    ));
    shutdown_signal().await;
    drain(&config, &readiness, &stop_tx, listeners, &accept, &metrics).await;
    if let Some(writer) = status_writer {
        // The Lease release began with the drain; give it a moment if it is still going.
        let _ = tokio::time::timeout(LEASE_RELEASE_WAIT, writer).await;
    }
    // The access log first: the tracer's flush may block on its collector.
    if tokio::time::timeout(Duration::from_secs(5), access_log_flush.flush())
        .await
        .is_err()
    {
        tracing::warn!("the access log could not be written out before exiting");
    }
    if let Some(t) = tracing {
        // The batch exporter blocks while it flushes; keep the runtime's threads free.
        tokio::task::spawn_blocking(move || t.shutdown()).await?;
    }
    tokio::task::spawn_blocking(move || access_log_flush.shutdown()).await?;
    Ok(())
}

/// Polls the config path once before serving (so the first tables exist before the
/// listeners), then keeps polling; every update goes through [`ConfigApplier`].
async fn start_provider(config: &Config, applier: ConfigApplier) -> anyhow::Result<()> {
    let mut provider = FileProvider::new(config.config_path.clone(), config.max_config_bytes);
    let (provider, first) = tokio::task::spawn_blocking(move || {
        let update = provider.poll();
        (provider, update)
    })
    .await?;
    if let Some(u) = first {
        applier.apply(u);
    }
    let (tx, rx) = watch::channel(None);
    tokio::spawn(provider.run(tx, config.poll_interval));
    tokio::spawn(apply_updates(rx, applier));
    Ok(())
}

/// How long shutdown waits, after the drain, for the status Lease to be released.
const LEASE_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Starts the Kubernetes provider (nothing is served until every watch has listed once)
/// and the status writer, which ends when `stop` turns true.
async fn start_kubernetes(
    settings: &kubernetes::Settings,
    config: &Config,
    applier: ConfigApplier,
    (tables, binds): (TableReader, admin::BindState),
    stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let (tx, rx) = watch::channel(None);
    let (client, feed) = kubernetes::start(settings.clone(), config.translate.clone(), tx).await?;
    let writer = StatusWriter {
        client,
        settings: settings.clone(),
        feed,
        tables,
        binds,
        applied: applier.changed.subscribe(),
        stop,
    };
    let writer = tokio::spawn(writer.run());
    tokio::spawn(apply_updates(rx, applier));
    Ok(writer)
}

/// Applies every update a provider sends, in order, until the provider is gone. Translate
/// and build run on a blocking-pool thread: a 10k-route update takes tens of milliseconds,
/// which on the runtime thread would hold up accepts, the admin server and, with one
/// worker, every request.
async fn apply_updates(mut rx: watch::Receiver<Option<providers::Update>>, applier: ConfigApplier) {
    let applier = Arc::new(applier);
    while rx.changed().await.is_ok() {
        let update = rx.borrow_and_update().clone();
        if let Some(u) = update {
            let a = applier.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || a.apply(u)).await {
                // A panic is a bug; the last good tables keep serving and the next update
                // is still applied.
                tracing::error!(error = %e, "applying a configuration update failed");
            }
        }
    }
}

/// Turns provider updates into served tables: translate, build, swap. A rejected update
/// is logged and counted; the last good tables keep serving.
struct ConfigApplier {
    opts: TranslateOptions,
    tables: TableReader,
    status: Arc<ArcSwap<Report>>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    /// Bumped after each swap; wakes the listener manager.
    changed: watch::Sender<u64>,
    /// Where the configuration comes from, for logs.
    source: String,
    /// Per-backend state shared by every configuration this process serves.
    backend_states: BackendStates,
}

impl ConfigApplier {
    fn apply(&self, update: providers::Update) {
        let source = &self.source;
        let built = update.map_err(|e| e.0).and_then(|snap| {
            let out = translate::translate(&snap, &self.opts);
            for e in &out.errors {
                tracing::error!(source, "object left out: {e}");
            }
            self.metrics
                .config_objects_rejected
                .set(out.errors.len() as i64);
            let (ir, mut report) = out.accepted().map_err(|e| e.0)?;
            let tables = dataplane::build_with(Arc::new(ir), &self.backend_states);
            for l in tables.ir.ports.values().flat_map(|p| &p.listeners) {
                let problem = tables.unprogrammed.iter().find(|(n, _)| *n == l.name);
                report.programmed(&l.name, problem.map_or(Ok(()), |(_, why)| Err(why.clone())));
            }
            Ok((tables, report))
        });
        match built {
            Ok((tables, report)) => {
                for w in &tables.ir.warnings {
                    tracing::warn!(source, "{w}");
                }
                for (listener, why) in &tables.unprogrammed {
                    tracing::error!(source, listener, "listener not programmed: {why}");
                }
                let ports: Vec<u16> = tables.ir.ports.keys().copied().collect();
                self.tables.store(tables);
                self.status.store(Arc::new(report));
                self.readiness.config_loaded.store(true, Ordering::SeqCst);
                self.metrics.config_reloads.inc();
                self.metrics.config_last_reload_ok.set(1);
                self.changed.send_modify(|g| *g += 1);
                tracing::info!(source, ?ports, "configuration applied");
            }
            Err(errors) => {
                self.metrics.config_rejections.inc();
                self.metrics.config_last_reload_ok.set(0);
                for e in &errors {
                    tracing::error!(source, "config error: {e}");
                }
                tracing::error!(
                    source,
                    errors = errors.len(),
                    "configuration rejected; the last good configuration keeps serving"
                );
            }
        }
    }
}

/// What every accept loop shares.
#[derive(Clone)]
struct AcceptShared {
    proxy: Arc<ProxyContext>,
    /// The context's copy for each worker, which its connections and requests clone.
    per_worker: Arc<[Arc<ProxyContext>]>,
    drain: DrainWatch,
    /// One permit per open downstream connection (`--max-connections`).
    permits: Arc<Semaphore>,
    /// Where the accept loops run, one per port and worker.
    workers: Arc<Workers>,
}

/// Where bind results go: the admin's bind table, listener status, readiness.
struct ListenerReports {
    binds: BindState,
    status: Arc<ArcSwap<Report>>,
    readiness: Arc<Readiness>,
}

impl ListenerReports {
    /// Publishes one round of bind results: a listener whose port cannot be bound is
    /// not Programmed.
    fn publish(&self, state: BTreeMap<u16, Result<(), String>>, tables: &dataplane::Tables) {
        let ok = state.values().all(Result::is_ok);
        self.status.rcu(|report| {
            let mut report = Report::clone(report);
            for (port, result) in &state {
                let Some(p) = tables.ir.ports.get(port) else {
                    continue;
                };
                let unprogrammed = |name: &str| tables.unprogrammed.iter().any(|(n, _)| n == name);
                for l in p.listeners.iter().filter(|l| !unprogrammed(&l.name)) {
                    report.programmed(&l.name, result.clone());
                }
            }
            report
        });
        *self.binds.lock().unwrap_or_else(|e| e.into_inner()) = state;
        self.readiness.listeners_ok.store(ok, Ordering::SeqCst);
    }
}

/// Keeps one accept loop per port and worker for the ports of the current tables until
/// told to stop; records each port's bind result (a listener that cannot bind is not
/// Programmed).
async fn manage_listeners(
    shared: AcceptShared,
    mut changed: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
    (bind, backlog): (IpAddr, u32),
    reports: ListenerReports,
) {
    let mut running: HashMap<u16, Vec<JoinHandle<()>>> = HashMap::new();
    loop {
        let wanted: BTreeSet<u16> = shared.proxy.tables.load().ports.keys().copied().collect();
        running.retain(|port, loops| {
            let keep = wanted.contains(port);
            if !keep {
                loops.iter().for_each(JoinHandle::abort);
                tracing::info!(port, "listener closed");
            }
            keep
        });
        let mut state = BTreeMap::new();
        for port in wanted {
            if running.contains_key(&port) {
                state.insert(port, Ok(()));
                continue;
            }
            let addr = SocketAddr::new(bind, port);
            match bind_listeners(addr, backlog, shared.workers.count()) {
                Ok(sockets) => {
                    tracing::info!(%addr, sockets = sockets.len(), "listener bound");
                    running.insert(port, start_accepting(sockets, port, &shared));
                    state.insert(port, Ok(()));
                }
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot bind listener; retrying");
                    state.insert(port, Err(format!("cannot bind {addr}: {e}")));
                }
            }
        }
        let ok = state.values().all(Result::is_ok);
        reports.publish(state, &shared.proxy.tables.load());
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = stop.changed() => {
                // Every socket is closed before the drain begins: no connection is
                // accepted after it.
                for h in running.drain().flat_map(|(_, loops)| loops) {
                    h.abort();
                    let _ = h.await;
                }
                reports.readiness.listeners_ok.store(false, Ordering::SeqCst);
                return;
            }
            _ = tokio::time::sleep(Duration::from_secs(2)), if !ok => {}
        }
    }
}

/// Binds `sockets` listening sockets on `addr`, one per worker, with an explicit backlog
/// each (tokio's `TcpListener::bind` uses a fixed 1024, and bursts of connections should
/// queue in the kernel instead of being refused). More than one share the port with
/// `SO_REUSEPORT`, and the kernel spreads new connections over them by their addresses'
/// hash, as with Envoy's workers. All or none: a failure closes those already bound.
fn bind_listeners(
    addr: SocketAddr,
    backlog: u32,
    sockets: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    (0..sockets)
        .map(|_| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            // A restarted gateway must rebind while old connections sit in TIME_WAIT.
            socket.set_reuse_address(true)?;
            if sockets > 1 {
                socket.set_reuse_port(true)?;
            }
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            socket.listen(backlog.min(i32::MAX as u32) as i32)?;
            Ok(socket.into())
        })
        .collect()
}

/// Starts an accept loop for each socket, the i-th on worker i, where it registers with
/// that worker's reactor: its connections are accepted and served on that thread.
fn start_accepting(
    sockets: Vec<std::net::TcpListener>,
    port: u16,
    shared: &AcceptShared,
) -> Vec<JoinHandle<()>> {
    sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let loop_shared = shared.clone();
            shared.workers.spawn_on(i, async move {
                match TcpListener::from_std(socket) {
                    Ok(listener) => accept_loop(listener, port, i, loop_shared).await,
                    Err(e) => tracing::error!(port, error = %e, "cannot register a listener on its worker"),
                }
            })
        })
        .collect()
}

/// First and largest pause after a failed accept (EMFILE and friends): no busy loop.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Accepts on worker `worker`'s socket for `port`.
async fn accept_loop(listener: TcpListener, port: u16, worker: usize, shared: AcceptShared) {
    let context = &shared.per_worker[worker % shared.per_worker.len()];
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => {
                backoff = ACCEPT_BACKOFF.0;
                c
            }
            Err(e) => {
                tracing::warn!(port, error = %e, retry_in = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let metrics = &shared.proxy.metrics;
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            metrics.connections_rejected.inc();
            continue;
        };
        let Some(watcher) = shared.drain.watcher() else {
            continue;
        };
        let proxy = context.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _guard = ConnectionGuard::new(&proxy.metrics);
            proxy::serve_connection(proxy.clone(), tcp, peer, port, watcher).await;
        });
    }
}

/// Stops accepting, tells every connection to finish, waits up to the drain timeout.
async fn drain(
    config: &Config,
    readiness: &Readiness,
    stop: &watch::Sender<bool>,
    listeners: JoinHandle<()>,
    accept: &AcceptShared,
    metrics: &Metrics,
) {
    tracing::info!(timeout = ?config.drain_timeout, "draining");
    let deadline = tokio::time::Instant::now() + config.drain_timeout;
    readiness.draining.store(true, Ordering::SeqCst);
    let _ = stop.send(true);
    let _ = listeners.await;
    let mut closing = None;
    if let Some(drained) = accept.drain.start()
        && tokio::time::timeout_at(deadline, drained).await.is_err()
    {
        tracing::warn!(
            open = metrics.active_connections.get(),
            "drain deadline reached; closing the connections still open"
        );
        closing = Some(accept.drain.close());
    }
    // Upgraded tunnels cannot be asked to finish (the gateway does not speak their
    // protocol): they get until the deadline, then are closed.
    let tunnels = &accept.proxy.tunnels;
    if tokio::time::timeout_at(deadline, tunnels.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            tunnels = tunnels.open(),
            "drain deadline reached; closing upgraded tunnels"
        );
        tunnels.close_all();
    }
    // What was closed at the deadline ends: the tunnels, and the connections' requests,
    // recorded (cut short, `DC`) before the access log and the tracer are flushed (an
    // HTTP/2 request ends in its own task).
    let ended = async {
        tunnels.closed().await;
        if let Some(closed) = closing {
            closed.await;
        }
    };
    if tokio::time::timeout(CLOSE_WAIT, ended).await.is_err() {
        tracing::warn!(
            tunnels = tunnels.open(),
            "connections closed at the drain deadline have not all ended; exiting"
        );
    }
    tracing::info!(open = metrics.active_connections.get(), "drained; exiting");
}

/// How long what was closed at the drain's deadline (tunnels, connections and their
/// requests) gets to end.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

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
