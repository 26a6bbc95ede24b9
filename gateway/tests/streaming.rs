//! gRPC-style HTTP/2 end to end (h2c client -> gateway -> h2c upstream with trailers) and
//! the slowloris guard (header read timeout).

mod support;

use std::convert::Infallible;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;

/// An h2c upstream answering like a gRPC server: body, then `grpc-status` trailers.
async fn grpc_like_upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let te = req.headers().get("te").cloned();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        trailers.insert("grpc-message", HeaderValue::from_static("ok"));
                        let reply = format!("got {} bytes, te={:?}", body.len(), te);
                        let resp = Response::builder()
                            .header("content-type", "application/grpc")
                            .body(
                                Full::new(Bytes::from(reply))
                                    .with_trailers(async move { Some(Ok(trailers)) }),
                            )
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_h2c_request_gets_trailers_end_to_end() {
    let upstream = grpc_like_upstream().await;
    let port = free_port();
    let config = docs(&[
        &http_gateway(port),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: grpc, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
         rules:\n    - backendRefs: [{name: grpc, port: 80}]\n",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: grpc, namespace: default}}\n\
             spec: {{ports: [{{name: grpc, port: 80, appProtocol: kubernetes.io/h2c}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: grpc-1, namespace: default, labels: {{kubernetes.io/service-name: grpc}}}}\n\
             addressType: IPv4\nports: [{{name: grpc, port: {upstream}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n"
        ),
    ]);
    let _gw = tokio::task::spawn_blocking(move || Gateway::start(&config))
        .await
        .unwrap();

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://grpc.example.com:{port}/pkg.Service/Method"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x05hello")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers lost on the way");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "ok");
    let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    assert!(body.starts_with("got 10 bytes"), "{body}");
    assert!(
        body.contains("trailers"),
        "TE: trailers must reach the upstream: {body}"
    );
}

#[test]
fn slow_client_that_never_sends_headers_is_disconnected() {
    let port = free_port();
    let _gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n",
        ]),
        &["--header-read-timeout", "500ms"],
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: slow\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "connection kept open {waited:?}"
    );
}

#[test]
fn connections_over_the_limit_are_closed_at_accept() {
    let port = free_port();
    let gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n",
        ]),
        &["--max-connections", "1"],
    );
    let url = format!("http://127.0.0.1:{port}/");
    let first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.metric("gateway_downstream_connections_active") < 1.0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = curl(&[&url]);
    assert_eq!(refused.status, 0, "{refused:?}");
    assert!(gw.metric("gateway_downstream_connections_rejected_total") >= 1.0);
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    // Once the first connection is gone, requests are served again (500: no backendRefs).
    while curl(&[&url]).status != 500 {
        assert!(Instant::now() < deadline, "not served after the slot freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let port = free_port();
    let _gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n",
        ]),
        &["--idle-timeout", "400ms"],
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n").unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    // The response (500: no backendRefs) arrives, then the idle connection is closed.
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 500"), "{text}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}
