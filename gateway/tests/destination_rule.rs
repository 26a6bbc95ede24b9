//! DestinationRule `tls` (SIMPLE, MUTUAL) and the connection settings that give a backend
//! a pool of its own (`connectTimeout`, `idleTimeout`, `maxRequestsPerConnection`), with
//! the real gateway binary in front of real peers: httpbin serving TLS (gunicorn, with and
//! without a required client certificate), a hyper upstream that counts its connections,
//! and a listener whose full accept queue drops connection attempts (a blackhole).

mod support;

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

/// The gateway pod's namespace: credentialName Secrets are read from it.
const POD_NS: &str = "gateway-ns";

/// A route sending `/<svc>/...` to Service `svc` (port 80) with the prefix removed.
fn route_per_service(services: &[&str]) -> String {
    let rules: String = services
        .iter()
        .map(|svc| {
            format!(
                "    - matches: [{{path: {{type: PathPrefix, value: /{svc}}}}}]\n      \
                 filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}}}}}]\n      \
                 backendRefs: [{{name: {svc}, port: 80}}]\n"
            )
        })
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: upstreams, namespace: default}}\n\
         spec:\n  parentRefs: [{{name: edge}}]\n  rules:\n{rules}"
    )
}

/// A server certificate for `httpbin.backend.test` from `backend-ca`, a client
/// certificate from `client-ca`, and an unrelated `other-ca`.
fn pki() -> Pki {
    let pki = Pki::new();
    pki.ca("backend-ca");
    pki.ca("other-ca");
    pki.ca("client-ca");
    pki.leaf("backend", "backend-ca", &["httpbin.backend.test"], false);
    pki.leaf("gateway-client", "client-ca", &[], true);
    pki
}

fn start_gateway(port: u16, docs_: &[&str]) -> Gateway {
    start_gateway_with(port, docs_, &[])
}

