//! gRPC-style HTTP/2 end to end (h2c client -> gateway -> h2c upstream with trailers), a
//! real tonic client and server through the gateway, the slowloris guard (header read
//! timeout), the connection limit and the idle timeout.

mod support;

use std::convert::Infallible;
use std::net::TcpStream;
use std::time::Duration;

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

/// An HTTP/1.1 upstream answering a chunked body with a trailer it declares
/// (`Trailer: x-checksum`).
async fn http1_trailer_upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                let mut trailers = HeaderMap::new();
                trailers.insert("x-checksum", HeaderValue::from_static("abc"));
                let frames: Vec<Result<_, Infallible>> = vec![
                    Ok(hyper::body::Frame::data(Bytes::from_static(b"hello"))),
                    Ok(hyper::body::Frame::trailers(trailers)),
                ];
                let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                let resp = Response::builder()
                    .header("trailer", "x-checksum")
                    .body(body)
                    .unwrap();
                Ok::<_, Infallible>(resp)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc),
            );
        }
    });
    port
}

/// `Trailer` is end to end (RFC 9110 §6.6.2): it reaches the HTTP/1.1 client, whose
/// hyper server side sends only the trailer fields it declares; the answer is logged whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_trailers_declared_by_the_upstream_reach_an_http1_client() {
    let upstream = http1_trailer_upstream().await;
    let port = free_port();
    let config = docs(&[
        &http_gateway(port),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: t, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
         rules:\n    - backendRefs: [{name: t, port: 80}]\n",
        &local_service("t", upstream),
    ]);
    let gw = tokio::task::spawn_blocking(move || Gateway::start(&config))
        .await
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "t.example")
        .header("te", "trailers")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("trailer").unwrap(), "x-checksum");
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers lost on the way");
    assert_eq!(trailers.get("x-checksum").unwrap(), "abc");
    assert_eq!(collected.to_bytes(), "hello");
    // A whole answer ended by its trailers (hyper drops the body after them, unpolled)
    // is logged whole, not as cut short by the client.
    let line = gw.wait_access_log(|l| l["authority"] == "t.example");
    assert_eq!(line["response_code"], 200, "{line}");
    assert_eq!(line["response_flags"], "-", "{line}");
    assert_eq!(line["bytes_sent"], 5, "{line}");
}

#[test]
fn slow_client_that_never_finishes_its_headers_is_disconnected_without_an_answer() {
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
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: slow\r\n").unwrap();
    assert_eq!(
        wait_closed(&mut s, Duration::from_secs(15)),
        Ended::ClosedSilently
    );
}

#[test]
fn connections_over_the_limit_are_closed_at_accept() {
    over_the_limit_closed_at_accept("2");
}

#[test]
fn connections_over_the_limit_are_closed_at_accept_on_one_worker() {
    over_the_limit_closed_at_accept("1");
}

/// `--max-connections 1` at `--workers N`: a second connection is closed at accept.
fn over_the_limit_closed_at_accept(workers: &str) {
    let port = free_port();
    let gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n",
        ]),
        &["--max-connections", "1", "--workers", workers],
    );
    let url = format!("http://127.0.0.1:{port}/");
    let first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    gw.wait_metric("gateway_downstream_connections_active", 1.0);
    let refused = curl(&[&url]);
    // Closed at accept without a byte: curl reports an empty reply (52), or a reset
    // (56) when its request reached the already closed socket.
    assert_eq!(refused.status, 0, "{refused:?}");
    assert!([52, 56].contains(&refused.exit_code), "{refused:?}");
    gw.wait_metric("gateway_downstream_connections_rejected_total", 1.0);
    drop(first);
    gw.wait_metric("gateway_downstream_connections_active", 0.0);
    // The slot is free again (500: the route has no backendRefs).
    let r = curl(&[&url]);
    assert_eq!((r.status, error_code(&r).as_str()), (500, "no_backend"));
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let port = free_port();
    let gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n",
        ]),
        &["--idle-timeout", "400ms"],
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n").unwrap();
    // The response (500: no backendRefs) arrives, then the idle connection is closed.
    let Ended::ClosedAfter(bytes) = wait_closed(&mut s, Duration::from_secs(15)) else {
        panic!("no response, or the connection stayed open");
    };
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 500"), "{text}");
    gw.wait_metric(
        "gateway_downstream_connection_timeouts_total{kind=\"idle\"}",
        1.0,
    );
}

/// A request whose body stalls (the slow-POST attack) holds its connection and an
/// upstream connection only until the stream idle timeout: the connection is closed,
/// counted and the request logged `SI`, while a request that keeps moving is served.
#[test]
fn a_request_whose_body_stalls_is_closed_at_the_stream_idle_timeout() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
             rules:\n    - backendRefs: [{name: httpbin, port: 80}]\n",
            &local_service("httpbin", hb.port),
        ]),
        &["--stream-idle-timeout", "500ms"],
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"POST /post HTTP/1.1\r\nHost: a.example\r\nContent-Length: 1000000\r\n\r\n0123456789",
    )
    .unwrap();
    assert_eq!(
        wait_closed(&mut s, Duration::from_secs(15)),
        Ended::ClosedSilently
    );
    gw.wait_metric(
        "gateway_downstream_connection_timeouts_total{kind=\"stream_idle\"}",
        1.0,
    );
    // Logged as Envoy logs a stream idle timeout (flag SI), not as a client gone (DC);
    // no response was sent, so its code is 0.
    let line = gw.wait_access_log(|l| l["method"] == "POST");
    assert_eq!(line["response_code"], 0, "{line}");
    assert_eq!(line["response_flags"], "SI", "{line}");
    assert_eq!(
        gw.metric(
            "gateway_upstream_attempts_total{backend=\"Service default/httpbin:80\",outcome=\"SI\"}"
        ),
        1.0
    );
    let ok = curl(&["-d", "whole body", &format!("http://127.0.0.1:{port}/post")]);
    assert_eq!(ok.status, 200, "{ok:?}");
}

