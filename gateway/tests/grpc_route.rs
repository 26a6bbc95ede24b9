//! GRPCRoute with a real tonic server and client (Envoy's SecretDiscoveryService from
//! envoy-types) through the gateway over h2c: exact service/method, header and regex
//! matches, and a call no rule matches.

mod support;

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

/// Answers with its own tag, so a test sees which backend a call reached.
struct Tagged(&'static str);

#[tonic::async_trait]
impl SecretDiscoveryService for Tagged {
    type DeltaSecretsStream = Replies<DeltaDiscoveryResponse>;
    type StreamSecretsStream = Replies<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::internal(format!("{} got a delta call", self.0)))
    }

    async fn stream_secrets(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let tag = self.0;
        let replies = req.into_inner().map(move |r| {
            r.map(|_| DiscoveryResponse {
                version_info: tag.into(),
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn fetch_secrets(
        &self,
        _: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Ok(Response::new(DiscoveryResponse {
            version_info: self.0.into(),
            ..Default::default()
        }))
    }
}

async fn serve(tag: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SecretDiscoveryServiceServer::new(Tagged(tag)))
            .serve_with_incoming(incoming),
    );
    port
}

/// A Service without appProtocol: a GRPCRoute backend speaks HTTP/2 anyway.
fn service(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{ports: [{{name: grpc, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: grpc, port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n"
    )
}

const SDS: &str = "envoy.service.secret.v3.SecretDiscoveryService";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_route_matches_service_method_headers_and_regex() {
    let (a, b) = (serve("a").await, serve("b").await);
    let port = support::free_port();
    let route = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n\
         metadata: {{name: sds, namespace: default}}\nspec:\n  parentRefs: [{{name: edge}}]\n  rules:\n\
         \x20   - matches:\n        - method: {{service: {SDS}, method: FetchSecrets}}\n          \
         headers: [{{name: x-canary, value: \"true\"}}]\n      backendRefs: [{{name: b, port: 80}}]\n\
         \x20   - matches: [{{method: {{service: {SDS}, method: FetchSecrets}}}}]\n      \
         backendRefs: [{{name: a, port: 80, weight: 1}}, {{name: b, port: 80, weight: 0}}]\n\
         \x20   - matches: [{{method: {{type: RegularExpression, service: 'envoy\\.service\\.secret\\.v3\\..+', method: 'Nothing|Stream.*'}}}}]\n      \
         backendRefs: [{{name: b, port: 80}}]\n"
    );
    let config = support::docs(&[
        &support::http_gateway(port),
        &route,
        &service("a", a),
        &service("b", b),
    ]);
    let _gw = tokio::task::spawn_blocking(move || support::Gateway::start(&config))
        .await
        .unwrap();
    let mut client = SecretDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();

    let fetched = client
        .fetch_secrets(DiscoveryRequest::default())
        .await
        .unwrap();
    assert_eq!(fetched.into_inner().version_info, "a");
    let mut canary = Request::new(DiscoveryRequest::default());
    canary
        .metadata_mut()
        .insert("x-canary", "true".parse().unwrap());
    let fetched = client.fetch_secrets(canary).await.unwrap();
    assert_eq!(
        fetched.into_inner().version_info,
        "b",
        "the header match wins"
    );

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(DiscoveryRequest::default()).await.unwrap();
    let mut replies = client
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replies.message().await.unwrap().unwrap().version_info, "b");
    drop(tx);

    // DeltaSecrets matches no rule: the gateway answers a gRPC client in gRPC, its 404
    // mapped to UNIMPLEMENTED as Envoy maps it, and no backend saw the call (a backend
    // would have answered INTERNAL).
    let (_tx, rx) = tokio::sync::mpsc::channel::<DeltaDiscoveryRequest>(1);
    let err = client
        .delta_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    assert!(err.message().starts_with("404 NR (request id "), "{err:?}");
}

/// Answers UNAVAILABLE to its first FetchSecrets (a Trailers-Only answer, as tonic sends
/// an error before any message), then the number of the call.
struct UnavailableOnce(std::sync::atomic::AtomicUsize);

#[tonic::async_trait]
impl SecretDiscoveryService for UnavailableOnce {
    type DeltaSecretsStream = Replies<DeltaDiscoveryResponse>;
    type StreamSecretsStream = Replies<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn stream_secrets(
        &self,
        _: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn fetch_secrets(
        &self,
        _: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        match self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Err(Status::unavailable("warming up")),
            n => Ok(Response::new(DiscoveryResponse {
                version_info: n.to_string(),
                ..Default::default()
            })),
        }
    }
}

async fn serve_unavailable_once() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let svc = UnavailableOnce(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SecretDiscoveryServiceServer::new(svc))
            .serve_with_incoming(incoming),
    );
    port
}

/// Istio's default retry policy names gRPC's `unavailable` (and `cancelled`): a real
/// tonic server's UNAVAILABLE, sent as a Trailers-Only answer, is retried through an
/// Istio VirtualService without `retries`, as istiod programs Envoy to; with
/// `retries: {attempts: 0}` the client gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istios_default_retry_policy_retries_a_grpc_unavailable() {
    let (retried, not_retried) = (
        serve_unavailable_once().await,
        serve_unavailable_once().await,
    );
    let port = support::free_port();
    // HTTP/2 upstreams: one by appProtocol, one by its port's name as Istio reads it.
    let grpc_service = |name: &str, p: u16, port_name: &str, app_protocol: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{ports: [{{name: {port_name}, port: 80{app_protocol}}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: {port_name}, port: {p}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n"
        )
    };
    let config = support::docs(&[
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\n\
             metadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
             selector: {{istio: ingressgateway}}\n  \
             servers: [{{port: {{number: {port}, name: grpc, protocol: GRPC}}, hosts: [\"*\"]}}]\n"
        ),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: sds, namespace: default}\nspec:\n  \
         hosts: [\"*\"]\n  gateways: [istio-system/gw]\n  http:\n  \
         - match: [{headers: {x-no-retry: {exact: \"1\"}}}]\n    retries: {attempts: 0}\n    \
           route: [{destination: {host: not-retried}}]\n  \
         - route: [{destination: {host: retried}}]\n",
        &grpc_service("retried", retried, "grpc-sds", ""),
        &grpc_service("not-retried", not_retried, "sds", ", appProtocol: grpc"),
    ]);
    let _gw = tokio::task::spawn_blocking(move || {
        support::Gateway::start_with(
            &config,
            &[
                "--pod-labels",
                "istio=ingressgateway",
                "--pod-namespace",
                "istio-system",
            ],
        )
    })
    .await
    .unwrap();
    let mut client = SecretDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    // The first call's UNAVAILABLE was retried: the answer is the server's second call.
    let fetched = client
        .fetch_secrets(DiscoveryRequest::default())
        .await
        .unwrap();
    assert_eq!(fetched.into_inner().version_info, "1");
    let mut no_retry = Request::new(DiscoveryRequest::default());
    no_retry
        .metadata_mut()
        .insert("x-no-retry", "1".parse().unwrap());
    let err = client.fetch_secrets(no_retry).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::Unavailable, "warming up"),
        "{err:?}"
    );
}
