//! A Kubernetes API server fixture: a real HTTP server speaking the protocol kubectl and
//! kube-rs use (discovery, OpenAPI v3, list/watch with resourceVersions, bookmarks and
//! 410 Gone, create/update/delete, JSON, merge, strategic merge and server-side apply
//! patches, the status subresource, metav1.Status errors), with test controls: seed from
//! YAML, drop watches, compact history, restart with a new resourceVersion epoch, inject
//! 5xx/429 answers and stalls.

mod apply;
mod controls;
mod discovery;
mod http;
mod openapi;
mod patch;
mod resources;
mod select;
mod status;
mod store;
mod table;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};

pub use controls::Faults;
pub use status::ApiError;
pub use store::{Store, WriteOptions};

/// Why seeding from YAML failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A document is not YAML.
    #[error("parsing YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// No served type has this apiVersion and kind (apply its CRD first).
    #[error("no resource type serves {api_version} {kind}")]
    UnknownKind { api_version: String, kind: String },
    /// The server refused the object.
    #[error("{kind} {name}: {source}")]
    Refused {
        kind: String,
        name: String,
        source: ApiError,
    },
}

/// One request the fixture served, for tests that check what a client sent.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Content-Type of the request body.
    pub content_type: String,
}

/// State shared by the connections.
pub struct Shared {
    /// The objects.
    pub store: Store,
    /// Injected faults.
    pub faults: Faults,
    /// Where the server listens.
    pub addr: SocketAddr,
    /// How often watches with allowWatchBookmarks get a BOOKMARK.
    pub bookmark_interval: Duration,
    requests: Mutex<Vec<RequestRecord>>,
}

impl Shared {
    fn record(&self, method: &::http::Method, uri: &::http::Uri, content_type: &str) {
        let rec = RequestRecord {
            method: method.to_string(),
            uri: uri.to_string(),
            content_type: content_type.into(),
        };
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rec);
    }
}

/// A running fixture; stops serving when dropped.
pub struct ApiServer {
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Serves on `addr` (port 0 picks one) with bookmarks every second.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(addr, Duration::from_secs(1)).await
    }

    /// Serves on `addr` with the given bookmark interval.
    pub async fn start_with(
        addr: SocketAddr,
        bookmark_interval: Duration,
    ) -> std::io::Result<Self> {
        Self::start_with_store(addr, bookmark_interval, Store::new()).await
    }

    /// Serves `store`, seeded beforehand (see [`seed_store`]): nothing is answered before
    /// the seed is complete, as a restarted API server answers once it has read etcd, so a
    /// client never lists half a seed.
    pub async fn start_with_store(
        addr: SocketAddr,
        bookmark_interval: Duration,
        store: Store,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store,
            faults: Faults::default(),
            addr,
            bookmark_interval,
            requests: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sh = sh.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| http::handle(sh.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self { shared, accept })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The object store (direct reads and writes, epoch and history controls).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Fault injection.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Ends every open watch now.
    pub fn drop_watches(&self) {
        self.shared.store.drop_watches();
    }

    /// Every request served so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Creates (or replaces) every object in a multi-document YAML text, in order.
    pub fn seed_yaml(&self, text: &str) -> Result<Vec<Value>, SeedError> {
        seed_store(&self.shared.store, text)
    }

    /// Seeds from a YAML file.
    pub fn seed_file(&self, path: &Path) -> Result<Vec<Value>, SeedError> {
        seed_store_file(&self.shared.store, path)
    }

    /// Writes a kubeconfig whose current context points at this server.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, kubeconfig(&self.url()))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.store.drop_watches();
    }
}

/// A kubeconfig for `server`: one cluster, context and (anonymous) user named `fixture`.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fixture\n  cluster:\n    server: {server}\ncontexts:\n- name: fixture\n  context:\n    cluster: fixture\n    user: fixture\n    namespace: default\ncurrent-context: fixture\nusers:\n- name: fixture\n  user: {{}}\n"
    )
}

/// Creates (or replaces) every object in a multi-document YAML text in `store`, in order.
pub fn seed_store(store: &Store, text: &str) -> Result<Vec<Value>, SeedError> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let obj = Value::deserialize(doc)?;
        if obj.is_null() {
            continue;
        }
        out.push(seed_one(store, obj)?);
    }
    Ok(out)
}

/// [`seed_store`] from a YAML file.
pub fn seed_store_file(store: &Store, path: &Path) -> Result<Vec<Value>, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeedError::Io {
        path: path.display().to_string(),
        source,
    })?;
    seed_store(store, &text)
}

fn seed_one(store: &Store, obj: Value) -> Result<Value, SeedError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let rt = store
        .registry()
        .find_kind(&api_version, &kind)
        .ok_or_else(|| SeedError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let version = api_version
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let ns = if rt.namespaced {
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    };
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let opts = WriteOptions {
        manager: "fixture-seed".into(),
        ..Default::default()
    };
    let refused = |source| SeedError::Refused {
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    match store.create(&rt, &version, &ns, obj.clone(), &opts) {
        Err(ApiError::AlreadyExists { .. }) => store
            .write(&rt, &version, &ns, &name, &opts, |_, _| Ok(obj.clone()))
            .map_err(refused),
        other => other.map_err(refused),
    }
}

/// The admin paths under `/fixture/`: `drop-watches`, `compact`, `restart-epoch`,
/// `fail?code=503&count=3` or `fail?code=429&seconds=2`, `stall?seconds=1`, `clear`.
fn admin(
    sh: &Shared,
    control: &str,
    query: &HashMap<String, String>,
) -> Result<::http::Response<http::Body>, ApiError> {
    let num = |k: &str| query.get(k).and_then(|v| v.parse::<u64>().ok());
    match control {
        "drop-watches" => sh.store.drop_watches(),
        "compact" => sh.store.compact(),
        "restart-epoch" => sh.store.restart_epoch(),
        "clear" => sh.faults.clear(),
        "stall" => sh.faults.stall_for(Duration::from_millis(
            num("millis").unwrap_or(num("seconds").unwrap_or(1) * 1000),
        )),
        "fail" => {
            let code = num("code").unwrap_or(503) as u16;
            match (num("count"), num("seconds")) {
                (Some(n), _) => sh.faults.fail_next(code, n as u32),
                (None, s) => sh
                    .faults
                    .fail_for(code, Duration::from_secs(s.unwrap_or(1))),
            }
        }
        _ => return Err(ApiError::NotServed),
    }
    Ok(http::json_reply(
        200,
        &json!({"ok": control, "resourceVersion": sh.store.resource_version().to_string()}),
    ))
}
