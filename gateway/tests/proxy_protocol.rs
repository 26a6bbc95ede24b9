//! The PROXY protocol from an Envoy Gateway ClientTrafficPolicy, against real httpbin:
//! curl's own `--haproxy-protocol` header (v1), HAProxy's `send-proxy-v2` (Debian's
//! haproxy in TCP mode in front of the gateway), hand-written v1 and ppp-built v2 headers
//! naming another client (which httpbin then sees in X-Forwarded-For), and the refusals:
//! no header where one is required, a forged one, and a TLS port where the header comes
//! first.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

fn config(port: u16, httpbin: u16, proxy_protocol: &str) -> String {
    docs(&[
        &http_gateway(port),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: httpbin, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
         rules: [{backendRefs: [{name: httpbin, port: 80}]}]\n",
        &format!(
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: ClientTrafficPolicy\n\
             metadata: {{name: proxy-protocol, namespace: default}}\nspec:\n  \
             targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: edge}}]\n  \
             {proxy_protocol}\n"
        ),
        &local_service("httpbin", httpbin),
    ])
}

/// Sends `header` then a GET of /headers; returns the raw response ("" if closed).
fn raw_get(port: u16, header: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(header).unwrap();
    let _ = s.write_all(
        b"GET /headers?show_env=1 HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n",
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_header_names_the_client_and_a_connection_without_one_is_refused() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&config(port, hb.port, "proxyProtocol: {}"));
    let url = format!("http://127.0.0.1:{port}/get");
    let with = curl(&["--haproxy-protocol", &url]);
    assert_eq!(with.status, 200, "{with:?}");
    let without = curl(&[&url]);
    assert_eq!(
        without.status, 0,
        "a required header is missing: {without:?}"
    );
    gw.wait_metric(
        "gateway_downstream_request_errors_total{code=\"proxy_protocol\"}",
        1.0,
    );

    let v1 = raw_get(port, b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 8080\r\n");
    assert!(v1.starts_with("HTTP/1.1 200"), "{v1}");
    assert!(v1.contains("\"X-Forwarded-For\": \"203.0.113.7\""), "{v1}");

    let addrs = ppp::v2::IPv4::new([198, 51, 100, 9], [10, 0, 0, 1], 4242, 8080);
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        addrs,
    )
    .build()
    .unwrap();
    let r = raw_get(port, &v2);
    assert!(r.contains("\"X-Forwarded-For\": \"198.51.100.9\""), "{r}");
    let line = gw.wait_access_log(|l| l["downstream_remote_address"] == "198.51.100.9:4242");
    assert_eq!(line["response_code"], 200, "{line}");
    // The header's destination, as Envoy restores the local address from it.
    assert_eq!(line["downstream_local_address"], "10.0.0.1:8080", "{line}");

    let forged = raw_get(port, b"PROXY TCP4 203.0.113.7 not-an-ip 1 2\r\n");
    assert_eq!(forged, "", "a malformed header closes the connection");
}

/// A client that sends its PROXY header and then nothing is closed at the first-request
/// deadline (the gateway reads the request's first bytes after the header, as on a plain
/// port); a header followed by the request in a second write is served as from the
/// header's source.
#[test]
fn after_the_header_a_silent_client_is_closed_and_a_later_request_is_served() {
    let hb = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start_with(
        &config(port, hb.port, "proxyProtocol: {}"),
        &["--header-read-timeout", "500ms"],
    );
    let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 8080\r\n";
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent.write_all(header).unwrap();
    // A safety net, not a measurement: the deadline is 500 ms.
    let ended = wait_closed(&mut silent, Duration::from_secs(15));
    assert!(matches!(ended, Ended::ClosedSilently), "{ended:?}");
    gw.wait_metric(
        "gateway_downstream_connection_timeouts_total{kind=\"first_request\"}",
        1.0,
    );

    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(header).unwrap();
    s.flush().unwrap();
    // The request follows in a write of its own (its own segment on loopback).
    s.write_all(
        b"GET /headers?show_env=1 HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("\"X-Forwarded-For\": \"203.0.113.7\""),
        "{out}"
    );
}

