//! Loopback admin HTTP: `/ready`, `/healthz`, `/metrics`, `/certs`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mesh::certs::unix_secs;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::store::Store;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Current certificate.
    pub store: Store,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Name of the configured source, for `/certs`.
    pub source: &'static str,
}

/// Serves admin requests on `listener` until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("admin connection error: {e}");
            }
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    let current = state.store.current();
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/ready" => match current {
            Some(p) if p.certs.is_valid_at(SystemTime::now()) => {
                reply(StatusCode::OK, "text/plain", "ready\n")
            }
            Some(p) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!(
                    "not ready: certificate {} is outside its validity window\n",
                    p.certs.serial
                ),
            ),
            None => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready: no workload certificate yet\n",
            ),
        },
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        "/certs" => {
            let body = match current {
                Some(p) => serde_json::json!({
                    "source": state.source,
                    "identity": p.certs.identity.to_string(),
                    "serial": p.certs.serial,
                    "version": p.version,
                    "not_before": humantime::format_rfc3339_seconds(p.certs.not_before).to_string(),
                    "not_after": humantime::format_rfc3339_seconds(p.certs.not_after).to_string(),
                    "not_after_unix": unix_secs(p.certs.not_after),
                    "leaf_sha256": p.certs.leaf_sha256,
                    "root_fingerprints_sha256": p.certs.root_fingerprints,
                    "valid": p.certs.is_valid_at(SystemTime::now()),
                }),
                None => serde_json::json!({ "source": state.source, "identity": null }),
            };
            reply(StatusCode::OK, "application/json", format!("{body}\n"))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /ready /healthz /metrics /certs\n",
        ),
    }
}

async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
