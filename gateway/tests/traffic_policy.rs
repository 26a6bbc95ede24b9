//! Traffic policy with the real gateway binary in front of real httpbin (and, where a
//! peer must fail a set number of times and then succeed, a tiny scripted upstream):
//! retries, the retry budget, which requests can be replayed.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::*;

fn route(name: &str, body: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: default}}\n{body}"
    )
}

/// A route to Service `svc` whose only rule retries as `retry` says (YAML flow map).
fn retrying_route(svc: &str, retry: &str) -> String {
    route(
        "retrying",
        &format!(
            "spec:\n  parentRefs: [{{name: edge}}]\n  rules:\n\
             \x20   - backendRefs: [{{name: {svc}, port: 80}}]\n\
             \x20     retry: {retry}\n"
        ),
    )
}

/// A Service `name` (port 80) with one endpoint per port in `ports`, all on 127.0.0.1
/// (one EndpointSlice each, as ports are per slice).
fn service_with_endpoints(name: &str, ports: &[u16]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  ports: [{{name: http, port: 80}}]\n"
    );
    for (i, p) in ports.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: {name}-{i}\n  namespace: default\n  \
             labels: {{kubernetes.io/service-name: {name}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {p}}}]\n\
             endpoints:\n  - addresses: [127.0.0.1]\n"
        ));
    }
    out
}

/// An HTTP/1.1 upstream that answers 503 to its first `failures` requests and 200 after
/// (body `recovered`); counts the requests it saw.
struct FlakyUpstream {
    port: u16,
    seen: Arc<AtomicUsize>,
}

impl FlakyUpstream {
    fn start(failures: usize) -> FlakyUpstream {
        Self::named(failures, "recovered")
    }

    /// Answers 200 with body `name` once past its failures.
    fn named(failures: usize, name: &'static str) -> FlakyUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if read_request(&mut conn).is_none() {
                    continue;
                }
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let (status, body) = if n < failures {
                    ("503 Service Unavailable", "failing")
                } else {
                    ("200 OK", name)
                };
                // One write: a response split over several small writes meets
                // Nagle's algorithm and the peer's delayed ACK (40 ms each).
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes());
            }
        });
        FlakyUpstream { port, seen }
    }
}

/// Reads one request (headers and a content-length body).
fn read_request(conn: &mut std::net::TcpStream) -> Option<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = conn.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(());
        }
    }
}

#[test]
fn a_503_is_retried_until_the_upstream_recovers() {
    let up = FlakyUpstream::start(2);
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &retrying_route("flaky", "{codes: [503], attempts: 2, backoff: 1ms}"),
        &service_with_endpoints("flaky", &[up.port]),
    ]));
    let r = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "recovered");
    assert_eq!(up.seen.load(Ordering::SeqCst), 3);
    let line = gw.wait_access_log(|l| l["response_code"] == 200);
    assert_eq!(line["attempts"], 3, "{line}");
    assert_eq!(
        line["response_flags"], "-",
        "a recovered request carries no flag: {line}"
    );
}

#[test]
fn retries_stop_at_the_limit_and_the_last_answer_is_flagged_urx() {
    let hb = Httpbin::start_logged();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &retrying_route("httpbin", "{codes: [503], attempts: 2, backoff: 1ms}"),
        &local_service("httpbin", hb.port),
    ]));
    let r = curl(&[&format!("http://127.0.0.1:{port}/status/503")]);
    assert_eq!(r.status, 503, "httpbin's own 503 is passed on: {r:?}");
    let line = gw.wait_access_log(|l| l["path"] == "/status/503");
    assert_eq!(line["attempts"], 3, "{line}");
    assert_eq!(line["response_flags"], "URX", "{line}");
    // gunicorn writes its access log asynchronously: wait for the three lines.
    let served = || {
        hb.requests()
            .into_iter()
            .filter(|l| l.starts_with("GET /status/503"))
            .count()
    };
    eventually("httpbin to log three attempts", || served() == 3);

    // A code not listed is not retried.
    let r = curl(&[&format!("http://127.0.0.1:{port}/status/500")]);
    assert_eq!(r.status, 500);
    let line = gw.wait_access_log(|l| l["path"] == "/status/500");
    assert_eq!(line["attempts"], 1, "{line}");
}

#[test]
fn a_connect_failure_is_retried_onto_the_live_endpoint() {
    let hb = Httpbin::start();
    let dead = free_port();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &retrying_route("mixed", "{attempts: 1, backoff: 1ms}"),
        &service_with_endpoints("mixed", &[dead, hb.port]),
    ]));
    let url = format!("http://127.0.0.1:{port}/post");
    for i in 0..20 {
        let body = format!("payload {i}");
        let r = curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: text/plain",
            "--data-binary",
            &body,
            &url,
        ]);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(
            r.json()["data"],
            body,
            "the replayed body reaches httpbin whole"
        );
    }
    let log = gw.access_log();
    let retried = log.iter().filter(|l| l["attempts"] == 2).count();
    assert!(
        retried > 0,
        "with one dead endpoint of two, some of 20 requests must have hit it first: {log:#?}"
    );
    let live = format!("127.0.0.1:{}", hb.port);
    assert!(log.iter().all(|l| l["upstream_host"] == live.as_str()));
}

