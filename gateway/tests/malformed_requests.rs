//! Requests that must never reach an upstream as sent: bad or duplicated Host, HTTP/2
//! `:authority` disagreeing with Host, overlong methods, broken chunked bodies, and
//! paths with dot segments (normalized, then routed). Each gets its exact refusal (400
//! and the reason code, explained at `/debug/requests/<id>`) or its normalized form.

mod support;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;

fn httpbin_gateway(hb: &Httpbin, port: u16, args: &[&str]) -> Gateway {
    Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: httpbin, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
             rules:\n    - backendRefs: [{name: httpbin, port: 80}]\n",
            &local_service("httpbin", hb.port),
        ]),
        args,
    )
}

/// Asserts a gateway-made 400 with `code`, explained, and never sent upstream.
fn refused_400(gw: &Gateway, r: &CurlResult, code: &str) {
    assert_eq!((r.status, error_code(r).as_str()), (400, code), "{r:?}");
    let why = gw.explain(r);
    assert_eq!(why["response_flags"], code, "{why}");
    assert_eq!(why["attempts"], 0, "it reached an upstream: {why}");
}

#[test]
fn missing_invalid_and_duplicated_host_get_400() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = httpbin_gateway(&hb, port, &[]);
    let send = |head: &str| raw_request(port, format!("{head}\r\n\r\n").as_bytes());
    let r = send("GET /get HTTP/1.1\r\nConnection: close");
    refused_400(&gw, &r, "missing_host");
    let r = send("GET /get HTTP/1.1\r\nHost: a b/c@d\r\nConnection: close");
    refused_400(&gw, &r, "invalid_host");
    let r = send("GET /get HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close");
    refused_400(&gw, &r, "duplicate_host");
    let r = send("GET /get HTTP/1.1\r\nHost: user@a.example\r\nConnection: close");
    refused_400(&gw, &r, "invalid_host");
    // A port that is not digits: routing would strip it and the authorization policies
    // would not, so a host rule could be bypassed.
    let r = send("GET /get HTTP/1.1\r\nHost: admin.example:x\r\nConnection: close");
    refused_400(&gw, &r, "invalid_host");
    let r =
        send("GET http://admin.example:x/get HTTP/1.1\r\nHost: admin.example\r\nConnection: close");
    refused_400(&gw, &r, "invalid_host");
    // The same gateway serves a well-formed request.
    let ok = send("GET /get HTTP/1.1\r\nHost: a.example\r\nConnection: close");
    assert_eq!(ok.status, 200, "{ok:?}");
    gw.wait_metric(
        "gateway_downstream_request_errors_total{code=\"invalid_host\"}",
        4.0,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_disagreeing_with_host_gets_400() {
    let (gw, port, _hb) = tokio::task::spawn_blocking(|| {
        let hb = Httpbin::start();
        let port = free_port();
        (httpbin_gateway(&hb, port, &[]), port, hb)
    })
    .await
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let send = |host: &'static str| {
        Request::get("http://a.example/get")
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let resp = sender.send_request(send("b.example")).await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let r = CurlResult {
        status,
        headers: format!("x-request-id: {id}\n"),
        body: String::from_utf8_lossy(&body).into_owned(),
        exit_code: 0,
        stderr: String::new(),
    };
    let _gw = tokio::task::spawn_blocking(move || {
        refused_400(&gw, &r, "conflicting_host");
        gw
    })
    .await
    .unwrap();
    // Agreeing (case aside) is fine.
    let ok = sender.send_request(send("A.example")).await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn overlong_methods_are_never_forwarded() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = httpbin_gateway(&hb, port, &[]);
    for len in [33, 4096, 100 * 1024] {
        let method = "M".repeat(len);
        let r = raw_request(
            port,
            format!("{method} /anything HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        refused_400(&gw, &r, "method_too_long");
    }
    assert_eq!(gw.metric("gateway_upstream_attempts_total"), 0.0);
    // At the limit (32 bytes) an extension method is forwarded (gunicorn itself then
    // refuses methods over 20 bytes with its own HTML 400).
    let method = "M".repeat(32);
    let r = raw_request(
        port,
        format!("{method} /anything HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(r.body.contains("Invalid HTTP method"), "{r:?}");
    gw.wait_metric("gateway_upstream_attempts_total", 1.0);
}

#[test]
fn bad_chunked_body_gets_400_dpe_as_a_downstream_error() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = httpbin_gateway(&hb, port, &[]);
    let r = raw_request(
        port,
        b"POST /post HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\nZZZ-not-a-size\r\n",
    );
    assert_eq!((r.status, error_code(&r).as_str()), (400, "DPE"), "{r:?}");
    let why = gw.explain(&r);
    assert!(
        why["reason"]
            .as_str()
            .unwrap()
            .contains("the client's request body failed"),
        "{why}"
    );
    gw.wait_metric("gateway_downstream_request_errors_total{code=\"DPE\"}", 1.0);
    // Not an upstream failure: the attempt is labelled DPE, never UPE/UC.
    assert_eq!(
        gw.metric("gateway_upstream_attempts_total{backend=\"Service default/httpbin:80\",outcome=\"DPE\"}"),
        1.0,
        "{}",
        gw.admin_get("/metrics").1
    );
}

/// Reads one request head, then resets the connection (RST, SO_LINGER 0): a plaintext
/// upstream that is not in the mesh and hangs up without answering.
fn resetting_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            let mut c: TcpStream = c;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && c.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            // tokio's TcpSocket only wraps the fd here (no runtime needed).
            let socket = tokio::net::TcpSocket::from_std_stream(c);
            // Blocking on drop is harmless here: linger 0 closes with RST at once.
            #[allow(deprecated)]
            let _ = socket.set_linger(Some(Duration::ZERO));
            drop(socket);
        }
    });
    port
}