#[test]
fn optional_serves_clients_with_and_without_the_header() {
    let hb = Httpbin::start();
    let port = free_port();
    let _gw = Gateway::start(&config(port, hb.port, "proxyProtocol: {optional: true}"));
    let url = format!("http://127.0.0.1:{port}/get");
    assert_eq!(curl(&[&url]).status, 200);
    let r = raw_get(port, b"PROXY TCP4 203.0.113.8 10.0.0.1 1 8080\r\n");
    assert!(r.contains("\"X-Forwarded-For\": \"203.0.113.8\""), "{r}");
}

#[test]
fn the_header_comes_before_tls_on_an_https_port() {
    let hb = Httpbin::start();
    let pki = Pki::new();
    pki.ca("ca");
    pki.leaf("server", "ca", &["a.example.com"], false);
    let port = free_port();
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: edge, namespace: default}}\nspec:\n  listeners:\n  \
         - name: https\n    port: {port}\n    protocol: HTTPS\n    \
         tls: {{certificateRefs: [{{name: cert}}]}}\n"
    );
    let cfg =
        config(port, hb.port, "enableProxyProtocol: true").replace(&http_gateway(port), &gateway);
    let _gw = Gateway::start(&docs(&[&cfg, &pki.tls_secret("cert", "server")]));
    let ca = pki.path("ca.crt");
    let url = format!("https://a.example.com:{port}/get");
    let resolve = format!("a.example.com:{port}:127.0.0.1");
    let base = ["--cacert", ca.to_str().unwrap(), "--resolve", &resolve];
    let ok = curl(&[&base[..], &["--haproxy-protocol", &url]].concat());
    assert_eq!(ok.status, 200, "{ok:?}");
    let without = curl(&[&base[..], &[url.as_str()]].concat());
    assert_eq!(without.status, 0, "{without:?}");
}

/// HAProxy (Debian's) in TCP mode in front of the gateway, with `send-proxy-v2` on its
/// server line, as a cloud or on-premises load balancer sends it.
fn haproxy(listen: u16, gateway: u16, dir: &std::path::Path) -> e2e::process::ChildGuard {
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend edge\n  bind 127.0.0.1:{listen}\n  default_backend gateway\n\
             backend gateway\n  server gw 127.0.0.1:{gateway} send-proxy-v2\n"
        ),
    )
    .unwrap();
    let bin = e2e::tools::on_path("haproxy")
        .or_else(|| Some(std::path::PathBuf::from("/usr/sbin/haproxy")).filter(|p| p.is_file()))
        .expect("haproxy is not installed: run scripts/install-tools");
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["-db", "-f"]).arg(&cfg);
    let guard = e2e::process::ChildGuard::spawn("haproxy", cmd, dir.join("haproxy.log"));
    wait_for("haproxy listening", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", listen)).is_ok()
    });
    guard
}

#[test]
fn haproxy_send_proxy_v2_names_the_client_behind_the_load_balancer() {
    let hb = Httpbin::start();
    let (port, lb) = (free_port(), free_port());
    let gw = Gateway::start(&config(port, hb.port, "proxyProtocol: {}"));
    let dir = tempfile::tempdir().unwrap();
    let _haproxy = haproxy(lb, port, dir.path());
    // The client connects from 127.0.0.2; HAProxy reaches the gateway from 127.0.0.1.
    let r = curl(&[
        "--interface",
        "127.0.0.2",
        &format!("http://127.0.0.1:{lb}/headers?show_env=1"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["headers"]["X-Forwarded-For"], "127.0.0.2", "{r:?}");
    let line = gw.wait_access_log(|l| {
        l["downstream_remote_address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.2:"))
    });
    assert_eq!(line["response_code"], 200, "{line}");
    // Where the client connected: HAProxy's frontend, not the gateway's socket.
    assert_eq!(
        line["downstream_local_address"],
        format!("127.0.0.1:{lb}"),
        "{line}"
    );
    // Straight to the gateway, without HAProxy's header: refused.
    let direct = curl(&[&format!("http://127.0.0.1:{port}/headers")]);
    assert_eq!(direct.status, 0, "{direct:?}");
}
