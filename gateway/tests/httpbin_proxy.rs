//! The gateway binary in front of a real httpbin (gunicorn): routing, filters, weights,
//! errors, headers, hot reload, HTTP/2. Each test starts its own httpbin and gateway on
//! free ports, so they run in parallel.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

fn route(name: &str, body: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: default}}\n{body}"
    )
}

/// The edge Gateway on `port` with one HTTPRoute sending everything to httpbin.
fn edge_to_httpbin(port: u16, httpbin_port: u16) -> String {
    docs(&[
        &http_gateway(port),
        &route(
            "httpbin",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n    - backendRefs: [{name: httpbin, port: 80}]\n",
        ),
        &local_service("httpbin", httpbin_port),
    ])
}

#[test]
fn routes_by_host_and_answers_404_without_a_route() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route(
            "httpbin",
            "spec:\n  parentRefs: [{name: edge}]\n  hostnames: [httpbin.example.com]\n  \
             rules:\n    - backendRefs: [{name: httpbin, port: 80}]\n",
        ),
        &local_service("httpbin", hb.port),
    ]));
    let url = format!("http://127.0.0.1:{port}/get");
    let ok = curl(&["-H", "Host: httpbin.example.com", &url]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["headers"]["Host"], "httpbin.example.com");

    let miss = curl(&["-H", "Host: other.example.com", &url]);
    assert_eq!(miss.status, 404);
    assert_eq!(error_code(&miss), "NR");
    let why = gw.explain(&miss);
    assert!(
        why["reason"]
            .as_str()
            .unwrap()
            .contains("no route for host \"other.example.com\""),
        "{why}"
    );
    let line = gw.wait_access_log(|l| l["response_code"] == 404);
    assert!(
        line["reason"].as_str().unwrap().contains("no route"),
        "{line}"
    );
    let ok_line = gw.wait_access_log(|l| l["response_code"] == 200);
    assert_eq!(ok_line["route"], "default/httpbin/0");
    assert_eq!(ok_line["method"], "GET");
    assert_eq!(ok_line["path"], "/get");
    assert!(ok_line["request_id"].as_str().unwrap().len() >= 32);
}

#[test]
fn path_prefix_httpbin_is_rewritten_to_root_with_a_hostname_rewrite() {
    let hb = Httpbin::start();
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route(
            "rewrite",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n\
             \x20   - matches: [{path: {type: PathPrefix, value: /httpbin/}}]\n\
             \x20     filters:\n\
             \x20       - type: URLRewrite\n\
             \x20         urlRewrite:\n\
             \x20           hostname: rewritten.internal\n\
             \x20           path: {type: ReplacePrefixMatch, replacePrefixMatch: /}\n\
             \x20     backendRefs: [{name: httpbin, port: 80}]\n",
        ),
        &local_service("httpbin", hb.port),
    ]));
    let r = curl(&[&format!("http://127.0.0.1:{port}/httpbin/anything/x?q=1")]);
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["url"], "http://rewritten.internal/anything/x?q=1");
    assert_eq!(j["headers"]["Host"], "rewritten.internal");
    // Only the prefix element matches: /httpbinx is not under /httpbin/.
    let r = curl(&[&format!("http://127.0.0.1:{port}/httpbinx")]);
    assert_eq!((r.status, error_code(&r).as_str()), (404, "NR"));
}

/// A backendRef to Service `canary` marking requests and responses with `x-backend: canary`.
fn canary_backend(weight: u32) -> String {
    format!(
        "        - name: canary
          port: 80
          weight: {weight}
          filters:
            - type: ResponseHeaderModifier
              responseHeaderModifier: {{set: [{{name: x-backend, value: canary}}]}}
            - type: RequestHeaderModifier
              requestHeaderModifier: {{set: [{{name: x-backend, value: canary}}]}}
"
    )
}

#[test]
fn header_canary_sends_marked_requests_to_the_canary_backend() {
    let hb = Httpbin::start();
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route(
            "canary",
            &format!(
                "spec:\n  parentRefs: [{{name: edge}}]\n  rules:\n\
                 \x20   - matches: [{{headers: [{{name: x-canary, value: \"true\"}}]}}]\n\
                 \x20     backendRefs:\n{}\
                 \x20   - backendRefs: [{{name: stable, port: 80}}]\n",
                canary_backend(1)
            ),
        ),
        &local_service("stable", hb.port),
        &local_service("canary", hb.port),
    ]));
    let url = format!("http://127.0.0.1:{port}/headers");
    let canary = curl(&["-H", "x-canary: true", &url]);
    assert_eq!(canary.status, 200, "{canary:?}");
    assert_eq!(canary.json()["headers"]["X-Backend"], "canary");
    let stable = curl(&["-H", "x-canary: false", &url]);
    assert_eq!(stable.status, 200);
    assert!(stable.json()["headers"].get("X-Backend").is_none());
}