fn start_gateway_with(port: u16, docs_: &[&str], extra: &[&str]) -> Gateway {
    let mut all = vec![http_gateway(port)];
    all.extend(docs_.iter().map(|d| d.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut args = vec!["--pod-namespace", POD_NS];
    args.extend_from_slice(extra);
    Gateway::start_with(&docs(&refs), &args)
}

fn get(port: u16, path: &str) -> CurlResult {
    curl(&[&format!("http://127.0.0.1:{port}{path}")])
}

#[test]
fn simple_tls_verifies_the_upstream_with_the_credential_ca_and_refuses_a_san_mismatch_naming_both()
{
    let pki = pki();
    let tls_hb = Httpbin::start_tls(&pki.path("backend.crt"), &pki.path("backend.key"));
    let port = free_port();
    let gw = start_gateway(
        port,
        &[
            &route_per_service(&["good", "wrong-san", "wrong-ca", "skip-verify", "plain"]),
            // A generic Secret with cacert, in the pod's namespace (not the rule's).
            &pki.secret_in(
                POD_NS,
                "backend-ca",
                "Opaque",
                &[("cacert", "backend-ca.crt")],
            ),
            &pki.secret_in(POD_NS, "other-ca", "Opaque", &[("cacert", "other-ca.crt")]),
            &local_service("good", tls_hb.port),
            &local_service("wrong-san", tls_hb.port),
            &local_service("wrong-ca", tls_hb.port),
            &local_service("skip-verify", tls_hb.port),
            &local_service("plain", tls_hb.port),
            &destination_rule(
                "good",
                "tls: {mode: SIMPLE, credentialName: backend-ca, sni: httpbin.backend.test}",
            ),
            &destination_rule(
                "wrong-san",
                "tls:\n  mode: SIMPLE\n  credentialName: backend-ca\n  sni: httpbin.backend.test\n  subjectAltNames: [other.backend.test]",
            ),
            &destination_rule(
                "wrong-ca",
                "tls: {mode: SIMPLE, credentialName: other-ca, sni: httpbin.backend.test}",
            ),
            &destination_rule(
                "skip-verify",
                "tls: {mode: SIMPLE, credentialName: other-ca, insecureSkipVerify: true}",
            ),
        ],
    );
    let ok = get(port, "/good/get");
    assert_eq!(ok.status, 200, "{ok:?}\n{}", gw.log());
    assert_eq!(ok.json()["headers"]["Host"], format!("127.0.0.1:{port}"));

    let san = get(port, "/wrong-san/get");
    assert_eq!((san.status, error_code(&san).as_str()), (503, "UF"));
    let why = gw.explain(&san)["reason"].as_str().unwrap().to_string();
    assert!(
        why.contains("\"httpbin.backend.test\"") && why.contains("\"other.backend.test\""),
        "the reason names the certificate's name and the wanted one: {why}"
    );
    assert!(why.contains("DestinationRule default/wrong-san"), "{why}");

    let ca = get(port, "/wrong-ca/get");
    assert_eq!((ca.status, error_code(&ca).as_str()), (503, "UF"));
    let why = gw.explain(&ca)["reason"].as_str().unwrap().to_string();
    assert!(why.contains("invalid peer certificate"), "{why}");

    // The same untrusted CA, with verification skipped: served.
    let skip = get(port, "/skip-verify/get");
    assert_eq!(skip.status, 200, "{skip:?}");

    // No DestinationRule: plaintext to a TLS-only server fails (the rules above did TLS).
    let plain = get(port, "/plain/get");
    assert_eq!((plain.status, error_code(&plain).as_str()), (503, "UC"));
}

#[test]
fn a_changed_credential_secret_gives_new_connections_its_ca() {
    let pki = pki();
    let tls_hb = Httpbin::start_tls(&pki.path("backend.crt"), &pki.path("backend.key"));
    let port = free_port();
    let config = |ca: &str| {
        docs(&[
            &http_gateway(port),
            &route_per_service(&["rotated"]),
            &pki.secret_in(POD_NS, "rotating-ca", "Opaque", &[("cacert", ca)]),
            &local_service("rotated", tls_hb.port),
            &destination_rule(
                "rotated",
                "tls: {mode: SIMPLE, credentialName: rotating-ca, sni: httpbin.backend.test}",
            ),
        ])
    };
    let gw = Gateway::start_with(&config("other-ca.crt"), &["--pod-namespace", POD_NS]);
    let r = get(port, "/rotated/get");
    assert_eq!((r.status, error_code(&r).as_str()), (503, "UF"), "{r:?}");
    // The Secret now holds the CA that signed the server: a new TLS target, so a new
    // pool and client config, without a restart.
    gw.write_config(&config("backend-ca.crt"));
    eventually("the new CA in use", || {
        get(port, "/rotated/get").status == 200
    });
}

#[test]
fn mutual_tls_presents_the_client_certificate_the_upstream_requires() {
    let pki = pki();
    let mtls_hb = Httpbin::start_mutual_tls(
        &pki.path("backend.crt"),
        &pki.path("backend.key"),
        &pki.path("client-ca.crt"),
    );
    let port = free_port();
    let gw = start_gateway(
        port,
        &[
            &route_per_service(&["mutual", "simple"]),
            // A kubernetes.io/tls Secret: client certificate, key, and the CA in ca.crt.
            &pki.secret_in(
                POD_NS,
                "client-credential",
                "kubernetes.io/tls",
                &[
                    ("tls.crt", "gateway-client.crt"),
                    ("tls.key", "gateway-client.key"),
                    ("ca.crt", "backend-ca.crt"),
                ],
            ),
            &local_service("mutual", mtls_hb.port),
            &local_service("simple", mtls_hb.port),
            &destination_rule(
                "mutual",
                "tls: {mode: MUTUAL, credentialName: client-credential, sni: httpbin.backend.test}",
            ),
            // Same CA and name, but SIMPLE: no client certificate is presented.
            &destination_rule(
                "simple",
                "tls: {mode: SIMPLE, credentialName: client-credential, sni: httpbin.backend.test}",
            ),
        ],
    );
    let ok = get(port, "/mutual/get");
    assert_eq!(ok.status, 200, "{ok:?}\n{}", gw.log());
    assert_eq!(ok.json()["headers"]["Host"], format!("127.0.0.1:{port}"));

    let refused = get(port, "/simple/get");
    // TLS 1.3: the server checks the client's certificate after the client's handshake
    // is done, so its refusal arrives as an alert in place of the response.
    assert_eq!(
        (refused.status, error_code(&refused).as_str()),
        (502, "UPE"),
        "{refused:?}"
    );
    let why = gw.explain(&refused)["reason"].as_str().unwrap().to_string();
    assert!(
        why.contains("received fatal alert: CertificateRequired"),
        "{why}"
    );
    assert_eq!(
        mtls_hb
            .requests()
            .iter()
            .filter(|l| l.starts_with("GET /get"))
            .count(),
        1,
        "only the MUTUAL request reached httpbin"
    );
}

/// An HTTP/1.1 keep-alive upstream (hyper) that counts the connections it accepted and
/// those still open.
struct CountingUpstream {
    port: u16,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl CountingUpstream {
    fn start() -> CountingUpstream {
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (a, o) = (accepted.clone(), open.clone());
        let port = upstream_on_own_thread(move |tcp| {
            a.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"counted")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
                o.fetch_sub(1, Ordering::SeqCst);
            }
        });
        CountingUpstream {
            port,
            accepted,
            open,
        }
    }
}

#[test]
fn max_requests_per_connection_retires_connections_after_that_many_requests() {
    let once = CountingUpstream::start();
    let twice = CountingUpstream::start();
    let reused = CountingUpstream::start();
    let port = free_port();
    // One worker: upstream pools are per worker, and this counts one pool's connections.
    let _gw = start_gateway_with(
        port,
        &[
            &route_per_service(&["once", "twice", "reused"]),
            &local_service("once", once.port),
            &local_service("twice", twice.port),
            &local_service("reused", reused.port),
            &destination_rule(
                "once",
                "connectionPool:\n  http: {maxRequestsPerConnection: 1}",
            ),
            &destination_rule(
                "twice",
                "connectionPool:\n  http: {maxRequestsPerConnection: 2}",
            ),
        ],
        &["--workers", "1"],
    );
    for _ in 0..6 {
        assert_eq!(get(port, "/once/").body, "counted");
        assert_eq!(get(port, "/twice/").body, "counted");
        assert_eq!(get(port, "/reused/").body, "counted");
    }
    assert_eq!(once.accepted.load(Ordering::SeqCst), 6);
    assert_eq!(
        twice.accepted.load(Ordering::SeqCst),
        3,
        "each connection carries two requests, then is retired"
    );
    assert_eq!(
        reused.accepted.load(Ordering::SeqCst),
        1,
        "without the setting, one kept-alive connection carries every request"
    );
    eventually("the retired connections closed", || {
        once.open.load(Ordering::SeqCst) == 0
    });
}

#[test]
fn each_worker_keeps_its_own_upstream_connections() {
    let up = CountingUpstream::start();
    let port = free_port();
    let _gw = start_gateway_with(
        port,
        &[&route_per_service(&["up"]), &local_service("up", up.port)],
        &["--workers", "2"],
    );
    // Each curl is a new downstream connection; the kernel spreads them over the two
    // workers' sockets (by hash: 40 all on one worker has odds of 2^-39), and each worker
    // draws on (and keeps alive) a pooled connection of its own: two upstream
    // connections for any number of sequential requests.
    for _ in 0..40 {
        assert_eq!(get(port, "/up/").body, "counted");
    }
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        2,
        "one kept-alive upstream connection per worker"
    );
    assert_eq!(up.open.load(Ordering::SeqCst), 2);
}

