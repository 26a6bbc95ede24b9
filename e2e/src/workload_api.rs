//! A SPIFFE Workload API double (what a SPIRE agent serves), for the sds-agent's
//! `--source spiffe`: `SpiffeWorkloadAPI/FetchX509SVID` over a unix socket, streaming the
//! current SVID and every update, and refusing requests without the
//! `workload.spiffe.io: true` header as SPIRE does. Messages follow spiffe's workload.proto.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tokio::sync::watch;

/// `X509SVIDRequest` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    /// The workload's SVIDs; the first is the default.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// CRLs (DER).
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    /// Bundles of federated trust domains (concatenated DER).
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Vec<u8>>,
}

/// `X509SVID`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509Svid {
    /// SPIFFE id of the SVID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// Certificate chain, concatenated DER, leaf first.
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    /// PKCS#8 private key, DER.
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    /// Trust bundle of the SVID's trust domain, concatenated DER.
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
    /// Operator hint.
    #[prost(string, tag = "5")]
    pub hint: String,
}

const FETCH_X509_SVID: &str = "/SpiffeWorkloadAPI/FetchX509SVID";

/// A running Workload API server on a unix socket.
pub struct WorkloadApiServer {
    /// The socket path.
    pub socket: PathBuf,
    tx: watch::Sender<Option<X509SvidResponse>>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkloadApiServer {
    /// Serves on `socket`; streams answer once an SVID is set.
    pub fn start(socket: &Path) -> WorkloadApiServer {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).expect("bind workload API socket");
        let (tx, rx) = watch::channel(None);
        let svc = Service(rx);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await;
        });
        WorkloadApiServer {
            socket: socket.to_path_buf(),
            tx,
            task,
        }
    }

    /// The endpoint string for `SPIFFE_ENDPOINT_SOCKET`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Publishes a new SVID to every open stream.
    pub fn set_svid(
        &self,
        spiffe_id: &str,
        chain_der: Vec<u8>,
        key_der: Vec<u8>,
        bundle_der: Vec<u8>,
    ) {
        let _ = self.tx.send(Some(X509SvidResponse {
            svids: vec![X509Svid {
                spiffe_id: spiffe_id.to_string(),
                x509_svid: chain_der,
                x509_svid_key: key_der,
                bundle: bundle_der,
                hint: String::new(),
            }],
            ..Default::default()
        }));
    }
}

impl Drop for WorkloadApiServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[derive(Clone)]
struct Service(watch::Receiver<Option<X509SvidResponse>>);

impl tonic::server::NamedService for Service {
    const NAME: &'static str = "SpiffeWorkloadAPI";
}

impl<B> tower::Service<http::Request<B>> for Service
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let rx = self.0.clone();
        if req.uri().path() != FETCH_X509_SVID {
            let path = req.uri().path().to_string();
            return Box::pin(async move {
                Ok(
                    tonic::Status::unimplemented(format!("{path} not served by this double"))
                        .into_http(),
                )
            });
        }
        Box::pin(async move {
            let method = tower::service_fn(move |r: tonic::Request<X509SvidRequest>| {
                let mut rx = rx.clone();
                async move {
                    let ok = r
                        .metadata()
                        .get(mesh::consts::WORKLOAD_API_HEADER)
                        .is_some_and(|v| v == "true");
                    if !ok {
                        return Err(tonic::Status::invalid_argument(
                            "security header missing from request",
                        ));
                    }
                    let stream = async_stream(&mut rx);
                    Ok(tonic::Response::new(stream))
                }
            });
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.server_streaming(method, req).await)
        })
    }
}

type SvidStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<X509SvidResponse, tonic::Status>> + Send>,
>;

/// Current SVID (once set), then every change.
fn async_stream(rx: &mut watch::Receiver<Option<X509SvidResponse>>) -> SvidStream {
    let rx = rx.clone();
    Box::pin(futures_util::stream::unfold(
        (rx, true),
        |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            loop {
                let current = rx.borrow_and_update().clone();
                if let Some(v) = current {
                    return Some((Ok(v), (rx, false)));
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    ))
}
