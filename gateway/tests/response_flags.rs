//! Response flags listed as Envoy lists them: every flag a request picked up, in the
//! order set. The real gateway and the real Envoy 1.40 are put in front of the same
//! scripted upstreams, with the same retry policy, and sent the same requests; their
//! access logs must agree with each other and with the exact lists expected.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use support::*;

/// A one-shot gate: the upstream's held request waits on it.
type Gate = Arc<(Mutex<bool>, Condvar)>;

fn open(gate: &Gate) {
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
}

/// The upstreams of one proxy's run: one per scenario, fresh for each proxy.
struct Upstreams {
    /// Nothing listens there.
    dead: u16,
    /// Reads the request, never answers.
    silent: u16,
    /// Answers 503 with a 1 MB body of which it sends 1,000 bytes, then stalls.
    cut: u16,
    /// Answers 503, except its second request, which waits for `gate` and answers 200.
    budget: u16,
    /// Requests `budget` has seen.
    budget_seen: Arc<AtomicUsize>,
    gate: Gate,
}

impl Upstreams {
    fn start() -> Upstreams {
        let seen = Arc::new(AtomicUsize::new(0));
        let gate: Gate = Arc::default();
        let (counter, held) = (seen.clone(), gate.clone());
        Upstreams {
            dead: free_port(),
            silent: scripted(|_, _| {}),
            cut: scripted(|conn, _| {
                let mut answer =
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 1000000\r\n\r\n".to_vec();
                answer.extend([b'x'; 1000]);
                let _ = conn.write_all(&answer);
            }),
            budget: scripted(move |conn, _| {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let status = if n == 2 {
                    let (open, cv) = &*held;
                    let _open = cv.wait_while(open.lock().unwrap(), |o| !*o).unwrap();
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = conn.write_all(answer.as_bytes());
            }),
            budget_seen: seen,
            gate,
        }
    }
}

/// An HTTP/1.1 upstream: for each connection (its own thread) reads one request head,
/// calls `answer`, then holds the connection until the peer closes it.
fn scripted(answer: impl Fn(&mut TcpStream, usize) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                answer(&mut conn, i);
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// What a proxy logged for one request: status and flags.
type Logged = (u64, String);

/// Sends the four scenarios through the proxy on `port`; `logged(path)` waits for that
/// request's access log line.
fn run_scenarios(port: u16, up: &Upstreams, logged: impl Fn(&str) -> Logged) -> Vec<Logged> {
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    curl(&[&url("/dead")]);
    curl(&[&url("/silent")]);
    // The client reads the answer's head and some body, then leaves.
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .write_all(b"GET /cut HTTP/1.1\r\nhost: flags.example.com\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "the proxy closed before the /cut answer's head");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 503"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    drop(client);
    // The first request's retry holds the only retry allowed; the second's is refused.
    let first = std::thread::spawn({
        let u = url("/budget");
        move || curl(&[&u]).status
    });
    eventually("the first /budget request's retry to be held", || {
        up.budget_seen.load(Ordering::SeqCst) == 2
    });
    curl(&[&url("/budget")]);
    let second = logged("/budget");
    open(&up.gate);
    assert_eq!(first.join().unwrap(), 200, "the held retry is answered");
    let mut out: Vec<Logged> = ["/dead", "/silent", "/cut"].map(&logged).into();
    out.push(second);
    out
}

fn gateway_config(port: u16, up: &Upstreams) -> String {
    let rules: String = ["dead", "silent", "cut", "budget"]
        .iter()
        .map(|svc| {
            let (timeouts, retry) = match *svc {
                "dead" => ("", "{attempts: 2, backoff: 1ms}"),
                "silent" => (
                    "timeouts: {backendRequest: 200ms}",
                    "{codes: [504], attempts: 1, backoff: 1ms}",
                ),
                _ => ("", "{codes: [503], attempts: 1, backoff: 1ms}"),
            };
            format!(
                "    - matches: [{{path: {{type: PathPrefix, value: /{svc}}}}}]\n\
                 \x20     backendRefs: [{{name: {svc}, port: 80}}]\n\
                 \x20     retry: {retry}\n\
                 \x20     {timeouts}\n"
            )
        })
        .collect();
    docs(&[
        &http_gateway(port),
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: flags, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: edge}}]\n  rules:\n{rules}"
        ),
        &local_service("dead", up.dead),
        &local_service("silent", up.silent),
        &local_service("cut", up.cut),
        &local_service("budget", up.budget),
        &destination_rule("budget", "connectionPool:\n  http: {maxRetries: 1}"),
    ])
}

