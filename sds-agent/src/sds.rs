//! Envoy's Secret Discovery Service, state-of-the-world over `StreamSecrets` (and the
//! unary `FetchSecrets`). Every open stream gets a new version when the store changes.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use futures_util::Stream;
use mesh::consts::SECRET_TYPE_URL;
use mesh::sds::{RESOURCE_NAMES, ResourceKind, resource_kind, secret_any};
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::store::{Published, Store};

/// Largest request message accepted (gRPC's usual 4 MiB; Envoy's SDS requests are a few
/// KiB). A frame that declares more ends its stream with the decoder's status.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The SDS service over the agent's [`Store`].
#[derive(Clone)]
pub struct Server {
    store: Store,
    metrics: Arc<Metrics>,
    nonces: Arc<AtomicU64>,
    /// Flips on shutdown; open streams end so the server can drain.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Server {
    /// A server publishing what `store` holds.
    pub fn new(
        store: Store,
        metrics: Arc<Metrics>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Server {
            store,
            metrics,
            nonces: Arc::new(AtomicU64::new(0)),
            shutdown,
        }
    }

    /// The tonic service to mount.
    pub fn into_service(self) -> SecretDiscoveryServiceServer<Self> {
        SecretDiscoveryServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    fn response(
        &self,
        names: &[(String, ResourceKind)],
        published: &Published,
    ) -> DiscoveryResponse {
        let nonce = self.nonces.fetch_add(1, Ordering::Relaxed) + 1;
        DiscoveryResponse {
            version_info: version_info(published),
            resources: names
                .iter()
                .map(|(name, kind)| secret_any(name, *kind, &published.certs))
                .collect(),
            type_url: SECRET_TYPE_URL.to_string(),
            nonce: nonce.to_string(),
            ..Default::default()
        }
    }
}

/// The version string announced for a publish: process-local counter plus serial.
fn version_info(p: &Published) -> String {
    format!("{}-{}", p.version, p.certs.serial)
}

/// Checks the type URL and resolves the names, or says exactly what is wrong.
fn resolve(req: &DiscoveryRequest) -> Result<Vec<(String, ResourceKind)>, Status> {
    if !req.type_url.is_empty() && req.type_url != SECRET_TYPE_URL {
        return Err(Status::invalid_argument(format!(
            "unsupported type_url {:?}; this server only serves {SECRET_TYPE_URL}",
            req.type_url
        )));
    }
    req.resource_names
        .iter()
        .map(|name| {
            resource_kind(name)
                .map(|k| (name.clone(), k))
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "unknown SDS resource {name:?}; this agent serves {}",
                        RESOURCE_NAMES.join(", ")
                    ))
                })
        })
        .collect()
}

/// What a stream event asks of the server.
#[derive(Debug, PartialEq, Eq)]
enum Push {
    /// Nothing to send (an ACK or NACK).
    No,
    /// Send what we hold (first request or new names).
    Always,
    /// Send only if the version moved (the store changed).
    IfNew,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Decrements the open-streams gauge when a stream ends, however it ends.
struct StreamGuard(Arc<Metrics>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.sds_streams.dec();
    }
}

/// One StreamSecrets call: what the client asked for and what it was last sent.
struct Session {
    server: Server,
    inbound: Streaming<DiscoveryRequest>,
    certs: tokio::sync::watch::Receiver<Option<Published>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// The names of the latest request.
    names: Vec<(String, ResourceKind)>,
    /// The store version last pushed.
    sent: Option<u64>,
    /// Set once an error status has been yielded: nothing follows it.
    ended: bool,
    _guard: StreamGuard,
}