#[test]
fn plaintext_non_mesh_upstream_that_resets_gets_uc_not_mesh_mtls_required() {
    let upstream = resetting_upstream();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &http_gateway(port),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: reset, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
         rules:\n    - backendRefs: [{name: reset, port: 80}]\n",
        &local_service("reset", upstream),
    ]));
    let r = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!((r.status, error_code(&r).as_str()), (503, "UC"), "{r:?}");
    let why = gw.explain(&r);
    assert!(
        why["reason"]
            .as_str()
            .unwrap()
            .contains("closed the connection before answering"),
        "{why}"
    );
}

#[test]
fn dot_segments_are_resolved_before_routing_and_forwarded_normalized() {
    let hb = Httpbin::start();
    let port = free_port();
    let _gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            // Only /anything/admin is routed: a request reaching httpbin proves the
            // normalized path was matched.
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: admin, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
             rules:\n    - matches: [{path: {type: Exact, value: /anything/admin}}]\n      \
             backendRefs: [{name: httpbin, port: 80}]\n",
            &local_service("httpbin", hb.port),
        ]),
        &["--merge-slashes"],
    );
    for raw in [
        "/anything/public/../admin",
        "/anything/public/%2e%2e/admin",
        "/anything/./admin",
        "/anything//admin",
        "/%61nything/admin",
        // As Envoy's normalizer: backslashes are slashes, `..;x` is `..`.
        "/anything/public/..;/admin",
        "/anything/public/..;jsessionid=1/admin",
        "/anything\\public\\..\\admin",
        "/anything/public/.;/../admin",
    ] {
        let r = curl(&["--path-as-is", &format!("http://127.0.0.1:{port}{raw}")]);
        assert_eq!(r.status, 200, "{raw}: {r:?}");
        assert_eq!(
            r.json()["url"],
            format!("http://127.0.0.1:{port}/anything/admin"),
            "{raw}"
        );
    }
    // An encoded slash is not a segment boundary: `..%2F` stays inside one segment.
    let r = curl(&[
        "--path-as-is",
        &format!("http://127.0.0.1:{port}/anything/x%2F..%2F/admin"),
    ]);
    assert_eq!((r.status, error_code(&r).as_str()), (404, "NR"), "{r:?}");
    // An encoded NUL is refused before routing, as Istio refuses it.
    let r = curl(&[
        "--path-as-is",
        &format!("http://127.0.0.1:{port}/anything/admin%00.png"),
    ]);
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (400, "path_nul"),
        "{r:?}"
    );
}