/// The same routes as Envoy configuration (Istio's translation of them).
fn envoy_config(port: u16, up: &Upstreams, log: &Path) -> String {
    let route = |svc: &str, retry: &str| {
        format!(
            "              - match: {{prefix: /{svc}}}\n\
             \x20               route: {{cluster: {svc}, retry_policy: {retry}}}\n"
        )
    };
    let cluster = |svc: &str, port: u16, extra: &str| {
        format!(
            "  - name: {svc}\n    connect_timeout: 1s\n{extra}    load_assignment:\n      \
             cluster_name: {svc}\n      endpoints: [{{lb_endpoints: [{{endpoint: {{address: \
             {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]\n"
        )
    };
    let status_503 =
        "{retry_on: retriable-status-codes, retriable_status_codes: [503], num_retries: 1}";
    format!(
        r#"static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: flags
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {log}
              log_format: {{text_format: "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%\n"}}
          route_config:
            virtual_hosts:
            - name: flags
              domains: ["*"]
              routes:
{dead}{silent}{cut}{budget}          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
{c_dead}{c_silent}{c_cut}{c_budget}"#,
        log = log.display(),
        dead = route("dead", "{retry_on: connect-failure, num_retries: 2}"),
        silent = route(
            "silent",
            "{retry_on: gateway-error, num_retries: 1, per_try_timeout: 0.2s}"
        ),
        cut = route("cut", status_503),
        budget = route("budget", status_503),
        c_dead = cluster("dead", up.dead, ""),
        c_silent = cluster("silent", up.silent, ""),
        c_cut = cluster("cut", up.cut, ""),
        c_budget = cluster(
            "budget",
            up.budget,
            "    circuit_breakers: {thresholds: [{max_retries: 1}]}\n"
        ),
    )
}

