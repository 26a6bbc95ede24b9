//! The watch stream: newline-delimited JSON events, bookmarks, `timeoutSeconds`,
//! `sendInitialEvents`, and the ERROR event with a 410 Status for an expired start.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::resources::ResourceType;
use super::select::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{EventType, Signal, Store, WatchStart};

/// What one watch asked for.
pub struct WatchRequest {
    /// The type watched.
    pub rt: Arc<ResourceType>,
    /// The API version the client speaks.
    pub version: String,
    /// Namespace, empty for all.
    pub ns: String,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// `resourceVersion` (None: unset).
    pub resource_version: Option<u64>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// How often to send a bookmark.
    pub bookmark_interval: Duration,
}

impl WatchRequest {
    fn matches(&self, obj: &Value) -> bool {
        (self.ns.is_empty() || obj["metadata"]["namespace"].as_str() == Some(self.ns.as_str()))
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    fn event(&self, kind: &str, obj: &Value) -> Bytes {
        let mut obj = obj.clone();
        obj["apiVersion"] = json!(self.rt.api_version(&self.version));
        obj["kind"] = json!(self.rt.kind);
        line(&json!({"type": kind, "object": obj}))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            &json!({"type": "BOOKMARK", "object": {"kind": self.rt.kind, "apiVersion": self.rt.api_version(&self.version), "metadata": meta}}),
        )
    }

    /// The event a change means to this watch, after selectors (an object that stops
    /// matching is DELETED for it; one that starts matching is ADDED).
    fn translate(&self, event: EventType, obj: &Value, previous: Option<&Value>) -> Option<Bytes> {
        let now = self.matches(obj);
        let before = previous.is_some_and(|p| self.matches(p));
        let kind = match event {
            EventType::Added if now => "ADDED",
            EventType::Deleted if now => "DELETED",
            EventType::Modified if now && before => "MODIFIED",
            EventType::Modified if now => "ADDED",
            EventType::Modified if before => "DELETED",
            _ => return None,
        };
        Some(self.event(kind, obj))
    }
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Starts a watch; the events come out of the returned channel until it ends.
pub fn start(store: &Store, req: WatchRequest) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(256);
    let from = req.resource_version.unwrap_or(0);
    let initial = from == 0 || req.send_initial_events;
    match store.watch(
        &req.rt,
        if req.send_initial_events { 0 } else { from },
        initial,
    ) {
        Ok(start) => {
            tokio::spawn(run(req, start, tx));
        }
        Err(e) => {
            let _ = tx.try_send(expired(&e));
        }
    }
    rx
}

/// The ERROR event the real server sends for a too-old resourceVersion.
fn expired(e: &ApiError) -> Bytes {
    line(&json!({"type": "ERROR", "object": e.to_status()}))
}

async fn run(req: WatchRequest, start: WatchStart, tx: mpsc::Sender<Bytes>) {
    let WatchStart {
        initial,
        replay,
        mut live,
        rv,
    } = start;
    let mut last_rv = rv;
    for obj in initial.iter().filter(|o| req.matches(o)) {
        if tx.send(req.event("ADDED", obj)).await.is_err() {
            return;
        }
    }
    if req.send_initial_events && req.bookmarks && tx.send(req.bookmark(rv, true)).await.is_err() {
        return;
    }
    for change in replay {
        if let Some(ev) = req.translate(change.event, &change.object, change.previous.as_ref())
            && tx.send(ev).await.is_err()
        {
            return;
        }
    }
    let deadline = req.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut tick = tokio::time::interval(req.bookmark_interval);
    tick.tick().await;
    loop {
        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let out = tokio::select! {
            signal = live.recv() => match signal {
                Ok(Signal::Change(c)) => {
                    last_rv = last_rv.max(c.rv);
                    if c.key != req.rt.key() { continue; }
                    match req.translate(c.event, &c.object, c.previous.as_ref()) {
                        Some(ev) => ev,
                        None => continue,
                    }
                }
                // A watcher too slow for the fan-out is cut off, as the real server does.
                Ok(Signal::DropWatches) | Err(broadcast::error::RecvError::Closed | broadcast::error::RecvError::Lagged(_)) => return,
            },
            _ = tick.tick(), if req.bookmarks => req.bookmark(last_rv, false),
            _ = timeout => return,
            _ = tx.closed() => return,
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}
