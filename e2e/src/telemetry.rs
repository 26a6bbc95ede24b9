//! The observability peers, real programs read through their own interfaces: Debian's
//! Prometheus (configuration, command line, and the HTTP API's query results) and rotel,
//! the OTLP collector from PyPI (command line, and the spans it prints).
//!
//! Where they run is the caller's business: the gateway's tests start them on loopback,
//! the mesh lab inside its pods.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Debian's Prometheus.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// `prometheus.yml` scraping `target`'s `/metrics` every second as job `job`.
pub fn prometheus_config(job: &str, target: SocketAddr) -> String {
    prometheus_config_at(job, target, "/metrics")
}

/// The same, scraping `path` (Istio's proxies: `/stats/prometheus`).
pub fn prometheus_config_at(job: &str, target: SocketAddr, path: &str) -> String {
    format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         scrape_configs:\n  - job_name: {job}\n    metrics_path: {path}\n    \
         static_configs: [{{targets: ['{target}']}}]\n"
    )
}

/// Prometheus's arguments: `config`, its database under `dir`, the API on `listen`.
pub fn prometheus_args(config: &Path, dir: &Path, listen: SocketAddr) -> Vec<String> {
    vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address={listen}"),
    ]
}

/// The result vector of a `/api/v1/query` answer (each element has `metric` and
/// `value: [time, "number"]`).
pub fn query_result(body: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let v: serde_json::Value =
        serde_json::from_str(body).with_context(|| format!("Prometheus answered {body:?}"))?;
    if v["status"] != "success" {
        bail!("Prometheus query failed: {v}");
    }
    v["data"]["result"]
        .as_array()
        .cloned()
        .with_context(|| format!("no result vector in {v}"))
}

/// The number in one sample of a query result.
pub fn sample_value(sample: &serde_json::Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// rotel's binary in the tools' virtual environment (`scripts/install-tools`).
pub fn rotel_bin() -> PathBuf {
    crate::tools::tool("rotel-agent")
}

/// rotel's arguments: OTLP/gRPC on `grpc`, OTLP/HTTP on `http`, every span printed in
/// detail on stdout, nothing exported further.
pub fn rotel_args(grpc: SocketAddr, http: SocketAddr) -> Vec<String> {
    [
        "start",
        "--otlp-grpc-endpoint",
        &grpc.to_string(),
        "--otlp-http-endpoint",
        &http.to_string(),
        "--exporter",
        "blackhole",
        "--debug-log",
        "traces",
        "--debug-log-verbosity",
        "detailed",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One span as rotel printed it: its fields (`Trace ID`, `Parent ID`, `ID`, `Kind`,
/// `Name`, ...) and the `service.name` of the resource it came in under.
#[derive(Debug, Clone, Default)]
pub struct Span {
    /// `field -> value`, as printed.
    pub fields: BTreeMap<String, String>,
    /// The exporting service.
    pub service: String,
}

impl Span {
    /// A field's value (`""` when absent).
    pub fn get(&self, field: &str) -> &str {
        self.fields.get(field).map_or("", String::as_str)
    }
}

/// The spans in rotel's detailed debug output, in the order printed.
pub fn parse_spans(text: &str) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut service = String::new();
    let mut current: Option<Span> = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(name) = l
            .split_once("service.name: Str(")
            .and_then(|(_, rest)| rest.strip_suffix(')'))
        {
            service = name.to_string();
        }
        if l.starts_with("Span #") {
            spans.extend(current.take());
            current = Some(Span {
                service: service.clone(),
                ..Span::default()
            });
            continue;
        }
        // Log records (`--debug-log logs`) are not spans: they end the one before them.
        if l.starts_with("ResourceSpans #")
            || l.starts_with("ScopeSpans #")
            || l.starts_with("ResourceLog #")
        {
            spans.extend(current.take());
            continue;
        }
        if let Some(span) = current.as_mut()
            && let Some((k, v)) = l.split_once(" : ").or_else(|| l.split_once(": "))
        {
            span.fields
                .entry(k.trim().to_string())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    spans.extend(current);
    spans
}

/// One trace as an indented tree (`KIND name [service] id`), children under parents;
/// spans whose parent is not in the trace are roots.
pub fn span_tree(spans: &[Span], trace_id: &str) -> String {
    let in_trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.get("Trace ID") == trace_id)
        .collect();
    let ids: Vec<&str> = in_trace.iter().map(|s| s.get("ID")).collect();
    let mut out = format!("trace {trace_id}\n");
    fn walk(out: &mut String, all: &[&Span], span: &Span, depth: usize) {
        let kind = span.get("Kind").trim_start_matches("SPAN_KIND_");
        out.push_str(&format!(
            "{:indent$}{kind} {:?} [{}] span {}\n",
            "",
            span.get("Name"),
            span.service,
            span.get("ID"),
            indent = 2 + depth * 2
        ));
        for child in all.iter().filter(|c| c.get("Parent ID") == span.get("ID")) {
            walk(out, all, child, depth + 1);
        }
    }
    for root in in_trace
        .iter()
        .filter(|s| !ids.contains(&s.get("Parent ID")))
    {
        walk(&mut out, &in_trace, root, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape rotel 0.x prints with `--debug-log-verbosity detailed` (abridged).
    const ROTEL: &str = "\
ResourceSpans #0
Resource attributes:
     -> service.name: Str(meshgate)
ScopeSpans #0
Span #0
    Trace ID       : 4bf92f3577b34da6a3ce929d0e0e4736
    Parent ID      : 00f067aa0ba902b7
    ID             : 1111111111111111
    Name           : GET
    Kind           : SPAN_KIND_SERVER
Span #1
    Trace ID       : 4bf92f3577b34da6a3ce929d0e0e4736
    Parent ID      : 1111111111111111
    ID             : 2222222222222222
    Name           : attempt 1 httpbin
    Kind           : SPAN_KIND_CLIENT
ResourceSpans #0
Resource attributes:
     -> service.name: Str(httpbin.default)
ScopeSpans #0
Span #0
    Trace ID       : 4bf92f3577b34da6a3ce929d0e0e4736
    Parent ID      : 2222222222222222
    ID             : 3333333333333333
    Name           : ingress
    Kind           : SPAN_KIND_SERVER
";

    #[test]
    fn spans_carry_the_service_of_their_resource_and_form_a_tree() {
        let spans = parse_spans(ROTEL);
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[1].service, "meshgate");
        assert_eq!(spans[2].service, "httpbin.default");
        assert_eq!(spans[2].get("Parent ID"), "2222222222222222");
        let tree = span_tree(&spans, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            tree,
            "trace 4bf92f3577b34da6a3ce929d0e0e4736\n\
             \x20 SERVER \"GET\" [meshgate] span 1111111111111111\n\
             \x20   CLIENT \"attempt 1 httpbin\" [meshgate] span 2222222222222222\n\
             \x20     SERVER \"ingress\" [httpbin.default] span 3333333333333333\n"
        );
    }
}
