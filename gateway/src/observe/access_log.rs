//! JSON access log: one line per request on stdout, written by a dedicated task so the
//! request path never blocks on (or locks) stdout.

use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::observe::metrics::Metrics;

/// Lines buffered before new ones are dropped (and counted).
const QUEUE: usize = 8192;

/// One access-log line.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339 time the request started.
    pub start_time: String,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    /// Envoy's response flag (`UF`, `UH`, `NR`, ...) or our reason code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_flags: Option<&'a str>,
    /// `namespace/name/rule` of the matched HTTPRoute rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a str>,
    /// Backend and address the request went to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_address: Option<&'a str>,
    /// Upstream attempts made (0 when none was).
    pub attempts: u32,
    pub duration_ms: f64,
    /// Response body bytes sent.
    pub bytes_sent: u64,
    pub request_id: &'a str,
    pub downstream_remote_address: &'a str,
    /// Why the gateway answered with an error itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// Handle to the access log; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Logs to stdout; spawns the writer task (needs a Tokio runtime).
    pub fn stdout(metrics: Arc<Metrics>) -> AccessLog {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
            while let Some(line) = rx.recv().await {
                if out.write_all(&line).await.is_err() {
                    break;
                }
                if rx.is_empty() && out.flush().await.is_err() {
                    break;
                }
            }
        });
        AccessLog {
            tx: Some(tx),
            metrics,
        }
    }

    /// No access log.
    pub fn disabled(metrics: Arc<Metrics>) -> AccessLog {
        AccessLog { tx: None, metrics }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, entry: &Entry<'_>) {
        let Some(tx) = &self.tx else { return };
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        if tx.try_send(line).is_err() {
            self.metrics.access_log_dropped.inc();
        }
    }
}