mod tonic_peers {
    //! A real tonic server and client (Envoy's SecretDiscoveryService from envoy-types,
    //! the service the sds-agent speaks) through the gateway over h2c.

    use std::pin::Pin;

    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    };
    use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
        SecretDiscoveryService, SecretDiscoveryServiceServer,
    };
    use tokio_stream::{Stream, StreamExt};
    use tonic::{Request, Response, Status, Streaming};

    type Replies<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

    /// Answers FetchSecrets with the requested names as the nonce (NOT_FOUND for
    /// `missing`), and StreamSecrets with one reply per request.
    struct Echo;

    #[tonic::async_trait]
    impl SecretDiscoveryService for Echo {
        type DeltaSecretsStream = Replies<DeltaDiscoveryResponse>;
        type StreamSecretsStream = Replies<DiscoveryResponse>;

        async fn delta_secrets(
            &self,
            _: Request<Streaming<DeltaDiscoveryRequest>>,
        ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
            Err(Status::unimplemented("delta"))
        }

        async fn stream_secrets(
            &self,
            req: Request<Streaming<DiscoveryRequest>>,
        ) -> Result<Response<Self::StreamSecretsStream>, Status> {
            let replies = req.into_inner().map(|r| {
                r.map(|r| DiscoveryResponse {
                    version_info: format!("{}-reply", r.version_info),
                    ..Default::default()
                })
            });
            Ok(Response::new(Box::pin(replies)))
        }

        async fn fetch_secrets(
            &self,
            req: Request<DiscoveryRequest>,
        ) -> Result<Response<DiscoveryResponse>, Status> {
            let names = req.into_inner().resource_names;
            if names.iter().any(|n| n == "missing") {
                return Err(Status::not_found("no secret named missing"));
            }
            Ok(Response::new(DiscoveryResponse {
                nonce: names.join(","),
                ..Default::default()
            }))
        }
    }

    async fn tonic_upstream() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SecretDiscoveryServiceServer::new(Echo))
                .serve_with_incoming(incoming),
        );
        port
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tonic_client_and_server_talk_unary_and_streaming_through_the_gateway() {
        let upstream = tonic_upstream().await;
        let port = super::free_port();
        let config = super::docs(&[
            &super::http_gateway(port),
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
        let gw = tokio::task::spawn_blocking(move || super::Gateway::start(&config))
            .await
            .unwrap();
        let mut client = SecretDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();

        let ok = client
            .fetch_secrets(DiscoveryRequest {
                resource_names: vec!["default".into(), "ROOTCA".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(ok.into_inner().nonce, "default,ROOTCA");

        // A gRPC error travels in the trailers and reaches the client as its status.
        let err = client
            .fetch_secrets(DiscoveryRequest {
                resource_names: vec!["missing".into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(err.message(), "no secret named missing");

        // Bidirectional streaming: each request gets its reply while the stream is open.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut replies = client
            .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        for v in ["v1", "v2", "v3"] {
            tx.send(DiscoveryRequest {
                version_info: v.into(),
                ..Default::default()
            })
            .await
            .unwrap();
            let reply = replies.message().await.unwrap().expect("stream ended");
            assert_eq!(reply.version_info, format!("{v}-reply"));
        }
        drop(tx);
        assert!(replies.message().await.unwrap().is_none());

        // Whole answers, each ended by its trailers (after which hyper drops the body
        // without polling it again), are logged as such: not as cut short by the client.
        let service = "/envoy.service.secret.v3.SecretDiscoveryService";
        gw.wait_access_log(|l| l["path"] == format!("{service}/StreamSecrets"));
        let path = format!("{service}/FetchSecrets");
        let lines = gw.access_log();
        let unary: Vec<_> = lines.iter().filter(|l| l["path"] == path).collect();
        assert_eq!(unary.len(), 2, "{lines:#?}");
        for l in lines {
            assert_eq!(l["response_code"], 200, "{l}");
            assert_eq!(l["response_flags"], "-", "{l}");
        }
        // The gRPC status read from the trailers reaches Istio's metric.
        let (_, metrics) = gw.admin_get("/metrics");
        let not_found = metrics
            .lines()
            .find(|l| {
                l.starts_with("istio_requests_total{") && l.contains("grpc_response_status=\"5\"")
            })
            .unwrap_or_else(|| panic!("no grpc_response_status 5 in {metrics}"));
        assert!(not_found.contains("response_flags=\"-\""), "{not_found}");
    }
}
