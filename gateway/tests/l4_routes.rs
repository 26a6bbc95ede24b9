//! Connection routes against real peers: TCPRoute to a socat echo server, TLSRoute
//! passthrough by SNI to HTTPS httpbins serving their own certificates (checked by
//! curl against the upstream's CA, which the gateway never sees), TLS terminated and
//! then proxied as TCP, and the hostile inputs a TLS port must refuse.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use support::*;

fn gateway_yaml(listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: edge, namespace: default}}\nspec:\n  listeners:\n{listeners}"
    )
}

fn tcp_route(name: &str, section: &str, service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\n\
         metadata: {{name: {name}, namespace: default}}\nspec:\n  \
         parentRefs: [{{name: edge, sectionName: {section}}}]\n  \
         rules:\n    - backendRefs: [{{name: {service}, port: 80}}]\n"
    )
}

fn tls_route(name: &str, section: &str, host: &str, service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\n\
         metadata: {{name: {name}, namespace: default}}\nspec:\n  \
         parentRefs: [{{name: edge, sectionName: {section}}}]\n  hostnames: [{host}]\n  \
         rules:\n    - backendRefs: [{{name: {service}, port: 80}}]\n"
    )
}

/// Sends `data`, half-closes, and reads until the far side closes.
fn echo_round_trip(port: u16, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            w.write_all(&data).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("the echo ends once the half-close has travelled both ways");
    writer.join().unwrap();
    got
}

#[test]
fn tcp_route_copies_a_megabyte_both_ways_and_carries_the_half_close_to_socat() {
    let echo = Echo::start();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &gateway_yaml(&format!(
            "    - {{name: tcp, port: {port}, protocol: TCP}}\n"
        )),
        &tcp_route("echo", "tcp", "echo"),
        &local_service("echo", echo.port),
    ]));
    let data: Vec<u8> = (0..1_048_576u32).map(|i| (i * 7 % 251) as u8).collect();
    let got = echo_round_trip(port, &data);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ");
    let line = gw.wait_access_log(|l| l["route"] == "TCPRoute default/echo");
    assert_eq!(line["bytes_received"], 1_048_576, "{line}");
    assert_eq!(line["bytes_sent"], 1_048_576, "{line}");
    assert_eq!(line["response_flags"], "-", "{line}");
    assert_eq!(line["upstream_host"], format!("127.0.0.1:{}", echo.port));
    assert_eq!(
        line["upstream_cluster"],
        "outbound|80||echo.default.svc.cluster.local"
    );
    let labels = "destination_service=\"echo.default.svc.cluster.local\"";
    gw.wait_metric(
        "istio_tcp_connections_closed_total{reporter=\"source\"",
        1.0,
    );
    let metrics = gw.admin_get("/metrics").1;
    let series = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(labels))
            .unwrap_or_else(|| panic!("no {name} series for echo:\n{metrics}"))
            .to_string()
    };
    assert!(series("istio_tcp_received_bytes_total").ends_with(" 1048576"));
    assert!(series("istio_tcp_sent_bytes_total").ends_with(" 1048576"));
    let opened = series("istio_tcp_connections_opened_total");
    assert!(opened.contains("request_protocol=\"tcp\""), "{opened}");
    assert!(
        !opened.contains("response_code"),
        "TCP series carry no code: {opened}"
    );
}