/// The real Envoy on `port`, logging to `log`.
fn start_envoy(port: u16, config: &str, dir: &Path) -> Process {
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(tools_bin().join("envoy"))
        .arg("-c")
        .arg(&path)
        .args(["--disable-hot-restart", "--log-level", "error"])
        .args(["--file-flush-interval-msec", "50", "--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run envoy");
    let envoy = Process::adopt(child, "envoy");
    eventually("envoy to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    envoy
}

#[test]
fn retry_and_client_flags_are_listed_in_the_order_set_as_envoy_lists_them() {
    let expected: Vec<Logged> = [
        (503, "URX,UF"),
        (504, "URX,UT"),
        (503, "URX,DC"),
        (503, "UO"),
    ]
    .map(|(s, f)| (s, f.to_string()))
    .into();

    let up = Upstreams::start();
    let port = free_port();
    let gw = Gateway::start(&gateway_config(port, &up));
    let ours = run_scenarios(port, &up, |path| {
        let l = gw.wait_access_log(|l| {
            l["path"] == path && (path != "/budget" || l["response_flags"] != "-")
        });
        let flags = l["response_flags"].as_str().unwrap().to_string();
        (l["response_code"].as_u64().unwrap(), flags)
    });

    let up = Upstreams::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let _envoy = start_envoy(port, &envoy_config(port, &up, &log), dir.path());
    let envoys = run_scenarios(port, &up, |path| {
        let mut found = None;
        eventually(&format!("envoy to log {path}"), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            found = text.lines().find_map(|l| {
                let mut f = l.split(' ');
                let logged = (f.next()?, f.next()?.parse().ok()?, f.next()?);
                (logged.0 == path && logged.2 != "-").then(|| (logged.1, logged.2.to_string()))
            });
            found.is_some()
        });
        found.unwrap()
    });

    assert_eq!(envoys, expected, "Envoy's own lists (the reference)");
    assert_eq!(ours, expected, "the gateway's lists");
}

/// Istio's default JSON access log format (`EnvoyJSONLogFormatIstio`), as Istio hands it
/// to Envoy.
const ISTIO_JSON_FORMAT: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("route_name", "%ROUTE_NAME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("duration", "%DURATION%"),
    (
        "upstream_service_time",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
];

/// An Envoy `access_log` list (at a filter's `typed_config` level) writing Istio's
/// default JSON format to `log`.
fn istio_access_log(log: &Path) -> String {
    let fields: String = ISTIO_JSON_FORMAT
        .iter()
        .map(|(k, v)| format!("                  {k}: \"{v}\"\n"))
        .collect();
    format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format:
                json_format:
{fields}"#,
        log.display()
    )
}

/// Envoy's HTTP connection manager (at the filter list's indentation): one virtual host
/// for every domain with `routes` (list items at the routes' indentation), Istio's JSON
/// access log to `log` when given, and `extra` settings (lines at the manager's
/// indentation).
fn http_connection_manager(log: Option<&Path>, extra: &str, routes: &str) -> String {
    let access_log = log.map(istio_access_log).unwrap_or_default();
    format!(
        r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: test
{extra}{access_log}          route_config:
            virtual_hosts:
            - name: test
              domains: ["*"]
              routes:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    )
}

/// Envoy's bootstrap: one listener on `port` with the network `filter` (YAML at the
/// filter list's indentation), and one static cluster `cluster` at `127.0.0.1:upstream`.
fn one_listener_one_cluster(port: u16, filter: &str, cluster: &str, upstream: u16) -> String {
    format!(
        r#"static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
{filter}  clusters:
  - name: "{cluster}"
    connect_timeout: 1s
    load_assignment:
      cluster_name: "{cluster}"
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
"#
    )
}

/// The first JSON line of Envoy's log `log` that `pick` accepts, once written.
fn envoy_line(log: &Path, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut found = serde_json::Value::Null;
    eventually(&format!("envoy to log to {}", log.display()), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let line = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| pick(l));
        line.map(|l| found = l).is_some()
    });
    found
}

/// Every field of Istio's format is in our line, with the JSON kind Envoy's has.
fn assert_same_kinds(what: &str, ours: &serde_json::Value, envoys: &serde_json::Value) {
    for (field, _) in ISTIO_JSON_FORMAT {
        let (e, o) = (&envoys[field], &ours[field]);
        assert!(ours.get(field).is_some(), "{what}: no {field} in {ours}");
        assert_eq!(kind(o), kind(e), "{what}: {field}: ours {o}, Envoy's {e}");
    }
}

/// The JSON kind of a logged value: what a log pipeline's parser sees.
fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::Bool(_) => "bool",
        _ => "other",
    }
}

/// A served request and a route miss, through the real Envoy 1.40 logging Istio's
/// default JSON format and through the gateway: every field of the format is in the
/// gateway's line, with the JSON kind Envoy gives it (a log pipeline parses both
/// alike), and the addresses are the connections' own.
#[test]
fn access_log_lines_have_istios_json_fields_with_envoys_value_kinds() {
    let hb = Httpbin::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let envoy_port = free_port();
    let cluster = "outbound|80||httpbin.default.svc.cluster.local";
    let filter = http_connection_manager(
        Some(&log),
        "          use_remote_address: true\n",
        &format!(
            "              - name: default/httpbin/0\n                \
             match: {{prefix: /status}}\n                route: {{cluster: \"{cluster}\"}}\n"
        ),
    );
    let config = one_listener_one_cluster(envoy_port, &filter, cluster, hb.port);
    let _envoy = start_envoy(envoy_port, &config, dir.path());
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: httpbin, namespace: default}\n\
         spec:\n  parentRefs: [{name: edge}]\n  rules:\n  \
         - matches: [{path: {type: PathPrefix, value: /status}}]\n    \
         backendRefs: [{name: httpbin, port: 80}]\n",
        &local_service("httpbin", hb.port),
    ]));
    for (path, status) in [("/status/200", 200), ("/missing", 404)] {
        for p in [envoy_port, port] {
            let r = curl(&[
                "-A",
                "fields-test/1",
                &format!("http://127.0.0.1:{p}{path}"),
            ]);
            assert_eq!(r.status, status, "{r:?}");
        }
        let envoys = envoy_line(&log, |l| l["path"] == path);
        let ours = gw.wait_access_log(|l| l["path"] == path);
        assert_same_kinds(path, &ours, &envoys);
        assert_eq!(
            ours["downstream_local_address"],
            format!("127.0.0.1:{port}")
        );
        assert_eq!(
            envoys["downstream_local_address"],
            format!("127.0.0.1:{envoy_port}")
        );
        if status == 200 {
            let upstream_local = ours["upstream_local_address"].as_str().unwrap();
            let (ip, local_port) = upstream_local.rsplit_once(':').unwrap();
            assert_eq!(ip, "127.0.0.1", "{ours}");
            assert_ne!(local_port, hb.port.to_string(), "{ours}");
            let service_time = ours["upstream_service_time"].as_str().unwrap();
            assert!(service_time.parse::<u64>().is_ok(), "{ours}");
        }
    }
}

