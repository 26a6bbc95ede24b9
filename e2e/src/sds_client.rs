//! An SDS client for tests: connects over the agent's unix socket, opens StreamSecrets,
//! ACKs every response as Envoy does, and decodes the secrets.

use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use mesh::consts::SECRET_TYPE_URL;
use mesh::sds::{decode_secret, inline_bytes};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// Connects to an SDS server on a unix socket.
pub async fn connect(
    socket: &Path,
) -> Result<SecretDiscoveryServiceClient<Channel>, tonic::transport::Error> {
    mesh::sds::connect_unix(socket).await
}

/// Connects, retrying until the socket exists and answers or `timeout` passes.
pub async fn connect_retry(
    socket: &Path,
    timeout: Duration,
) -> SecretDiscoveryServiceClient<Channel> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match connect(socket).await {
            Ok(c) => return c,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("cannot connect to SDS socket {}: {e}", socket.display())
            }
            // Short: start-up benchmarks time the first certificate through this wait.
            Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// One decoded discovery response.
#[derive(Debug, Clone)]
pub struct Update {
    /// `version_info` of the response.
    pub version: String,
    /// The secrets, in response order.
    pub secrets: Vec<Secret>,
}

impl Update {
    /// Chain and key PEM of the first TlsCertificate secret.
    pub fn certificate(&self) -> Option<(String, String)> {
        self.secrets.iter().find_map(|s| match &s.r#type {
            Some(secret::Type::TlsCertificate(t)) => Some((
                String::from_utf8_lossy(inline_bytes(t.certificate_chain.as_ref())?).into_owned(),
                String::from_utf8_lossy(inline_bytes(t.private_key.as_ref())?).into_owned(),
            )),
            _ => None,
        })
    }

    /// Trusted CA PEM of the first validation-context secret.
    pub fn roots(&self) -> Option<String> {
        self.secrets.iter().find_map(|s| match &s.r#type {
            Some(secret::Type::ValidationContext(v)) => {
                Some(String::from_utf8_lossy(inline_bytes(v.trusted_ca.as_ref())?).into_owned())
            }
            _ => None,
        })
    }

    /// Names of the secrets.
    pub fn names(&self) -> Vec<String> {
        self.secrets.iter().map(|s| s.name.clone()).collect()
    }
}

/// An open StreamSecrets call that ACKs what it receives.
pub struct SdsStream {
    tx: mpsc::Sender<DiscoveryRequest>,
    inbound: Streaming<DiscoveryResponse>,
    names: Vec<String>,
}

impl SdsStream {
    /// Opens a stream asking for `names`.
    pub async fn open(
        client: &mut SecretDiscoveryServiceClient<Channel>,
        names: &[&str],
    ) -> Result<SdsStream, tonic::Status> {
        let (tx, rx) = mpsc::channel(8);
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        tx.send(DiscoveryRequest {
            resource_names: names.clone(),
            type_url: SECRET_TYPE_URL.to_string(),
            ..Default::default()
        })
        .await
        .expect("queue first request");
        let inbound = client
            .stream_secrets(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(SdsStream { tx, inbound, names })
    }

    /// The next response, ACKed; `Err` if the server ended the stream with a status.
    pub async fn next(&mut self) -> Result<Update, tonic::Status> {
        let resp = self
            .inbound
            .message()
            .await?
            .ok_or_else(|| tonic::Status::aborted("stream closed by server"))?;
        let secrets = resp
            .resources
            .iter()
            .map(decode_secret)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let _ = self
            .tx
            .send(DiscoveryRequest {
                version_info: resp.version_info.clone(),
                resource_names: self.names.clone(),
                type_url: SECRET_TYPE_URL.to_string(),
                response_nonce: resp.nonce.clone(),
                ..Default::default()
            })
            .await;
        Ok(Update {
            version: resp.version_info,
            secrets,
        })
    }

    /// [`SdsStream::next`] with a deadline.
    pub async fn next_within(
        &mut self,
        timeout: Duration,
    ) -> Option<Result<Update, tonic::Status>> {
        tokio::time::timeout(timeout, self.next()).await.ok()
    }

    /// Asks for a new set of names on this stream (later ACKs name them too).
    pub async fn request(&mut self, names: &[&str]) {
        self.names = names.iter().map(|s| s.to_string()).collect();
        let _ = self
            .tx
            .send(DiscoveryRequest {
                resource_names: self.names.clone(),
                type_url: SECRET_TYPE_URL.to_string(),
                ..Default::default()
            })
            .await;
    }

    /// Sends a NACK for `version`/`nonce` (for protocol tests).
    pub async fn nack(&self, version: &str, nonce: &str, message: &str) {
        let _ = self
            .tx
            .send(DiscoveryRequest {
                version_info: version.to_string(),
                resource_names: self.names.clone(),
                type_url: SECRET_TYPE_URL.to_string(),
                response_nonce: nonce.to_string(),
                error_detail: Some(envoy_types::pb::google::rpc::Status {
                    code: 3,
                    message: message.to_string(),
                    details: vec![],
                }),
                ..Default::default()
            })
            .await;
    }
}

/// How a server ended a hand-made StreamSecrets call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOutcome {
    /// HTTP status of the response headers.
    pub http_status: u16,
    /// `grpc-status` from the trailers (or a trailers-only response); `None` if absent.
    pub grpc_status: Option<tonic::Code>,
    /// `grpc-message`, percent-decoding left undone.
    pub grpc_message: String,
}

/// One gRPC length-prefixed message frame (uncompressed) that *declares* `declared_len`
/// bytes but carries `payload`: a truncated frame when the payload is shorter.
pub fn grpc_frame(declared_len: u32, payload: &[u8]) -> bytes::Bytes {
    let mut frame = Vec::with_capacity(5 + payload.len());
    frame.push(0);
    frame.extend_from_slice(&declared_len.to_be_bytes());
    frame.extend_from_slice(payload);
    frame.into()
}

/// Sends `body` as the entire StreamSecrets request body over raw HTTP/2 on the unix
/// socket (no tonic client, so the frames are exactly as given), and returns how the
/// server ended the call.
pub async fn raw_stream_secrets(socket: &Path, body: bytes::Bytes) -> anyhow::Result<RawOutcome> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = http::Request::post(
        "http://localhost/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
    )
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let http_status = response.status().as_u16();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    // A trailers-only response carries the status in the headers.
    let field = |name: &str| {
        trailers
            .get(name)
            .or_else(|| headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Ok(RawOutcome {
        http_status,
        grpc_status: field("grpc-status")
            .and_then(|s| s.parse::<i32>().ok())
            .map(tonic::Code::from_i32),
        grpc_message: field("grpc-message").unwrap_or_default(),
    })
}