#[test]
fn an_idle_tcp_connection_is_closed_at_the_idle_timeout() {
    let echo = Echo::start();
    let port = free_port();
    let gw = Gateway::start_with(
        &docs(&[
            &gateway_yaml(&format!(
                "    - {{name: tcp, port: {port}, protocol: TCP}}\n"
            )),
            &tcp_route("echo", "tcp", "echo"),
            &local_service("echo", echo.port),
        ]),
        &["--tcp-idle-timeout", "1s"],
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(
        wait_closed(&mut s, Duration::from_secs(20)),
        Ended::ClosedSilently
    );
    gw.wait_metric(
        "gateway_downstream_connection_timeouts_total{kind=\"idle\"}",
        1.0,
    );
}

#[test]
fn a_tcp_route_whose_upstream_refuses_is_closed_with_uf_and_nothing_else_breaks() {
    let dead = free_port();
    let echo = Echo::start();
    let (port, live) = (free_port(), free_port());
    let gw = Gateway::start(&docs(&[
        &gateway_yaml(&format!(
            "    - {{name: dead, port: {port}, protocol: TCP}}\n    \
             - {{name: live, port: {live}, protocol: TCP}}\n"
        )),
        &tcp_route("dead", "dead", "dead"),
        &tcp_route("live", "live", "echo"),
        &local_service("dead", dead),
        &local_service("echo", echo.port),
    ]));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(
        wait_closed(&mut s, Duration::from_secs(20)),
        Ended::ClosedSilently
    );
    let line = gw.wait_access_log(|l| l["route"] == "TCPRoute default/dead");
    assert_eq!(line["response_flags"], "UF", "{line}");
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("connecting to 127.0.0.1:")
    );
    assert_eq!(echo_round_trip(live, b"still served"), b"still served");
}

/// Two HTTPS httpbins with certificates from a CA only the client trusts.
struct Upstreams {
    pki: Pki,
    a: Httpbin,
    b: Httpbin,
}

fn tls_upstreams() -> Upstreams {
    let pki = Pki::new();
    pki.ca("upstream-ca");
    pki.leaf("a", "upstream-ca", &["a.pass.example.com"], false);
    pki.leaf("b", "upstream-ca", &["b.pass.example.com"], false);
    pki.ca("edge-ca");
    pki.leaf("web", "edge-ca", &["web.example.com"], false);
    let a = Httpbin::start_tls(&pki.path("a.crt"), &pki.path("a.key"));
    let b = Httpbin::start_tls(&pki.path("b.crt"), &pki.path("b.key"));
    Upstreams { pki, a, b }
}

fn curl_https(ca: &Path, host: &str, port: u16, path: &str) -> CurlResult {
    curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &format!("{host}:{port}:127.0.0.1"),
        &format!("https://{host}:{port}{path}"),
    ])
}

#[test]
fn tls_passthrough_routes_by_sni_and_the_client_sees_the_upstreams_own_certificate() {
    let up = tls_upstreams();
    let plain = Httpbin::start();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &gateway_yaml(&format!(
            "    - name: pass\n      port: {port}\n      protocol: TLS\n      \
             hostname: \"*.pass.example.com\"\n      tls: {{mode: Passthrough}}\n    \
             - name: web\n      port: {port}\n      protocol: HTTPS\n      \
             hostname: web.example.com\n      tls: {{certificateRefs: [{{name: web-cert}}]}}\n"
        )),
        &tls_route("a", "pass", "a.pass.example.com", "a"),
        &tls_route("b", "pass", "b.pass.example.com", "b"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: web, namespace: default}\nspec:\n  \
         parentRefs: [{name: edge, sectionName: web}]\n  \
         rules:\n    - backendRefs: [{name: plain, port: 80}]\n",
        &up.pki.tls_secret("web-cert", "web"),
        &local_service("a", up.a.port),
        &local_service("b", up.b.port),
        &local_service("plain", plain.port),
    ]));
    let upstream_ca = up.pki.path("upstream-ca.crt");
    // curl trusts only the upstreams' CA: a handshake the gateway terminated would fail.
    let r = curl_https(&upstream_ca, "a.pass.example.com", port, "/anything/a");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["url"],
        format!("https://a.pass.example.com:{port}/anything/a")
    );
    let r = curl_https(&upstream_ca, "b.pass.example.com", port, "/anything/b");
    assert_eq!(r.status, 200, "{r:?}");
    eventually("httpbin b logs /anything/b", || {
        up.b.requests().iter().any(|l| l.contains("/anything/b"))
    });
    assert!(!up.a.requests().iter().any(|l| l.contains("/anything/b")));
    // The HTTPS listener on the same port terminates with the gateway's certificate.
    let r = curl_https(
        &up.pki.path("edge-ca.crt"),
        "web.example.com",
        port,
        "/headers?show_env=1",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["headers"]["X-Forwarded-Proto"], "https");
    let line = gw.wait_access_log(|l| l["route"] == "TLSRoute default/b");
    assert_eq!(
        line["requested_server_name"], "b.pass.example.com",
        "{line}"
    );
    assert!(line["bytes_sent"].as_u64().unwrap() > 0, "{line}");
}