/// A retried 503 whose retry finds no listener: the line describes the last attempt,
/// which never connected (no upstream local address, no upstream service time), not
/// the first one's answer.
#[test]
fn a_failed_retry_after_an_answer_logs_no_upstream_time_or_local_address() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = listener.local_addr().unwrap().port();
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the request ended early");
            seen.extend_from_slice(&buf[..n]);
        }
        // Closed before answering, so the retry that the 503 calls for is refused.
        drop(listener);
        s.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
    });
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: once, namespace: default}\n\
         spec:\n  parentRefs: [{name: edge}]\n  rules:\n  \
         - backendRefs: [{name: once, port: 80}]\n    \
         retry: {codes: [503], attempts: 1, backoff: 1ms}\n",
        &local_service("once", up_port),
    ]));
    let r = curl(&[&format!("http://127.0.0.1:{port}/retried")]);
    upstream.join().unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    let line = gw.wait_access_log(|l| l["path"] == "/retried");
    assert_eq!(line["response_flags"], "URX,UF", "{line}");
    assert_eq!(line["attempts"], 2, "{line}");
    for field in ["upstream_service_time", "upstream_local_address"] {
        assert_eq!(
            line.get(field),
            Some(&serde_json::Value::Null),
            "{field}: {line}"
        );
    }
}

/// An upstream whose first request is answered 503 after `SLOW_FIRST_ANSWER`, every
/// later one 200 at once (each on a connection of its own).
fn slow_503_then_200() -> u16 {
    let seen = AtomicUsize::new(0);
    scripted(move |conn, _| {
        let status = if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            // The slowness under test, not a wait for a condition.
            std::thread::sleep(SLOW_FIRST_ANSWER);
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = conn.write_all(answer.as_bytes());
    })
}

const SLOW_FIRST_ANSWER: std::time::Duration = std::time::Duration::from_millis(300);