#[test]
fn a_large_streamed_post_is_not_retried_but_a_small_one_is() {
    let dead = free_port();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &retrying_route("dead", "{attempts: 2, backoff: 1ms}"),
        &service_with_endpoints("dead", &[dead]),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let large = dir.path().join("large");
    std::fs::write(&large, vec![b'x'; 100 * 1024]).unwrap();
    let url = format!("http://127.0.0.1:{port}/post");
    let big = curl(&[
        "-X",
        "POST",
        "-H",
        "Expect:",
        "--data-binary",
        &format!("@{}", large.display()),
        &url,
    ]);
    assert_eq!(big.status, 503, "{big:?}");
    assert_eq!(error_code(&big), "UF", "one attempt, its own failure");
    assert_eq!(gw.explain(&big)["attempts"], 1);

    let small = curl(&["-X", "POST", "--data-binary", "small", &url]);
    assert_eq!(small.status, 503, "{small:?}");
    assert_eq!(
        error_code(&small),
        "URX,UF",
        "the retries ran out, then the last attempt's connect failure answered"
    );
    let why = gw.explain(&small);
    assert_eq!(why["attempts"], 3, "{why}");
    assert!(
        why["reason"]
            .as_str()
            .unwrap()
            .contains("retries exhausted after 3 attempt(s)"),
        "{why}"
    );
}

fn plain_route(svc: &str) -> String {
    route(
        svc,
        &format!(
            "spec:\n  parentRefs: [{{name: edge}}]\n  rules:\n\
             \x20   - backendRefs: [{{name: {svc}, port: 80}}]\n"
        ),
    )
}

/// The admin page's view of one backend.
fn backend_state(gw: &Gateway, backend: &str) -> serde_json::Value {
    let (status, body) = gw.admin_get("/debug/backends");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["backends"][backend].clone()
}

#[test]
fn connection_pool_overflow_is_an_immediate_503_uo() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &plain_route("httpbin"),
        &local_service("httpbin", hb.port),
        &destination_rule(
            "httpbin",
            "connectionPool:\n  tcp: {maxConnections: 1}\n  http: {http1MaxPendingRequests: 1}",
        ),
    ]));
    let slow = format!("http://127.0.0.1:{port}/delay/2");
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let url = slow.clone();
            std::thread::spawn(move || curl(&[&url]).status)
        })
        .collect();
    eventually("one request holding the connection and one queued", || {
        let b = backend_state(&gw, "Service default/httpbin:80");
        b["pool"]["connections"] == 1 && b["pool"]["pending"] == 1
    });
    let r = curl(&[&format!("http://127.0.0.1:{port}/get")]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(error_code(&r), "UO");
    // Envoy's overflow mark, which stops a downstream Envoy from retrying it.
    assert_eq!(r.header("x-envoy-overloaded").as_deref(), Some("true"));
    let why = gw.explain(&r);
    assert!(
        why["reason"]
            .as_str()
            .unwrap()
            .contains("from DestinationRule default/httpbin"),
        "{why}"
    );
    for t in in_flight {
        assert_eq!(
            t.join().unwrap(),
            200,
            "the queued request is served, not refused"
        );
    }
    assert_eq!(
        gw.metric(
            "gateway_upstream_policy_events_total{backend=\"Service default/httpbin:80\",event=\"overflow\"}"
        ),
        1.0
    );
}

/// Envoy's circuit breakers count a request until its response has ended: while one
/// response body is still streaming, `http2MaxRequests: 1` refuses the next request (it
/// used to be admitted once the first response's headers had arrived).
#[test]
fn a_request_holds_its_connection_pool_slot_until_its_response_body_ends() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &plain_route("httpbin"),
        &local_service("httpbin", hb.port),
        &destination_rule("httpbin", "connectionPool:\n  http: {http2MaxRequests: 1}"),
    ]));
    // Headers at once, then the body a byte at a time over 3 s.
    let drip = format!("http://127.0.0.1:{port}/drip?duration=3&numbytes=3&delay=0");
    let first = std::thread::spawn(move || curl(&[&drip]).status);
    eventually("the first request streaming its body", || {
        backend_state(&gw, "Service default/httpbin:80")["pool"]["requests"] == 1
    });
    let r = curl(&[&format!("http://127.0.0.1:{port}/get")]);
    assert_eq!((r.status, error_code(&r).as_str()), (503, "UO"), "{r:?}");
    assert_eq!(first.join().unwrap(), 200);
    eventually("the slot given back with the body's end", || {
        backend_state(&gw, "Service default/httpbin:80")["pool"]["requests"] == 0
    });
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/get")]).status, 200);
}

