//! OTLP tracing: one SERVER span per request and one CLIENT span per upstream attempt,
//! exported over OTLP/gRPC (tonic) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Spans are made with the OpenTelemetry SDK directly rather than through
//! `tracing-opentelemetry`: a request's SERVER span starts when its headers arrive and ends
//! when its response body ends (in the body's completion record), which is not the scope
//! of any `tracing` span, and the request path then pays nothing for a tracing layer when
//! tracing is off.
//!
//! Context: W3C `traceparent` and B3 (`b3` single header, or `X-B3-*`) are read from the
//! request (traceparent first); the CLIENT span's context is sent upstream in both forms.
//! Sampling: `OTEL_TRACES_SAMPLER` / `_ARG` as the SDK reads them; unset, parent-based 1%
//! (Istio's default), where the parent's decision is honoured only from a trusted hop
//! (`--num-trusted-proxies` > 0): an edge client's `sampled` flag keeps its trace id but
//! cannot force (or veto) sampling. As Envoy does, a request carrying `x-client-trace-id`
//! is traced whatever the ratio (`--trace-client-sampling` percent of them, Envoy's
//! `client_sampling`, default 100), its value recorded as the span's
//! `guid:x-client-trace-id`: the header is the documented way for a client to ask for a
//! trace, and operators who do not want it honoured at the edge set 0.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::Link;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    Sampler, SamplingResult, SdkTracer, SdkTracerProvider, ShouldSample, Span,
};

/// The OTLP endpoint variable: unset means no tracing.
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Sampling ratio for root spans when `OTEL_TRACES_SAMPLER` is unset (Istio's 1%).
pub const DEFAULT_RATIO: f64 = 0.01;
/// `service.name` when `OTEL_SERVICE_NAME` is unset.
pub const DEFAULT_SERVICE_NAME: &str = "meshgate";

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter for {endpoint}: {source}")]
pub struct TracingError {
    /// The configured endpoint.
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// The process's tracer; cheap to clone.
#[derive(Clone)]
pub struct Tracing {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    /// Incoming sampling decisions come from a trusted hop.
    trusted_parents: bool,
    /// Share (0 to 1) of `x-client-trace-id` requests forced into sampling; 0 when
    /// `OTEL_TRACES_SAMPLER` chose another sampler (only ours honours it).
    client_sampling: f64,
    /// The tags Istio's proxies put on every span (`node_id`, `istio.*`, `component`):
    /// Kiali finds a workload's traces by them.
    tags: std::sync::Arc<[KeyValue]>,
}

/// The tags Istio's Envoy puts on each of a gateway's spans: `component`, the node id
/// (Kiali's workload filter splits it on `~`) and Istio's custom tags.
pub fn istio_tags(node: &crate::observe::peer_metadata::NodeMetadata) -> Vec<KeyValue> {
    let w = &node.workload;
    // Shared strings: each span's copy of a tag is a reference count, not an allocation.
    let shared = |k: &'static str, v: &str| {
        let v: std::sync::Arc<str> = v.into();
        KeyValue::new(k, opentelemetry::Value::String(v.into()))
    };
    vec![
        KeyValue::new("component", "proxy"),
        shared("node_id", &node.node_id()),
        shared("istio.canonical_service", &w.canonical_service),
        shared("istio.canonical_revision", &w.canonical_revision),
        shared("istio.mesh_id", &node.mesh_id),
        shared("istio.namespace", &w.namespace),
        shared("istio.cluster_id", &w.cluster),
    ]
}

/// A request method as a shared string: the standard ones are static (no allocation).
fn method_value(method: &str) -> opentelemetry::StringValue {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    match STANDARD.iter().find(|m| **m == method) {
        Some(m) => (*m).into(),
        None => method.to_string().into(),
    }
}

/// What the end of a request tells its SERVER span, as Envoy's tracer tags it.
pub struct SpanEnd<'a> {
    /// The matched route's id.
    pub route: Option<&'a str>,
    /// The status sent (0: none).
    pub status: u16,
    /// Envoy's response flags, if any.
    pub flag: Option<&'a str>,
    /// `x-request-id`.
    pub request_id: &'a str,
    /// Istio's operation name, `<service host>:<port>/*`; `None`: no destination.
    pub operation: Option<String>,
    /// Envoy's cluster name of the destination.
    pub upstream_cluster: Option<String>,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: &'static str,
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// Request and response sizes, body bytes.
    pub sizes: (u64, u64),
}

