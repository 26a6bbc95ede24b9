//! What operators see, checked with real peers: Istio's standard metrics scraped by a real
//! Prometheus (Debian's) and queried with the PromQL Kiali's graph uses, label cardinality
//! under hostile paths and hosts, and the access log's Istio/Envoy fields and filter.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use e2e::telemetry;
use support::*;

/// The gateway's own workload, as the Istio metrics' source.
const SOURCE_ARGS: &[&str] = &[
    "--pod-namespace",
    "istio-ingress",
    "--service-account",
    "meshgate",
    "--workload-name",
    "meshgate",
    "--pod-labels",
    "app=meshgate,version=v2,service.istio.io/canonical-name=meshgate-gw",
];

/// A route to httpbin for `hosts`, and httpbin as a Service whose one endpoint's Pod
/// belongs to the Deployment `httpbin` (ReplicaSet `httpbin-5d8f9c`) and runs as the
/// service account `httpbin`.
fn config(port: u16, httpbin_port: u16, hosts: &str) -> String {
    docs(&[
        &http_gateway(port),
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: httpbin, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: edge}}]\n  hostnames: [{hosts}]\n  \
             rules:\n    - backendRefs: [{{name: httpbin, port: 80}}]\n"
        ),
        &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: httpbin, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: {httpbin_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: httpbin-1
  namespace: default
  labels: {{kubernetes.io/service-name: httpbin}}
addressType: IPv4
ports: [{{name: http, port: {httpbin_port}}}]
endpoints:
  - addresses: [127.0.0.1]
    targetRef: {{kind: Pod, name: httpbin-5d8f9c-x7k2p, namespace: default}}
---
apiVersion: v1
kind: Pod
metadata:
  name: httpbin-5d8f9c-x7k2p
  namespace: default
  labels: {{app: httpbin, version: v1, pod-template-hash: 5d8f9c}}
  ownerReferences:
    - {{apiVersion: apps/v1, kind: ReplicaSet, name: httpbin-5d8f9c, uid: u1, controller: true}}
spec:
  serviceAccountName: httpbin
  containers: [{{name: httpbin, image: httpbin}}]
"#
        ),
    ])
}

/// Debian's Prometheus, scraping the gateway's admin `/metrics` every second.
struct Prometheus {
    port: u16,
    _dir: tempfile::TempDir,
    _process: ChildGuard,
}

/// Kills the child on drop (Prometheus exits cleanly on SIGKILL for a test's TSDB).
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_bin() -> PathBuf {
    let p = PathBuf::from(telemetry::PROMETHEUS);
    assert!(
        p.exists(),
        "prometheus not found (Debian package `prometheus`; run scripts/install-tools)"
    );
    p
}

impl Prometheus {
    /// Scrapes `path` on `target`.
    fn scrape_at(target: std::net::SocketAddr, path: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        let config = telemetry::prometheus_config_at("meshgate", target, path);
        std::fs::write(&cfg, config).unwrap();
        let port = free_port();
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(prometheus_bin())
            .args(telemetry::prometheus_args(&cfg, dir.path(), listen))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("spawn prometheus");
        let p = Prometheus {
            port,
            _dir: dir,
            _process: ChildGuard(child),
        };
        wait_for("prometheus ready", Duration::from_secs(30), || {
            curl(&[&format!("http://127.0.0.1:{port}/-/ready")]).status == 200
        });
        p
    }

    /// Evaluates `promql` through the HTTP API; the result vector.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let r = curl(&[
            "--get",
            "--data-urlencode",
            &format!("query={promql}"),
            &format!("http://127.0.0.1:{}/api/v1/query", self.port),
        ]);
        assert_eq!(r.status, 200, "{r:?}");
        telemetry::query_result(&r.body).unwrap()
    }
}

fn value(sample: &serde_json::Value) -> f64 {
    telemetry::sample_value(sample)
}