/// A retryable answer that is not retried after all (a body past the 64 KiB replay copy)
/// is the client's answer: it keeps its slot while its body streams.
#[test]
fn an_answer_whose_retry_is_given_up_keeps_its_pool_slot() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0u8; 65536];
                // A GET ends with its headers; the chunked POST with its last chunk.
                while !(seen.starts_with(b"GET") && seen.ends_with(b"\r\n\r\n")
                    || seen.ends_with(b"0\r\n\r\n"))
                {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                if seen.starts_with(b"GET") {
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                    return;
                }
                // The 503's body comes 3 s after its headers.
                let _ = conn
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3\r\n\r\n");
                std::thread::sleep(std::time::Duration::from_secs(3));
                let _ = conn.write_all(b"bye");
            });
        }
    });
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &retrying_route("slow", "{codes: [503], attempts: 1, backoff: 1ms}"),
        &service_with_endpoints("slow", &[up]),
        &destination_rule("slow", "connectionPool:\n  http: {http2MaxRequests: 1}"),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let large = dir.path().join("large");
    std::fs::write(&large, vec![b'x'; 100 * 1024]).unwrap();
    let url = format!("http://127.0.0.1:{port}/post");
    let body = format!("@{}", large.display());
    let post = std::thread::spawn(move || {
        let args = [
            "-X",
            "POST",
            "-H",
            "Expect:",
            "-H",
            "Transfer-Encoding: chunked",
        ];
        curl(&[&args[..], &["--data-binary", &body, &url]].concat()).status
    });
    eventually("the 503 streaming its body", || {
        backend_state(&gw, "Service default/slow:80")["pool"]["requests"] == 1
    });
    let r = curl(&[&format!("http://127.0.0.1:{port}/get")]);
    assert_eq!((r.status, error_code(&r).as_str()), (503, "UO"), "{r:?}");
    assert_eq!(post.join().unwrap(), 503, "the upstream's own answer");
}

/// A client that goes away while its request waits for the upstream cancels the request;
/// the backend's and the endpoint's in-flight counts (the retry budget's and
/// LEAST_REQUEST's load) must drop with it, or the endpoint looks busy forever.
#[test]
fn a_client_gone_mid_request_leaves_no_request_counted_in_flight() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &plain_route("httpbin"),
        &local_service("httpbin", hb.port),
    ]));
    let backend = "Service default/httpbin:80";
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        client,
        "GET /delay/10 HTTP/1.1\r\nHost: example.com\r\n\r\n"
    )
    .unwrap();
    eventually("the request is in flight to the endpoint", || {
        let b = backend_state(&gw, backend);
        b["active_requests"] == 1 && b["endpoints"][0]["active"] == 1
    });
    drop(client);
    eventually("the cancelled request is no longer counted", || {
        let b = backend_state(&gw, backend);
        b["active_requests"] == 0 && b["endpoints"][0]["active"] == 0
    });
}

#[test]
fn an_endpoint_answering_5xx_is_ejected_and_returns_after_its_ejection_time() {
    let hb = Httpbin::start();
    let bad = FlakyUpstream::named(usize::MAX, "never");
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &plain_route("pair"),
        &service_with_endpoints("pair", &[bad.port, hb.port]),
        &destination_rule(
            "pair",
            "outlierDetection:\n  consecutive5xxErrors: 2\n  interval: 1s\n  \
             baseEjectionTime: 2s\n  maxEjectionPercent: 50",
        ),
    ]));
    let url = format!("http://127.0.0.1:{port}/get");
    let bad_addr = format!("127.0.0.1:{}", bad.port);
    let bad_state = |gw: &Gateway| {
        let b = backend_state(gw, "Service default/pair:80");
        b["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == bad_addr.as_str())
            .cloned()
            .unwrap()
    };
    eventually("the failing endpoint ejected", || {
        curl(&[&url]);
        bad_state(&gw)["state"] == "ejected"
    });
    let seen = bad.seen.load(Ordering::SeqCst);
    for i in 0..20 {
        let r = curl(&[&url]);
        assert_eq!(r.status, 200, "request {i} while ejected: {r:?}");
    }
    assert_eq!(
        bad.seen.load(Ordering::SeqCst),
        seen,
        "no request reached it"
    );
    assert_eq!(bad_state(&gw)["ejections"], 1);
    eventually("the endpoint back after baseEjectionTime", || {
        bad_state(&gw)["state"] == "healthy"
    });
    eventually("traffic reaching it again", || {
        curl(&[&url]);
        bad.seen.load(Ordering::SeqCst) > seen
    });
}