/// Marks a remote parent whose sampling decision is not trusted (a Context value, never
/// propagated).
#[derive(Debug, Clone, Copy)]
struct UntrustedParent;

/// Marks a request whose client asked for a trace with `x-client-trace-id` (and drew it).
#[derive(Debug, Clone, Copy)]
struct ClientForced;

/// The header a client asks for a trace with (Envoy's).
const CLIENT_TRACE_ID: &str = "x-client-trace-id";
/// Longest `x-client-trace-id` value recorded on a span.
const MAX_CLIENT_TRACE_ID: usize = 128;

/// Parent-based ratio sampling that decides by trace id alone for untrusted parents, and
/// samples requests a client forced with `x-client-trace-id`.
#[derive(Debug, Clone)]
struct EdgeSampler {
    ratio: f64,
}

impl ShouldSample for EdgeSampler {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let ratio = Sampler::TraceIdRatioBased(self.ratio);
        let sampler = if parent.is_some_and(|c| c.get::<ClientForced>().is_some()) {
            Sampler::AlwaysOn
        } else if parent.is_some_and(|c| c.get::<UntrustedParent>().is_some()) {
            ratio
        } else {
            Sampler::ParentBased(Box::new(ratio))
        };
        sampler.should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

/// Who the gateway is in its traces: `service.name` when `OTEL_SERVICE_NAME` is unset,
/// and the pod's `k8s.pod.name` / `k8s.namespace.name` unless `OTEL_RESOURCE_ATTRIBUTES`
/// names them.
#[derive(Debug, Clone, Default)]
pub struct TraceResource {
    /// `<workload>.<namespace>`, as Istio names a proxy's service.
    pub service: Option<String>,
    /// The pod's name.
    pub pod: Option<String>,
    /// The pod's namespace.
    pub namespace: Option<String>,
}

impl TraceResource {
    /// The resource, the environment's attributes first.
    pub fn build(&self) -> Resource {
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            let name = self.service.clone();
            resource = resource.with_service_name(name.unwrap_or(DEFAULT_SERVICE_NAME.into()));
        }
        let from_env = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
        for (key, value) in [
            ("k8s.pod.name", &self.pod),
            ("k8s.namespace.name", &self.namespace),
        ] {
            if let Some(v) = value
                && !from_env.contains(&format!("{key}="))
            {
                resource = resource.with_attribute(KeyValue::new(key, v.clone()));
            }
        }
        resource.build()
    }
}

/// The edge sampler's ratio when the environment leaves sampling parent-based (unset:
/// Istio's 1%; `parentbased_*`: as configured), so an untrusted parent's flag is never
/// obeyed; `None` for any other sampler, which then decides alone.
fn edge_ratio() -> Option<f64> {
    let arg = || {
        std::env::var("OTEL_TRACES_SAMPLER_ARG")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|r| (0.0..=1.0).contains(r))
            .unwrap_or(1.0)
    };
    match std::env::var("OTEL_TRACES_SAMPLER").ok().as_deref() {
        None | Some("") => Some(DEFAULT_RATIO),
        Some("parentbased_traceidratio") => Some(arg()),
        Some("parentbased_always_on") => Some(1.0),
        Some("parentbased_always_off") => Some(0.0),
        Some(_) => None,
    }
}

