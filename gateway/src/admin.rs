//! Admin server (loopback by default): `/ready`, `/healthz`, `/config_dump`, `/metrics`;
//! and the client side used by `gateway probe`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::server::Shared;

/// Serves the admin endpoints on an already-bound listener until the process exits.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, &req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/ready" => {
            let loaded = shared.config_loaded.load(Ordering::SeqCst);
            let listening = shared.listeners_ok.load(Ordering::SeqCst);
            let draining = *shared.drain.borrow();
            let mesh_waiting = shared.table.load().mesh_upstreams
                && !shared.identity.as_ref().is_some_and(|i| i.is_ready());
            match (loaded, listening, draining) {
                (_, _, true) => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
                (true, true, false) if mesh_waiting => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "mesh upstreams are configured but no valid mesh identity was received over SDS yet\n",
                ),
                (false, _, _) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no valid configuration loaded yet\n",
                ),
                (true, false, _) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not every listener port is bound\n",
                ),
                (true, true, false) => text(StatusCode::OK, "ready\n"),
            }
        }
        "/certs" => {
            let body = match shared.identity.as_ref().and_then(|i| i.current()) {
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
                    "mesh_integration": shared.identity.is_some(),
                }),
            };
            let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        "/config_dump" => {
            let table = shared.table.load();
            match serde_json::to_vec_pretty(&**table) {
                Ok(body) => {
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
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(shared.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "admin endpoints: /ready /healthz /config_dump /metrics\n",
        ),
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
