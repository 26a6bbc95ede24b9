//! The httpbin pod fixture behaves like an Istio sidecar: real httpbin behind a real Envoy
//! whose certificate comes from a real sds-agent over SDS, reached by a Rust mTLS client
//! holding the gateway's mesh certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use e2e::ca::TestCa;
use e2e::sidecar::{HttpbinPod, InboundPolicy};
use e2e::tls::LeafRecorder;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh::Identity;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

fn gateway_identity() -> Identity {
    "spiffe://cluster.local/ns/gateway-system/sa/gateway-proxy"
        .parse()
        .unwrap()
}

fn httpbin_identity() -> Identity {
    "spiffe://cluster.local/ns/default/sa/httpbin"
        .parse()
        .unwrap()
}

/// Fields drop in order: the pod (its processes) before the directory holding their logs.
struct Lab {
    pod: HttpbinPod,
    ca: TestCa,
    _dir: tempfile::TempDir,
}

async fn lab(policy: InboundPolicy) -> Lab {
    e2e::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::start().await;
    let pod = HttpbinPod::start(dir.path(), &ca, httpbin_identity(), policy, "24h").await;
    Lab { _dir: dir, ca, pod }
}

/// The gateway's client certificate: (leaf DER, PKCS#8 key DER).
fn gateway_cert(ca: &TestCa) -> (Vec<u8>, Vec<u8>) {
    ca.issue_direct(&gateway_identity(), Duration::from_secs(3600))
}

/// A TLS client trusting the mesh root, offering `alpn`, with an optional client cert.
fn client(
    ca: &TestCa,
    cert: Option<&(Vec<u8>, Vec<u8>)>,
    alpn: &[&str],
) -> (Arc<rustls::ClientConfig>, Arc<LeafRecorder>) {
    let recorder = LeafRecorder::new(&[CertificateDer::from(ca.root_der())]).unwrap();
    let builder = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone());
    let mut config = match cert {
        Some((leaf, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(leaf.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.clone())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    (Arc::new(config), recorder)
}

/// One HTTP/1.1 GET on an established stream.
async fn get_on<S>(stream: S, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", "httpbin.default.svc.cluster.local");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// GET over TLS with `config`; errors if the handshake or the exchange fails.
async fn tls_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from("outbound_.8000_._.httpbin.default.svc.cluster.local")?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        get_on(tls, path, headers).await
    };
    tokio::time::timeout(Duration::from_secs(10), work).await?
}

/// The answer to a GET over TLS that the sidecar is expected to serve; a failure shows
/// the sidecar's log.
async fn served(
    pod: &HttpbinPod,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    match tls_get(pod.inbound, config, path, headers).await {
        Ok(answer) => answer,
        Err(e) => panic!("mTLS GET {path} failed: {e:?}\n{}", pod.envoy_log()),
    }
}

/// GET in plaintext.
async fn plain_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        get_on(tcp, path, headers).await
    };
    tokio::time::timeout(Duration::from_secs(10), work).await?
}