/// Envoy ejects only while the ejected share stays within `maxEjectionPercent` (10% by
/// default: none of two endpoints), and with every endpoint ejected and no panic mode
/// (`minHealthPercent` 0) answers `503 UH` without contacting any.
#[test]
fn ejections_stay_within_max_ejection_percent_and_all_ejected_is_503_uh() {
    let (a, b) = (
        FlakyUpstream::named(usize::MAX, "never"),
        FlakyUpstream::named(usize::MAX, "never"),
    );
    let port = free_port();
    let od = |percent: &str| {
        format!(
            "outlierDetection:\n  consecutive5xxErrors: 2\n  interval: 1s\n  \
             baseEjectionTime: 30s{percent}"
        )
    };
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route(
            "split",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n\
             \x20   - matches: [{path: {type: PathPrefix, value: /default}}]\n\
             \x20     backendRefs: [{name: capped, port: 80}]\n\
             \x20   - backendRefs: [{name: open, port: 80}]\n",
        ),
        &service_with_endpoints("capped", &[a.port, b.port]),
        &service_with_endpoints("open", &[a.port, b.port]),
        &destination_rule("capped", &od("")),
        &destination_rule("open", &od("\n  maxEjectionPercent: 100")),
    ]));
    let base = format!("http://127.0.0.1:{port}");
    let seen = || a.seen.load(Ordering::SeqCst) + b.seen.load(Ordering::SeqCst);
    for i in 0..12 {
        let r = curl(&[&format!("{base}/default/{i}")]);
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.body, "failing", "the upstream's own 503");
    }
    assert_eq!(seen(), 12, "with 10% of two endpoints none is ejected");
    let states = |backend: &str| -> Vec<String> {
        backend_state(&gw, backend)["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["state"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(states("Service default/capped:80"), ["healthy", "healthy"]);
    eventually("both endpoints ejected at 100%", || {
        curl(&[&format!("{base}/open")]);
        states("Service default/open:80") == ["ejected", "ejected"]
    });
    let before = seen();
    let r = curl(&[&format!("{base}/open")]);
    assert_eq!((r.status, error_code(&r).as_str()), (503, "UH"), "{r:?}");
    assert!(
        gw.explain(&r)["reason"]
            .as_str()
            .unwrap()
            .contains("no healthy upstream")
    );
    assert_eq!(seen(), before, "no endpoint contacted");
}

/// Istio's default load balancer is LEAST_REQUEST: with two endpoints, one holding a
/// request that never ends, every new request goes to the other (RANDOM would send
/// about half of them into the stalled one).
#[test]
fn least_request_is_the_default_and_avoids_a_busy_endpoint() {
    let hb = Httpbin::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled = listener.local_addr().unwrap().port();
    let held = Arc::new(AtomicUsize::new(0));
    let count = held.clone();
    std::thread::spawn(move || {
        let mut keep = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            if read_request(&mut conn).is_some() {
                count.fetch_add(1, Ordering::SeqCst);
                keep.push(conn);
            }
        }
    });
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &plain_route("pair"),
        &service_with_endpoints("pair", &[stalled, hb.port]),
    ]));
    let url = format!("http://127.0.0.1:{port}/get");
    // One background request at a time, each either answered (httpbin) or held.
    eventually("one request held by the stalled endpoint", || {
        let url = url.clone();
        let t = std::thread::spawn(move || curl(&["--max-time", "60", &url]));
        wait_for(
            "the request answered or held",
            std::time::Duration::from_secs(10),
            || t.is_finished() || held.load(Ordering::SeqCst) > 0,
        );
        held.load(Ordering::SeqCst) > 0
    });
    let held_now = held.load(Ordering::SeqCst);
    for i in 0..20 {
        let r = curl(&["--max-time", "10", &url]);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    assert_eq!(
        held.load(Ordering::SeqCst),
        held_now,
        "none went to the busy endpoint"
    );
}

/// One response read off a keep-alive connection.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// GETs `path` `n` times on one keep-alive connection.
fn exchange_many(port: u16, path: &str, header: &str, n: usize) -> Vec<Answer> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.set_nodelay(true).unwrap();
    let mut answers = Vec::with_capacity(n);
    let mut buf = Vec::new();
    for _ in 0..n {
        let request = format!("GET {path} HTTP/1.1\r\nHost: h\r\n{header}\r\n\r\n");
        s.write_all(request.as_bytes()).unwrap();
        let mut chunk = [0u8; 4096];
        let answer = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content-length");
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                    buf.drain(..end + 4 + len);
                    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                    break Answer { status, head, body };
                }
            }
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "gateway closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        };
        answers.push(answer);
    }
    answers
}

/// GETs `path` `n` times on one keep-alive connection; the bodies.
fn get_many(port: u16, path: &str, header: &str, n: usize) -> Vec<String> {
    exchange_many(port, path, header, n)
        .into_iter()
        .map(|a| a.body)
        .collect()
}

#[test]
fn consistent_hash_keeps_a_key_on_one_endpoint_across_1000_requests() {
    let ups = [
        FlakyUpstream::named(0, "a"),
        FlakyUpstream::named(0, "b"),
        FlakyUpstream::named(0, "c"),
    ];
    let port = free_port();
    let ports: Vec<u16> = ups.iter().map(|u| u.port).collect();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &plain_route("sticky"),
        &service_with_endpoints("sticky", &ports),
        &destination_rule(
            "sticky",
            "loadBalancer:\n  consistentHash: {httpHeaderName: x-user}",
        ),
    ]));
    let bodies = get_many(port, "/", "x-user: alice", 1000);
    let first = &bodies[0];
    assert!(
        bodies.iter().all(|b| b == first),
        "alice moved between endpoints"
    );
    let mut spread: Vec<String> = (0..30)
        .map(|i| get_many(port, "/", &format!("x-user: user-{i}"), 1).remove(0))
        .collect();
    spread.sort();
    spread.dedup();
    assert!(spread.len() > 1, "30 keys all hashed to {spread:?}");
}