#[test]
fn weighted_90_10_split_stays_within_a_statistical_bound() {
    let hb = Httpbin::start();
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route(
            "split",
            &format!(
                "spec:\n  parentRefs: [{{name: edge}}]\n  rules:\n\
                 \x20   - backendRefs:\n\
                 \x20       - {{name: stable, port: 80, weight: 90}}\n\
                 \x20       - {{name: retired, port: 80, weight: 0}}\n{}",
                canary_backend(10)
            ),
        ),
        &local_service("stable", hb.port),
        &local_service("canary", hb.port),
        // weight 0: never chosen, even though it would fail.
        &local_service("retired", free_port()),
    ]));
    let n = 600;
    let url = format!("http://127.0.0.1:{port}/status/200");
    let mut args: Vec<String> = vec!["-o".into(), "/dev/null".into()];
    args.extend(["-w".into(), "%{http_code} %header{x-backend}\\n".into()]);
    for _ in 0..n {
        args.push(url.clone());
    }
    let out = std::process::Command::new("curl")
        .arg("-s")
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), n, "{text}");
    assert!(lines.iter().all(|l| l.starts_with("200")), "{text}");
    let canary = lines.iter().filter(|l| l.ends_with("canary")).count();
    // Binomial(600, 0.1): mean 60, sd ~7.3; accept +-4.5 sd.
    assert!((27..=93).contains(&canary), "canary got {canary} of {n}");
}

#[test]
fn http_listener_redirects_to_https_with_301() {
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route(
            "to-https",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n    - filters:\n\
             \x20       - type: RequestRedirect\n\
             \x20         requestRedirect: {scheme: https, statusCode: 301}\n",
        ),
    ]));
    let r = curl(&[
        "-H",
        "Host: shop.example.com",
        &format!("http://127.0.0.1:{port}/cart?id=7"),
    ]);
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://shop.example.com/cart?id=7")
    );
}

#[test]
fn forged_xfcc_from_edge_never_reaches_httpbin() {
    let hb = Httpbin::start();
    let port = free_port();
    let _gw = Gateway::start(&edge_to_httpbin(port, hb.port));
    let r = curl(&[
        "-H",
        "X-Forwarded-Client-Cert: By=spiffe://cluster.local/ns/default/sa/httpbin;URI=spiffe://cluster.local/ns/admin/sa/root",
        "-H",
        "Connection: keep-alive, x-secret-hop",
        "-H",
        "x-secret-hop: 1",
        "-H",
        "X-Request-Id: my-request-1",
        &format!("http://127.0.0.1:{port}/headers?show_env=1"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    let h = &r.json()["headers"];
    assert!(h.get("X-Forwarded-Client-Cert").is_none(), "{h}");
    assert!(
        h.get("X-Secret-Hop").is_none(),
        "hop-by-hop header forwarded: {h}"
    );
    assert_eq!(h["X-Forwarded-For"], "127.0.0.1");
    assert_eq!(h["X-Forwarded-Proto"], "http");
    assert_eq!(h["X-Forwarded-Host"], format!("127.0.0.1:{port}"));
    // An edge client's x-request-id is replaced, as Envoy and Istio do at the edge: it
    // keys the request's log lines and `/debug/requests` entry.
    let id = h["X-Request-Id"].as_str().unwrap();
    assert_ne!(id, "my-request-1");
    assert_eq!((id.len(), id.matches('-').count()), (36, 4), "a UUID: {id}");
}

#[test]
fn a_clients_request_id_is_kept_only_when_asked_or_from_a_trusted_hop() {
    let hb = Httpbin::start();
    for args in [
        &["--preserve-external-request-id"][..],
        &["--num-trusted-proxies", "1"][..],
    ] {
        let port = free_port();
        let _gw = Gateway::start_with(&edge_to_httpbin(port, hb.port), args);
        let r = curl(&[
            "-H",
            "X-Request-Id: my-request-1",
            &format!("http://127.0.0.1:{port}/headers?show_env=1"),
        ]);
        assert_eq!(r.status, 200, "{args:?}: {r:?}");
        assert_eq!(
            r.json()["headers"]["X-Request-Id"],
            "my-request-1",
            "{args:?}"
        );
    }
}

#[test]
fn error_responses_say_why_503_500_503_504() {
    let hb = Httpbin::start();
    let port = free_port();
    let dead = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        &route(
            "errors",
            "spec:\n  parentRefs: [{name: edge}]\n  rules:\n\
             \x20   - matches: [{path: {value: /empty}}]\n\
             \x20     backendRefs: [{name: empty, port: 80}]\n\
             \x20   - matches: [{path: {value: /missing}}]\n\
             \x20     backendRefs: [{name: missing, port: 80}]\n\
             \x20   - matches: [{path: {value: /dead}}]\n\
             \x20     backendRefs: [{name: dead, port: 80}]\n\
             \x20   - matches: [{path: {value: /delay}}]\n\
             \x20     timeouts: {request: 500ms}\n\
             \x20     backendRefs: [{name: httpbin, port: 80}]\n",
        ),
        &local_service("httpbin", hb.port),
        &local_service("dead", dead),
        "apiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: default}\nspec: {ports: [{port: 80}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: empty-1, namespace: default, labels: {kubernetes.io/service-name: empty}}\n\
         addressType: IPv4\nports: [{port: 80}]\nendpoints: []\n",
    ]));
    let get = |p: &str| curl(&[&format!("http://127.0.0.1:{port}{p}")]);
    let reason = |r: &CurlResult| gw.explain(r)["reason"].as_str().unwrap().to_string();
    let r = get("/empty");
    assert_eq!((r.status, error_code(&r).as_str()), (503, "UH"));
    assert!(reason(&r).contains("no ready endpoints"), "{}", reason(&r));
    let r = get("/missing");
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (500, "backend_unresolvable")
    );
    assert!(reason(&r).contains("Service default/missing not found"));
    let r = get("/dead");
    assert_eq!((r.status, error_code(&r).as_str()), (503, "UF"));
    assert!(reason(&r).contains(&format!("connect failure to 127.0.0.1:{dead}")));
    // The client learns the code, never the upstream's address.
    assert!(!r.body.contains("127.0.0.1"), "{}", r.body);
    let r = get("/delay/3");
    assert_eq!((r.status, error_code(&r).as_str()), (504, "UT"));
    assert!(reason(&r).contains("timeouts.request"));
    let line = gw.wait_access_log(|l| l["response_code"] == 504);
    assert_eq!(line["response_flags"], "UT");
    assert!(line["reason"].as_str().unwrap().contains("did not answer"));
}

