//! The access log exported as OTLP log records (`--access-log-otlp`), over gRPC to
//! `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`, as Envoy's
//! OpenTelemetry access logger sends them: the JSON line as the body, the request's main
//! fields as OpenTelemetry HTTP attributes, and the trace context when the request was
//! traced, so a collector can join the log to its trace.

use std::time::Duration;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};

use super::access_log::Entry;
use super::traces::TraceResource;

/// The variables that name the collector, most specific first.
const ENDPOINT_ENVS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Why the OTLP access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpLogsError {
    /// No collector named.
    #[error(
        "--access-log-otlp needs OTEL_EXPORTER_OTLP_LOGS_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    NoEndpoint,
    /// The exporter could not be built.
    #[error("OTLP log exporter for {endpoint}: {source}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The OTLP access-log sink; cheap to clone.
#[derive(Clone)]
pub struct OtlpLogs {
    provider: SdkLoggerProvider,
    logger: SdkLogger,
}

impl OtlpLogs {
    /// A batch exporter to the collector the environment names, with the traces'
    /// resource (`who`). Needs a Tokio runtime.
    pub fn from_env(who: &TraceResource) -> Result<OtlpLogs, OtlpLogsError> {
        let endpoint = ENDPOINT_ENVS
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|e| !e.is_empty()))
            .ok_or(OtlpLogsError::NoEndpoint)?;
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .build()
            .map_err(|source| OtlpLogsError::Exporter { endpoint, source })?;
        let provider = SdkLoggerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(who.build())
            .build();
        Ok(OtlpLogs {
            logger: provider.logger("meshgate.access_log"),
            provider,
        })
    }

    /// Emits one request's record (queued; the batch processor drops when full).
    pub fn emit(&self, entry: &Entry<'_>, line: &str) {
        let mut r = self.logger.create_log_record();
        r.set_timestamp(std::time::SystemTime::now());
        r.set_event_name("access_log");
        r.set_severity_number(Severity::Info);
        r.set_severity_text("INFO");
        r.set_body(AnyValue::from(line.trim_end().to_string()));
        if let Some(method) = entry.method {
            r.add_attribute("http.request.method", method.to_string());
        }
        if let Some(path) = entry.path {
            r.add_attribute("url.path", path.to_string());
        }
        r.add_attribute("http.response.status_code", i64::from(entry.response_code));
        if let Some(authority) = entry.authority {
            r.add_attribute("server.address", authority.to_string());
        }
        r.add_attribute("response_flags", entry.response_flags.to_string());
        if let Some(route) = entry.route {
            r.add_attribute("http.route", route.to_string());
        }
        if let (Some(t), Some(s)) = (entry.trace_id, entry.span_id)
            && let (Ok(t), Ok(s)) = (TraceId::from_hex(t), SpanId::from_hex(s))
        {
            let flags = if entry.trace_sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            r.set_trace_context(t, s, Some(flags));
        }
        self.logger.emit(r);
    }

    /// Exports what is buffered (at shutdown); blocks while it flushes.
    pub fn shutdown(&self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(5));
    }
}
