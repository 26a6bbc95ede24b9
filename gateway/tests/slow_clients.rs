//! Connections that never deliver a first request: silent, trickling (HTTP/1, HTTP/2
//! preface), silent after the TLS handshake, and HTTP/2 clients that stop answering
//! PINGs. Each is closed by the gateway, on HTTP, h2c and HTTPS listeners, and a slot it
//! held serves again.

mod support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// Safety net for reads the gateway is expected to end; never reached when it works.
const LIMIT: Duration = Duration::from_secs(15);

fn no_backend_route() -> &'static str {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
     metadata: {name: r, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n"
}

fn http_gateway_with(port: u16, args: &[&str]) -> Gateway {
    Gateway::start_with(&docs(&[&http_gateway(port), no_backend_route()]), args)
}

/// The HTTP/2 client preface, an empty SETTINGS frame, and one HEADERS frame (GET
/// `path` on `authority`, END_STREAM | END_HEADERS) in HPACK literals.
fn h2_request(authority: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http (static table)
    for (index, value) in [(1u8, authority), (4u8, path)] {
        // Literal without indexing, indexed name (:authority = 1, :path = 4).
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let len = block.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[0x1, 0x5, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    out
}

/// Sends `bytes` one at a time, `pace` apart, until the gateway closes the connection;
/// returns how the connection ended and how many bytes had been sent by then.
fn trickle(port: u16, bytes: &[u8], pace: Duration) -> (Ended, usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = s.try_clone().unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let ended = wait_closed(&mut reader, LIMIT);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            ended
        })
    };
    let mut sent = 0;
    for b in bytes {
        if done.load(std::sync::atomic::Ordering::SeqCst) || s.write_all(&[*b]).is_err() {
            break;
        }
        sent += 1;
        // The pace is the hostile input itself, not a wait for a condition.
        std::thread::sleep(pace);
    }
    (watcher.join().unwrap(), sent)
}

#[test]
fn silent_http_connection_is_closed_at_the_header_read_timeout() {
    let port = free_port();
    let gw = http_gateway_with(port, &["--header-read-timeout", "500ms"]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(wait_closed(&mut s, LIMIT), Ended::ClosedSilently);
    gw.wait_metric(
        "gateway_downstream_connection_timeouts_total{kind=\"first_request\"}",
        1.0,
    );
}

#[test]
fn h2c_preface_trickled_one_byte_at_a_time_is_closed_before_it_completes() {
    let port = free_port();
    let gw = http_gateway_with(port, &["--header-read-timeout", "1s"]);
    let request = h2_request("slow.example.com", "/");
    let (ended, sent) = trickle(port, &request, Duration::from_millis(250));
    assert_eq!(ended, Ended::ClosedSilently);
    assert!(
        sent < 24,
        "the preface alone is 24 bytes; {sent} were sent before the close"
    );
    gw.wait_metric(
        "gateway_downstream_connection_timeouts_total{kind=\"first_request\"}",
        1.0,
    );
}

#[test]
fn http1_request_line_trickled_one_byte_at_a_time_is_closed_before_it_completes() {
    let port = free_port();
    let gw = http_gateway_with(port, &["--header-read-timeout", "1s"]);
    let request = b"GET /a-long-enough-path HTTP/1.1\r\nHost: slow.example.com\r\n\r\n";
    let (ended, sent) = trickle(port, request, Duration::from_millis(250));
    assert!(
        sent < request.len(),
        "the whole request was accepted: {ended:?}"
    );
    // hyper's per-request header timer or the first-request deadline, whichever fires
    // first, closes it; neither answers.
    assert_eq!(ended, Ended::ClosedSilently);
    assert_eq!(gw.metric("gateway_requests_total"), 0.0);
}

#[test]
fn silent_connection_holding_the_last_slot_is_closed_and_the_slot_serves_again() {
    let port = free_port();
    let gw = http_gateway_with(
        port,
        &["--header-read-timeout", "500ms", "--max-connections", "1"],
    );
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    gw.wait_metric("gateway_downstream_connections_active", 1.0);
    assert_eq!(wait_closed(&mut silent, LIMIT), Ended::ClosedSilently);
    gw.wait_metric("gateway_downstream_connections_active", 0.0);
    // The freed slot serves a real request (500: the route has no backendRefs).
    let r = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!((r.status, error_code(&r).as_str()), (500, "no_backend"));
}

#[test]
fn https_client_silent_after_the_handshake_is_closed_at_the_header_read_timeout() {
    gateway::install_crypto_provider();
    let pki = Pki::new();
    pki.ca("ca");
    pki.leaf("server", "ca", &["silent.example.com"], false);
    let port = free_port();
    let gw = Gateway::start_with(
        &docs(&[
            &format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
                 metadata: {{name: edge, namespace: default}}\nspec:\n  listeners:\n    \
                 - name: https\n      port: {port}\n      protocol: HTTPS\n      \
                 tls: {{certificateRefs: [{{name: server-cert}}]}}\n"
            ),
            no_backend_route(),
            &pki.tls_secret("server-cert", "server"),
        ]),
        &["--header-read-timeout", "1s"],
    );
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.path("ca.crt")).unwrap();
    for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "silent.example.com".try_into().unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(LIMIT)).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).unwrap();
    }
    // Handshake done, no request: the gateway closes (close_notify, then EOF).
    let mut buf = [0u8; 64];
    let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
    let read = std::io::Read::read(&mut stream, &mut buf);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::UnexpectedEof),
        "expected the gateway to close the connection: {read:?}"
    );
    gw.wait_metric(
        "gateway_downstream_connection_timeouts_total{kind=\"first_request\"}",
        1.0,
    );
}

/// Accepts connections and never answers (a hung upstream).
fn hung_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    port
}

/// Reads HTTP/2 frames until the connection closes; their (type, flags) in order.
fn frames_until_closed(s: &mut TcpStream) -> Vec<(u8, u8)> {
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut frames = Vec::new();
    let mut head = [0u8; 9];
    while std::io::Read::read_exact(s, &mut head).is_ok() {
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if std::io::Read::read_exact(s, &mut payload).is_err() {
            break;
        }
        frames.push((head[3], head[4]));
    }
    frames
}

#[test]
fn h2_client_that_stops_answering_pings_is_closed_at_the_keepalive_timeout() {
    let upstream = hung_upstream();
    let port = free_port();
    let gw = Gateway::start_with(
        &docs(&[
            &http_gateway(port),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {name: hung, namespace: default}\nspec:\n  parentRefs: [{name: edge}]\n  \
             rules:\n    - backendRefs: [{name: hung, port: 80}]\n",
            &local_service("hung", upstream),
        ]),
        &[
            "--http2-keepalive-interval",
            "300ms",
            "--http2-keepalive-timeout",
            "300ms",
        ],
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&h2_request("hung.example.com", "/")).unwrap();
    // The request is in flight (so the idle timeout does not apply) and this client
    // acknowledges nothing: the gateway's PING goes unanswered.
    gw.wait_metric("gateway_upstream_connections_active", 1.0);
    let frames = frames_until_closed(&mut s);
    const PING: u8 = 0x6;
    const HEADERS: u8 = 0x1;
    assert!(
        frames.contains(&(PING, 0)),
        "no PING before the close: {frames:?}"
    );
    assert!(
        !frames.iter().any(|(t, _)| *t == HEADERS),
        "a response was sent: {frames:?}"
    );
}