impl Tracing {
    /// Tracing as the `OTEL_*` environment configures it; `None` without an endpoint.
    /// `trusted_parents`: incoming sampling decisions come from a trusted hop;
    /// `client_sampling_percent`: how many `x-client-trace-id` requests are forced;
    /// `who`: the resource's defaults. Needs a Tokio runtime (the exporter's gRPC channel).
    pub fn from_env(
        trusted_parents: bool,
        client_sampling_percent: f64,
        who: &TraceResource,
        tags: Vec<KeyValue>,
    ) -> Result<Option<Tracing>, TracingError> {
        let Some(endpoint) = std::env::var(ENDPOINT_ENV).ok().filter(|e| !e.is_empty()) else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|source| TracingError { endpoint, source })?;
        let mut builder = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(who.build());
        let ratio = edge_ratio();
        let edge_sampler = ratio.is_some();
        if let Some(ratio) = ratio {
            builder = builder.with_sampler(EdgeSampler { ratio });
        }
        let provider = builder.build();
        Ok(Some(Tracing {
            tracer: provider.tracer("meshgate"),
            provider,
            trusted_parents,
            client_sampling: if edge_sampler {
                client_sampling_percent / 100.0
            } else {
                0.0
            },
            tags: tags.into(),
        }))
    }

    /// Exports what is buffered (at shutdown).
    pub fn shutdown(&self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(5));
    }

    /// Starts the SERVER span of a request, child of the context its headers carry.
    pub fn server_span(&self, method: &str, headers: &HeaderMap) -> RequestSpan {
        let mut parent = extract(headers)
            .map(|sc| {
                let cx = Context::new().with_remote_span_context(sc);
                if self.trusted_parents {
                    cx
                } else {
                    cx.with_value(UntrustedParent)
                }
            })
            .unwrap_or_default();
        let method = method_value(method);
        let mut attributes = Vec::with_capacity(self.tags.len() + 3);
        attributes.push(KeyValue::new("http.request.method", method.clone()));
        attributes.push(KeyValue::new("http.method", method.clone()));
        attributes.extend(self.tags.iter().cloned());
        if let Some(id) = client_trace_id(headers)
            && fastrand::f64() < self.client_sampling
        {
            parent = parent.with_value(ClientForced);
            attributes.push(KeyValue::new("guid:x-client-trace-id", id));
        }
        let span = self
            .tracer
            // Named at the end, once the destination is known (`finish`).
            .span_builder("ingress")
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        RequestSpan {
            cx: Context::new().with_remote_span_context(span.span_context().clone()),
            span,
        }
    }
}

/// A non-empty `x-client-trace-id`, cut to [`MAX_CLIENT_TRACE_ID`] characters.
fn client_trace_id(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(CLIENT_TRACE_ID)?.to_str().ok()?.trim();
    (!v.is_empty()).then(|| v.chars().take(MAX_CLIENT_TRACE_ID).collect())
}

/// A request's SERVER span, and the context its CLIENT spans descend from.
pub struct RequestSpan {
    span: Span,
    cx: Context,
}

impl RequestSpan {
    /// `(trace_id, span_id)` in hex, for the access log.
    pub fn ids(&self) -> (String, String) {
        let sc = self.span.span_context();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    }

    /// Whether the request's trace is sampled (exported).
    pub fn sampled(&self) -> bool {
        self.span.span_context().is_sampled()
    }

    /// Starts the CLIENT span of one attempt and writes its context into the upstream
    /// request's headers (W3C and B3).
    pub fn attempt(
        &self,
        t: &Tracing,
        backend: &str,
        endpoint: &str,
        n: u32,
        headers: &mut HeaderMap,
    ) -> Span {
        let span = t
            .tracer
            .span_builder(format!("attempt {n} {backend}"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("server.address", endpoint.to_string()),
                KeyValue::new("meshgate.backend", backend.to_string()),
                KeyValue::new("meshgate.attempt", i64::from(n)),
            ])
            .start_with_context(&t.tracer, &self.cx);
        inject(span.span_context(), headers);
        span
    }

    /// Ends the SERVER span with the response's status (0: none was sent), named and
    /// tagged as Istio's gateways do: `<service host>:<port>/*` (Istio's route
    /// decorator; `ingress` without a destination), `http.status_code`,
    /// `guid:x-request-id`, `upstream_cluster`, `response_flags`, `error`.
    /// `end` is only made for a span that records (a sampled one).
    pub fn finish<'a>(mut self, end: impl FnOnce() -> SpanEnd<'a>) {
        if !self.span.is_recording() {
            self.span.end();
            return;
        }
        let end = end();
        let SpanEnd {
            route,
            status,
            flag,
            ..
        } = end;
        self.tag_as_envoy(end);
        if let Some(r) = route {
            self.span
                .set_attribute(KeyValue::new("http.route", r.to_string()));
        }
        // 0: no response was sent (the client went away first); there is no status
        // code to report, and the span is an error, as Envoy's is.
        if status != 0 {
            self.span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(f) = flag {
            self.span
                .set_attribute(KeyValue::new("meshgate.response_flags", f.to_string()));
        }
        if status == 0 || status >= 500 {
            self.span
                .set_status(Status::error(flag.unwrap_or("").to_string()));
        }
        self.span.end();
    }
}

