//! The compatibility test: a real Envoy takes its listener certificate and validation
//! context from the agent over SDS on the unix socket, unchanged.

mod common;

use std::time::Duration;

use common::Harness;
use e2e::envoy::{Envoy, port, sds_tls_listener_bootstrap};
use e2e::testing::eventually;

#[tokio::test]
async fn envoy_serves_the_agents_certificate_and_picks_up_rotation_without_restart() {
    let mut h = Harness::new().await;
    h.start(h.istiod_command("6s")).await;
    h.wait_ready(200, Duration::from_secs(20)).await;

    let (listen, admin) = (port(), port());
    let bootstrap = sds_tls_listener_bootstrap(listen, admin, &h.socket);
    let mut envoy = Envoy::start(h.dir.path(), "envoy-sds", &bootstrap, admin).await;
    let addr = format!("127.0.0.1:{listen}").parse().unwrap();
    let root = h.ca.root_pem();

    // Envoy's listener warms until SDS delivers; then it serves the agent's leaf.
    let leaf = eventually(Duration::from_secs(20), || async {
        e2e::tls::peer_leaf(addr, &root).await.ok()
    })
    .await
    .unwrap_or_else(|| panic!("envoy never served TLS; log:\n{}", envoy.process.output()));
    let identity = mesh::certs::identity_of(&leaf).unwrap();
    assert_eq!(identity, h.identity, "URI SAN is the agent's identity");
    let first_serial = serial_of(&leaf);
    assert_eq!(
        first_serial,
        h.serial().await,
        "the agent's current certificate"
    );
    let pid = envoy.process.pid();

    // After the agent rotates, the same Envoy process serves the new serial.
    let rotated = eventually(Duration::from_secs(25), || async {
        let leaf = e2e::tls::peer_leaf(addr, &root).await.ok()?;
        let serial = serial_of(&leaf);
        (serial != first_serial).then_some(serial)
    })
    .await;
    assert!(
        rotated.is_some(),
        "envoy never served a rotated certificate; log:\n{}",
        envoy.process.output()
    );
    assert_eq!(envoy.process.pid(), pid);
    assert!(envoy.process.is_running(), "no restart");
    let stats = e2e::http::get(envoy.admin, "/stats?filter=sds")
        .await
        .unwrap()
        .1;
    assert!(
        stats.contains("sds.default.update_success"),
        "envoy counts SDS updates:\n{stats}"
    );
}

fn serial_of(der: &rustls_pki_types::CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    hex::encode(cert.raw_serial())
}