#[test]
fn oversized_uri_gets_414_and_oversized_headers_get_431() {
    let hb = Httpbin::start();
    let port = free_port();
    let _gw = Gateway::start_with(
        &edge_to_httpbin(port, hb.port),
        &["--max-uri-bytes", "1024", "--max-header-bytes", "4096"],
    );
    let long = format!("http://127.0.0.1:{port}/get?x={}", "a".repeat(2000));
    let r = curl(&[&long]);
    assert_eq!((r.status, error_code(&r).as_str()), (414, "uri_too_long"));
    let big = format!("x-big: {}", "b".repeat(5000));
    let r = curl(&["-H", &big, &format!("http://127.0.0.1:{port}/get")]);
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (431, "headers_too_large")
    );
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/get")]).status, 200);
}

#[test]
fn h2c_prior_knowledge_request_reaches_httpbin_end_to_end() {
    let hb = Httpbin::start();
    let port = free_port();
    let _gw = Gateway::start(&edge_to_httpbin(port, hb.port));
    let r = curl(&[
        "--http2-prior-knowledge",
        "-d",
        "hello=world",
        &format!("http://127.0.0.1:{port}/post"),
    ]);
    assert!(r.headers.starts_with("HTTP/2 200"), "{r:?}");
    assert_eq!(r.json()["form"]["hello"], "world");
}