/// `useSourceIp` hashes the client as Envoy sees it behind `--num-trusted-proxies`
/// (its source_ip hash with xff_num_trusted_hops): clients behind one load balancer are
/// spread, each kept on its endpoint (they all went to one before).
#[test]
fn source_ip_hashing_reads_the_client_behind_trusted_proxies() {
    let ups = [FlakyUpstream::named(0, "a"), FlakyUpstream::named(0, "b")];
    let port = free_port();
    let ports: Vec<u16> = ups.iter().map(|u| u.port).collect();
    let _gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            &plain_route("sticky"),
            &service_with_endpoints("sticky", &ports),
            &destination_rule(
                "sticky",
                "loadBalancer:\n  consistentHash: {useSourceIp: true}",
            ),
        ]),
        &["--num-trusted-proxies", "1"],
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 1..=20 {
        let xff = format!("x-forwarded-for: 203.0.113.{i}");
        let bodies = get_many(port, "/", &xff, 5);
        assert!(bodies.iter().all(|b| *b == bodies[0]), "client {i} moved");
        seen.insert(bodies[0].clone());
    }
    assert_eq!(seen.len(), 2, "20 clients behind one proxy all on {seen:?}");
}

/// A BackendTrafficPolicy on `target` (`Gateway edge` or `HTTPRoute name`) with local
/// rate-limit `rules` (YAML list items).
fn rate_limit_policy(kind: &str, name: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\n\
         metadata: {{name: limit-{name}, namespace: default}}\n\
         spec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: {kind}, name: {name}}}]\n\
         \x20 rateLimit:\n    type: Local\n    local:\n      rules:\n{}",
        rules
            .lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>()
    )
}

#[test]
fn a_local_limit_of_10_per_second_admits_10_and_refuses_the_11th() {
    let up = FlakyUpstream::named(0, "ok");
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &plain_route("limited"),
        &service_with_endpoints("limited", &[up.port]),
        &rate_limit_policy(
            "HTTPRoute",
            "limited",
            "- limit: {requests: 10, unit: Second}",
        ),
    ]));
    let answers = exchange_many(port, "/", "x: y", 11);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses[..10], [200; 10], "{statuses:?}");
    // Admitted responses carry the quota too (Envoy's draft-03 headers).
    let first = &answers[0].head;
    assert!(first.contains("\r\nx-ratelimit-limit: 10"), "{first}");
    assert!(first.contains("\r\nx-ratelimit-remaining: 9"), "{first}");
    assert!(first.contains("\r\nx-ratelimit-reset: 1"), "{first}");
    let refused = &answers[10];
    assert_eq!(refused.status, 429, "{statuses:?}");
    assert!(
        refused.body.starts_with("429 RL (request id "),
        "{}",
        refused.body
    );
    assert!(
        refused.head.contains("\r\nretry-after: 1"),
        "{}",
        refused.head
    );
    assert!(
        refused.head.contains("\r\nx-ratelimit-limit: 10"),
        "{}",
        refused.head
    );
    assert!(
        refused.head.contains("\r\nx-ratelimit-remaining: 0"),
        "{}",
        refused.head
    );
    assert_eq!(
        up.seen.load(Ordering::SeqCst),
        10,
        "the refused request never left"
    );
    let line = gw.wait_access_log(|l| l["response_code"] == 429);
    assert_eq!(line["response_flags"], "RL", "{line}");
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("BackendTrafficPolicy default/limit-limited"),
        "{line}"
    );
}

#[test]
fn a_gateway_wide_limit_holds_for_the_process_across_workers_and_connections() {
    // Two workers: the connections below spread over both.
    gateway_wide_limit_holds("2");
}

#[test]
fn a_gateway_wide_limit_holds_on_one_worker() {
    gateway_wide_limit_holds("1");
}

/// 10 per minute for the Gateway at `--workers N`: 20 requests over 4 connections get 10
/// answers and 10 refusals.
fn gateway_wide_limit_holds(workers: &str) {
    let up = FlakyUpstream::named(0, "ok");
    let port = free_port();
    let _gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            &plain_route("shared"),
            &service_with_endpoints("shared", &[up.port]),
            &rate_limit_policy("Gateway", "edge", "- limit: {requests: 10, unit: Minute}"),
        ]),
        &["--workers", workers],
    );
    let clients: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || exchange_many(port, "/", "x: y", 5)))
        .collect();
    let statuses: Vec<u16> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .map(|a| a.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        10,
        "{statuses:?}"
    );
}