#[test]
fn an_sni_no_tls_route_serves_is_closed_with_nr() {
    let up = tls_upstreams();
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &gateway_yaml(&format!(
            "    - name: pass\n      port: {port}\n      protocol: TLS\n      \
             hostname: \"*.pass.example.com\"\n      tls: {{mode: Passthrough}}\n"
        )),
        &tls_route("a", "pass", "a.pass.example.com", "a"),
        &local_service("a", up.a.port),
    ]));
    let r = curl_https(
        &up.pki.path("upstream-ca.crt"),
        "c.pass.example.com",
        port,
        "/",
    );
    assert_eq!(r.status, 0, "{r:?}");
    let line = gw.wait_access_log(|l| l["response_flags"] == "NR");
    assert_eq!(
        line["requested_server_name"], "c.pass.example.com",
        "{line}"
    );
    assert_eq!(line["bytes_received"], 0, "{line}");
    assert!(up.a.requests().is_empty(), "{:?}", up.a.requests());
}

#[test]
fn hostile_clients_on_a_tls_port_are_closed_before_any_upstream_is_dialled() {
    let up = tls_upstreams();
    let port = free_port();
    let gw = Gateway::start_with(
        &docs(&[
            &gateway_yaml(&format!(
                "    - name: pass\n      port: {port}\n      protocol: TLS\n      \
                 tls: {{mode: Passthrough}}\n"
            )),
            &tls_route("any", "pass", "\"*.pass.example.com\"", "a"),
            &local_service("a", up.a.port),
        ]),
        &["--header-read-timeout", "1s"],
    );
    // Plaintext HTTP on a TLS port: not a ClientHello.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.pass.example.com\r\n\r\n")
        .unwrap();
    assert_eq!(
        wait_closed(&mut s, Duration::from_secs(20)),
        Ended::ClosedSilently
    );
    // A TLS record header announcing a handshake that never comes.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00]).unwrap();
    assert_eq!(
        wait_closed(&mut s, Duration::from_secs(20)),
        Ended::ClosedSilently
    );
    gw.wait_metric(
        "gateway_downstream_connection_timeouts_total{kind=\"first_request\"}",
        1.0,
    );
    // A silent client.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(
        wait_closed(&mut s, Duration::from_secs(20)),
        Ended::ClosedSilently
    );
    gw.wait_metric(
        "gateway_downstream_connection_timeouts_total{kind=\"first_request\"}",
        2.0,
    );
    assert!(up.a.requests().is_empty(), "{:?}", up.a.requests());
    assert_eq!(gw.metric("istio_tcp_connections_opened_total"), 0.0);
}

