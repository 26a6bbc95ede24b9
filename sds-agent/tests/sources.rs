//! The files and SPIFFE sources each deliver a certificate to an SDS client.

mod common;

use std::time::Duration;

use common::{Harness, leaf_info};
use e2e::workload_api::WorkloadApiServer;
use mesh::certs::{pkcs8_pem, to_pem};
use rustls_pki_types::CertificateDer;

const T: Duration = Duration::from_secs(20);

fn write_set(dir: &std::path::Path, chain: Option<&[u8]>, key: Option<&[u8]>, root: Option<&[u8]>) {
    // Each file is replaced by rename, as a careful writer would; the torn state tested
    // here is between files, which no single rename can prevent.
    let put = |name: &str, text: String| {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, dir.join(name)).unwrap();
    };
    if let Some(c) = chain {
        put(
            "cert-chain.pem",
            to_pem(&[CertificateDer::from(c.to_vec())]),
        );
    }
    if let Some(k) = key {
        put("key.pem", pkcs8_pem(k));
    }
    if let Some(r) = root {
        put("root-cert.pem", to_pem(&[CertificateDer::from(r.to_vec())]));
    }
}

#[tokio::test]
async fn files_source_publishes_the_directory_and_never_a_torn_write() {
    let mut h = Harness::new().await;
    let dir = h.dir.path().join("output-certs");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_a, key_a) = h.ca.issue_direct(&h.identity, Duration::from_secs(3600));
    write_set(&dir, Some(&cert_a), Some(&key_a), Some(&h.ca.root_der()));
    let mut cmd = h.bare_command();
    cmd.args(["--source", "files", "--certs-dir", dir.to_str().unwrap()]);
    h.start(cmd).await;

    let mut s = h.stream(&["default", "ROOTCA"]).await;
    let first = s.next_within(T).await.unwrap().unwrap();
    let (serial_a, identity) = leaf_info(&first.certificate().unwrap().0);
    assert_eq!(identity, h.identity);
    assert_eq!(first.roots().unwrap().trim(), h.ca.root_pem().trim());

    // New certificate written, key not yet: never published.
    let (cert_b, key_b) = h.ca.issue_direct(&h.identity, Duration::from_secs(3600));
    write_set(&dir, Some(&cert_b), None, None);
    h.wait_metric("sds_agent_ca_errors_total{reason=\"key_mismatch\"}", 1.0, T)
        .await;
    assert_eq!(h.serial().await, serial_a, "the torn set was refused");

    // The key arrives: the new pair is the very next publish (version 2 after version
    // 1), so nothing was published in between.
    write_set(&dir, None, Some(&key_b), None);
    let next = s.next_within(T).await.unwrap().unwrap();
    let (serial_b, _) = leaf_info(&next.certificate().unwrap().0);
    assert_eq!(serial_b, hex::encode(serial_of(&cert_b)));
    assert_eq!(publish_number(&first), 1);
    assert_eq!(publish_number(&next), 2, "no publish between the two sets");
    assert_eq!(h.get("/ready").await.0, 200);
}

#[tokio::test]
async fn spiffe_source_delivers_the_workload_api_svid_and_its_updates() {
    let mut h = Harness::new().await;
    let api = WorkloadApiServer::start(&h.dir.path().join("spire-agent.sock"));
    let (cert, key) = h.ca.issue_direct(&h.identity, Duration::from_secs(3600));
    api.set_svid(&h.identity.to_string(), cert, key, h.ca.root_der());
    let mut cmd = h.bare_command();
    cmd.args([
        "--source",
        "spiffe",
        "--workload-api-socket",
        &api.endpoint(),
    ]);
    h.start(cmd).await;

    let mut s = h.stream(&["default", "ROOTCA"]).await;
    let first = s.next_within(T).await.unwrap().unwrap();
    let (serial_1, identity) = leaf_info(&first.certificate().unwrap().0);
    assert_eq!(identity, h.identity);
    assert_eq!(first.roots().unwrap().trim(), h.ca.root_pem().trim());
    let certs: serde_json::Value = serde_json::from_str(&h.get("/certs").await.1).unwrap();
    assert_eq!(certs["source"], "spiffe");

    // SPIRE rotates the SVID: the agent republishes.
    let (cert2, key2) = h.ca.issue_direct(&h.identity, Duration::from_secs(3600));
    api.set_svid(&h.identity.to_string(), cert2, key2, h.ca.root_der());
    let next = s.next_within(T).await.unwrap().unwrap();
    assert_ne!(leaf_info(&next.certificate().unwrap().0).0, serial_1);
}

/// The agent's publish counter, the `<n>` of its `<n>-<serial>` version string.
fn publish_number(update: &e2e::sds_client::Update) -> u64 {
    let (n, _) = update
        .version
        .split_once('-')
        .expect("version is <n>-<serial>");
    n.parse().unwrap()
}

/// The raw serial of a DER certificate.
fn serial_of(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial().to_vec()
}