impl RequestSpan {
    fn tag_as_envoy(&mut self, end: SpanEnd<'_>) {
        let s = &mut self.span;
        s.update_name(end.operation.unwrap_or_else(|| "ingress".to_string()));
        if end.status != 0 {
            s.set_attribute(KeyValue::new("http.status_code", end.status.to_string()));
        }
        s.set_attribute(KeyValue::new(
            "guid:x-request-id",
            end.request_id.to_string(),
        ));
        s.set_attribute(KeyValue::new(
            "response_flags",
            end.flag.unwrap_or("-").to_string(),
        ));
        if let Some(c) = end.upstream_cluster {
            s.set_attribute(KeyValue::new("upstream_cluster.name", c.clone()));
            s.set_attribute(KeyValue::new("upstream_cluster", c));
        }
        s.set_attribute(KeyValue::new("http.protocol", end.protocol));
        s.set_attribute(KeyValue::new("peer.address", end.peer.ip().to_string()));
        s.set_attribute(KeyValue::new("request_size", end.sizes.0 as i64));
        s.set_attribute(KeyValue::new("response_size", end.sizes.1 as i64));
        if end.status == 0 || end.status >= 500 {
            s.set_attribute(KeyValue::new("error", "true"));
        }
    }
}

/// Ends an attempt's CLIENT span with its outcome (a status, or Envoy's flag).
pub fn end_attempt(mut span: Span, status: Option<u16>, flag: &str) {
    match status {
        Some(s) => {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(s)));
            if s >= 500 {
                span.set_status(Status::error(String::new()));
            }
        }
        None => {
            span.set_attribute(KeyValue::new("meshgate.response_flags", flag.to_string()));
            span.set_status(Status::error(flag.to_string()));
        }
    }
    span.end();
}

/// The remote parent in `traceparent`, else in B3; `None` when absent or malformed.
pub fn extract(h: &HeaderMap) -> Option<SpanContext> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    if let Some(sc) = get("traceparent").and_then(parse_traceparent) {
        return Some(with_trace_state(sc, h));
    }
    if let Some(sc) = get("b3").and_then(parse_b3_single) {
        return Some(sc);
    }
    let trace = get("x-b3-traceid")?;
    let span = get("x-b3-spanid")?;
    let sampled =
        matches!(get("x-b3-sampled"), Some("1" | "true")) || get("x-b3-flags") == Some("1");
    remote(trace, span, sampled)
}