/// A rustls client trusting `ca`, speaking raw bytes after the handshake.
fn tls_client(
    ca: &Path,
    port: u16,
    sni: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    gateway::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pemfile_certs(&pem) {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Offered so the test can check that a TLS Terminate listener selects none.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn tls_terminate_listener_decrypts_and_proxies_the_bytes_as_tcp_to_socat() {
    let echo = Echo::start();
    let pki = Pki::new();
    pki.ca("edge-ca");
    pki.leaf("db", "edge-ca", &["db.example.com"], false);
    let port = free_port();
    let gw = Gateway::start(&docs(&[
        &gateway_yaml(&format!(
            "    - name: tls\n      port: {port}\n      protocol: TLS\n      \
             tls: {{mode: Terminate, certificateRefs: [{{name: db-cert}}]}}\n"
        )),
        &tls_route("db", "tls", "db.example.com", "echo"),
        &pki.tls_secret("db-cert", "db"),
        &local_service("echo", echo.port),
    ]));
    let mut tls = tls_client(&pki.path("edge-ca.crt"), port, "db.example.com");
    tls.write_all(b"hello over tls").unwrap();
    tls.flush().unwrap();
    let mut buf = [0u8; 14];
    tls.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello over tls");
    assert_eq!(
        tls.conn.alpn_protocol(),
        None,
        "bytes, not HTTP: no ALPN selected"
    );
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let line = gw.wait_access_log(|l| l["route"] == "TLSRoute default/db");
    assert_eq!(line["bytes_received"], 14, "{line}");
    assert_eq!(line["bytes_sent"], 14, "{line}");
}

/// A TCP FIN without TLS close_notify from a client of a TLS Terminate listener is a
/// half-close, as Envoy's tcp_proxy treats it: the upstream sees EOF and what it sends
/// after that still reaches the client.
#[test]
fn tls_terminate_passes_a_clients_fin_without_close_notify_on_as_a_half_close() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut got = Vec::new();
            if conn.read_to_end(&mut got).is_ok() {
                let _ = conn.write_all(format!("got {} bytes then EOF", got.len()).as_bytes());
            }
        }
    });
    let pki = Pki::new();
    pki.ca("edge-ca");
    pki.leaf("db", "edge-ca", &["db.example.com"], false);
    let port = free_port();
    let _gw = Gateway::start(&docs(&[
        &gateway_yaml(&format!(
            "    - name: tls\n      port: {port}\n      protocol: TLS\n      \
             tls: {{mode: Terminate, certificateRefs: [{{name: db-cert}}]}}\n"
        )),
        &tls_route("db", "tls", "db.example.com", "counter"),
        &pki.tls_secret("db-cert", "db"),
        &local_service("counter", upstream),
    ]));
    let mut tls = tls_client(&pki.path("edge-ca.crt"), port, "db.example.com");
    tls.write_all(&[b'a'; 50_000]).unwrap();
    tls.flush().unwrap();
    tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).unwrap();
    assert_eq!(String::from_utf8_lossy(&answer), "got 50000 bytes then EOF");
}

/// rustls warns once per ClientHello with an SNI that is not a DNS name: at the default
/// log level a client must not be able to write a gateway log line per connection.
#[test]
fn an_illegal_sni_is_refused_without_a_log_line_per_connection() {
    let port = free_port();
    let gw = Gateway::start(&gateway_yaml(&format!(
        "    - {{name: tls, port: {port}, protocol: TLS, tls: {{mode: Passthrough}}}}\n"
    )));
    for (i, sni) in ["a..example.com", "foo.example.com:443"].iter().enumerate() {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", sni])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sni}: no handshake");
        gw.wait_metric(
            "gateway_downstream_request_errors_total{code=\"tls_client_hello\"}",
            (i + 1) as f64,
        );
    }
    let log = gw.log();
    assert!(!log.contains("Illegal SNI"), "{log}");
}

/// Istio's stats filter counts a connection opened when it connects and adds its bytes
/// every tcp_reporting_duration, so a long connection shows in Prometheus while it lasts
/// (it used to appear only once closed).
#[test]
fn an_open_connection_is_counted_opened_and_its_bytes_reported_while_it_lasts() {
    let echo = Echo::start();
    let port = free_port();
    let gw = Gateway::start_with(
        &docs(&[
            &gateway_yaml(&format!(
                "    - {{name: tcp, port: {port}, protocol: TCP}}\n"
            )),
            &tcp_route("echo", "tcp", "echo"),
            &local_service("echo", echo.port),
        ]),
        &["--tcp-reporting-interval", "200ms"],
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&[b'x'; 1000]).unwrap();
    let mut buf = [0u8; 1000];
    s.read_exact(&mut buf).unwrap();
    gw.wait_metric("istio_tcp_connections_opened_total", 1.0);
    gw.wait_metric("istio_tcp_received_bytes_total", 1000.0);
    gw.wait_metric("istio_tcp_sent_bytes_total", 1000.0);
    assert_eq!(
        gw.metric("istio_tcp_connections_closed_total"),
        0.0,
        "still open"
    );
    s.write_all(&[b'y'; 500]).unwrap();
    s.read_exact(&mut buf[..500]).unwrap();
    drop(s);
    gw.wait_metric("istio_tcp_connections_closed_total", 1.0);
    assert_eq!(gw.metric("istio_tcp_connections_opened_total"), 1.0);
    assert_eq!(gw.metric("istio_tcp_received_bytes_total"), 1500.0);
    assert_eq!(gw.metric("istio_tcp_sent_bytes_total"), 1500.0);
}
