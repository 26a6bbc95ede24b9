//! A SPIFFE Workload API double (what a SPIRE agent serves), for the sds-agent's
//! `--source spiffe`: `SpiffeWorkloadAPI/FetchX509SVID` over a unix socket, streaming the
//! current SVID and every update, and refusing requests without the
//! `workload.spiffe.io: true` header as SPIRE does. It implements the server trait
//! generated from `mesh/proto/spiffe/workload.proto`; other calls answer UNIMPLEMENTED.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures_util::Stream;
use mesh::workload_api::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer, X509svid, X509svidRequest, X509svidResponse,
};
use tokio::sync::watch;

/// A running Workload API server on a unix socket.
pub struct WorkloadApiServer {
    /// The socket path.
    pub socket: PathBuf,
    tx: watch::Sender<Option<X509svidResponse>>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkloadApiServer {
    /// Serves on `socket`; streams answer once an SVID is set.
    pub fn start(socket: &Path) -> WorkloadApiServer {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).expect("bind workload API socket");
        let (tx, rx) = watch::channel(None);
        let svc = SpiffeWorkloadApiServer::new(Service(rx));
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
        let _ = self.tx.send(Some(X509svidResponse {
            svids: vec![X509svid {
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

/// The double: one SVID set, watched, streamed to every caller.
struct Service(watch::Receiver<Option<X509svidResponse>>);

type SvidStream = Pin<Box<dyn Stream<Item = Result<X509svidResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl SpiffeWorkloadApi for Service {
    /// Refuses a call without the security header (as SPIRE does), then streams.
    async fn fetch_x509svid(
        &self,
        request: tonic::Request<X509svidRequest>,
    ) -> Result<tonic::Response<SvidStream>, tonic::Status> {
        let ok = request
            .metadata()
            .get(mesh::consts::WORKLOAD_API_HEADER)
            .is_some_and(|v| v == "true");
        if !ok {
            return Err(tonic::Status::invalid_argument(
                "security header missing from request",
            ));
        }
        Ok(tonic::Response::new(svid_updates(self.0.clone())))
    }
}

/// Current SVID (once set), then every change.
fn svid_updates(rx: watch::Receiver<Option<X509svidResponse>>) -> SvidStream {
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