/// Envoy's `upstream_service_time` (`x-envoy-upstream-service-time`) runs from the end
/// of the client's request to the answer that is sent, across attempts: a 503 that took
/// 300 ms and a retry answered at once log at least 300, not the retry's time.
#[test]
fn upstream_service_time_spans_every_attempt_as_envoys_does() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let envoy_port = free_port();
    let cluster = "outbound|80||slow.default.svc.cluster.local";
    let filter = http_connection_manager(
        Some(&log),
        "",
        &format!(
            "              - match: {{prefix: /}}\n                route:\n                  \
             cluster: \"{cluster}\"\n                  \
             retry_policy: {{retry_on: retriable-status-codes, retriable_status_codes: [503], num_retries: 1}}\n"
        ),
    );
    let config = one_listener_one_cluster(envoy_port, &filter, cluster, slow_503_then_200());
    let _envoy = start_envoy(envoy_port, &config, dir.path());
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: retried, namespace: default}\n\
         spec:\n  parentRefs: [{name: edge}]\n  rules:\n  \
         - backendRefs: [{name: slow, port: 80}]\n    \
         retry: {codes: [503], attempts: 1, backoff: 1ms}\n",
        &local_service("slow", slow_503_then_200()),
    ]));
    let floor = SLOW_FIRST_ANSWER.as_millis() as u64;
    for p in [envoy_port, port] {
        let r = curl(&[&format!("http://127.0.0.1:{p}/retried")]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    let envoys = envoy_line(&log, |l| l["path"] == "/retried");
    let ours = gw.wait_access_log(|l| l["path"] == "/retried");
    assert_eq!(ours["attempts"], 2, "{ours}");
    for line in [&envoys, &ours] {
        let time: u64 = line["upstream_service_time"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no service time: {line}"));
        assert!(time >= floor, "{time} ms < {floor} ms: {line}");
        assert!(time <= line["duration"].as_u64().unwrap(), "{line}");
    }
}

/// Envoy's route for one path prefix on cluster `backends`, with `retry` (YAML flow
/// mapping) as its `retry_policy` when given.
fn envoy_route(prefix: &str, retry: Option<&str>) -> String {
    let retry = retry
        .map(|r| format!(", retry_policy: {r}"))
        .unwrap_or_default();
    format!(
        "              - {{match: {{prefix: {prefix}}}, route: {{cluster: backends{retry}}}}}\n"
    )
}

/// Istio's retry policies against a Service of two endpoints, one a port nothing
/// listens on: the gateway serving a VirtualService beside Envoy programmed as istiod
/// programs it for that VirtualService (`retry.ConvertPolicy`: without `retries` its
/// default policy, 2 retries on `connect-failure,refused-stream,unavailable,cancelled,
/// retriable-status-codes` to other hosts; `attempts: 0` none; `retryOn: "503"` the
/// status code alone, so a connect failure is not retried).
#[test]
fn virtual_service_retries_are_istios_default_policy_and_envoys_conditions() {
    let hb = Httpbin::start();
    let dead = free_port();
    let previous_hosts = "retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, \
        typed_config: {\"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}], \
        host_selection_retry_max_attempts: 5";
    let routes = [
        envoy_route("/anything/none", None),
        envoy_route(
            "/anything/codes",
            Some(&format!(
                "{{retry_on: retriable-status-codes, retriable_status_codes: [503], num_retries: 2, {previous_hosts}}}"
            )),
        ),
        envoy_route(
            "/",
            Some(&format!(
                "{{retry_on: \"connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes\", \
                 num_retries: 2, {previous_hosts}}}"
            )),
        ),
    ]
    .concat();
    let filter = http_connection_manager(None, "", &routes);
    let dir = tempfile::tempdir().unwrap();
    let envoy_port = free_port();
    let endpoint = |p: u16| {
        format!(
            "{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}}}"
        )
    };
    let config = format!(
        r#"static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {envoy_port}}}}}
    filter_chains:
    - filters:
{filter}  clusters:
  - name: backends
    connect_timeout: 1s
    load_assignment:
      cluster_name: backends
      endpoints: [{{lb_endpoints: [{}, {}]}}]
"#,
        endpoint(dead),
        endpoint(hb.port)
    );
    let _envoy = start_envoy(envoy_port, &config, dir.path());
    let port = free_port();
    let slice = |name: &str, p: u16| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: backends}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {p}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n"
        )
    };
    let gw = Gateway::start_with(
        &docs(&[
            &format!(
                "apiVersion: networking.istio.io/v1\nkind: Gateway\n\
                 metadata: {{name: gw, namespace: istio-system}}\nspec:\n  \
                 selector: {{istio: ingressgateway}}\n  \
                 servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: [\"*\"]}}]\n"
            ),
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: {name: backends, namespace: default}\nspec:\n  \
             hosts: [\"*\"]\n  gateways: [istio-system/gw]\n  http:\n  \
             - match: [{uri: {prefix: /anything/none}}]\n    retries: {attempts: 0}\n    \
               route: [{destination: {host: backends}}]\n  \
             - match: [{uri: {prefix: /anything/codes}}]\n    retries: {attempts: 2, retryOn: \"503\"}\n    \
               route: [{destination: {host: backends}}]\n  \
             - route: [{destination: {host: backends}}]\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: backends, namespace: default}\n\
             spec: {ports: [{name: http, port: 80}]}\n",
            &slice("backends-dead", dead),
            &slice("backends-live", hb.port),
        ]),
        &[
            "--pod-labels",
            "istio=ingressgateway",
            "--pod-namespace",
            "istio-system",
        ],
    );
    // Each endpoint is picked first about half the time (Envoy's round robin alternates;
    // the gateway's least-request picks between two idle ones at random): over 20
    // requests both proxies meet the dead one first, a miss of 2^-20 for the gateway.
    for p in [envoy_port, port] {
        for (path, retried) in [
            ("/anything/default", true),
            ("/anything/none", false),
            ("/anything/codes", false),
        ] {
            let statuses: Vec<u16> = (0..20)
                .map(|i| curl(&[&format!("http://127.0.0.1:{p}{path}/{i}")]).status)
                .collect();
            let who = if p == port { "gateway" } else { "envoy" };
            if retried {
                assert!(
                    statuses.iter().all(|s| *s == 200),
                    "{who} {path}: {statuses:?}"
                );
            } else {
                assert!(statuses.contains(&503), "{who} {path}: {statuses:?}");
                assert!(
                    statuses.iter().all(|s| [200, 503].contains(s)),
                    "{who} {path}: {statuses:?}"
                );
            }
        }
    }
    // A default-policy request met the dead endpoint, and its retry the live one.
    let line = gw.wait_access_log(|l| {
        l["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/anything/default/"))
            && l["attempts"] == 2
    });
    assert_eq!(line["response_code"], 200, "{line}");
    let line = gw.wait_access_log(|l| {
        l["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/anything/codes/"))
            && l["response_code"] == 503
    });
    assert_eq!(
        (&line["response_flags"], &line["attempts"]),
        (&"UF".into(), &1.into()),
        "{line}"
    );
}