#[test]
fn kiali_edge_query_through_prometheus_shows_gateway_to_httpbin_with_exact_counts() {
    let hb = Httpbin::start();
    let port = free_port();
    // Prometheus scrapes the metrics-only server where Istio's proxies expose theirs.
    let stats = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let stats_arg = stats.to_string();
    let args = [SOURCE_ARGS, &["--stats-addr", &stats_arg]].concat();
    let _gw = Gateway::start_with(&config(port, hb.port, "httpbin.example.com"), &args);
    // Nothing of the admin API but the metrics is served there.
    let other = curl(&[&format!("http://{stats}/config_dump")]);
    assert_eq!(other.status, 404, "{other:?}");
    let post = curl(&["-X", "POST", &format!("http://{stats}/stats/prometheus")]);
    assert_eq!(post.status, 405, "{post:?}");
    let prom = Prometheus::scrape_at(stats, "/stats/prometheus");
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let total = "sum(istio_requests_total{reporter=\"source\",source_workload=\"meshgate\"})";
    // The edge's first request, scraped before the rest: rate() sees them as an increase
    // (a series' first sample is its start, as for Kiali).
    let r = curl(&["-H", "Host: httpbin.example.com", &url("/get")]);
    assert_eq!(r.status, 200, "{r:?}");
    wait_for(
        "Prometheus to scrape the first request",
        Duration::from_secs(30),
        || prom.query(total).first().map(value) == Some(1.0),
    );
    for _ in 0..6 {
        let r = curl(&["-H", "Host: httpbin.example.com", &url("/get")]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    for _ in 0..3 {
        let r = curl(&["-H", "Host: httpbin.example.com", &url("/status/503")]);
        assert_eq!(r.status, 503, "{r:?}");
    }
    let r = curl(&["-H", "Host: nowhere.example.com", &url("/get")]);
    assert_eq!(error_code(&r), "NR");

    // Exact counts: the counters themselves, by the labels Kiali groups an edge by.
    let counts = "sum(istio_requests_total{reporter=\"source\",source_workload=\"meshgate\"}) \
                  by (source_workload_namespace, source_canonical_service, \
                  destination_service_name, destination_workload, destination_canonical_revision, \
                  response_code, response_flags, connection_security_policy)";
    let mut rows = Vec::new();
    wait_for(
        "Prometheus to scrape all 11 requests",
        Duration::from_secs(30),
        || {
            rows = prom.query(counts);
            rows.iter().map(value).sum::<f64>() == 11.0
        },
    );
    let mut seen = BTreeSet::new();
    for row in &rows {
        let m = &row["metric"];
        assert_eq!(m["source_workload_namespace"], "istio-ingress", "{row}");
        assert_eq!(m["source_canonical_service"], "meshgate-gw", "{row}");
        assert_eq!(m["connection_security_policy"], "none", "{row}");
        seen.insert((
            m["destination_service_name"].as_str().unwrap().to_string(),
            m["destination_workload"].as_str().unwrap().to_string(),
            m["response_code"].as_str().unwrap().to_string(),
            m["response_flags"].as_str().unwrap().to_string(),
            value(row) as u64,
        ));
    }
    let want: BTreeSet<_> = [
        ("httpbin", "httpbin", "200", "-", 7),
        ("httpbin", "httpbin", "503", "-", 3),
        ("unknown", "unknown", "404", "NR", 1),
    ]
    .into_iter()
    .map(|(s, w, c, f, n)| (s.into(), w.into(), c.into(), f.into(), n))
    .collect();
    assert_eq!(seen, want);
    let httpbin_revision = rows
        .iter()
        .find(|r| r["metric"]["destination_service_name"] == "httpbin")
        .map(|r| r["metric"]["destination_canonical_revision"].clone());
    assert_eq!(httpbin_revision, Some("v1".into()));
    // An unknown destination's revision is Istio's default, `latest`.
    let unknown_revision = rows
        .iter()
        .find(|r| r["metric"]["destination_service_name"] == "unknown")
        .map(|r| r["metric"]["destination_canonical_revision"].clone());
    assert_eq!(unknown_revision, Some("latest".into()));

    // The query Kiali's graph runs for the gateway's outgoing edges.
    let kiali = "sum(rate(istio_requests_total{reporter=\"source\",source_workload=\"meshgate\",\
                 source_workload_namespace=\"istio-ingress\"}[1m])) \
                 by (destination_service_name, destination_service_namespace, connection_security_policy)";
    // rate() needs two scrapes of the series inside the window.
    let mut edges = Vec::new();
    wait_for(
        "the gateway -> httpbin edge in Kiali's query",
        Duration::from_secs(30),
        || {
            edges = prom.query(kiali);
            edges
                .iter()
                .any(|e| e["metric"]["destination_service_name"] == "httpbin")
        },
    );
    let httpbin: Vec<_> = edges
        .iter()
        .filter(|e| e["metric"]["destination_service_name"] == "httpbin")
        .collect();
    assert_eq!(httpbin.len(), 1, "{edges:?}");
    assert_eq!(
        httpbin[0]["metric"]["destination_service_namespace"],
        "default"
    );
    assert_eq!(httpbin[0]["metric"]["connection_security_policy"], "none");
    assert!(value(httpbin[0]) > 0.0, "{edges:?}");

    // The duration histogram has Istio's buckets, and every request landed in +Inf.
    let inf = prom
        .query("sum(istio_request_duration_milliseconds_bucket{reporter=\"source\",le=\"+Inf\"})");
    assert_eq!(value(&inf[0]), 11.0);
    let buckets = prom.query("count(istio_request_duration_milliseconds_bucket{destination_service_name=\"httpbin\",response_code=\"200\"}) by (le)");
    assert_eq!(buckets.len(), 20, "19 Istio buckets and +Inf: {buckets:?}");
    // Response sizes: 7 bodies of /get, so the sum is more than 7 x headers.
    let bytes = prom.query("sum(istio_response_bytes_count{destination_service_name=\"httpbin\"})");
    assert_eq!(value(&bytes[0]), 10.0);
}

/// Sends `n` HTTP/1.1 HEAD requests on one keep-alive connection (pipelined by a writer
/// thread) and returns how many responses came back.
fn pipeline(port: u16, requests: Vec<String>) -> usize {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let n = requests.len();
    let writer = std::thread::spawn(move || {
        for r in requests {
            w.write_all(r.as_bytes()).unwrap();
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let count = |b: &[u8]| b.windows(9).filter(|w| *w == b"HTTP/1.1 ").count();
    while count(&got) < n {
        let k = s.read(&mut buf).expect("read responses");
        assert!(k > 0, "connection closed after {} responses", count(&got));
        got.extend_from_slice(&buf[..k]);
    }
    writer.join().unwrap();
    count(&got)
}

fn istio_series(gw: &Gateway) -> usize {
    gw.admin_get("/metrics")
        .1
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .count()
}

#[test]
fn istio_metrics_off_records_no_istio_series_and_keeps_the_gateways_own() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start_with(
        &config(port, hb.port, "httpbin.example.com"),
        &["--istio-metrics", "off"],
    );
    let r = curl(&[
        "-H",
        "Host: httpbin.example.com",
        &format!("http://127.0.0.1:{port}/get"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    gw.wait_metric("gateway_requests_total", 1.0);
    let text = gw.admin_get("/metrics").1;
    assert!(
        !text.lines().any(|l| l.starts_with("istio_")),
        "istio_* exposed with --istio-metrics off:\n{text}"
    );
}

#[test]
fn ten_thousand_random_paths_and_hosts_add_no_istio_series() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start_with(
        &config(port, hb.port, "\"*.example.com\""),
        &["--access-log", "off"],
    );
    let head = |host: &str, path: &str| {
        format!("HEAD {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fuzz-{path}\r\n\r\n")
    };
    // One request of each kind first: routed (200) and unrouted (404 NR).
    assert_eq!(
        pipeline(
            port,
            vec![
                head("a.example.com", "/anything/a"),
                head("a.other.org", "/x")
            ]
        ),
        2
    );
    let before = istio_series(&gw);
    assert_eq!(before, 2, "{}", gw.admin_get("/metrics").1);
    let random = || {
        (0..12)
            .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
            .collect::<String>()
    };
    let requests: Vec<String> = (0..10_000)
        .map(|i| {
            if i % 2 == 0 {
                head(
                    &format!("{}.example.com", random()),
                    &format!("/anything/{}", random()),
                )
            } else {
                head(
                    &format!("{}.{}.org", random(), random()),
                    &format!("/{}?q={}", random(), random()),
                )
            }
        })
        .collect();
    assert_eq!(pipeline(port, requests), 10_000);
    gw.wait_metric("istio_requests_total{", 10_002.0);
    assert_eq!(istio_series(&gw), before);
    let metrics = gw.admin_get("/metrics").1;
    assert!(
        !metrics.contains(".org"),
        "a request host became a label value"
    );
    assert!(
        !metrics.contains("/anything/"),
        "a request path became a label value"
    );
}

#[test]
fn access_log_lines_carry_istio_default_fields() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&config(port, hb.port, "httpbin.example.com"));
    let sent = std::time::SystemTime::now();
    let r = curl(&[
        "-H",
        "Host: httpbin.example.com",
        "-H",
        "X-Forwarded-For: 203.0.113.9",
        "-H",
        "X-Forwarded-For: 198.51.100.2",
        "-A",
        "observability-test/1",
        "--data-binary",
        "0123456789",
        &format!("http://127.0.0.1:{port}/post"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    let answered = std::time::SystemTime::now();
    let line = gw.wait_access_log(|l| l["path"] == "/post");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["response_code"], 200);
    assert_eq!(line["response_flags"], "-");
    assert_eq!(line["bytes_received"], 10);
    assert_eq!(
        line["bytes_sent"].as_u64().unwrap(),
        r.body.len() as u64,
        "{line}"
    );
    assert_eq!(line["upstream_host"], format!("127.0.0.1:{}", hb.port));
    assert_eq!(
        line["upstream_cluster"],
        "outbound|80||httpbin.default.svc.cluster.local"
    );
    // As Envoy logs it: what went upstream, the peer appended.
    assert_eq!(
        line["x_forwarded_for"],
        "203.0.113.9, 198.51.100.2, 127.0.0.1"
    );
    assert_eq!(line["response_code_details"], "via_upstream");
    assert_eq!(line["route_name"], "default/httpbin/0");
    assert_eq!(line["user_agent"], "observability-test/1");
    assert_eq!(line["authority"], "httpbin.example.com");
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["route"], "default/httpbin/0");
    assert!(line["request_id"].as_str().unwrap().len() >= 32, "{line}");
    assert!(line["duration"].is_u64(), "{line}");
    // A string, as Istio's format logs a response header's value.
    let service_time = line["upstream_service_time"].as_str().unwrap();
    assert!(service_time.parse::<u64>().is_ok(), "{line}");
    assert_eq!(
        line["downstream_local_address"],
        format!("127.0.0.1:{port}")
    );
    assert_eq!(
        line.get("requested_server_name"),
        Some(&serde_json::Value::Null),
        "{line}"
    );
    // The start time (written with millisecond precision) falls between curl's start and
    // its answer.
    let start = humantime::parse_rfc3339(line["start_time"].as_str().unwrap()).unwrap();
    let ms = std::time::Duration::from_millis(1);
    assert!(
        start + ms >= sent && start <= answered,
        "start_time {start:?} outside {sent:?}..{answered:?}: {line}"
    );
    assert!(
        line.get("trace_id").is_none(),
        "no tracing configured: {line}"
    );
}

#[test]
fn access_log_sample_keeps_about_that_share_of_requests() {
    let hb = Httpbin::start();
    let (half, none) = (free_port(), free_port());
    let config_at = |port| config(port, hb.port, "httpbin.example.com");
    let gw_half = Gateway::start_with(&config_at(half), &["--access-log-sample", "50"]);
    let gw_none = Gateway::start_with(&config_at(none), &["--access-log-sample", "0"]);
    // 400 requests on one kept-alive connection each (curl takes many URLs).
    for (port, gw) in [(half, &gw_half), (none, &gw_none)] {
        let url = format!("http://127.0.0.1:{port}/status/204");
        let mut args = vec!["-s", "-o", "/dev/null", "-H", "Host: httpbin.example.com"];
        args.extend(std::iter::repeat_n(url.as_str(), 400));
        let out = Command::new("curl").args(&args).output().expect("curl");
        assert!(out.status.success(), "{out:?}");
        gw.wait_metric("gateway_requests_total", 400.0);
    }
    // The writer task is asynchronous: wait until the count stops moving.
    let mut last = (usize::MAX, 0);
    wait_for("the access log to settle", Duration::from_secs(10), || {
        let n = gw_half.access_log().len();
        last = if n == last.0 { (n, last.1 + 1) } else { (n, 0) };
        last.1 >= 5
    });
    // Binomial(400, 0.5): 100..=300 is ten standard deviations either side.
    let logged = last.0;
    assert!(
        (100..=300).contains(&logged),
        "50% of 400 requests logged {logged}"
    );
    assert_eq!(gw_none.access_log().len(), 0, "0% logged some");
}

#[test]
fn errors_filter_logs_failed_requests_only() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start_with(
        &config(port, hb.port, "httpbin.example.com"),
        &["--access-log-filter", "errors"],
    );
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    assert_eq!(
        curl(&["-H", "Host: httpbin.example.com", &url("/get")]).status,
        200
    );
    assert_eq!(
        curl(&["-H", "Host: httpbin.example.com", &url("/status/500")]).status,
        500
    );
    assert_eq!(
        curl(&["-H", "Host: elsewhere.example.com", &url("/get")]).status,
        404
    );
    let nr = gw.wait_access_log(|l| l["response_flags"] == "NR");
    assert_eq!(nr["response_code"], 404);
    assert_eq!(nr["response_code_details"], "route_not_found");
    gw.wait_access_log(|l| l["response_code"] == 500);
    // Both error lines are written; the 200 before them never is.
    let paths: Vec<_> = gw
        .access_log()
        .iter()
        .map(|l| l["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(gw.access_log().iter().all(|l| l["response_code"] != 200));
}

/// rotel (OTLP collector from PyPI) printing the spans it receives.
struct Rotel {
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
    _process: ChildGuard,
}

impl Rotel {
    fn start() -> Rotel {
        Rotel::start_with(&[])
    }

    /// rotel with `extra` arguments (e.g. `--debug-log logs` to print log records too).
    fn start_with(extra: &[&str]) -> Rotel {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("rotel.out");
        let port = free_port();
        let grpc = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let http = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(telemetry::rotel_bin())
            .args(telemetry::rotel_args(grpc, http))
            .args(extra)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rotel-agent (scripts/install-tools)");
        wait_for("rotel listening", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Rotel {
            port,
            out,
            _dir: dir,
            _process: ChildGuard(child),
        }
    }

    /// A gateway routing httpbin.example.com to `hb` and exporting to this collector
    /// every 100 ms, with default sampling (parent-based 1%) and one trusted hop, so a
    /// client's sampled `traceparent` is followed; and its port.
    fn traced_gateway(&self, hb: &Httpbin) -> (Gateway, u16) {
        let port = free_port();
        let endpoint = format!("http://127.0.0.1:{}", self.port);
        let gw = Gateway::start_with_env(
            &config(port, hb.port, "httpbin.example.com"),
            &["--num-trusted-proxies", "1"],
            "/ready",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_SERVICE_NAME", "meshgate-test"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ],
        );
        (gw, port)
    }

    /// The spans printed so far, each as `field -> value` (`Trace ID`, `Parent ID`, `ID`,
    /// `Kind`, `Name`, ...).
    fn spans(&self) -> Vec<std::collections::BTreeMap<String, String>> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        telemetry::parse_spans(&text)
            .into_iter()
            .map(|s| s.fields)
            .collect()
    }
}

#[test]
fn otlp_server_and_client_spans_reach_rotel_and_keep_the_incoming_trace_id() {
    let rotel = Rotel::start();
    let hb = Httpbin::start();
    let (gw, port) = rotel.traced_gateway(&hb);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = curl(&[
        "-H",
        "Host: httpbin.example.com",
        "-H",
        &format!("traceparent: 00-{trace}-00f067aa0ba902b7-01"),
        "-H",
        "tracestate: vendor=abc",
        &format!("http://127.0.0.1:{port}/get"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    // What the upstream received: the same trace, the CLIENT span as parent, in W3C and B3,
    // and the client's tracestate passed on (W3C Trace Context, as Envoy does).
    let sent = r.json()["headers"].clone();
    assert_eq!(sent["Tracestate"], "vendor=abc", "{sent}");
    let upstream_parent = sent["Traceparent"].as_str().unwrap().to_string();
    assert!(
        upstream_parent.starts_with(&format!("00-{trace}-")),
        "{sent}"
    );
    assert!(upstream_parent.ends_with("-01"), "{sent}");
    assert_eq!(sent["X-B3-Traceid"], trace);
    let client_id = upstream_parent.split('-').nth(2).unwrap().to_string();
    assert_ne!(client_id, "00f067aa0ba902b7");

    let mut spans = Vec::new();
    wait_for(
        "the SERVER and CLIENT spans in rotel",
        Duration::from_secs(20),
        || {
            spans = rotel.spans();
            spans
                .iter()
                .filter(|s| s.get("Trace ID").map(String::as_str) == Some(trace))
                .count()
                == 2
        },
    );
    let kind = |k: &str| {
        spans
            .iter()
            .find(|s| s["Trace ID"] == trace && s["Kind"] == k)
            .unwrap_or_else(|| panic!("no {k} span in {spans:#?}"))
    };
    let server = kind("SPAN_KIND_SERVER");
    let client = kind("SPAN_KIND_CLIENT");
    assert_eq!(server["Parent ID"], "00f067aa0ba902b7");
    assert_eq!(client["Parent ID"], server["ID"]);
    assert_eq!(client["ID"], client_id);
    assert!(
        std::fs::read_to_string(&rotel.out)
            .unwrap()
            .contains("service.name: Str(meshgate-test)")
    );

    let line = gw.wait_access_log(|l| l["trace_id"] == trace);
    assert_eq!(line["span_id"], server["ID"].as_str());
    // Named and tagged as Istio's gateways do, so Kiali finds the workload's traces
    // (`node_id`) and the service's (the operation name).
    assert_eq!(server["Name"], "httpbin.default.svc.cluster.local:80/*");
    let out = std::fs::read_to_string(&rotel.out).unwrap();
    let request_id = line["request_id"].as_str().unwrap();
    for tag in [
        format!("guid:x-request-id: Str({request_id})"),
        "http.status_code: Str(200)".to_string(),
        "upstream_cluster: Str(outbound|80||httpbin.default.svc.cluster.local)".to_string(),
        "component: Str(proxy)".to_string(),
        "node_id: Str(router~".to_string(),
        "istio.canonical_service: Str(".to_string(),
        "istio.mesh_id: Str(".to_string(),
    ] {
        assert!(out.contains(&tag), "no {tag:?} in:\n{out}");
    }

    // B3 single header: the trace id is kept as well.
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let r = curl(&[
        "-H",
        "Host: httpbin.example.com",
        "-H",
        &format!("b3: {b3_trace}-e457b5a2e4d86bd1-1"),
        &format!("http://127.0.0.1:{port}/get"),
    ]);
    assert_eq!(r.json()["headers"]["X-B3-Traceid"], b3_trace);
    wait_for(
        "the B3 request's SERVER span",
        Duration::from_secs(20),
        || {
            rotel.spans().iter().any(|s| {
                s.get("Trace ID").map(String::as_str) == Some(b3_trace)
                    && s["Kind"] == "SPAN_KIND_SERVER"
                    && s["Parent ID"] == "e457b5a2e4d86bd1"
            })
        },
    );
}

#[test]
fn an_edge_clients_sampled_flag_keeps_its_trace_id_but_does_not_force_sampling() {
    let rotel = Rotel::start();
    let hb = Httpbin::start();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{}", rotel.port);
    // No trusted proxy in front: the client itself is the hop. The default sampler, and
    // the parent-based ratio the chart sets, both keep the rule.
    let _gw = Gateway::start_with_env(
        &config(port, hb.port, "httpbin.example.com"),
        &[],
        "/ready",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    );
    let chart_port = free_port();
    let _chart = Gateway::start_with_env(
        &config(chart_port, hb.port, "httpbin.example.com"),
        &[],
        "/ready",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ],
    );
    // A trace id the 1% ratio does not sample.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    for p in [chart_port, port] {
        let r = curl(&[
            "-H",
            "Host: httpbin.example.com",
            "-H",
            &format!("traceparent: 00-{trace}-00f067aa0ba902b7-01"),
            &format!("http://127.0.0.1:{p}/get"),
        ]);
        let sent = r.json()["headers"]["Traceparent"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            sent.ends_with("-00"),
            "port {p}: the client's flag was obeyed: {sent}"
        );
    }
    let r = curl(&[
        "-H",
        "Host: httpbin.example.com",
        "-H",
        &format!("traceparent: 00-{trace}-00f067aa0ba902b7-01"),
        &format!("http://127.0.0.1:{port}/get"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    let sent = r.json()["headers"]["Traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        sent.starts_with(&format!("00-{trace}-")),
        "the trace id is kept: {sent}"
    );
    assert!(
        sent.ends_with("-00"),
        "the client's sampled flag was obeyed: {sent}"
    );
}

#[test]
fn x_client_trace_id_forces_a_trace_the_ratio_would_not_take_and_zero_percent_turns_it_off() {
    let rotel = Rotel::start();
    let hb = Httpbin::start();
    let endpoint = format!("http://127.0.0.1:{}", rotel.port);
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let (port, off_port) = (free_port(), free_port());
    let _gw = Gateway::start_with_env(
        &config(port, hb.port, "httpbin.example.com"),
        &[],
        "/ready",
        &env,
    );
    let _off = Gateway::start_with_env(
        &config(off_port, hb.port, "httpbin.example.com"),
        &["--trace-client-sampling", "0"],
        "/ready",
        &env,
    );
    // An untrusted parent whose trace id the default 1% ratio rejects.
    let (forced, refused) = (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "5bf92f3577b34da6a3ce929d0e0e4736",
    );
    for (p, trace) in [(port, forced), (off_port, refused)] {
        let r = curl(&[
            "-H",
            "Host: httpbin.example.com",
            "-H",
            &format!("traceparent: 00-{trace}-00f067aa0ba902b7-00"),
            "-H",
            "x-client-trace-id: debug-4711",
            &format!("http://127.0.0.1:{p}/get"),
        ]);
        let sent = r.json()["headers"]["Traceparent"]
            .as_str()
            .unwrap()
            .to_string();
        let expect = if trace == forced { "-01" } else { "-00" };
        assert!(sent.ends_with(expect), "{trace}: upstream got {sent}");
    }
    wait_for("the forced SERVER span", Duration::from_secs(20), || {
        rotel.spans().iter().any(|s| {
            s.get("Trace ID").map(String::as_str) == Some(forced) && s["Kind"] == "SPAN_KIND_SERVER"
        })
    });
    let out = std::fs::read_to_string(&rotel.out).unwrap();
    assert!(
        out.contains("guid:x-client-trace-id: Str(debug-4711)"),
        "{out}"
    );
    assert!(
        !out.contains(refused),
        "--trace-client-sampling 0 still traced: {out}"
    );
}

#[test]
fn access_log_otlp_exports_each_logged_request_as_a_log_record_with_its_trace() {
    let rotel = Rotel::start_with(&["--debug-log", "logs"]);
    let hb = Httpbin::start();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{}", rotel.port);
    let _gw = Gateway::start_with_env(
        &config(port, hb.port, "httpbin.example.com"),
        &[
            "--access-log",
            "off",
            "--access-log-otlp",
            "--num-trusted-proxies",
            "1",
        ],
        "/ready",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let trace = "6bf92f3577b34da6a3ce929d0e0e4736";
    let r = curl(&[
        "-H",
        "Host: httpbin.example.com",
        "-H",
        &format!("traceparent: 00-{trace}-00f067aa0ba902b7-01"),
        &format!("http://127.0.0.1:{port}/status/418"),
    ]);
    assert_eq!(r.status, 418, "{r:?}");
    let mut out = String::new();
    wait_for(
        "the access log record in rotel",
        Duration::from_secs(20),
        || {
            out = std::fs::read_to_string(&rotel.out).unwrap_or_default();
            out.contains("/status/418") && out.contains("http.response.status_code")
        },
    );
    // rotel prints the log record apart from the spans: check the record's own lines.
    let record = out
        .split("LogRecord #")
        .nth(1)
        .and_then(|r| r.split("ResourceSpans #").next())
        .unwrap_or_else(|| panic!("no log record: {out}"));
    for want in [
        "EventName: access_log",
        "\"path\":\"/status/418\"",
        "http.response.status_code: Int(418)",
        "url.path: Str(/status/418)",
        "http.route: Str(default/httpbin/0)",
        "Flags: 1",
    ] {
        assert!(record.contains(want), "{want} not in the record:\n{record}");
    }
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim_start_matches([' ', ':']).trim().to_string())
    };
    assert_eq!(
        field(record, "Trace ID").as_deref(),
        Some(trace),
        "{record}"
    );
    // The record's span is the request's SERVER span: log and trace join.
    wait_for("the SERVER span", Duration::from_secs(20), || {
        rotel
            .spans()
            .iter()
            .any(|s| s.get("Kind").map(String::as_str) == Some("SPAN_KIND_SERVER"))
    });
    let server = rotel
        .spans()
        .into_iter()
        .find(|s| s["Kind"] == "SPAN_KIND_SERVER" && s["Trace ID"] == trace)
        .expect("the SERVER span");
    assert_eq!(
        field(record, "Span ID"),
        Some(server["ID"].clone()),
        "{record}"
    );
}

#[test]
fn an_upstreams_peer_metadata_response_headers_never_reach_the_client() {
    let hb = Httpbin::start();
    let port = free_port();
    let _gw = Gateway::start(&config(port, hb.port, "httpbin.example.com"));
    // httpbin echoes query parameters as response headers, as a sidecar would add its own.
    let r = curl(&[
        "-H",
        "Host: httpbin.example.com",
        &format!(
            "http://127.0.0.1:{port}/response-headers?x-envoy-peer-metadata=Cg8KBE5BTUUSBxoFaHR0cGJpbg&x-envoy-peer-metadata-id=sidecar~10.0.0.1~httpbin&x-kept=1"
        ),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-kept").as_deref(), Some("1"), "{}", r.headers);
    assert_eq!(r.header("x-envoy-peer-metadata"), None, "{}", r.headers);
    assert_eq!(r.header("x-envoy-peer-metadata-id"), None, "{}", r.headers);
}

#[test]
fn a_chunked_request_body_is_counted_as_it_streams() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&config(port, hb.port, "httpbin.example.com"));
    let body = "x".repeat(12_345);
    let r = curl(&[
        "-H",
        "Host: httpbin.example.com",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &body,
        &format!("http://127.0.0.1:{port}/post"),
    ]);
    // (httpbin under gunicorn's sync worker answers without reading a chunked body; the
    // gateway still streamed every byte to it.)
    assert_eq!(r.status, 200, "{r:?}");
    let line = gw.wait_access_log(|l| l["path"] == "/post");
    assert_eq!(line["bytes_received"], 12_345, "{line}");
    // istio_request_bytes counts headers plus those body bytes.
    let sum = gw.metric("istio_request_bytes_sum");
    assert!(sum > 12_345.0, "istio_request_bytes_sum {sum}");
}

#[test]
fn a_chunked_request_body_that_is_also_mirrored_is_counted() {
    let hb = Httpbin::start();
    let port = free_port();
    let mirrored = config(port, hb.port, "httpbin.example.com").replace(
        "    - backendRefs: [{name: httpbin, port: 80}]\n",
        "    - backendRefs: [{name: httpbin, port: 80}]\n      filters:\n      \
         - {type: RequestMirror, requestMirror: {backendRef: {name: httpbin, port: 80}}}\n",
    );
    assert!(mirrored.contains("RequestMirror"), "{mirrored}");
    let gw = Gateway::start(&mirrored);
    let body = "y".repeat(23_456);
    let r = curl(&[
        "-H",
        "Host: httpbin.example.com",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &body,
        &format!("http://127.0.0.1:{port}/post"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    let line = gw.wait_access_log(|l| l["path"] == "/post");
    assert_eq!(line["bytes_received"], 23_456, "{line}");
}

/// The `istio_requests_total` series with this response code and flag, summed.
fn istio_requests(gw: &Gateway, code: &str, flag: &str) -> f64 {
    let (_, body) = gw.admin_get("/metrics");
    let (code, flag) = (
        format!("response_code=\"{code}\""),
        format!("response_flags=\"{flag}\""),
    );
    body.lines()
        .filter(|l| l.starts_with("istio_requests_total{") && l.contains(&code))
        .filter(|l| l.contains(&flag))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Requests to httpbin the gateway has in flight (admin `/debug/backends`).
fn httpbin_in_flight(gw: &Gateway) -> u64 {
    let (status, body) = gw.admin_get("/debug/backends");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["backends"]["Service default/httpbin:80"]["active_requests"]
        .as_u64()
        .unwrap_or(0)
}

/// A real client that gives up: curl with `args`, killed once its request is in flight
/// to httpbin (which is still answering).
fn curl_gives_up(gw: &Gateway, args: &[&str]) {
    let mut client = Command::new("curl")
        .arg("-s")
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the request is in flight to httpbin", || {
        httpbin_in_flight(gw) == 1
    });
    client.kill().unwrap();
    client.wait().unwrap();
}

#[test]
fn a_client_gone_before_the_response_is_logged_and_counted_as_code_0_flag_dc() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start_with(&config(port, hb.port, "httpbin.example.com"), SOURCE_ARGS);
    for (protocol, path, version) in [
        ("--http1.1", "/delay/10", "HTTP/1.1"),
        ("--http2-prior-knowledge", "/delay/9", "HTTP/2"),
    ] {
        let url = format!("http://127.0.0.1:{port}{path}");
        curl_gives_up(&gw, &[protocol, "-H", "Host: httpbin.example.com", &url]);
        let line = gw.wait_access_log(|l| l["path"] == path);
        assert_eq!(line["protocol"], version, "{line}");
        assert_eq!(line["response_code"], 0, "{line}");
        assert_eq!(line["response_flags"], "DC", "{line}");
        assert_eq!(line["bytes_sent"], 0, "{line}");
        assert_eq!(line["attempts"], 1, "{line}");
        assert_eq!(line["route"], "default/httpbin/0", "{line}");
        assert_eq!(line["upstream_host"], format!("127.0.0.1:{}", hb.port));
        assert_eq!(
            line["upstream_cluster"],
            "outbound|80||httpbin.default.svc.cluster.local"
        );
        let id = line["request_id"].as_str().unwrap();
        let (status, why) = gw.admin_get(&format!("/debug/requests/{id}"));
        assert_eq!(status, 200, "{why}");
        let why: serde_json::Value = serde_json::from_str(&why).unwrap();
        assert_eq!(
            why["reason"], "the client went away before the response started",
            "{why}"
        );
        assert_eq!(httpbin_in_flight(&gw), 0);
    }
    // Istio's standard metric has both, as Kiali and Envoy's sidecars report them, with
    // the destination they were on their way to.
    assert_eq!(istio_requests(&gw, "0", "DC"), 2.0);
    let (_, metrics) = gw.admin_get("/metrics");
    let dc = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_flags=\"DC\""))
        .unwrap();
    assert!(dc.contains("destination_workload=\"httpbin\""), "{dc}");
    assert!(dc.contains("destination_service_name=\"httpbin\""), "{dc}");
}

/// A client that goes away while it is still sending its request body is logged as Envoy
/// logs it, response code 0 and `DC`, and so is its attempt: its body did not fail to
/// parse, it stopped, so neither `400 DPE` nor a client error is counted. (hyper's HTTP/1
/// server keeps a request in flight after its connection's end, so the attempt sees the
/// body fail before hyper drops the request.) A declared length cut by a raw socket's
/// FIN, and curl killed mid-upload: chunked over HTTP/1.1, and h2c.
#[test]
fn a_client_gone_mid_upload_is_logged_code_0_dc_not_as_a_client_error() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start_with(&config(port, hb.port, "httpbin.example.com"), SOURCE_ARGS);
    let in_flight = || {
        eventually("the upload is in flight to httpbin", || {
            httpbin_in_flight(&gw) == 1
        })
    };
    let mut raw = TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.write_all(
        b"POST /anything/declared HTTP/1.1\r\nHost: httpbin.example.com\r\n\
          Content-Length: 100000\r\n\r\n0123456789",
    )
    .unwrap();
    in_flight();
    drop(raw);
    let logged_dc = |path: &str, version: &str| {
        let line = gw.wait_access_log(|l| l["path"] == path);
        assert_eq!(line["protocol"], version, "{line}");
        assert_eq!(line["response_code"], 0, "{line}");
        assert_eq!(line["response_flags"], "DC", "{line}");
        assert_eq!(line["upstream_host"], format!("127.0.0.1:{}", hb.port));
    };
    logged_dc("/anything/declared", "HTTP/1.1");
    // A client that only shuts its sending side down may still read: it is told the
    // connection is done (a bodiless 400 with `connection: close`, then the close).
    let mut half = TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(
        b"POST /anything/half-closed HTTP/1.1\r\nHost: httpbin.example.com\r\n\
          Content-Length: 100000\r\n\r\n0123456789",
    )
    .unwrap();
    in_flight();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    half.read_to_string(&mut answer).unwrap();
    let answer = answer.to_lowercase();
    assert!(answer.starts_with("http/1.1 400"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    logged_dc("/anything/half-closed", "HTTP/1.1");
    for (protocol, path, version) in [
        ("--http1.1", "/anything/chunked", "HTTP/1.1"),
        ("--http2-prior-knowledge", "/anything/h2c", "HTTP/2"),
    ] {
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut curl = Command::new("curl")
            .args(["-s", protocol, "-T", "-", "-H", "Expect:"])
            .args(["-H", "Host: httpbin.example.com", &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        curl.stdin
            .as_mut()
            .unwrap()
            .write_all(b"0123456789")
            .unwrap();
        in_flight();
        curl.kill().unwrap();
        curl.wait().unwrap();
        logged_dc(path, version);
    }
    let attempts = "gateway_upstream_attempts_total{backend=\"Service default/httpbin:80\"";
    gw.wait_metric(&format!("{attempts},outcome=\"DC\"}}"), 4.0);
    assert_eq!(gw.metric(&format!("{attempts},outcome=\"DPE\"}}")), 0.0);
    assert_eq!(gw.metric("gateway_downstream_request_errors_total"), 0.0);
    assert_eq!(istio_requests(&gw, "0", "DC"), 4.0);
    assert_eq!(istio_requests(&gw, "400", "DPE"), 0.0);
    assert_eq!(httpbin_in_flight(&gw), 0);
}

/// Runs `test` with a real HTTP/2 client (the h2 crate, hyper's) connected to the
/// gateway's `port`, on a runtime whose one worker thread drives the connection while the
/// test waits on the gateway.
fn with_h2_client<F: std::future::Future<Output = ()>>(
    port: u16,
    test: impl FnOnce(h2::client::SendRequest<bytes::Bytes>) -> F,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        test(client).await;
    });
}

/// A client that resets its HTTP/2 stream (RST_STREAM) and keeps its connection is
/// logged as Envoy logs it, `DR` (downstream remote reset), not `DC`: before the response
/// (code 0) and mid-body (the status kept); the connection serves on. A real HTTP/2
/// client: the h2 crate, hyper's.
#[test]
fn an_http2_client_that_resets_its_stream_is_logged_dr_and_its_connection_serves_on() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start_with(&config(port, hb.port, "httpbin.example.com"), SOURCE_ARGS);
    let gw = &gw;
    with_h2_client(port, |client| async move {
        let get = |path: &str| {
            http::Request::get(format!("http://httpbin.example.com{path}"))
                .body(())
                .unwrap()
        };
        // Before the response: reset while httpbin is still answering.
        let mut client = client.ready().await.unwrap();
        let (_response, mut stream) = client.send_request(get("/delay/10"), true).unwrap();
        eventually("the request is in flight to httpbin", || {
            httpbin_in_flight(gw) == 1
        });
        stream.send_reset(h2::Reason::CANCEL);
        let line = gw.wait_access_log(|l| l["path"] == "/delay/10");
        assert_eq!(line["protocol"], "HTTP/2", "{line}");
        assert_eq!(line["response_code"], 0, "{line}");
        assert_eq!(line["response_flags"], "DR", "{line}");
        assert_eq!(line["route"], "default/httpbin/0", "{line}");
        let id = line["request_id"].as_str().unwrap();
        let (_, why) = gw.admin_get(&format!("/debug/requests/{id}"));
        let why: serde_json::Value = serde_json::from_str(&why).unwrap();
        assert_eq!(
            why["reason"], "the client reset its HTTP/2 stream before the response started",
            "{why}"
        );
        // Mid-body: httpbin drips five bytes over five seconds; the client has the head and
        // the first byte when it resets.
        let path = "/drip?duration=5&numbytes=5&delay=0";
        let mut client = client.ready().await.unwrap();
        let (response, mut stream) = client.send_request(get(path), true).unwrap();
        let mut body = response.await.unwrap().into_body();
        let first = body.data().await.expect("a first byte").unwrap();
        assert!(!first.is_empty());
        stream.send_reset(h2::Reason::CANCEL);
        let line = gw.wait_access_log(|l| l["path"] == path);
        assert_eq!(line["response_code"], 200, "{line}");
        assert_eq!(line["response_flags"], "DR", "{line}");
        let sent = line["bytes_sent"].as_u64().unwrap();
        assert!((1..5).contains(&sent), "{line}");
        // The same connection serves the next request.
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(get("/get"), true).unwrap();
        assert_eq!(response.await.unwrap().status(), 200);
    });
    assert_eq!(istio_requests(gw, "0", "DR"), 1.0);
    assert_eq!(istio_requests(gw, "200", "DR"), 1.0);
    assert_eq!(istio_requests(gw, "0", "DC"), 0.0);
    // The attempt the first reset abandoned is counted with the same flag.
    let attempts = "gateway_upstream_attempts_total{backend=\"Service default/httpbin:80\"";
    assert_eq!(gw.metric(&format!("{attempts},outcome=\"DR\"}}")), 1.0);
    assert_eq!(gw.metric(&format!("{attempts},outcome=\"DC\"}}")), 0.0);
}

#[test]
fn a_client_gone_mid_body_keeps_the_status_and_is_flagged_dc_and_whole_answers_are_not() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start_with(&config(port, hb.port, "httpbin.example.com"), SOURCE_ARGS);
    // httpbin drips five bytes over five seconds; the client reads the head and the
    // first byte, then closes.
    let path = "/drip?duration=5&numbytes=5&delay=0";
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        client,
        "GET {path} HTTP/1.1\r\nHost: httpbin.example.com\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // Until the head and at least one body byte are in.
    let head_and_a_byte = |got: &[u8]| {
        got.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|end| got.len() > end + 4)
    };
    while !head_and_a_byte(&got) {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    drop(client);
    let line = gw.wait_access_log(|l| l["path"] == path);
    assert_eq!(line["response_code"], 200, "{line}");
    assert_eq!(line["response_flags"], "DC", "{line}");
    let sent = line["bytes_sent"].as_u64().unwrap();
    assert!((1..5).contains(&sent), "{line}");
    assert_eq!(istio_requests(&gw, "200", "DC"), 1.0);
    // Answers the client took whole are not flagged, nor those hyper sends without
    // their body (HEAD, 204).
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let host = ["-H", "Host: httpbin.example.com"];
    assert_eq!(
        curl(&[&host[..], &[&url("/bytes/3000")]].concat()).status,
        200
    );
    assert_eq!(
        curl(&[&host[..], &["-I", &url("/get")]].concat()).status,
        200
    );
    assert_eq!(
        curl(&[&host[..], &[&url("/status/204")]].concat()).status,
        204
    );
    for p in ["/bytes/3000", "/get", "/status/204"] {
        let line = gw.wait_access_log(|l| l["path"] == p);
        assert_eq!(line["response_flags"], "-", "{line}");
    }
    let head = gw.wait_access_log(|l| l["path"] == "/get");
    assert_eq!(head["method"], "HEAD");
}

#[test]
fn an_upstream_that_cuts_its_body_short_is_logged_uc_with_what_was_sent() {
    // A hostile upstream: it promises 100 bytes, sends 10 and closes.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_port = upstream.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in upstream.incoming() {
            let mut conn = conn.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        }
    });
    let port = free_port();
    let gw = Gateway::start(&config(port, upstream_port, "cut.example.com"));
    let r = curl(&[
        "-H",
        "Host: cut.example.com",
        &format!("http://127.0.0.1:{port}/cut"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "0123456789", "{r:?}");
    assert_eq!(r.exit_code, 18, "curl: partial file: {r:?}");
    let line = gw.wait_access_log(|l| l["path"] == "/cut");
    assert_eq!(line["response_code"], 200, "{line}");
    assert_eq!(line["response_flags"], "UC", "{line}");
    assert_eq!(line["bytes_sent"], 10, "{line}");
    let id = line["request_id"].as_str().unwrap();
    let (_, why) = gw.admin_get(&format!("/debug/requests/{id}"));
    let why: serde_json::Value = serde_json::from_str(&why).unwrap();
    assert!(
        why["reason"]
            .as_str()
            .unwrap()
            .starts_with("the upstream's response body failed"),
        "{why}"
    );
}

/// How [`h2_upstream_pausing_after`]'s stream ends once it is told to.
#[derive(Clone, Copy)]
enum End {
    /// With an error: hyper resets the stream.
    Reset,
    /// Cleanly, in an empty END_STREAM frame of its own; the length was declared in the
    /// head (`content-length`), as a hyper server streaming a body of known length sends it.
    Late,
    /// Not at all: the upstream drops its whole connection (TCP closed, no GOAWAY).
    Close,
}

/// An h2c hyper upstream answering every request with `first`, then holding the stream
/// open until the returned signal, then ending it as `end` says. Its port and the signal.
fn h2_upstream_pausing_after(first: &'static [u8], end: End) -> (u16, Arc<tokio::sync::Notify>) {
    use futures_util::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let go = Arc::new(tokio::sync::Notify::new());
    let signal = go.clone();
    let port = upstream_on_own_thread(move |tcp| {
        let closed = go.clone();
        let go = go.clone();
        let svc = hyper::service::service_fn(move |_req| {
            let go = go.clone();
            async move {
                let data = Frame::data(bytes::Bytes::from_static(first));
                let last = futures_util::stream::once(async move {
                    match end {
                        End::Close => std::future::pending().await,
                        End::Reset | End::Late => go.notified().await,
                    }
                    match end {
                        End::Reset => Some(Err(std::io::Error::other("the upstream gives up"))),
                        End::Late | End::Close => None,
                    }
                });
                let frames = futures_util::stream::once(async { Ok(data) })
                    .chain(last.filter_map(|f| async { f }));
                let mut head = hyper::Response::builder();
                if let End::Late = end {
                    head = head.header("content-length", first.len());
                }
                Ok::<_, std::convert::Infallible>(head.body(StreamBody::new(frames)).unwrap())
            }
        });
        async move {
            let served =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
            match end {
                End::Close => tokio::select! {
                    _ = served => {}
                    () = closed.notified() => {}
                },
                End::Reset | End::Late => {
                    let _ = served.await;
                }
            }
        }
    });
    (port, signal)
}

/// An HTTP/2 upstream whose connection dies mid-body (TCP closed, no GOAWAY or reset)
/// cuts the client's response, logged `UC` (Envoy's upstream connection termination)
/// with what was sent.
#[test]
fn an_http2_upstream_whose_connection_dies_mid_body_is_logged_uc() {
    assert_cut_mid_body(End::Close, "UC");
}

/// Sends a request to an h2c upstream that answers ten bytes and then ends its stream as
/// `end` says; checks that the gateway cuts the client's HTTP/1 response (it closes the
/// connection before the last chunk) and logs `200 <flag>` with the ten bytes sent.
fn assert_cut_mid_body(end: End, flag: &str) {
    let (upstream, signal) = h2_upstream_pausing_after(b"0123456789", end);
    let (gw, port) = gateway_to_h2c(upstream);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(client, "GET /cut HTTP/1.1\r\nHost: example.com\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("0123456789") {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    // The client has the head and the first bytes; now the upstream ends its stream.
    signal.notify_one();
    match wait_closed(&mut client, Duration::from_secs(10)) {
        Ended::ClosedSilently => {}
        Ended::ClosedAfter(rest) => got.extend_from_slice(&rest),
        Ended::StillOpen => panic!("the cut response's connection stayed open"),
    }
    // Chunked (the upstream sent no length), and its last chunk never came.
    assert!(
        !got.ends_with(b"0\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let line = gw.wait_access_log(|l| l["path"] == "/cut");
    assert_eq!(line["response_code"], 200, "{line}");
    assert_eq!(line["response_flags"], flag, "{line}");
    assert_eq!(line["bytes_sent"], 10, "{line}");
}

/// A gateway routing every request to the h2c upstream on `upstream`; its port.
fn gateway_to_h2c(upstream: u16) -> (Gateway, u16) {
    let port = free_port();
    let service = local_service("h2c", upstream).replace(
        "ports: [{name: http, port: 80,",
        "ports: [{name: http, appProtocol: kubernetes.io/h2c, port: 80,",
    );
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: h2c, namespace: default}\n\
         spec:\n  parentRefs: [{name: edge}]\n  \
         rules:\n    - backendRefs: [{name: h2c, port: 80}]\n",
        &service,
    ]));
    (gw, port)
}

/// A whole answer is not flagged because hyper dropped its body early: an HTTP/1 client
/// has all of a declared length, so hyper stops polling the body, while the HTTP/2
/// upstream's END_STREAM (an empty frame of its own) has not yet come.
#[test]
fn a_whole_answer_whose_http2_end_stream_comes_late_is_not_flagged() {
    let (upstream, end) = h2_upstream_pausing_after(b"0123456789", End::Late);
    let (gw, port) = gateway_to_h2c(upstream);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(client, "GET /late HTTP/1.1\r\nHost: example.com\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\n0123456789") {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_lowercase();
    assert!(head.contains("content-length: 10\r\n"), "{head}");
    // The client has the whole answer; the upstream's stream is still open.
    let line = gw.wait_access_log(|l| l["path"] == "/late");
    assert_eq!(line["response_code"], 200, "{line}");
    assert_eq!(line["response_flags"], "-", "{line}");
    assert_eq!(line["bytes_sent"], 10, "{line}");
    end.notify_one();
}

/// The same answer to an HTTP/2 client that resets its stream once it has all of the
/// declared length, before END_STREAM: hyper's HTTP/2 server waits for the end, so the
/// client cut the stream short, logged `DR` with the bytes it got, as Envoy logs it.
#[test]
fn an_http2_client_that_resets_after_the_declared_length_before_end_stream_is_logged_dr() {
    let (upstream, end) = h2_upstream_pausing_after(b"0123456789", End::Late);
    let (gw, port) = gateway_to_h2c(upstream);
    let gw = &gw;
    with_h2_client(port, |client| async move {
        let get = http::Request::get("http://example.com/late")
            .body(())
            .unwrap();
        let mut client = client.ready().await.unwrap();
        let (response, mut stream) = client.send_request(get, true).unwrap();
        let mut body = response.await.unwrap().into_body();
        let mut got = Vec::new();
        while got.len() < 10 {
            got.extend_from_slice(&body.data().await.expect("data").unwrap());
        }
        assert_eq!(got, b"0123456789");
        stream.send_reset(h2::Reason::CANCEL);
        // The connection stays open (its client is alive) until the line is written.
        let line = gw.wait_access_log(|l| l["path"] == "/late");
        assert_eq!(line["protocol"], "HTTP/2", "{line}");
        assert_eq!(line["response_code"], 200, "{line}");
        assert_eq!(line["response_flags"], "DR", "{line}");
        assert_eq!(line["bytes_sent"], 10, "{line}");
        drop(client);
    });
    end.notify_one();
}

/// An HTTP/2 upstream that resets its stream mid-body cuts the client's response,
/// logged `UR` with what was sent.
#[test]
fn an_http2_upstream_that_resets_its_stream_mid_body_is_logged_ur() {
    assert_cut_mid_body(End::Reset, "UR");
}

#[test]
fn a_client_gone_before_the_response_ends_both_spans_as_errors_flagged_dc() {
    let rotel = Rotel::start();
    let hb = Httpbin::start();
    let (gw, port) = rotel.traced_gateway(&hb);
    let trace = "5cf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("traceparent: 00-{trace}-00f067aa0ba902b7-01");
    let url = format!("http://127.0.0.1:{port}/delay/10");
    curl_gives_up(
        &gw,
        &["-H", "Host: httpbin.example.com", "-H", &traceparent, &url],
    );
    let mut spans = Vec::new();
    wait_for("both spans in rotel", Duration::from_secs(20), || {
        spans = rotel.spans();
        spans
            .iter()
            .filter(|s| s.get("Trace ID").map(String::as_str) == Some(trace))
            .count()
            == 2
    });
    for kind in ["SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"] {
        let span = spans
            .iter()
            .find(|s| s["Trace ID"] == trace && s["Kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} span in {spans:#?}"));
        assert_eq!(span["-> meshgate.response_flags"], "Str(DC)", "{span:#?}");
        assert_eq!(span["Status code"], "STATUS_CODE_ERROR", "{span:#?}");
        // No response, so no status code.
        assert!(
            !span.contains_key("-> http.response.status_code"),
            "{span:#?}"
        );
    }
    // The abandoned attempt is counted as such.
    assert_eq!(
        gw.metric(
            "gateway_upstream_attempts_total{backend=\"Service default/httpbin:80\",outcome=\"DC\"}"
        ),
        1.0
    );
}

/// `grpc_response_status` as Istio's stats filter records it: from the answer's
/// `grpc-status`, else inferred from the HTTP status (Envoy's `getGrpcStatus`: a 503
/// counts as 14); and the gateway's own Trailers-Only answer is recorded as the 200 it is.
#[test]
fn grpc_status_is_inferred_from_the_http_status_and_local_grpc_answers_are_200() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&config(port, hb.port, "httpbin.example.com"));
    let grpc = ["-H", "content-type: application/grpc", "--data-binary", ""];
    let upstream = curl(
        &[
            &grpc[..],
            &[
                "-H",
                "Host: httpbin.example.com",
                &format!("http://127.0.0.1:{port}/status/503"),
            ],
        ]
        .concat(),
    );
    assert_eq!(upstream.status, 503, "{upstream:?}");
    let local = curl(
        &[
            &grpc[..],
            &[
                "--http2-prior-knowledge",
                "-H",
                "Host: nomatch.example.com",
                &format!("http://127.0.0.1:{port}/pkg.Svc/Method"),
            ],
        ]
        .concat(),
    );
    assert_eq!(local.status, 200, "{local:?}");
    assert_eq!(local.header("grpc-status").as_deref(), Some("12"));
    let series = |code: &str, grpc: &str, flag: &str| {
        let (_, body) = gw.admin_get("/metrics");
        let want = [
            "request_protocol=\"grpc\"".to_string(),
            format!("response_code=\"{code}\""),
            format!("grpc_response_status=\"{grpc}\""),
            format!("response_flags=\"{flag}\""),
        ];
        body.lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .filter(|l| want.iter().all(|w| l.contains(w.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    wait_for(
        "both gRPC series",
        std::time::Duration::from_secs(10),
        || series("503", "14", "-") == 1.0 && series("200", "12", "NR") == 1.0,
    );
    let line = gw.wait_access_log(|l| l["path"] == "/pkg.Svc/Method");
    assert_eq!(
        (
            line["response_code"].clone(),
            line["response_flags"].clone()
        ),
        (200.into(), "NR".into())
    );
}