impl Session {
    /// The next message for the client: a push, or the status that ends the stream;
    /// `None` when the stream ends cleanly (client done, or shutdown).
    async fn next_push(&mut self) -> Option<Result<DiscoveryResponse, Status>> {
        if self.ended {
            return None;
        }
        loop {
            let push = tokio::select! {
                msg = self.inbound.message() => match msg {
                    Ok(Some(req)) => match self.on_request(&req) {
                        Ok(push) => push,
                        Err(status) => return Some(Err(self.end(status))),
                    },
                    Ok(None) => return None,
                    Err(status) => return Some(Err(self.broken(status))),
                },
                _ = until_shutdown(&mut self.shutdown) => return None,
                changed = self.certs.changed() => {
                    if changed.is_err() { return None; }
                    Push::IfNew
                },
            };
            if push == Push::No || self.names.is_empty() {
                continue;
            }
            let current = self.certs.borrow_and_update().clone();
            let Some(published) = current else { continue };
            if push == Push::IfNew && self.sent == Some(published.version) {
                continue;
            }
            let response = self.server.response(&self.names, &published);
            tracing::debug!(version = %response.version_info, nonce = %response.nonce, "SDS push");
            self.server.metrics.sds_pushes.inc();
            self.sent = Some(published.version);
            return Some(Ok(response));
        }
    }

    /// Takes in a request: new names, an ACK or a NACK. Refuses unknown names.
    fn on_request(&mut self, req: &DiscoveryRequest) -> Result<Push, Status> {
        let requested = resolve(req).inspect_err(|status| {
            tracing::warn!(names = ?req.resource_names, "SDS request refused: {}", status.message());
        })?;
        if let Some(err) = &req.error_detail {
            tracing::warn!(nonce = %req.response_nonce, version = %req.version_info, "SDS client rejected (NACK) our secrets: {}", err.message);
            // Counted after logging: whoever sees the count finds the line.
            self.server.metrics.sds_nacks.inc();
        } else if !req.response_nonce.is_empty() {
            tracing::debug!(nonce = %req.response_nonce, version = %req.version_info, "SDS ACK");
        }
        let changed = requested != self.names;
        self.names = requested;
        // A first request, or a new set of names, is answered with what we hold; an ACK
        // or NACK of the same names waits for the next version.
        Ok(if changed || req.response_nonce.is_empty() {
            Push::Always
        } else {
            Push::No
        })
    }

    /// A request frame that could not be read (truncated, oversized): the stream ends
    /// with the decoder's status, so the client sees why, not an OK.
    fn broken(&mut self, status: Status) -> Status {
        if matches!(
            status.code(),
            tonic::Code::Internal | tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ) {
            tracing::warn!(code = ?status.code(), "SDS request unreadable: {}", status.message());
        } else {
            tracing::debug!("SDS stream ended: {status}");
        }
        self.end(status)
    }

    fn end(&mut self, status: Status) -> Status {
        self.ended = true;
        status
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Server {
    type DeltaSecretsStream = ResponseStream<DeltaDiscoveryResponse>;
    type StreamSecretsStream = ResponseStream<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "DeltaSecrets is not supported; use StreamSecrets (state of the world)",
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        self.metrics.sds_streams.inc();
        let session = Session {
            server: self.clone(),
            inbound: request.into_inner(),
            certs: self.store.subscribe(),
            shutdown: self.shutdown.clone(),
            names: Vec::new(),
            sent: None,
            ended: false,
            _guard: StreamGuard(self.metrics.clone()),
        };
        // The connection polls this stream directly: a push is one task wake-up, not a
        // hop through a spawned task and a channel.
        let pushes = futures_util::stream::unfold(session, |mut session| async move {
            let push = session.next_push().await?;
            Some((push, session))
        });
        Ok(Response::new(Box::pin(pushes)))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let names = resolve(request.get_ref())?;
        if names.is_empty() {
            return Err(Status::invalid_argument("FetchSecrets names no resources"));
        }
        let published = self.store.current().ok_or_else(|| {
            Status::unavailable("no workload certificate yet; the agent is still fetching one")
        })?;
        self.metrics.sds_pushes.inc();
        Ok(Response::new(self.response(&names, &published)))
    }
}

/// Resolves once shutdown has begun.
async fn until_shutdown(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here, not inside a select!.
    let _ = rx.wait_for(|s| *s).await;
}
