//! Scenarios on what operators see, with the lab's real peers ([`crate::lab::telemetry`]):
//! Prometheus scraping the native gateway and answering Kiali's graph query, and rotel
//! collecting one trace from the gateway and httpbin's sidecar.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use super::{Lab, hosts, via};
use crate::lab::telemetry::GATEWAY_WORKLOAD;
use crate::telemetry::{Span, sample_value, span_tree};

/// How long Prometheus and rotel may take to show what was sent (a scrape is every
/// second, an export every 100 ms for the gateway and 5 s for Envoy; this only bounds
/// the poll).
const SETTLE: Duration = Duration::from_secs(30);
/// Requests sent for the edge count.
const REQUESTS: u64 = 20;

/// Polls `f` every 250 ms until it returns `Ok(Ok(value))`, for at most [`SETTLE`];
/// `Ok(Err(last))` is what it saw meanwhile, which the error names with `what`.
async fn settle<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Result<T, String>>>,
{
    let t0 = Instant::now();
    loop {
        let last = match f().await? {
            Ok(v) => return Ok(v),
            Err(last) => last,
        };
        ensure!(
            t0.elapsed() < SETTLE,
            "{what} not seen within {SETTLE:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The label selector of the gateway -> httpbin edge's successful mTLS requests, as the
/// gateway reports them (`reporter="source"`).
fn edge_selector() -> String {
    format!(
        "reporter=\"source\",source_workload=\"{GATEWAY_WORKLOAD}\",\
         source_workload_namespace=\"gateway-system\",destination_service_name=\"httpbin\",\
         response_code=\"200\",connection_security_policy=\"mutual_tls\""
    )
}

/// The sum of the samples of `metric` whose labels include every `key="value"` of
/// `selector`, in Prometheus text format.
fn counter_sum(text: &str, metric: &str, selector: &str) -> f64 {
    let wanted: Vec<&str> = selector.split(',').collect();
    text.lines()
        .filter_map(|l| l.strip_prefix(metric)?.strip_prefix('{'))
        .filter_map(|l| l.rsplit_once("} "))
        .filter(|(labels, _)| {
            let have: Vec<&str> = labels.split(',').collect();
            wanted.iter().all(|w| have.contains(w))
        })
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

/// Scenario 30: Prometheus scrapes the native gateway; the exact request count of the
/// gateway -> httpbin edge with `connection_security_policy="mutual_tls"`, and the edge in
/// the query Kiali's graph runs.
pub(super) async fn kiali_edge(lab: &mut Lab) -> anyhow::Result<String> {
    let selector = edge_selector();
    let total = format!("sum(istio_requests_total{{{selector}}})");
    // rate() sees an increase only between two scrapes of a series: Prometheus must hold
    // the counter as it is before the requests (one request first, so the series exists).
    let before = gateway_count(lab, &selector).await? + 1.0;
    get_httpbin(lab).await?;
    // The gateway counts a request when its response body has ended, which may trail
    // curl's exit: wait for it to be counted.
    settle("the gateway counting the first request", || async {
        let n = gateway_count(lab, &selector).await?;
        Ok(if n == before {
            Ok(())
        } else {
            Err(format!("{n}"))
        })
    })
    .await?;
    prometheus_counts(lab, &total, before).await?;
    for _ in 0..REQUESTS {
        get_httpbin(lab).await?;
    }
    let want = before + REQUESTS as f64;
    let counted = prometheus_counts(lab, &total, want).await?;
    ensure!(
        counted == want,
        "Prometheus counts {counted} for the edge, expected {before} + {REQUESTS}"
    );

    // Kiali's namespace graph (kiali/kiali graph/telemetry/istio/istio.go, traffic
    // originating inside the namespace) with its security appender's label.
    let kiali = "sum(rate(istio_requests_total{reporter=\"source\",\
         source_workload_namespace=\"gateway-system\"} [60s])) by (source_workload_namespace,\
         source_workload,source_canonical_service,source_canonical_revision,\
         destination_service_namespace,destination_service,destination_service_name,\
         destination_workload_namespace,destination_workload,destination_canonical_service,\
         destination_canonical_revision,request_protocol,response_code,grpc_response_status,\
         response_flags,connection_security_policy)";
    let edge = settle("the gateway -> httpbin edge in Kiali's query", || async {
        let rows = lab.promql(kiali).await?;
        let edge = rows.iter().find(|r| {
            let m = &r["metric"];
            m["destination_service_name"] == "httpbin"
                && m["response_code"] == "200"
                && sample_value(r) > 0.0
        });
        Ok(edge.cloned().ok_or_else(|| format!("{rows:?}")))
    })
    .await?;
    let m = &edge["metric"];
    for (label, value) in [
        ("source_workload", GATEWAY_WORKLOAD),
        ("source_canonical_service", GATEWAY_WORKLOAD),
        ("destination_service_namespace", "default"),
        ("destination_workload", "httpbin"),
        ("destination_canonical_service", "httpbin"),
        ("request_protocol", "http"),
        ("connection_security_policy", "mutual_tls"),
    ] {
        ensure!(
            m[label] == value,
            "{label} is {}, expected {value}: {edge}",
            m[label]
        );
    }
    Ok(format!(
        "Kiali edge gateway-system/{GATEWAY_WORKLOAD} -> default/httpbin (mutual_tls, {:.2} req/s); \
         Prometheus counted exactly +{REQUESTS} ({before} -> {counted})",
        sample_value(&edge)
    ))
}

/// `GET /get` on httpbin through the native gateway, expecting 200.
async fn get_httpbin(lab: &Lab) -> anyhow::Result<()> {
    let r = via(lab, &lab.gateway, hosts::HTTPBIN, "/get", &[]).await?;
    ensure!(r.status == Some(200), "request through the gateway: {r}");
    Ok(())
}

/// The edge's request count on the gateway's own `/metrics`.
async fn gateway_count(lab: &Lab, selector: &str) -> anyhow::Result<f64> {
    let text = lab.gateway_metrics().await?;
    Ok(counter_sum(&text, "istio_requests_total", selector))
}

/// Waits until Prometheus's value of `query` reaches `want`; returns what it shows then.
async fn prometheus_counts(lab: &Lab, query: &str, want: f64) -> anyhow::Result<f64> {
    settle(&format!("Prometheus counting {want}"), || async {
        let rows = lab.promql(query).await?;
        let n = rows.first().map(sample_value).unwrap_or(0.0);
        Ok(if n >= want {
            Ok(n)
        } else {
            Err(format!("{n}"))
        })
    })
    .await
}

/// A trace id the gateway samples at Istio's default 1%: parent-based sampling does not
/// trust an edge client's flag, so the ratio sampler decides by the trace id's low 64 bits
/// (sampled when below 1% of their range); `00` as their top byte puts them below it.
fn sampled_trace_id() -> String {
    format!(
        "{:016x}00{:014x}",
        fastrand::u64(..),
        fastrand::u64(..) >> 8
    )
}

/// Scenario 31: one trace across the gateway and httpbin's sidecar: the gateway's SERVER
/// span (child of the client's `traceparent`, same trace id), its CLIENT span, and the
/// sidecar's span as the CLIENT span's child.
pub(super) async fn one_trace(lab: &mut Lab) -> anyhow::Result<String> {
    let trace = sampled_trace_id();
    let parent = format!("{:016x}", fastrand::u64(1..));
    let traceparent = format!("traceparent: 00-{trace}-{parent}-01");
    let r = via(
        lab,
        &lab.gateway,
        hosts::HTTPBIN,
        "/get",
        &["-H", &traceparent],
    )
    .await?;
    ensure!(r.status == Some(200), "request through the gateway: {r}");
    // httpbin's own view: the sidecar passed the trace on with its span as the parent.
    let seen = r
        .echoed_header("Traceparent")
        .with_context(|| format!("httpbin saw no traceparent: {}", r.body))?;
    ensure!(
        seen.starts_with(&format!("00-{trace}-")),
        "httpbin saw traceparent {seen}, not trace {trace}"
    );

    let gateway_service = format!("{GATEWAY_WORKLOAD}.gateway-system");
    let sidecar_service = format!("{}.default", lab.httpbin.service());
    let (spans, [server, client, sidecar]) = settle("the trace's three spans in rotel", || async {
        let spans = lab.spans()?;
        let found = three_spans(&spans, &trace, &parent, &gateway_service, &sidecar_service);
        Ok(match found {
            Some(three) => Ok((spans, three)),
            None => Err(span_tree(&spans, &trace)),
        })
    })
    .await?;
    ensure!(
        seen.split('-').nth(2) == Some(sidecar.get("ID")),
        "httpbin's parent span {seen} is not the sidecar's span {}",
        sidecar.get("ID")
    );
    let tree = span_tree(&spans, &trace);
    tracing_tree_to_log(lab, &tree)?;
    Ok(format!(
        "trace {trace} (client's id kept): SERVER {} > CLIENT {} [{gateway_service}] > SERVER {} [{sidecar_service}]",
        server.get("ID"),
        client.get("ID"),
        sidecar.get("ID")
    ))
}

/// The gateway's SERVER span (parent: the client's span), its CLIENT span, and the
/// sidecar's SERVER span under the CLIENT span, if all three have arrived.
fn three_spans(
    spans: &[Span],
    trace: &str,
    parent: &str,
    gateway: &str,
    sidecar: &str,
) -> Option<[Span; 3]> {
    let find = |service: &str, kind: &str, parent: &str| {
        spans
            .iter()
            .find(|s| {
                s.get("Trace ID") == trace
                    && s.service == service
                    && s.get("Kind") == kind
                    && s.get("Parent ID") == parent
            })
            .cloned()
    };
    let server = find(gateway, "SPAN_KIND_SERVER", parent)?;
    let client = find(gateway, "SPAN_KIND_CLIENT", server.get("ID"))?;
    let inbound = find(sidecar, "SPAN_KIND_SERVER", client.get("ID"))?;
    Some([server, client, inbound])
}

/// Keeps the span tree beside the collector's log, for whoever reads the lab's logs.
fn tracing_tree_to_log(lab: &Lab, tree: &str) -> anyhow::Result<()> {
    let path = lab.istiod.dir.join("trace-31.txt");
    std::fs::write(&path, tree).with_context(|| format!("writing {}", path.display()))
}