#[test]
fn lower_case_methods_are_refused_over_http1_and_http2() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = httpbin_gateway(&hb, port, &[]);
    for method in ["delete", "Delete"] {
        let r = raw_request(
            port,
            format!("{method} /anything HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        refused_400(&gw, &r, "method_not_uppercase");
        let url = format!("http://127.0.0.1:{port}/anything");
        let r = curl(&["--http2-prior-knowledge", "-X", method, &url]);
        refused_400(&gw, &r, "method_not_uppercase");
    }
    assert_eq!(gw.metric("gateway_upstream_attempts_total"), 0.0);
}

#[test]
fn transfer_codings_other_than_chunked_get_501_and_are_never_forwarded() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = httpbin_gateway(&hb, port, &[]);
    for te in ["gzip, chunked", "chunked, chunked"] {
        let r = raw_request(
            port,
            format!(
                "POST /anything HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: {te}\r\n\
                 Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (501, "transfer_coding_not_implemented"),
            "{te}: {r:?}"
        );
    }
    assert_eq!(gw.metric("gateway_upstream_attempts_total"), 0.0);
}

#[test]
fn more_than_100_header_fields_are_refused_over_http1_and_http2() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = httpbin_gateway(&hb, port, &[]);
    let url = format!("http://127.0.0.1:{port}/anything");
    let headers = |n: usize| -> Vec<String> {
        (0..n)
            .flat_map(|i| ["-H".to_string(), format!("x-h{i}: v")])
            .collect()
    };
    // curl adds User-Agent and Accept (and Host over HTTP/1; HTTP/2's `:authority` is no
    // header field): 99 of ours make 101 fields. (Near 100 the gateway forwards, but
    // gunicorn refuses 100 itself once the gateway's forwarding headers are added, so
    // the accepted case here is smaller.)
    for (ours, status) in [(80, 200), (99, 431)] {
        for protocol in ["--http1.1", "--http2-prior-knowledge"] {
            let mut args: Vec<String> = vec![protocol.into()];
            args.extend(headers(ours));
            args.push(url.clone());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = curl(&args);
            assert_eq!(r.status, status, "{protocol} with {ours} of ours: {r:?}");
        }
    }
    // Over HTTP/2 the gateway itself refuses it, with its code (hyper's HTTP/1 server
    // answers its own bodiless 431 first).
    let mut args: Vec<String> = vec!["--http2-prior-knowledge".into()];
    args.extend(headers(99));
    args.push(url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused_431(&gw, &curl(&args));
}

fn refused_431(gw: &Gateway, r: &CurlResult) {
    assert_eq!(
        (r.status, error_code(r).as_str()),
        (431, "headers_too_large"),
        "{r:?}"
    );
    assert_eq!(gw.explain(r)["attempts"], 0);
}

/// An upstream answering every request with `Content-Length: 100` and a chunked body of
/// 3 bytes (`abc`), keeping the connection open.
fn content_length_and_chunked_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::Write;
                let mut c: TcpStream = c;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    while !head.ends_with(b"\r\n\r\n") {
                        if c.read(&mut byte).unwrap_or(0) != 1 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    head.clear();
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\
                        Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
                    if c.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn an_upstream_answer_with_content_length_and_chunked_is_forwarded_by_its_chunks() {
    let upstream = content_length_and_chunked_upstream();
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &http_gateway(port),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: both, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
         rules:\n    - backendRefs: [{name: both, port: 80}]\n",
        &local_service("both", upstream),
    ]));
    let url = format!("http://127.0.0.1:{port}/");
    // Two requests on one HTTP/1.1 connection: the second is answered too.
    let r = curl(&[&url, &url]);
    // curl writes its status line after each body: `abc`, the first status, `abc`.
    assert_eq!(
        (r.exit_code, r.body.as_str()),
        (0, "abc\n__STATUS__200abc"),
        "{r:?}"
    );
    assert_eq!(r.headers.matches("HTTP/1.1 200 OK").count(), 2, "{r:?}");
    assert!(
        !r.headers.to_ascii_lowercase().contains("content-length"),
        "{r:?}"
    );
    let r = curl(&["--http2-prior-knowledge", &url]);
    assert_eq!(
        (r.exit_code, r.status, r.body.as_str()),
        (0, 200, "abc"),
        "{r:?}"
    );
}