#[test]
fn client_selectors_limit_only_the_requests_they_select() {
    let up = FlakyUpstream::named(0, "ok");
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &plain_route("selective"),
        &service_with_endpoints("selective", &[up.port]),
        &rate_limit_policy(
            "HTTPRoute",
            "selective",
            "- clientSelectors:\n    - headers: [{name: x-tenant, value: free}]\n  \
             limit: {requests: 2, unit: Hour}\n\
             - clientSelectors:\n    - sourceCIDR: {value: 10.0.0.0/8}\n  \
             limit: {requests: 1, unit: Hour}",
        ),
    ]));
    let free: Vec<u16> = exchange_many(port, "/", "x-tenant: free", 3)
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(free, [200, 200, 429]);
    // Neither the other tenant nor loopback (outside 10/8) is limited.
    let paid = exchange_many(port, "/", "x-tenant: paid", 5);
    let statuses: Vec<u16> = paid.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200; 5]);
    assert!(
        !paid[0].head.contains("x-ratelimit-"),
        "no limit selected it, so no quota: {}",
        paid[0].head
    );
}

#[test]
fn source_cidr_matches_the_client_behind_trusted_proxies_not_the_load_balancer() {
    let up = FlakyUpstream::named(0, "ok");
    let port = free_port();
    let _gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            &plain_route("behind-lb"),
            &service_with_endpoints("behind-lb", &[up.port]),
            &rate_limit_policy(
                "HTTPRoute",
                "behind-lb",
                "- clientSelectors:\n    - sourceCIDR: {value: 203.0.113.0/24}\n  \
                 limit: {requests: 2, unit: Hour}",
            ),
        ]),
        &["--num-trusted-proxies", "1"],
    );
    // The load balancer (one trusted proxy) appended the client's address; what a client
    // wrote before it is not trusted.
    let limited: Vec<u16> = exchange_many(port, "/", "x-forwarded-for: 10.9.9.9, 203.0.113.5", 3)
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(limited, [200, 200, 429]);
    let other: Vec<u16> = exchange_many(port, "/", "x-forwarded-for: 203.0.113.5, 198.51.100.1", 3)
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(
        other, [200; 3],
        "a spoofed leftmost entry does not select the limit"
    );
}

/// An AuthorizationPolicy in `default` (YAML `spec` body, indented two spaces).
fn authorization_policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: {name}, namespace: default}}\nspec:\n{}",
        spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
    )
}

#[test]
fn a_deny_policy_refuses_matching_requests_with_rbac_access_denied() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &plain_route("httpbin"),
        &local_service("httpbin", hb.port),
        &authorization_policy(
            "no-status",
            "action: DENY\nrules:\n  - to: [{operation: {paths: [\"/status/*\"], methods: [GET]}}]",
        ),
    ]));
    let denied = curl(&[&format!("http://127.0.0.1:{port}/status/200")]);
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.body, "RBAC: access denied");
    let why = gw.explain(&denied);
    assert_eq!(why["response_flags"], "rbac_access_denied");
    assert!(
        why["reason"]
            .as_str()
            .unwrap()
            .contains("DENY policy AuthorizationPolicy default/no-status"),
        "{why}"
    );
    let posted = curl(&["-X", "POST", &format!("http://127.0.0.1:{port}/status/200")]);
    assert_eq!(posted.status, 200, "another method is not denied");
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/get")]).status, 200);
}

#[test]
fn an_allow_policy_on_remote_ip_blocks_reads_the_client_from_x_forwarded_for() {
    let hb = Httpbin::start();
    let port = free_port();
    let _gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            &plain_route("httpbin"),
            &local_service("httpbin", hb.port),
            &authorization_policy(
                "office-only",
                "selector: {matchLabels: {istio: ingressgateway}}\n\
                 rules:\n  - from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]",
            ),
        ]),
        &[
            "--pod-labels",
            "istio=ingressgateway,app=edge",
            "--num-trusted-proxies",
            "1",
        ],
    );
    let url = format!("http://127.0.0.1:{port}/get");
    let with_xff = |xff: &str| curl(&["-H", &format!("x-forwarded-for: {xff}"), &url]).status;
    assert_eq!(with_xff("203.0.113.5"), 200);
    assert_eq!(with_xff("198.51.100.1"), 403);
    // One trusted proxy: the entry it appended (the rightmost) is the client; what the
    // client wrote before it is not believed.
    assert_eq!(with_xff("203.0.113.5, 198.51.100.1"), 403);
    assert_eq!(with_xff("198.51.100.1, 203.0.113.5"), 200);
    assert_eq!(
        curl(&[&url]).status,
        403,
        "no header: the peer (loopback) is the client"
    );
}

