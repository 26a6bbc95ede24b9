//! The istiod source against the test CA over real TLS, through the real binary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Harness, leaf_info};
use e2e::ca::{Fault, TestCa};
use e2e::sds_client::{self, SdsStream};
use e2e::testing::{eventually, free_port};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use mesh::Identity;
use prost::Message;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn first_certificate_is_served_over_sds_with_the_requested_identity() {
    let mut h = Harness::new().await;
    let mut cmd = h.istiod_command("1h");
    cmd.env("ISTIO_META_CLUSTER_ID", "east")
        .env("CA_HEADER_TENANT", "blue");
    h.start(cmd).await;

    let update = h.first_update(T).await;
    assert_eq!(update.names(), vec!["default", "ROOTCA"]);
    let (chain, key) = update.certificate().expect("default is a TlsCertificate");
    let (serial, identity) = leaf_info(&chain);
    assert_eq!(identity, h.identity);
    assert_eq!(
        mesh::certs::key_spki(&key).unwrap(),
        {
            let c = mesh::certs::parse_pem_certs(&chain, "chain").unwrap();
            let (_, leaf) = x509_parser::parse_x509_certificate(&c[0]).unwrap();
            leaf.public_key().raw.to_vec()
        },
        "served key belongs to the served leaf"
    );
    assert!(key.contains("BEGIN PRIVATE KEY"), "PKCS#8 key");
    assert_eq!(
        update.roots().unwrap().trim(),
        h.ca.root_pem().trim(),
        "ROOTCA is the mesh root"
    );

    // What the CA saw: bearer token, cluster id, extra header, requested TTL.
    let call =
        h.ca.calls()
            .into_iter()
            .find(|c| c.issued_serial.is_some())
            .unwrap();
    let token = std::fs::read_to_string(&h.token_file).unwrap();
    assert_eq!(
        call.authorization.as_deref(),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(call.cluster_id.as_deref(), Some("east"));
    assert_eq!(call.headers.get("tenant").map(String::as_str), Some("blue"));
    assert_eq!(call.validity_duration, 3600);
    assert_eq!(call.issued_serial.as_deref(), Some(serial.as_str()));

    // Admin agrees.
    assert_eq!(h.get("/ready").await.0, 200);
    assert_eq!(h.get("/healthz").await.0, 200);
    let certs: serde_json::Value = serde_json::from_str(&h.get("/certs").await.1).unwrap();
    assert_eq!(certs["identity"], h.identity.to_string());
    assert_eq!(certs["serial"], serial);
    assert_eq!(certs["source"], "istiod");
    let metrics = h.get("/metrics").await.1;
    assert!(e2e::http::metric(&metrics, "sds_agent_cert_expiry_timestamp_seconds") > 0.0);
    assert!(e2e::http::metric(&metrics, "sds_agent_cert_rotations_total") >= 1.0);

    // Gloo's names are aliases of the same secrets.
    let mut gloo = h
        .stream(&["istio_server_cert", "istio_validation_context"])
        .await;
    let u = gloo.next_within(T).await.unwrap().unwrap();
    assert_eq!(
        u.names(),
        vec!["istio_server_cert", "istio_validation_context"]
    );
    assert_eq!(leaf_info(&u.certificate().unwrap().0).0, serial);

    // FetchSecrets answers the same.
    let mut client = sds_client::connect(&h.socket).await.unwrap();
    let resp = client
        .fetch_secrets(DiscoveryRequest {
            resource_names: vec!["default".into()],
            type_url: mesh::consts::SECRET_TYPE_URL.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.resources.len(), 1);
    let secret = mesh::sds::decode_secret(&resp.resources[0]).unwrap();
    assert_eq!(secret.name, "default");
}

#[tokio::test]
async fn certificate_rotates_at_half_life_and_every_stream_gets_the_new_version() {
    let mut h = Harness::new().await;
    h.start(h.istiod_command("4s")).await;
    let mut a = h.stream(&["default"]).await;
    let mut b = h.stream(&["default", "ROOTCA"]).await;
    let first = a.next_within(T).await.unwrap().unwrap();
    b.next_within(T).await.unwrap().unwrap();
    let (s1, _) = leaf_info(&first.certificate().unwrap().0);

    let second = a.next_within(T).await.unwrap().unwrap();
    let (s2, id2) = leaf_info(&second.certificate().unwrap().0);
    assert_ne!(s1, s2, "a new certificate");
    assert_ne!(first.version, second.version, "a new version");
    assert_eq!(id2, h.identity);
    // Renewal half way from the first certificate's issuance to its expiry (X.509 times
    // are whole seconds), as Istio's agent counts: not from its notBefore, which the CA
    // (like istiod) sets two minutes back. Compare the CA's two issuances.
    let issued_at = |serial: &str| {
        h.ca.calls()
            .into_iter()
            .find(|c| c.issued_serial.as_deref() == Some(serial))
            .map(|c| c.at)
            .expect("issued by the CA")
    };
    let (first_at, renewed_at) = (issued_at(&s1), issued_at(&s2));
    let chain = mesh::certs::parse_pem_certs(&first.certificate().unwrap().0, "chain").unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let nb =
        std::time::UNIX_EPOCH + Duration::from_secs(leaf.validity().not_before.timestamp() as u64);
    let na =
        std::time::UNIX_EPOCH + Duration::from_secs(leaf.validity().not_after.timestamp() as u64);
    assert!(
        na.duration_since(nb).unwrap() > Duration::from_secs(120),
        "backdated as istiod does: {nb:?}..{na:?}"
    );
    let half = first_at
        + na.duration_since(first_at)
            .unwrap()
            .mul_f64(0.5 - sds_agent::rotation::RENEW_JITTER);
    assert!(
        renewed_at >= half && renewed_at < na,
        "renewed at {renewed_at:?}, validity {nb:?}..{na:?}"
    );
    let other = b.next_within(T).await.unwrap().unwrap();
    assert_eq!(
        leaf_info(&other.certificate().unwrap().0).0,
        s2,
        "every stream gets it"
    );
}

#[tokio::test]
async fn bad_token_is_reported_and_retried_until_fixed() {
    let mut h = Harness::new().await;
    std::fs::write(&h.token_file, "not-a-token").unwrap();
    h.start(h.istiod_command("1h")).await;
    h.wait_metric(
        "sds_agent_ca_errors_total{reason=\"unauthenticated\"}",
        1.0,
        T,
    )
    .await;
    assert_eq!(h.get("/ready").await.0, 503);
    assert!(
        h.log().contains("Unauthenticated"),
        "log names the cause:\n{}",
        h.log()
    );

    // The token file is re-read on every call: fixing it is enough.
    std::fs::write(&h.token_file, h.ca.issue_token(&h.identity)).unwrap();
    h.wait_ready(200, T).await;
}

#[tokio::test]
async fn missing_token_file_is_reported_without_exiting() {
    let mut h = Harness::new().await;
    std::fs::remove_file(&h.token_file).unwrap();
    h.start(h.istiod_command("1h")).await;
    h.wait_metric(
        "sds_agent_ca_errors_total{reason=\"token_unreadable\"}",
        2.0,
        T,
    )
    .await;
    assert!(h.log().contains("cannot read token file"), "{}", h.log());
    assert!(h.agent.as_mut().unwrap().is_running());
}

#[tokio::test]
async fn ca_outage_backs_off_while_the_current_certificate_keeps_serving() {
    let mut h = Harness::new().await;
    h.start(h.istiod_command("6s")).await;
    let mut s = h.stream(&["default"]).await;
    let first = s.next_within(T).await.unwrap().unwrap();
    let (s1, _) = leaf_info(&first.certificate().unwrap().0);

    h.ca.stop().await;
    h.wait_metric(
        "sds_agent_ca_errors_total{reason=\"ca_unreachable\"}",
        2.0,
        T,
    )
    .await;
    // Still inside the first certificate's lifetime: still ready, still the same cert.
    assert_eq!(h.get("/ready").await.0, 200);
    assert_eq!(h.serial().await, s1);

    h.ca.restart().await;
    let next = s
        .next_within(T)
        .await
        .expect("a new version after the CA returns")
        .unwrap();
    assert_ne!(leaf_info(&next.certificate().unwrap().0).0, s1);
}

#[tokio::test]
async fn wrong_identity_answer_is_rejected() {
    let mut h = Harness::new().await;
    let other = Identity::new("cluster.local", "default", "someone-else").unwrap();
    h.ca.set_fault(Fault::WrongIdentity(other.clone()));
    h.start(h.istiod_command("1h")).await;
    h.wait_metric(
        "sds_agent_ca_errors_total{reason=\"wrong_identity\"}",
        1.0,
        T,
    )
    .await;
    assert_eq!(h.get("/ready").await.0, 503);
    let log = h.log();
    assert!(
        log.contains(&other.to_string()) && log.contains(&h.identity.to_string()),
        "log names both identities:\n{log}"
    );
    let mut client = sds_client::connect(&h.socket).await.unwrap();
    let err = client
        .fetch_secrets(DiscoveryRequest {
            resource_names: vec!["default".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unavailable,
        "nothing served: {err}"
    );
}

#[tokio::test]
async fn ca_signed_by_an_unknown_root_is_not_trusted() {
    let mut h = Harness::new().await;
    let stranger = TestCa::start().await;
    std::fs::write(&h.root_file, stranger.root_pem()).unwrap();
    h.start(h.istiod_command("1h")).await;
    h.wait_metric("sds_agent_ca_errors_total{reason=\"ca_untrusted\"}", 1.0, T)
        .await;
    assert_eq!(h.get("/ready").await.0, 503);
}

#[tokio::test]
async fn malformed_root_file_is_reported_and_a_fix_is_picked_up() {
    let mut h = Harness::new().await;
    std::fs::write(
        &h.root_file,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    h.start(h.istiod_command("1h")).await;
    h.wait_metric(
        "sds_agent_ca_errors_total{reason=\"root_cert_malformed\"}",
        1.0,
        T,
    )
    .await;
    assert!(h.log().contains("malformed"), "{}", h.log());
    std::fs::write(&h.root_file, h.ca.root_pem()).unwrap();
    h.wait_ready(200, T).await;
}

#[tokio::test]
async fn root_rotation_by_configmap_symlink_swap_is_picked_up() {
    let mut h = Harness::new().await;
    // Lay the root out as kubelet does for a ConfigMap volume.
    let vol = h.dir.path().join("istio-ca-root-cert");
    let v1 = vol.join("..2026_11_22_v1");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::write(v1.join("root-cert.pem"), h.ca.root_pem()).unwrap();
    std::os::unix::fs::symlink("..2026_11_22_v1", vol.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/root-cert.pem", vol.join("root-cert.pem")).unwrap();
    h.root_file = vol.join("root-cert.pem");
    h.start(h.istiod_command("3s")).await;
    let mut s = h.stream(&["default", "ROOTCA"]).await;
    let first = s.next_within(T).await.unwrap().unwrap();
    let old_root = first.roots().unwrap();

    h.ca.rotate_root().await;
    let new_root = h.ca.root_pem();
    let v2 = vol.join("..2026_11_22_v2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("root-cert.pem"), &new_root).unwrap();
    std::os::unix::fs::symlink("..2026_11_22_v2", vol.join("..data_tmp")).unwrap();
    std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).unwrap();

    // ROOTCA follows the file, and renewal against the re-rooted CA succeeds.
    let deadline = Instant::now() + T;
    let mut saw_new_root = false;
    let mut saw_new_chain = false;
    while Instant::now() < deadline && !(saw_new_root && saw_new_chain) {
        let Some(Ok(u)) = s.next_within(Duration::from_secs(5)).await else {
            continue;
        };
        saw_new_root |= u.roots().unwrap().trim() == new_root.trim();
        let chain = mesh::certs::parse_pem_certs(&u.certificate().unwrap().0, "chain").unwrap();
        let roots = mesh::certs::parse_pem_certs(&new_root, "root").unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let (_, root) = x509_parser::parse_x509_certificate(&roots[0]).unwrap();
        saw_new_chain |= leaf.verify_signature(Some(root.public_key())).is_ok();
    }
    assert!(
        saw_new_root,
        "ROOTCA never changed from {old_root}\nlog:\n{}",
        h.log()
    );
    assert!(
        saw_new_chain,
        "no certificate from the new root\nlog:\n{}",
        h.log()
    );
}

#[tokio::test]
async fn stalled_ca_times_out_and_is_retried() {
    let mut h = Harness::new().await;
    h.ca.set_fault(Fault::Stall);
    let mut cmd = h.istiod_command("1h");
    cmd.args(["--ca-timeout", "300ms"]);
    h.start(cmd).await;
    h.wait_metric("sds_agent_ca_errors_total{reason=\"timeout\"}", 1.0, T)
        .await;
    h.ca.set_fault(Fault::None);
    h.wait_ready(200, T).await;
}

#[tokio::test]
async fn unknown_sds_resource_is_refused_with_a_clear_error() {
    let mut h = Harness::new().await;
    h.start(h.istiod_command("1h")).await;
    h.wait_ready(200, T).await;
    let mut client = sds_client::connect(&h.socket).await.unwrap();
    let mut s = SdsStream::open(&mut client, &["default", "bogus"])
        .await
        .unwrap();
    let err = s
        .next_within(T)
        .await
        .expect("an answer, not a hang")
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("\"bogus\"") && err.message().contains("ROOTCA"),
        "{}",
        err.message()
    );
}

/// A request frame cut short by the end of the request body: the stream ends with the
/// decoder's INTERNAL status, never OK.
#[tokio::test]
async fn truncated_request_frame_ends_the_stream_with_internal() {
    let mut h = Harness::new().await;
    h.start(h.istiod_command("1h")).await;
    let request = DiscoveryRequest {
        resource_names: vec!["default".into()],
        type_url: mesh::consts::SECRET_TYPE_URL.into(),
        ..Default::default()
    }
    .encode_to_vec();
    let half = &request[..request.len() / 2];
    let body = sds_client::grpc_frame(request.len() as u32, half);
    let outcome = sds_client::raw_stream_secrets(&h.socket, body)
        .await
        .unwrap();
    assert_eq!(outcome.http_status, 200);
    assert_eq!(
        outcome.grpc_status,
        Some(tonic::Code::Internal),
        "{outcome:?}\n{}",
        h.log()
    );
    assert!(outcome.grpc_message.contains("EOF"), "{outcome:?}");
}

/// A frame declaring more than the limit is refused from its header alone, before the
/// agent buffers it: the stream ends with tonic's size-limit status (OUT_OF_RANGE).
#[tokio::test]
async fn oversized_request_frame_ends_the_stream_with_out_of_range() {
    let mut h = Harness::new().await;
    h.start(h.istiod_command("1h")).await;
    let too_big = sds_agent::sds::MAX_REQUEST_BYTES as u32 + 1;
    let body = sds_client::grpc_frame(too_big, &[0; 16]);
    let outcome = sds_client::raw_stream_secrets(&h.socket, body)
        .await
        .unwrap();
    assert_eq!(outcome.http_status, 200);
    assert_eq!(
        outcome.grpc_status,
        Some(tonic::Code::OutOfRange),
        "{outcome:?}\n{}",
        h.log()
    );
    assert!(
        outcome.grpc_message.contains(&too_big.to_string()),
        "names the size: {outcome:?}"
    );
}

#[tokio::test]
async fn nack_is_counted_and_the_same_version_is_not_resent() {
    let mut h = Harness::new().await;
    h.start(h.istiod_command("1h")).await;
    let mut s = h.stream(&["default"]).await;
    let u = s.next_within(T).await.unwrap().unwrap();
    s.nack(&u.version, "1", "test rejects it").await;
    h.wait_metric("sds_agent_sds_nacks_total", 1.0, T).await;
    // Ask for other names on the same stream. Requests are handled in order, so a resend
    // of the NACKed version would arrive before the answer to this one.
    s.request(&["default", "ROOTCA"]).await;
    let next = s.next_within(T).await.unwrap().unwrap();
    assert_eq!(
        next.names(),
        vec!["default", "ROOTCA"],
        "the next response answers the new names; the NACKed version was not resent"
    );
    assert_eq!(next.version, u.version, "same certificate, same version");
    assert!(
        h.log().contains("test rejects it"),
        "NACK is logged with its reason"
    );
}

#[tokio::test]
async fn sds_socket_is_owner_only_and_tcp_listener_serves_on_loopback() {
    let mut h = Harness::new().await;
    let port = free_port();
    let mut cmd = h.istiod_command("1h");
    cmd.args(["--sds-tcp-addr", &format!("127.0.0.1:{port}")]);
    h.start(cmd).await;
    let mode = std::fs::metadata(&h.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    h.wait_ready(200, T).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient::new(channel);
    let mut s = SdsStream::open(&mut client, &["ROOTCA"]).await.unwrap();
    let u = s.next_within(T).await.unwrap().unwrap();
    assert_eq!(u.roots().unwrap().trim(), h.ca.root_pem().trim());
}

#[tokio::test]
async fn sds_tcp_on_a_non_loopback_address_is_refused_at_startup() {
    let h = Harness::new().await;
    let out = h
        .istiod_command("1h")
        .args(["--sds-tcp-addr", "0.0.0.0:15010"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--sds-tcp-addr") && stderr.contains("loopback"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_ends_streams_and_removes_the_socket() {
    let mut h = Harness::new().await;
    h.start(h.istiod_command("1h")).await;
    let mut s = h.stream(&["default"]).await;
    s.next_within(T).await.unwrap().unwrap();
    let status = h
        .agent
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(8))
        .expect("exits on SIGTERM");
    assert!(status.success(), "clean exit: {status:?}\n{}", h.log());
    assert!(!h.socket.exists(), "socket removed");
    assert!(matches!(
        s.next_within(Duration::from_secs(2)).await,
        Some(Err(_)) | None
    ));
}

#[tokio::test]
async fn probe_subcommand_reflects_readiness() {
    let mut h = Harness::new().await;
    std::fs::write(&h.token_file, "not-a-token").unwrap();
    h.start(h.istiod_command("1h")).await;
    let probe = |path: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sds-agent"))
            .args([
                "probe",
                "--admin-addr",
                &h.admin.to_string(),
                "--path",
                path,
            ])
            .status()
            .unwrap()
            .success()
    };
    assert!(probe("/healthz"));
    assert!(!probe("/ready"), "not ready without a certificate");
    std::fs::write(&h.token_file, h.ca.issue_token(&h.identity)).unwrap();
    let ready = eventually(T, || async { probe("/ready").then_some(()) }).await;
    assert!(ready.is_some());
}