/// The `X-Forwarded-Client-Cert` httpbin saw, from a `/headers` body.
fn xfcc(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).expect("httpbin /headers JSON");
    v["headers"]["X-Forwarded-Client-Cert"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sidecar_accepts_istio_mtls_and_appends_xfcc() {
    let lab = lab(InboundPolicy::Strict).await;
    let cert = gateway_cert(&lab.ca);
    let (config, _) = client(&lab.ca, Some(&cert), &["istio-http/1.1"]);
    let (status, body) = served(&lab.pod, config, "/headers", &[]).await;
    assert_eq!(status, 200, "{body}");
    let xfcc = xfcc(&body).unwrap_or_else(|| panic!("no XFCC in {body}"));
    println!("XFCC seen by httpbin: {xfcc}");
    assert!(
        xfcc.contains("By=spiffe://cluster.local/ns/default/sa/httpbin"),
        "{xfcc}"
    );
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/gateway-system/sa/gateway-proxy"),
        "{xfcc}"
    );
    let hash = mesh::certs::sha256_hex(&cert.0);
    assert!(xfcc.contains(&format!("Hash={hash}")), "{xfcc} vs {hash}");
    assert!(xfcc.contains("Subject=\"\""), "{xfcc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sidecar_speaks_h2_under_istio_h2_and_tls12() {
    let lab = lab(InboundPolicy::Strict).await;
    let cert = gateway_cert(&lab.ca);
    // ALPN istio-h2 selects the mTLS chain; no ALPN is negotiated (the server offers h2 and
    // http/1.1), and the AUTO codec recognises the HTTP/2 preface.
    let (config, _) = client(&lab.ca, Some(&cert), &["istio-h2", "istio"]);
    let tcp = tokio::net::TcpStream::connect(lab.pod.inbound)
        .await
        .unwrap();
    let name = ServerName::try_from("outbound_.8000_._.httpbin.default.svc.cluster.local").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("https://httpbin.default.svc.cluster.local/headers")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let xfcc = xfcc(&String::from_utf8_lossy(&body)).expect("XFCC over h2");
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/gateway-system/sa/gateway-proxy"),
        "{xfcc}"
    );

    // TLS 1.2 is accepted too.
    let recorder = LeafRecorder::new(&[CertificateDer::from(lab.ca.root_der())]).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
            .dangerous()
            .with_custom_certificate_verifier(recorder)
            .with_client_auth_cert(
                vec![CertificateDer::from(cert.0.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.1.clone())),
            )
            .unwrap();
    config.alpn_protocols = vec![b"istio-http/1.1".to_vec(), b"istio".to_vec()];
    let (status, body) = served(&lab.pod, Arc::new(config), "/headers", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(xfcc_has_gateway(&body), "{body}");
}

fn xfcc_has_gateway(body: &str) -> bool {
    xfcc(body).is_some_and(|x| {
        x.contains("URI=spiffe://cluster.local/ns/gateway-system/sa/gateway-proxy")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sidecar_appends_to_an_incoming_xfcc() {
    let lab = lab(InboundPolicy::Strict).await;
    let cert = gateway_cert(&lab.ca);
    let (config, _) = client(&lab.ca, Some(&cert), &["istio-http/1.1"]);
    let sent = "By=spiffe://cluster.local/ns/x/sa/forged;URI=spiffe://cluster.local/ns/evil/sa/x";
    let (status, body) = served(
        &lab.pod,
        config,
        "/headers",
        &[("x-forwarded-client-cert", sent)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let xfcc = xfcc(&body).unwrap();
    println!("XFCC sent: {sent}\nXFCC seen by httpbin: {xfcc}");
    // APPEND_FORWARD: the incoming value is kept and the sidecar's element appended.
    let (first, last) = xfcc
        .split_once(',')
        .unwrap_or_else(|| panic!("not appended: {xfcc}"));
    assert_eq!(first, sent);
    assert!(
        last.starts_with("By=spiffe://cluster.local/ns/default/sa/httpbin;Hash="),
        "{last}"
    );
    assert!(
        last.ends_with("URI=spiffe://cluster.local/ns/gateway-system/sa/gateway-proxy"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sidecar_refuses_plaintext_and_plain_alpn() {
    let lab = lab(InboundPolicy::Strict).await;
    let plain = plain_get(lab.pod.inbound, "/status/200", &[]).await;
    assert!(plain.is_err(), "plaintext was served: {plain:?}");
    println!("plaintext: {plain:?}");
    assert_eq!(lab.pod.inbound_stat("no_filter_chain_match").await, 1);

    let cert = gateway_cert(&lab.ca);
    for alpn in [&["http/1.1"][..], &["h2", "http/1.1"][..], &[][..]] {
        let (config, _) = client(&lab.ca, Some(&cert), alpn);
        let r = tls_get(lab.pod.inbound, config, "/status/200", &[]).await;
        assert!(r.is_err(), "ALPN {alpn:?} was served: {r:?}");
        println!("ALPN {alpn:?}: {r:?}");
    }
    assert_eq!(lab.pod.inbound_stat("no_filter_chain_match").await, 4);
    // Nothing reached httpbin through the sidecar.
    assert!(
        !lab.pod.envoy_log().contains("[inbound]"),
        "{}",
        lab.pod.envoy_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sidecar_refuses_a_client_without_certificate() {
    let lab = lab(InboundPolicy::Strict).await;
    let no_cert_before = lab.pod.inbound_stat("ssl.fail_verify_no_cert").await;
    let (config, _) = client(&lab.ca, None, &["istio-http/1.1"]);
    let r = tls_get(lab.pod.inbound, config, "/status/200", &[]).await;
    assert!(r.is_err(), "served without a client certificate: {r:?}");
    println!("no client certificate: {r:?}");
    let no_cert = lab.pod.inbound_stat("ssl.fail_verify_no_cert").await;
    assert!(
        no_cert > no_cert_before,
        "ssl.fail_verify_no_cert {no_cert_before} -> {no_cert}"
    );

    // A certificate from another CA is refused too.
    let other = TestCa::start().await;
    let foreign = other.issue_direct(&gateway_identity(), Duration::from_secs(3600));
    let (config, _) = client(&lab.ca, Some(&foreign), &["istio-http/1.1"]);
    let r = tls_get(lab.pod.inbound, config, "/status/200", &[]).await;
    assert!(r.is_err(), "served a client from a foreign CA: {r:?}");
    println!("foreign CA: {r:?}");
    let untrusted = lab.pod.inbound_stat("ssl.fail_verify_error").await;
    assert_eq!(untrusted, 1, "ssl.fail_verify_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_sidecar_serves_plaintext_and_mtls() {
    let lab = lab(InboundPolicy::Permissive).await;
    let (status, body) = plain_get(lab.pod.inbound, "/headers", &[]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(xfcc(&body), None, "{body}");

    let cert = gateway_cert(&lab.ca);
    let (config, _) = client(&lab.ca, Some(&cert), &["istio-http/1.1", "istio"]);
    let (status, body) = served(&lab.pod, config, "/headers", &[]).await;
    assert_eq!(status, 200, "{body}");
    let xfcc = xfcc(&body).unwrap_or_else(|| panic!("no XFCC in {body}"));
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/gateway-system/sa/gateway-proxy"),
        "{xfcc}"
    );
    assert!(
        xfcc.contains("By=spiffe://cluster.local/ns/default/sa/httpbin"),
        "{xfcc}"
    );

    // TLS without Istio ALPN matches no chain (no passthrough chain here).
    let (config, _) = client(&lab.ca, Some(&cert), &["http/1.1"]);
    assert!(
        tls_get(lab.pod.inbound, config, "/status/200", &[])
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_presents_the_agents_certificate() {
    let lab = lab(InboundPolicy::Strict).await;
    let cert = gateway_cert(&lab.ca);
    let (config, recorder) = client(&lab.ca, Some(&cert), &["istio-http/1.1"]);
    let (status, _) = served(&lab.pod, config, "/status/200", &[]).await;
    assert_eq!(status, 200);
    let leaf = recorder.leaf().expect("server leaf");
    assert_eq!(
        mesh::certs::identity_of(&leaf).unwrap().to_string(),
        "spiffe://cluster.local/ns/default/sa/httpbin"
    );
    // It is the certificate the pod's agent holds (same serial as its /certs).
    let (_, certs) = e2e::http::get(lab.pod.agent_admin, "/certs").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&certs).unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let serial: String = parsed
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v["serial"].as_str(), Some(serial.as_str()), "{certs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_serves_the_rotated_certificate() {
    e2e::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::start().await;
    let pod = HttpbinPod::start(
        dir.path(),
        &ca,
        httpbin_identity(),
        InboundPolicy::Strict,
        "4s",
    )
    .await;
    let cert = gateway_cert(&ca);
    let serial_of = |leaf: &CertificateDer<'_>| {
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).unwrap();
        parsed.raw_serial().to_vec()
    };
    let (config, recorder) = client(&ca, Some(&cert), &["istio-http/1.1"]);
    let (status, _) = served(&pod, config, "/status/200", &[]).await;
    assert_eq!(status, 200);
    let first = serial_of(&recorder.leaf().unwrap());
    let rotated = e2e::testing::eventually(Duration::from_secs(20), || {
        let (config, recorder) = client(&ca, Some(&cert), &["istio-http/1.1"]);
        let pod = &pod;
        let first = &first;
        async move {
            let (status, _) = tls_get(pod.inbound, config, "/status/200", &[])
                .await
                .ok()?;
            assert_eq!(status, 200);
            let serial = serial_of(&recorder.leaf()?);
            (serial != *first).then_some(serial)
        }
    })
    .await;
    assert!(
        rotated.is_some(),
        "the sidecar never presented a new certificate\nagent log:\n{}",
        pod.agent_log()
    );
    assert!(
        pod.inbound_stat("server_ssl_socket_factory.ssl_context_update_by_sds")
            .await
            >= 3
    );
}