#[test]
fn a_deny_policy_with_an_unsupported_field_fails_closed() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &plain_route("httpbin"),
        &local_service("httpbin", hb.port),
        &authorization_policy(
            "by-principal",
            "action: DENY\nrules:\n  - from: [{source: {principals: [cluster.local/ns/a/sa/b]}}]",
        ),
    ]));
    let r = curl(&[&format!("http://127.0.0.1:{port}/get")]);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body, "RBAC: access denied");
    gw.wait_log("fails closed: it denies every request");
}

/// An HTTP/1.1 upstream whose first request is answered only after `stall`, the rest at
/// once (body `answered <n>`), each connection on its own thread; counts requests.
struct StallFirstUpstream {
    port: u16,
    seen: Arc<AtomicUsize>,
}

impl StallFirstUpstream {
    fn start(stall: std::time::Duration) -> StallFirstUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let counter = counter.clone();
                std::thread::spawn(move || {
                    if read_request(&mut conn).is_none() {
                        return;
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    if n == 1 {
                        std::thread::sleep(stall);
                    }
                    let body = format!("answered {n}");
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes());
                });
            }
        });
        StallFirstUpstream { port, seen }
    }
}

/// HTTPRouteRetry: an attempt that reaches `timeouts.backendRequest` "SHOULD" be retried,
/// whatever `codes` lists (here only 503).
#[test]
fn backend_request_timeout_bounds_each_attempt_and_a_stalled_attempt_is_retried() {
    let up = StallFirstUpstream::start(std::time::Duration::from_secs(8));
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route(
            "per-try",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n\
             \x20   - backendRefs: [{name: stalls, port: 80}]\n\
             \x20     timeouts: {request: 6s, backendRequest: 500ms}\n\
             \x20     retry: {codes: [503], attempts: 1, backoff: 1ms}\n",
        ),
        &service_with_endpoints("stalls", &[up.port]),
    ]));
    let started = std::time::Instant::now();
    let r = curl(&[&format!("http://127.0.0.1:{port}/")]);
    let took = started.elapsed();
    assert_eq!((r.status, r.body.as_str()), (200, "answered 2"), "{r:?}");
    assert!(
        took < std::time::Duration::from_secs(4),
        "the first attempt was cut at 500ms, not at the 6s request timeout: {took:?}"
    );
    let line = gw.wait_access_log(|l| l["response_code"] == 200);
    assert_eq!(line["attempts"], 2, "{line}");
    assert_eq!(up.seen.load(Ordering::SeqCst), 2);
}

#[test]
fn the_request_timeout_covers_the_response_body_and_cuts_a_slow_one_with_ut() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route(
            "slow-body",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n\
             \x20   - backendRefs: [{name: httpbin, port: 80}]\n\
             \x20     timeouts: {request: 1s}\n",
        ),
        &local_service("httpbin", hb.port),
    ]));
    // httpbin's /drip sends its headers at once, then one byte a second.
    let started = std::time::Instant::now();
    let cut = curl(&[&format!(
        "http://127.0.0.1:{port}/drip?duration=4&numbytes=4&delay=0"
    )]);
    let took = started.elapsed();
    assert_eq!(cut.status, 200, "the headers had been sent: {cut:?}");
    assert_eq!(cut.exit_code, 18, "curl saw the body cut short: {cut:?}");
    assert!(
        took < std::time::Duration::from_secs(3),
        "cut at the 1s timeout, not after the 4s body: {took:?}"
    );
    let line = gw.wait_access_log(|l| l["path"].as_str().is_some_and(|p| p.contains("duration=4")));
    assert_eq!(line["response_flags"], "UT", "{line}");
    // A body that ends within the timeout is whole.
    let whole = curl(&[&format!(
        "http://127.0.0.1:{port}/drip?duration=0.2&numbytes=3&delay=0"
    )]);
    assert_eq!(
        (whole.status, whole.exit_code, whole.body.as_str()),
        (200, 0, "***")
    );
}

/// A raw HTTP/1.1 upstream that reads each connection until what it read `done` says,
/// then writes `answer` (to see exactly when the gateway sent which bytes).
fn raw_upstream(done: fn(&[u8]) -> bool, answer: &'static [u8]) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut seen = Vec::new();
                let mut buf = [0u8; 16384];
                while !done(&seen) {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(answer);
                let _ = conn.read(&mut buf);
            });
        }
    });
    port
}

/// An upstream that answers as soon as the request's first body chunk (`hello`) arrives
/// (an interactive protocol), without waiting for the body's end.
fn answers_on_first_chunk() -> u16 {
    raw_upstream(
        |seen| String::from_utf8_lossy(seen).contains("hello"),
        b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\ngot hello",
    )
}