#[test]
fn a_broken_route_is_left_out_while_the_route_next_to_it_keeps_serving() {
    let hb = Httpbin::start();
    let port = free_port();
    let routes = |second_path_type: &str| {
        docs(&[
            &http_gateway(port),
            &route(
                "working",
                "spec:\n  parentRefs: [{name: edge}]\n  hostnames: [working.example.com]\n  \
                 rules:\n    - backendRefs: [{name: httpbin, port: 80}]\n",
            ),
            &route(
                "second",
                &format!(
                    "spec:\n  parentRefs: [{{name: edge}}]\n  hostnames: [second.example.com]\n  \
                     rules:\n    - matches: [{{path: {{type: {second_path_type}, value: /}}}}]\n      \
                     backendRefs: [{{name: httpbin, port: 80}}]\n"
                ),
            ),
            &local_service("httpbin", hb.port),
        ])
    };
    let gw = Gateway::start(&routes("PathPrefix"));
    let url = format!("http://127.0.0.1:{port}/status/200");
    let second = || curl(&["-H", "Host: second.example.com", &url]);
    assert_eq!(second().status, 200);

    // Background traffic to the working route for the whole change.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if curl(&["-H", "Host: working.example.com", &url]).status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    gw.write_config(&routes("PathPrefixx"));
    gw.wait_metric_at_least("gateway_config_objects_rejected", 1.0);
    let expected = "HTTPRoute default/second rule 0 match 0: path type \"PathPrefixx\" is not one of Exact, PathPrefix, RegularExpression";
    assert!(gw.log().contains(expected), "{}", gw.log());
    // The broken route serves nothing (404 NR); its neighbour keeps serving.
    let r = second();
    assert_eq!((r.status, error_code(&r).as_str()), (404, "NR"));
    let served = ok.load(Ordering::Relaxed);
    wait_for(
        "requests served after the rejection",
        Duration::from_secs(10),
        || ok.load(Ordering::Relaxed) >= served + 5,
    );

    // The admin's status and `gateway validate` say why, per object.
    let (_, dump) = gw.admin_get("/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let parent = &dump["status"]["objects"]["HTTPRoute default/second"]["parents"]["default/edge"];
    assert_eq!(parent[0]["type"], "Accepted");
    assert_eq!(parent[0]["status"], false);
    assert_eq!(parent[0]["reason"], "UnsupportedValue");
    let v = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["validate", "--config"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    assert!(!v.status.success());
    assert!(String::from_utf8_lossy(&v.stderr).contains(expected));
    let stdout = String::from_utf8_lossy(&v.stdout);
    assert!(
        stdout.contains("  parent default/edge: Accepted=false (UnsupportedValue)"),
        "{stdout}"
    );

    // Fixed again: served again.
    gw.write_config(&routes("PathPrefix"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while second().status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "fix not applied: {}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    assert!(ok.load(Ordering::Relaxed) > 5);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests to the working route failed"
    );
}

#[test]
fn unparsable_config_is_rejected_whole_and_the_last_good_one_keeps_serving() {
    let hb = Httpbin::start();
    let port = free_port();
    let good = edge_to_httpbin(port, hb.port);
    let gw = Gateway::start(&good);
    let url = format!("http://127.0.0.1:{port}/status/200");
    gw.write_config(&format!("{good}---\nkind: [unclosed\n"));
    gw.wait_metric_at_least("gateway_config_rejections_total", 1.0);
    assert!(gw.log().contains("configuration rejected"), "{}", gw.log());
    assert_eq!(
        curl(&[&url]).status,
        200,
        "the last good configuration serves"
    );
}

#[test]
fn admin_serves_ready_config_dump_metrics_and_probe() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&edge_to_httpbin(port, hb.port));
    assert_eq!(curl(&[&format!("http://127.0.0.1:{port}/get")]).status, 200);
    assert_eq!(gw.admin_get("/healthz").0, 200);
    let (status, dump) = gw.admin_get("/config_dump");
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(
        dump["config"]["ports"][port.to_string()]["listeners"][0]["virtual_hosts"][0]["routes"][0]
            ["rule"]["id"],
        "default/httpbin/0"
    );
    gw.wait_metric_at_least(
        "gateway_requests_total{route=\"default/httpbin/0\",code=\"200\"}",
        1.0,
    );
    let (_, metrics) = gw.admin_get("/metrics");
    for m in [
        "gateway_request_duration_seconds_bucket",
        "gateway_downstream_connections_active",
        "gateway_upstream_connections_active",
        "gateway_config_reloads_total",
        "gateway_config_rejections_total",
    ] {
        assert!(metrics.contains(m), "{m} missing:\n{metrics}");
    }
    let probe = |path: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args([
                "probe",
                "--admin-addr",
                &gw.admin.to_string(),
                "--path",
                path,
            ])
            .status()
            .unwrap()
            .success()
    };
    assert!(probe("/ready"));
    assert!(!probe("/nope"));
}

#[test]
fn sigterm_drains_and_exits() {
    drains_and_exits(2);
}

#[test]
fn sigterm_drains_and_exits_on_one_worker() {
    drains_and_exits(1);
}