#[test]
fn idle_timeout_closes_an_idle_upstream_connection_and_the_next_request_opens_one() {
    let idle = CountingUpstream::start();
    let kept = CountingUpstream::start();
    let port = free_port();
    let _gw = start_gateway(
        port,
        &[
            &route_per_service(&["idle", "kept"]),
            &local_service("idle", idle.port),
            &local_service("kept", kept.port),
            &destination_rule("idle", "connectionPool:\n  http: {idleTimeout: 300ms}"),
        ],
    );
    assert_eq!(get(port, "/kept/").body, "counted");
    assert_eq!(get(port, "/idle/").body, "counted");
    assert_eq!(idle.open.load(Ordering::SeqCst), 1);
    eventually("the gateway closing the idle connection", || {
        idle.open.load(Ordering::SeqCst) == 0
    });
    assert_eq!(
        kept.open.load(Ordering::SeqCst),
        1,
        "the shared pool (90s) keeps its connection, idle as long"
    );
    assert_eq!(get(port, "/idle/").body, "counted");
    assert_eq!(idle.accepted.load(Ordering::SeqCst), 2);
}

/// A listener whose accept queue is full: the kernel drops further connection attempts
/// (SYNs) unanswered, as a blackholed address does. Holds the queued connections.
struct Blackhole {
    port: u16,
    _listener: std::net::TcpListener,
    _queued: Vec<TcpStream>,
}

impl Blackhole {
    fn start() -> Blackhole {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            s.listen(1).unwrap().into_std().unwrap()
        });
        let port = listener.local_addr().unwrap().port();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        // Fill the queue until an attempt goes unanswered.
        while let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            queued.push(s);
            assert!(queued.len() < 64, "the accept queue never filled");
        }
        Blackhole {
            port,
            _listener: listener,
            _queued: queued,
        }
    }
}

#[test]
fn connect_timeout_to_a_blackholed_endpoint_is_a_503_uf_at_the_configured_time() {
    let hole = Blackhole::start();
    let port = free_port();
    let mut all = vec![http_gateway(port)];
    all.push(route_per_service(&["hole"]));
    all.push(local_service("hole", hole.port));
    all.push(destination_rule(
        "hole",
        "connectionPool:\n  tcp: {connectTimeout: 500ms}",
    ));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    // The shared pools would wait 30s.
    let gw = Gateway::start_with(&docs(&refs), &["--connect-timeout", "30s"]);
    let started = Instant::now();
    let r = get(port, "/hole/get");
    let took = started.elapsed();
    assert_eq!((r.status, error_code(&r).as_str()), (503, "UF"), "{r:?}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "answered after {took:?}, the rule says 500ms"
    );
    let line = gw.wait_access_log(|l| l["response_code"] == 503);
    assert_eq!(line["response_flags"], "UF", "{line}");
}