#[test]
fn a_streamed_body_on_a_retrying_route_flows_before_it_ends() {
    use std::io::{Read, Write};
    let up = answers_on_first_chunk();
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &retrying_route("interactive", "{attempts: 2, codes: [503]}"),
        &service_with_endpoints("interactive", &[up]),
    ]));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // The first chunk, and the body left open: the upstream must see it now.
    s.write_all(
        b"POST /stream HTTP/1.1\r\nHost: a.example.com\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("got hello") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "no answer while the body is still open ({e}): the gateway held the chunk back; \
                 got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn a_request_queued_for_a_connection_gets_504_ut_at_its_request_timeout() {
    let hb = Httpbin::start();
    let port = free_port();
    // Two rules to one backend (one pool): /delay holds the only connection without a
    // timeout; /anything waits in the queue under a 1s request timeout.
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route(
            "httpbin",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n\
             \x20   - matches: [{path: {type: PathPrefix, value: /delay}}]\n\
             \x20     backendRefs: [{name: httpbin, port: 80}]\n\
             \x20   - matches: [{path: {type: PathPrefix, value: /anything}}]\n\
             \x20     backendRefs: [{name: httpbin, port: 80}]\n\
             \x20     timeouts: {request: 1s}\n",
        ),
        &local_service("httpbin", hb.port),
        &destination_rule(
            "httpbin",
            "connectionPool:\n  tcp: {maxConnections: 1}\n  http: {http1MaxPendingRequests: 1}",
        ),
    ]));
    let slow = format!("http://127.0.0.1:{port}/delay/4");
    let holder = std::thread::spawn(move || curl(&[&slow]).status);
    eventually("the slow request holding the only connection", || {
        backend_state(&gw, "Service default/httpbin:80")["pool"]["connections"] == 1
    });
    let started = std::time::Instant::now();
    let r = curl(&[&format!("http://127.0.0.1:{port}/anything")]);
    let took = started.elapsed();
    assert_eq!((r.status, error_code(&r).as_str()), (504, "UT"), "{r:?}");
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(3),
        "refused at the 1s request timeout, not when the connection freed (4s): {took:?}"
    );
    let why = gw.explain(&r)["reason"].as_str().unwrap().to_string();
    assert!(
        why.contains("waited for a connection of Service default/httpbin:80")
            && why.contains("timeouts.request (1s)"),
        "{why}"
    );
    assert_eq!(holder.join().unwrap(), 200);
}

/// An upstream that reads each request's whole chunked body, then answers 503 (so the
/// gateway has sent every byte before it learns the attempt failed).
fn reads_all_then_503() -> u16 {
    raw_upstream(
        |seen| seen.ends_with(b"\r\n0\r\n\r\n"),
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
}

#[test]
fn a_chunked_post_is_retried_while_its_copy_is_kept_and_one_past_64_kib_is_not() {
    let dead = free_port();
    let consumer = reads_all_then_503();
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route(
            "retrying",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n\
             \x20   - matches: [{path: {type: PathPrefix, value: /dead}}]\n\
             \x20     backendRefs: [{name: dead, port: 80}]\n\
             \x20     retry: {attempts: 2, backoff: 1ms}\n\
             \x20   - matches: [{path: {type: PathPrefix, value: /consumed}}]\n\
             \x20     backendRefs: [{name: consumer, port: 80}]\n\
             \x20     retry: {attempts: 2, codes: [503], backoff: 1ms}\n\
             \x20   - matches: [{path: {type: PathPrefix, value: /post}}]\n\
             \x20     backendRefs: [{name: httpbin, port: 80}]\n\
             \x20     retry: {attempts: 2, backoff: 1ms}\n",
        ),
        &service_with_endpoints("dead", &[dead]),
        &service_with_endpoints("consumer", &[consumer]),
        &local_service("httpbin", hb.port),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let large = dir.path().join("large");
    let large_body: Vec<u8> = (0..100 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&large, &large_body).unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, "small chunked body").unwrap();
    // curl sends a file with Transfer-Encoding: chunked when told to: no length known.
    let post = |file: &std::path::Path, path: &str| {
        curl(&[
            "-X",
            "POST",
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            "Expect:",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("http://127.0.0.1:{port}{path}"),
        ])
    };
    // A refused connection read nothing of either body: both can be sent again.
    for file in [&small, &large] {
        let r = post(file, "/dead");
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (503, "URX,UF"),
            "{r:?}"
        );
        assert_eq!(
            gw.explain(&r)["attempts"],
            3,
            "nothing read yet: replayable"
        );
    }
    // An upstream that read the whole body before failing: the small body's copy is
    // kept and sent again; past 64 KiB it was not kept, so no retry.
    let s = post(&small, "/consumed");
    assert_eq!(s.status, 503, "{s:?}");
    let line = gw.wait_access_log(|l| l["path"] == "/consumed" && l["attempts"] != 1);
    assert_eq!(line["attempts"], 3, "{line}");
    let l = post(&large, "/consumed");
    assert_eq!(l.status, 503, "{l:?}");
    let line = gw.wait_access_log(|l| l["path"] == "/consumed" && l["attempts"] == 1);
    assert_eq!(line["response_code"], 503, "{line}");

    // Both bodies arrive whole through a retrying route.
    let ok = post(&small, "/post");
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["data"], "small chunked body");
    let ok = post(&large, "/post");
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        ok.json()["data"].as_str().unwrap().as_bytes(),
        &large_body[..],
        "the large body arrives intact"
    );
}