/// Requests still in flight when the drain's deadline passes are closed and recorded as
/// Envoy records a request whose connection closed, response code 0 and `DC`, before the
/// gateway exits (they went unrecorded: the process exited with them). HTTP/1.1 and h2c
/// (whose request ends in a task of its own), at one and two workers.
#[test]
fn requests_in_flight_at_the_drain_deadline_are_recorded_dc_before_the_gateway_exits() {
    let hb = Httpbin::start();
    for workers in ["1", "2"] {
        let port = free_port();
        let args = ["--workers", workers, "--drain-timeout", "1s"];
        let mut gw = Gateway::start_with(&edge_to_httpbin(port, hb.port), &args);
        let requests = [
            ("--http1.1", "/delay/10", "HTTP/1.1"),
            ("--http2-prior-knowledge", "/delay/9", "HTTP/2"),
        ];
        let clients: Vec<_> = requests
            .iter()
            .map(|(protocol, path, _)| {
                let (protocol, url) = (*protocol, format!("http://127.0.0.1:{port}{path}"));
                std::thread::spawn(move || curl(&[protocol, &url]))
            })
            .collect();
        gw.wait_metric("gateway_upstream_connections_active", 2.0);
        assert!(
            gw.process().terminate(Duration::from_secs(30)),
            "the gateway exits after its drain deadline"
        );
        for c in clients {
            let r = c.join().unwrap();
            assert_eq!(r.status, 0, "closed without an answer: {r:?}");
        }
        let log = gw.access_log();
        for (_, path, version) in requests {
            let line = log.iter().find(|l| l["path"] == path);
            let line = line.unwrap_or_else(|| panic!("{path} not logged: {log:#?}\n{}", gw.log()));
            assert_eq!(line["protocol"], version, "{line}");
            assert_eq!(line["response_code"], 0, "{line}");
            assert_eq!(line["response_flags"], "DC", "{line}");
        }
    }
}

/// SIGTERM with idle keep-alive connections open, one served by the HTTP/1 server (its
/// first bytes said HTTP/1) and one by the auto server (h2c prior knowledge, hyper's
/// client, which answers the drain's PING): both are closed at once, and the drain ends
/// without waiting out its (300 s) deadline. The header read timeout (which also bounds
/// an idle HTTP/1 connection's wait for its next request, and a new connection's for its
/// first) is as long, so only the drain closes them.
#[test]
fn sigterm_closes_idle_http1_and_h2c_connections_without_waiting_for_the_deadline() {
    use std::io::{Read, Write};
    let hb = Httpbin::start();
    let port = free_port();
    let args = ["--drain-timeout", "300s", "--header-read-timeout", "300s"];
    let mut gw = Gateway::start_with(&edge_to_httpbin(port, hb.port), &args);
    let mut h1 = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    h1.write_all(b"GET /get HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    h1.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the keep-alive request was served");
    let (served_tx, served) = std::sync::mpsc::channel();
    let h2 = std::thread::spawn(move || idle_h2c_client(port, served_tx));
    assert_eq!(served.recv().unwrap(), 200, "the h2c request was served");
    gw.process().send_term();
    // A safety net, not a measurement: the deadline the drain must not wait for is 300 s.
    let ended = wait_closed(&mut h1, Duration::from_secs(60));
    assert!(
        !matches!(ended, Ended::StillOpen),
        "the idle HTTP/1 connection was kept open through the drain"
    );
    assert!(
        h2.join().unwrap(),
        "the idle h2c connection was kept open through the drain"
    );
    assert!(
        gw.process().terminate(Duration::from_secs(60)),
        "the gateway waited for its drain deadline with no request in flight"
    );
}

/// An h2c client that sends one request (its status goes to `served`), then idles until
/// the gateway closes the connection; false if it is still open after 60 s.
fn idle_h2c_client(port: u16, served: std::sync::mpsc::Sender<u16>) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let req = http::Request::get(format!("http://127.0.0.1:{port}/get"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let status = send.send_request(req).await.unwrap().status();
        served.send(status.as_u16()).unwrap();
        // `send` is kept: dropping it would have the client close the connection itself.
        let closed = tokio::time::timeout(Duration::from_secs(60), conn)
            .await
            .is_ok();
        drop(send);
        closed
    })
}

/// SIGTERM with a request in flight at `--workers N`: the request completes, the gateway exits.
fn drains_and_exits(workers: usize) {
    let hb = Httpbin::start();
    let port = free_port();
    let workers = workers.to_string();
    let mut gw = Gateway::start_with(&edge_to_httpbin(port, hb.port), &["--workers", &workers]);
    let url = format!("http://127.0.0.1:{port}/delay/1");
    let slow = std::thread::spawn(move || curl(&[&url]));
    // SIGTERM once the request is at httpbin (the gateway's upstream connection is open).
    gw.wait_metric("gateway_upstream_connections_active", 1.0);
    assert!(gw.process().terminate(Duration::from_secs(10)));
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "in-flight request was cut: {r:?}");
}