#[test]
fn connect_timeout_also_bounds_a_tcp_route_connection() {
    let hole = Blackhole::start();
    let port = free_port();
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: edge, namespace: default}}\nspec:\n  listeners:\n    \
         - {{name: tcp, port: {port}, protocol: TCP}}\n"
    );
    let tcp_route = "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\n\
         metadata: {name: hole, namespace: default}\nspec:\n  \
         parentRefs: [{name: edge, sectionName: tcp}]\n  \
         rules:\n    - backendRefs: [{name: hole, port: 80}]\n";
    let gw = Gateway::start_with(
        &docs(&[
            &gateway,
            tcp_route,
            &local_service("hole", hole.port),
            &destination_rule("hole", "connectionPool:\n  tcp: {connectTimeout: 500ms}"),
        ]),
        &["--connect-timeout", "30s"],
    );
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let ended = wait_closed(&mut s, Duration::from_secs(20));
    let took = started.elapsed();
    assert_eq!(ended, Ended::ClosedSilently);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "closed after {took:?}, the rule says 500ms"
    );
    let line = gw.wait_access_log(|l| l["route"] == "TCPRoute default/hole");
    assert_eq!(line["response_flags"], "UF", "{line}");
}

/// `ss -tnoH` lines of established connections to `port` (the kernel's view: `timer:`
/// shows a keepalive timer when SO_KEEPALIVE is on).
fn sockets_to(port: u16) -> Vec<String> {
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("ss (iproute2, scripts/install-tools)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Seconds in an `ss` timer value such as `9min59sec`, `599sec` or `250ms`.
fn ss_duration(v: &str) -> f64 {
    let mut total = 0.0;
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: f64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("unreadable {v}"));
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        total += n * match &rest[..unit] {
            "min" => 60.0,
            "sec" => 1.0,
            "ms" => 0.001,
            u => panic!("unit {u:?} in {v}"),
        };
        rest = &rest[unit..];
    }
    total
}

#[test]
fn tcp_keepalive_turns_on_so_keepalive_with_its_idle_time_on_that_backends_connections() {
    let kept = CountingUpstream::start();
    let plain = CountingUpstream::start();
    let port = free_port();
    let _gw = start_gateway(
        port,
        &[
            &route_per_service(&["kept", "plain"]),
            &local_service("kept", kept.port),
            &local_service("plain", plain.port),
            &destination_rule(
                "kept",
                "connectionPool:\n  tcp: {tcpKeepalive: {time: 600s, interval: 30s, probes: 3}}",
            ),
        ],
    );
    assert_eq!(get(port, "/kept/").body, "counted");
    assert_eq!(get(port, "/plain/").body, "counted");
    // The pooled connections stay open, idle: the kernel shows a keepalive timer counting
    // down from 600 s on the first backend's only.
    let kept_sockets = sockets_to(kept.port);
    assert_eq!(kept_sockets.len(), 1, "{kept_sockets:?}");
    let timer = kept_sockets[0]
        .split_whitespace()
        .find(|f| f.starts_with("timer:(keepalive,"))
        .unwrap_or_else(|| panic!("no keepalive timer: {kept_sockets:?}"));
    let secs = ss_duration(
        timer
            .trim_start_matches("timer:(keepalive,")
            .split(',')
            .next()
            .unwrap_or_default(),
    );
    assert!(
        (500.0..=600.0).contains(&secs),
        "the first probe is due within the configured 600 s idle time: {timer} ({secs} s)"
    );
    let plain_sockets = sockets_to(plain.port);
    assert_eq!(plain_sockets.len(), 1, "{plain_sockets:?}");
    assert!(
        !plain_sockets[0].contains("keepalive"),
        "a backend without tcpKeepalive got it: {plain_sockets:?}"
    );
}

#[test]
fn a_simple_rule_whose_secret_is_missing_fails_closed_and_never_sends_plaintext() {
    let up = CountingUpstream::start();
    let port = free_port();
    let gw = start_gateway(
        port,
        &[
            &route_per_service(&["pending"]),
            &local_service("pending", up.port),
            &destination_rule(
                "pending",
                "tls: {mode: SIMPLE, credentialName: not-issued-yet}\n\
                 connectionPool:\n  http: {http1MaxPendingRequests: 7}",
            ),
        ],
    );
    let r = get(port, "/pending/");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.starts_with("503 UF "), "{r:?}");
    let why = gw.explain(&r);
    let reason = why["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Secret gateway-ns/not-issued-yet not found"),
        "the refusal names the Secret: {why}"
    );
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream in plaintext"
    );
}