/// Sends `head` (a request head without its blank line) on a new connection.
fn send_raw(port: u16, head: &[u8]) -> CurlResult {
    let mut bytes = head.to_vec();
    bytes.extend_from_slice(b"\r\n\r\n");
    raw_request(port, &bytes)
}

#[test]
fn upgrades_other_than_websocket_get_403_and_h2c_is_served_as_http_1_1() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = httpbin_gateway(&hb, port, &[]);
    // An upgrade Envoy would not tunnel without an upgrade_configs entry: 403, never sent.
    let r = send_raw(
        port,
        b"GET /get HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\nConnection: close",
    );
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (403, "upgrade_failed"),
        "{r:?}"
    );
    let why = gw.explain(&r);
    assert_eq!(why["attempts"], 0, "it reached an upstream: {why}");
    // h2c smuggling: a Connection line with a byte outside ASCII named HTTP2-Settings,
    // and its first line used to be forwarded as it was. Now the upgrade headers go and
    // the request is served as HTTP/1.1.
    let r = send_raw(
        port,
        b"GET /headers?show_env=1 HTTP/1.1\r\nHost: a.example\r\n\
          Connection: Upgrade, HTTP2-Settings, \xff\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: close",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &r.json()["headers"];
    for h in ["Upgrade", "Http2-Settings"] {
        assert!(seen.get(h).is_none(), "{h} reached the upstream: {seen}");
    }
    assert!(
        !seen["Connection"]
            .as_str()
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("http2-settings"),
        "{seen}"
    );
}

#[test]
fn a_clients_envoy_orders_are_dropped_and_its_forwarding_lines_and_cookies_kept() {
    let hb = Httpbin::start();
    let port = free_port();
    let _gw = httpbin_gateway(&hb, port, &[]);
    let r = send_raw(
        port,
        b"GET /headers?show_env=1 HTTP/1.1\r\nHost: a.example\r\n\
          X-Envoy-Retry-On: 5xx\r\nX-Envoy-Upstream-Rq-Timeout-Ms: 1\r\nX-Envoy-Internal: true\r\n\
          X-Envoy-Retriable-Status-Codes: 500\r\nX-Envoy-Retriable-Header-Names: x-a\r\n\
          X-Envoy-Hedge-On-Per-Try-Timeout: true\r\nX-Envoy-Original-Path: /x\r\n\
          X-Envoy-Original-Url: http://x/\r\n\
          X-Envoy-Something-Else: kept\r\n\
          X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 192.0.2.2\r\n\
          Cookie: a=1\r\nCookie: b=2\r\nConnection: close",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = &r.json()["headers"];
    for h in [
        "X-Envoy-Retry-On",
        "X-Envoy-Upstream-Rq-Timeout-Ms",
        "X-Envoy-Internal",
        "X-Envoy-Retriable-Status-Codes",
        "X-Envoy-Retriable-Header-Names",
        "X-Envoy-Hedge-On-Per-Try-Timeout",
        "X-Envoy-Original-Path",
        "X-Envoy-Original-Url",
    ] {
        assert!(seen.get(h).is_none(), "{h} reached the upstream: {seen}");
    }
    // Only Envoy's sanitized list goes; other names are the application's business.
    assert_eq!(seen["X-Envoy-Something-Else"], "kept", "{seen}");
    // Every X-Forwarded-For line, in order, then the peer.
    assert_eq!(
        seen["X-Forwarded-For"], "192.0.2.1, 192.0.2.2, 127.0.0.1",
        "{seen}"
    );
    // One Cookie field, joined with "; " (RFC 9113 §8.2.3, as Envoy joins them).
    assert_eq!(seen["Cookie"], "a=1; b=2", "{seen}");
}
