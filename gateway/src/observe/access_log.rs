//! JSON access log: one line per request on stdout, written by a dedicated task so the
//! request path never blocks on (or locks) stdout.

use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::observe::metrics::Metrics;
use crate::observe::otlp_logs::OtlpLogs;

/// Lines buffered before new ones are dropped (and counted).
const QUEUE: usize = 8192;

/// One access-log line: Istio's default JSON access log fields (Envoy's command
/// operators of the same names), then the gateway's own (`attempts`, `route`,
/// `upstream`, `reason`, `downstream_remote_address`).
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339 time the request started.
    pub start_time: String,
    /// Null for a TCP connection, as Envoy's JSON format logs it (so are `path`,
    /// `protocol`, `request_id`, `authority` and `response_code_details`).
    pub method: Option<&'a str>,
    /// Path and query as received.
    pub path: Option<&'a str>,
    pub protocol: Option<&'a str>,
    /// Status code sent to the client.
    pub response_code: u16,
    /// Envoy's response flag (`UF`, `UH`, `NR`, ...) or our reason code; `-` when none.
    pub response_flags: &'a str,
    /// Request body bytes.
    pub bytes_received: u64,
    /// Response body bytes sent.
    pub bytes_sent: u64,
    /// Milliseconds from the request's start until the response ended.
    pub duration: u64,
    /// Milliseconds from the request's forwarding until the upstream's answer (headers),
    /// across attempts, a string as Istio's format logs it
    /// (`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`).
    pub upstream_service_time: Option<String>,
    /// Address of the endpoint of the last attempt.
    pub upstream_host: Option<&'a str>,
    /// Local address of the last attempt's upstream connection.
    pub upstream_local_address: Option<&'a str>,
    /// Local address of the client's connection.
    pub downstream_local_address: &'a str,
    /// Envoy's text for a failed upstream connect or TLS handshake (its socket and
    /// BoringSSL errors) has no equivalent here: always null; `reason` explains.
    pub upstream_transport_failure_reason: Option<&'a str>,
    /// Set by Envoy's network filters that close connections (none here): always null.
    pub connection_termination_details: Option<&'a str>,
    /// Envoy's cluster name, `outbound|<port>|<subset>|<service host>`; null for `NC`.
    pub upstream_cluster: Option<&'a str>,
    /// The client's `x-forwarded-for` as received.
    pub x_forwarded_for: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub authority: Option<&'a str>,
    /// SNI of a TLS connection (null without one, as Envoy logs it).
    pub requested_server_name: Option<&'a str>,
    /// Upstream attempts made (0 when none was).
    pub attempts: u32,
    pub downstream_remote_address: &'a str,
    /// `namespace/name/rule` of the matched route rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a str>,
    /// Envoy's `%ROUTE_NAME%` (Istio's default format): the route's id; null when no
    /// route matched.
    pub route_name: Option<&'a str>,
    /// Envoy's `%RESPONSE_CODE_DETAILS%` (`via_upstream`, `route_not_found`, ...).
    pub response_code_details: Option<&'a str>,
    /// The backend (`Service ns/name:port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    /// Why the gateway answered with an error itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// W3C trace id (32 hex digits) when the request was traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    /// The request's SERVER span id (16 hex digits) when traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<&'a str>,
    /// The trace is sampled (its flag in an OTLP log record; not a JSON field).
    #[serde(skip)]
    pub trace_sampled: bool,
}

/// Which requests are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    /// Every request.
    #[default]
    All,
    /// Requests answered with a status of 400 or above, or with a response flag.
    Errors,
}

impl Filter {
    /// Parses `all` or `errors`.
    pub fn parse(s: &str) -> Option<Filter> {
        match s {
            "all" => Some(Filter::All),
            "errors" => Some(Filter::Errors),
            _ => None,
        }
    }

    /// Whether a request with this status and response flag is logged.
    pub fn matches(self, status: u16, flag: Option<&str>) -> bool {
        match self {
            Filter::All => true,
            Filter::Errors => status >= 400 || flag.is_some(),
        }
    }
}

/// What the writer task is handed.
enum Queued {
    /// One JSON line.
    Line(Vec<u8>),
    /// Write out what is buffered, then say so.
    Flush(oneshot::Sender<()>),
}

/// Handle to the access log; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Queued>>,
    otlp: Option<OtlpLogs>,
    filter: Filter,
    /// Share (0 to 1) of the selected requests logged (Envoy's runtime filter percent).
    sample: f64,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Logs the requests `filter` selects to stdout; spawns the writer task (needs a
    /// Tokio runtime).
    pub fn stdout(metrics: Arc<Metrics>, filter: Filter) -> AccessLog {
        let (tx, mut rx) = mpsc::channel::<Queued>(QUEUE);
        tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
            while let Some(queued) = rx.recv().await {
                let line = match queued {
                    Queued::Line(line) => line,
                    Queued::Flush(done) => {
                        let _ = out.flush().await;
                        let _ = done.send(());
                        continue;
                    }
                };
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
            otlp: None,
            filter,
            sample: 1.0,
            metrics,
        }
    }

    /// No access log.
    pub fn disabled(metrics: Arc<Metrics>) -> AccessLog {
        AccessLog {
            tx: None,
            otlp: None,
            filter: Filter::All,
            sample: 1.0,
            metrics,
        }
    }

    /// The same log, also exported as OTLP log records of the requests `filter` selects.
    pub fn with_otlp(self, otlp: OtlpLogs, filter: Filter) -> AccessLog {
        AccessLog {
            otlp: Some(otlp),
            filter,
            ..self
        }
    }

    /// The same log, keeping `percent` of the requests its filter selects (at random).
    pub fn sampled(self, percent: f64) -> AccessLog {
        AccessLog {
            sample: (percent / 100.0).clamp(0.0, 1.0),
            ..self
        }
    }

    /// Whether anything is logged at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some() || self.otlp.is_some()
    }

    /// Whether a request with this status and response flag is logged.
    pub fn wants(&self, status: u16, flag: Option<&str>) -> bool {
        self.enabled()
            && self.filter.matches(status, flag)
            && (self.sample >= 1.0 || fastrand::f64() < self.sample)
    }

    /// Queues one line (dropped and counted when the writer is behind), and its OTLP
    /// record.
    pub fn log(&self, entry: &Entry<'_>) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        if let Some(otlp) = &self.otlp {
            otlp.emit(entry, &String::from_utf8_lossy(&line));
        }
        let Some(tx) = &self.tx else { return };
        line.push(b'\n');
        if tx.try_send(Queued::Line(line)).is_err() {
            self.metrics.access_log_dropped.inc();
        }
    }

    /// Writes out every line queued so far (at shutdown: the writer task would be
    /// cancelled with lines still queued or buffered).
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, written) = oneshot::channel();
        if tx.send(Queued::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    /// Flushes the OTLP export (at shutdown; blocks while it flushes).
    pub fn shutdown(&self) {
        if let Some(otlp) = &self.otlp {
            otlp.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_filter_keeps_error_statuses_and_flagged_requests_only() {
        let f = Filter::parse("errors").unwrap();
        assert!(!f.matches(200, None));
        assert!(!f.matches(301, None));
        assert!(f.matches(404, Some("NR")));
        assert!(f.matches(503, Some("UH")));
        assert!(f.matches(200, Some("DPE")));
        assert!(Filter::parse("all").unwrap().matches(200, None));
        assert_eq!(Filter::parse("some"), None);
    }
}