/// `sc` carrying the request's `tracestate` (every line, in order), which W3C Trace
/// Context has a participant pass on with its `traceparent`; an invalid one is dropped,
/// as the spec allows.
fn with_trace_state(sc: SpanContext, h: &HeaderMap) -> SpanContext {
    let lines: Vec<&str> = h
        .get_all("tracestate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if lines.is_empty() {
        return sc;
    }
    let Ok(ts) = lines.join(",").parse::<TraceState>() else {
        return sc;
    };
    SpanContext::new(sc.trace_id(), sc.span_id(), sc.trace_flags(), true, ts)
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>` (W3C Trace Context level 1;
/// later versions may append fields after the flags).
fn parse_traceparent(v: &str) -> Option<SpanContext> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    remote(trace, span, flags & 1 == 1)
}

/// `<trace id>-<span id>[-<sampling>[-<parent span id>]]`, or a bare sampling decision
/// (which carries no parent).
fn parse_b3_single(v: &str) -> Option<SpanContext> {
    let mut parts = v.trim().split('-');
    let (trace, span) = (parts.next()?, parts.next()?);
    let sampled = matches!(parts.next(), Some("1" | "d"));
    remote(trace, span, sampled)
}

fn remote(trace: &str, span: &str, sampled: bool) -> Option<SpanContext> {
    if !(trace.len() == 16 || trace.len() == 32) || span.len() != 16 {
        return None;
    }
    // A 64-bit B3 trace id is the low half of a 128-bit one.
    let trace = TraceId::from_hex(&format!("{trace:0>32}")).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(
        trace,
        span,
        flags,
        true,
        TraceState::default(),
    ))
}

/// Writes `sc` as `traceparent` and as B3 multi headers, replacing what the client sent.
pub fn inject(sc: &SpanContext, h: &mut HeaderMap) {
    for n in [
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
    ] {
        h.remove(n);
    }
    let sampled = sc.is_sampled();
    let tp = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    let pairs = [
        ("traceparent", tp),
        ("tracestate", sc.trace_state().header()),
        ("x-b3-traceid", sc.trace_id().to_string()),
        ("x-b3-spanid", sc.span_id().to_string()),
        ("x-b3-sampled", if sampled { "1" } else { "0" }.to_string()),
    ];
    for (n, v) in pairs {
        if v.is_empty() {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn traceparent_gives_the_remote_parent_and_its_sampled_flag() {
        let h = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]);
        let sc = extract(&h).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
    }

    #[test]
    fn malformed_traceparent_falls_back_to_b3() {
        let h = headers(&[
            ("traceparent", "00-zz-00f067aa0ba902b7-01"),
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]);
        let sc = extract(&h).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "0000000000000000463ac35c9f6413ad"
        );
        assert!(sc.is_sampled());
    }

    #[test]
    fn b3_single_header_and_unsampled_decisions() {
        let h = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")]);
        let sc = extract(&h).unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert!(!sc.is_sampled());
        assert!(extract(&headers(&[("b3", "0")])).is_none());
        assert!(extract(&HeaderMap::new()).is_none());
    }

    #[test]
    fn inject_writes_w3c_and_b3_and_drops_the_clients() {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let mut h = headers(&[("b3", "1"), ("x-b3-parentspanid", "a2fb4a1d1a96d312")]);
        inject(&sc, &mut h);
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(h["x-b3-traceid"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(h["x-b3-sampled"], "1");
        assert!(h.get("b3").is_none() && h.get("x-b3-parentspanid").is_none());
    }

    #[test]
    fn tracestate_is_carried_from_the_client_to_the_upstream() {
        let mut h = headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=abc,other=1"),
        ]);
        let sc = extract(&h).unwrap();
        assert_eq!(sc.trace_state().header(), "vendor=abc,other=1");
        inject(&sc, &mut h);
        assert_eq!(h["tracestate"], "vendor=abc,other=1");
        // An invalid one is dropped, the traceparent still read.
        let h = headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "no equals sign"),
        ]);
        assert_eq!(extract(&h).unwrap().trace_state().header(), "");
    }

    fn decide(sampled: bool, trusted: bool, trace: u128) -> bool {
        let sc = SpanContext::new(
            TraceId::from_bytes(trace.to_be_bytes()),
            SpanId::from_bytes([1; 8]),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        );
        let mut cx = Context::new().with_remote_span_context(sc);
        if !trusted {
            cx = cx.with_value(UntrustedParent);
        }
        let r = EdgeSampler {
            ratio: DEFAULT_RATIO,
        }
        .should_sample(
            Some(&cx),
            TraceId::from_bytes(trace.to_be_bytes()),
            "GET",
            &SpanKind::Server,
            &[],
            &[],
        );
        r.decision == opentelemetry_sdk::trace::SamplingDecision::RecordAndSample
    }

    #[test]
    fn a_client_trace_id_forces_sampling_even_of_an_untrusted_unsampled_parent() {
        let rejected = u128::MAX;
        let sc = SpanContext::new(
            TraceId::from_bytes(rejected.to_be_bytes()),
            SpanId::from_bytes([1; 8]),
            TraceFlags::default(),
            true,
            TraceState::default(),
        );
        for cx in [
            Context::new()
                .with_remote_span_context(sc)
                .with_value(UntrustedParent),
            Context::new(),
        ] {
            let r = EdgeSampler {
                ratio: DEFAULT_RATIO,
            }
            .should_sample(
                Some(&cx.with_value(ClientForced)),
                TraceId::from_bytes(rejected.to_be_bytes()),
                "GET",
                &SpanKind::Server,
                &[],
                &[],
            );
            assert_eq!(
                r.decision,
                opentelemetry_sdk::trace::SamplingDecision::RecordAndSample
            );
        }
    }

    #[test]
    fn a_client_trace_id_is_read_trimmed_capped_and_empty_is_none() {
        let long = "a".repeat(500);
        assert_eq!(
            client_trace_id(&headers(&[("x-client-trace-id", " abc ")])).as_deref(),
            Some("abc")
        );
        assert_eq!(
            client_trace_id(&headers(&[("x-client-trace-id", &long)])).map(|v| v.len()),
            Some(MAX_CLIENT_TRACE_ID)
        );
        assert_eq!(
            client_trace_id(&headers(&[("x-client-trace-id", "")])),
            None
        );
        assert_eq!(client_trace_id(&headers(&[])), None);
    }

    #[test]
    fn an_untrusted_sampled_flag_neither_forces_nor_vetoes_sampling() {
        // A trace id the 1% ratio rejects, and one it accepts.
        let (rejected, accepted) = (u128::MAX, 1);
        assert!(
            decide(true, true, rejected),
            "a trusted hop's decision is kept"
        );
        assert!(!decide(false, true, accepted), "a trusted hop's no is kept");
        assert!(
            !decide(true, false, rejected),
            "an edge client cannot force sampling"
        );
        assert!(decide(false, false, accepted), "nor veto the ratio");
    }
}
