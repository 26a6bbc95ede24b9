//! Admin server (loopback by default): `/ready`, `/healthz`, `/certs`, `/config_dump`,
//! `/metrics`, `/debug/requests/<id>`. Read-only: anything but GET/HEAD gets 405. And
//! the metrics-only server Prometheus scrapes (`--stats-addr`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::dataplane::TableReader;
use crate::identity::MeshIdentity;
use crate::observe::debug::RequestLog;
use crate::observe::metrics::Metrics;
use crate::translate::status::Report;

/// What readiness depends on; set by the server, read here.
#[derive(Default)]
pub struct Readiness {
    /// A valid configuration has been loaded at least once.
    pub config_loaded: AtomicBool,
    /// Every port of the current configuration is bound.
    pub listeners_ok: AtomicBool,
    /// SIGTERM received.
    pub draining: AtomicBool,
}

/// Per-port bind state (`bound`, or why not): the `Programmed` part of listener status.
pub type BindState = Arc<Mutex<BTreeMap<u16, Result<(), String>>>>;

/// The handles the admin server reads.
#[derive(Clone)]
pub struct AdminContext {
    /// Readiness flags.
    pub readiness: Arc<Readiness>,
    /// Current tables.
    pub tables: TableReader,
    /// Conditions of the current configuration.
    pub status: Arc<ArcSwap<Report>>,
    /// Bind state per port.
    pub binds: BindState,
    /// The mesh identity, when mesh integration is on.
    pub identity: Option<Arc<MeshIdentity>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Recent request explanations.
    pub debug: RequestLog,
}

/// Serves the admin endpoints on an already-bound listener until the process exits.
pub async fn serve(listener: TcpListener, ctx: AdminContext) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(route(&ctx, &req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn route(ctx: &AdminContext, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the admin API is read-only: use GET\n",
        );
    }
    let path = req.uri().path();
    if let Some(id) = path.strip_prefix("/debug/requests/") {
        return match ctx.debug.get(id) {
            Some(v) => json(&v),
            None => text(
                StatusCode::NOT_FOUND,
                "no explanation recorded for this request id\n",
            ),
        };
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/ready" => ready(ctx),
        "/certs" => json(&certs(ctx)),
        "/config_dump" => config_dump(ctx),
        "/debug/backends" => json(&ctx.tables.load().backends_report()),
        "/metrics" => metrics(&ctx.metrics),
        _ => text(
            StatusCode::NOT_FOUND,
            "admin endpoints: /ready /healthz /certs /config_dump /metrics /debug/requests/<id>\n",
        ),
    }
}

fn metrics(m: &Metrics) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(m.render())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
}

/// Connections the metrics server holds at once (Prometheus needs one or two).
const STATS_MAX_CONNECTIONS: usize = 32;
/// Time a metrics connection has to send its request's headers.
const STATS_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest life of a metrics connection (a scraper reconnects).
const STATS_CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

/// Serves the metrics alone (`--stats-addr`), for a Prometheus outside the pod: the
/// rest of the admin API (configuration, certificates' metadata, request explanations)
/// stays on the loopback admin server. Reachable from other pods, so bounded: a few
/// connections at once, a header read timeout and a lifetime per connection, and a
/// pause after a failed accept.
pub async fn serve_stats(listener: TcpListener, m: Arc<Metrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(STATS_MAX_CONNECTIONS));
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "metrics server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Past the cap the connection is closed at once.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let m = m.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let m = m.clone();
                async move {
                    let r = match (req.method(), req.uri().path()) {
                        (&Method::GET | &Method::HEAD, "/metrics" | "/stats/prometheus") => {
                            metrics(&m)
                        }
                        (&Method::GET | &Method::HEAD, _) => text(
                            StatusCode::NOT_FOUND,
                            "metrics only: /metrics /stats/prometheus\n",
                        ),
                        _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
                    };
                    Ok::<_, Infallible>(r)
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(STATS_HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            let _ = tokio::time::timeout(STATS_CONNECTION_LIFETIME, conn).await;
        });
    }
}

fn ready(ctx: &AdminContext) -> Response<Full<Bytes>> {
    let r = &ctx.readiness;
    let loaded = r.config_loaded.load(Ordering::SeqCst);
    let listening = r.listeners_ok.load(Ordering::SeqCst);
    let draining = r.draining.load(Ordering::SeqCst);
    let mesh_waiting =
        ctx.tables.load().mesh_upstreams && !ctx.identity.as_ref().is_some_and(|i| i.is_ready());
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    match (loaded, listening, draining) {
        (_, _, true) => text(unavailable, "draining\n"),
        (false, _, _) => text(unavailable, "no valid configuration loaded yet\n"),
        (true, false, _) => text(unavailable, "not every listener port is bound\n"),
        (true, true, false) if mesh_waiting => text(
            unavailable,
            "mesh upstreams are configured but no valid mesh identity was received over SDS yet\n",
        ),
        (true, true, false) => text(StatusCode::OK, "ready\n"),
    }
}

fn certs(ctx: &AdminContext) -> serde_json::Value {
    match ctx.identity.as_ref().and_then(|i| i.current()) {
        Some(c) => serde_json::json!({
            "identity": c.certs.identity.to_string(),
            "serial": c.certs.serial,
            "not_before": humantime::format_rfc3339_seconds(c.certs.not_before).to_string(),
            "not_after": humantime::format_rfc3339_seconds(c.certs.not_after).to_string(),
            "leaf_sha256": c.certs.leaf_sha256,
            "root_fingerprints_sha256": c.certs.root_fingerprints,
            "sds_version": c.version,
        }),
        None => serde_json::json!({
            "identity": null,
            "mesh_integration": ctx.identity.is_some(),
        }),
    }
}

fn config_dump(ctx: &AdminContext) -> Response<Full<Bytes>> {
    let tables = ctx.tables.load();
    let binds: BTreeMap<String, String> = ctx
        .binds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(p, r)| {
            (
                p.to_string(),
                r.clone().err().unwrap_or_else(|| "bound".into()),
            )
        })
        .collect();
    json(&serde_json::json!({
        "config": &*tables.ir,
        "status": &**ctx.status.load(),
        "listeners": binds,
    }))
}

fn json(v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(v) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