/// Sends `GET path` as HTTP/1.0 to `port`, with `extra` header lines, and reads the
/// answer until the server closes the connection.
fn http10_get(port: u16, path: &str, extra: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // A safety net, not a measurement: a server that keeps the connection fails here.
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: a.example.com\r\n{extra}\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("{port} kept the connection ({e}): {out}"));
    out
}

/// Sends an HTTP/1.0 keep-alive GET to `port`, reads its answer (head and
/// `content-length` body), sends a second one on the same connection, and returns the
/// first answer and whatever came after it until the connection closed.
fn refused_then_again(port: u16) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let request =
        "GET /get?refused HTTP/1.0\r\nHost: a.example.com\r\nConnection: keep-alive\r\n\r\n";
    s.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-answer: {got:?}");
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    // Written into a closed connection this may fail; what matters is what is read.
    let _ = s.write_all(request.as_bytes());
    let mut after = Vec::new();
    let _ = s.read_to_end(&mut after);
    (head, String::from_utf8_lossy(&after).into_owned())
}

/// HTTP/1.0 as Envoy's HTTP/1 codec answers it without `accept_http_10`, which Istio,
/// Gloo and Envoy Gateway leave off: 426 with `low_version`, the connection closed.
/// Served on a port a ClientTrafficPolicy's `http1.http10` opens, and everywhere with
/// Istio's `ISTIO_META_HTTP10`.
#[test]
fn http_1_0_is_refused_with_426_as_envoy_refuses_it_unless_turned_on() {
    let hb = Httpbin::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let envoy_port = free_port();
    let cluster = "outbound|80||httpbin.default.svc.cluster.local";
    let filter = http_connection_manager(
        Some(&log),
        "",
        &format!(
            "              - match: {{prefix: /}}\n                route: {{cluster: \"{cluster}\"}}\n"
        ),
    );
    let config = one_listener_one_cluster(envoy_port, &filter, cluster, hb.port);
    let _envoy = start_envoy(envoy_port, &config, dir.path());
    let (port, open) = (free_port(), free_port());
    let config = docs(&[
        &http_gateway(port),
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: open, namespace: default}}\n\
             spec:\n  listeners: [{{name: http, port: {open}, protocol: HTTP}}]\n"
        ),
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: ClientTrafficPolicy\n\
         metadata: {name: http10, namespace: default}\n\
         spec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: open}]\n  \
         http1: {http10: {}}\n",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: httpbin, namespace: default}\n\
         spec:\n  parentRefs: [{name: edge}, {name: open}]\n  \
         rules: [{backendRefs: [{name: httpbin, port: 80}]}]\n",
        &local_service("httpbin", hb.port),
    ]);
    let gw = Gateway::start(&config);
    // Envoy's status line says HTTP/1.1, hyper's the HTTP/1.0 it answers; both close the
    // connection, even one the client asked to keep: a second request on it gets nothing.
    for p in [envoy_port, port] {
        let (first, after) = refused_then_again(p);
        assert!(
            first.starts_with("HTTP/1.1 426 ") || first.starts_with("HTTP/1.0 426 "),
            "{p}: {first}"
        );
        assert_eq!(after, "", "{p} answered on the refused connection");
    }
    // Envoy logs the codec's refusal before it has a path.
    let envoys = envoy_line(&log, |l| l["response_code"] == 426);
    let ours = gw.wait_access_log(|l| l["path"] == "/get?refused");
    for line in [&envoys, &ours] {
        assert_eq!(line["response_code"], 426, "{line}");
        assert_eq!(line["response_code_details"], "low_version", "{line}");
    }
    // The port the policy opens serves it; the other still refuses.
    let r = http10_get(open, "/get", "");
    assert!(r.contains(" 200 OK\r\n"), "{r}");
    assert!(http10_get(port, "/get", "").contains(" 426 "));
    // Istio's proxy metadata opens every port.
    let everywhere = Gateway::start_with_env(&config, &[], "/ready", &[("ISTIO_META_HTTP10", "1")]);
    // Its ports are the first gateway's (SO_REUSEPORT): once that one is gone, every
    // connection is the second one's.
    drop(gw);
    let r = http10_get(port, "/get", "");
    assert!(r.contains(" 200 OK\r\n"), "{r}");
    drop(everywhere);
}

/// A TCP connection through Envoy's tcp_proxy logging Istio's format and through a
/// TCPRoute: the HTTP fields are null in both (not `-`), and the addresses are the
/// connections' own.
#[test]
fn tcp_access_log_lines_have_istios_json_fields_with_envoys_value_kinds() {
    let echo = Echo::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let envoy_port = free_port();
    let cluster = "outbound|80||echo.default.svc.cluster.local";
    let filter = format!(
        r#"      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: "{cluster}"
{access_log}"#,
        access_log = istio_access_log(&log),
    );
    let config = one_listener_one_cluster(envoy_port, &filter, cluster, echo.port);
    let _envoy = start_envoy(envoy_port, &config, dir.path());
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {{name: edge, namespace: default}}\nspec:\n  listeners:\n  \
             - {{name: tcp, port: {port}, protocol: TCP}}\n"
        ),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\n\
         metadata: {name: echo, namespace: default}\nspec:\n  \
         parentRefs: [{name: edge, sectionName: tcp}]\n  \
         rules:\n    - backendRefs: [{name: echo, port: 80}]\n",
        &local_service("echo", echo.port),
    ]));
    for p in [envoy_port, port] {
        let mut s = TcpStream::connect(("127.0.0.1", p)).unwrap();
        s.write_all(b"hello").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello");
    }
    let envoys = envoy_line(&log, |l| l["bytes_sent"] == 5);
    let ours = gw.wait_access_log(|l| l["route"] == "TCPRoute default/echo");
    assert_same_kinds("tcp", &ours, &envoys);
    for field in ["method", "path", "protocol", "request_id", "authority"] {
        assert_eq!(
            ours.get(field),
            Some(&serde_json::Value::Null),
            "{field}: {ours}"
        );
    }
    assert_eq!(
        ours["downstream_local_address"],
        format!("127.0.0.1:{port}")
    );
    let upstream_local = ours["upstream_local_address"].as_str().unwrap();
    assert!(upstream_local.starts_with("127.0.0.1:"), "{ours}");
    assert_ne!(upstream_local, format!("127.0.0.1:{}", echo.port), "{ours}");
}
