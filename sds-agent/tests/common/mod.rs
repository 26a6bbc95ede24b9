//! A harness that runs the real `sds-agent` binary against the test CA, built on
//! `e2e::testing` (launcher, process guard, `eventually`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use e2e::ca::TestCa;
use e2e::sds_client::{self, SdsStream, Update};
use e2e::testing::{AgentFiles, ChildGuard, eventually, wait_for_port};
use mesh::Identity;

/// The gateway's identity in the seeds' scenario.
pub fn gateway_identity() -> Identity {
    Identity::new("cluster.local", "gateway-system", "gateway-proxy").unwrap()
}

/// A temp dir, a CA, and the files an agent reads.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub identity: Identity,
    pub root_file: PathBuf,
    pub token_file: PathBuf,
    pub socket: PathBuf,
    pub admin: SocketAddr,
    pub agent: Option<ChildGuard>,
    files: AgentFiles,
}

impl Harness {
    /// CA running, root and a valid token written; agent not started.
    pub async fn new() -> Harness {
        e2e::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::start().await;
        let identity = gateway_identity();
        let mut files = AgentFiles::new(dir.path(), &ca, &identity);
        // The binary cargo built for these tests.
        files.bin = env!("CARGO_BIN_EXE_sds-agent").into();
        Harness {
            root_file: files.root_file.clone(),
            token_file: files.token_file.clone(),
            socket: files.socket.clone(),
            admin: files.admin,
            dir,
            ca,
            identity,
            agent: None,
            files,
        }
    }

    /// The agent command with the istiod source pointed at the test CA.
    pub fn istiod_command(&self, ttl: &str) -> Command {
        // A test may have moved the root file (e.g. into a ConfigMap-style layout).
        let files = AgentFiles {
            root_file: self.root_file.clone(),
            ..self.files.clone()
        };
        files.istiod_command(&self.ca, ttl)
    }

    /// A plain agent command (source chosen by the caller).
    pub fn bare_command(&self) -> Command {
        self.files.bare_command()
    }

    /// Starts `cmd` as the agent and waits for its admin port.
    pub async fn start(&mut self, cmd: Command) {
        self.agent = Some(self.files.spawn(cmd));
        assert!(
            wait_for_port(self.admin, Duration::from_secs(20)).await,
            "agent admin never came up:\n{}",
            self.log()
        );
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        self.agent.as_ref().map(|a| a.output()).unwrap_or_default()
    }

    /// GET on the admin server.
    pub async fn get(&self, path: &str) -> (u16, String) {
        e2e::http::get(self.admin, path).await.unwrap()
    }

    /// One metric sample.
    pub async fn metric(&self, series: &str) -> f64 {
        e2e::http::metric(&self.get("/metrics").await.1, series)
    }

    /// Waits for a metric to reach at least `min`.
    pub async fn wait_metric(&self, series: &str, min: f64, timeout: Duration) {
        let ok = eventually(timeout, || async {
            (self.metric(series).await >= min).then_some(())
        })
        .await;
        assert!(
            ok.is_some(),
            "{series} never reached {min}; metrics:\n{}\nlog:\n{}",
            self.get("/metrics").await.1,
            self.log()
        );
    }

    /// Waits for `/ready` to return `code`.
    pub async fn wait_ready(&self, code: u16, timeout: Duration) {
        let ok = eventually(timeout, || async {
            (self.get("/ready").await.0 == code).then_some(())
        })
        .await;
        assert!(
            ok.is_some(),
            "/ready never answered {code}; log:\n{}",
            self.log()
        );
    }

    /// The serial the agent reports on `/certs`.
    pub async fn serial(&self) -> String {
        let (_, body) = self.get("/certs").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["serial"].as_str().unwrap_or_default().to_string()
    }

    /// An SDS stream for `names`.
    pub async fn stream(&self, names: &[&str]) -> SdsStream {
        let mut client = sds_client::connect_retry(&self.socket, Duration::from_secs(10)).await;
        SdsStream::open(&mut client, names).await.unwrap()
    }

    /// First update on a fresh stream for `default` + `ROOTCA`.
    pub async fn first_update(&self, timeout: Duration) -> Update {
        let mut s = self.stream(&["default", "ROOTCA"]).await;
        match s.next_within(timeout).await {
            Some(Ok(u)) => u,
            other => panic!("no SDS update: {other:?}\nlog:\n{}", self.log()),
        }
    }
}

/// Serial (lowercase hex) and identity of the first certificate in a PEM chain.
pub fn leaf_info(chain_pem: &str) -> (String, Identity) {
    let certs = mesh::certs::parse_pem_certs(chain_pem, "chain").unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    (
        hex::encode(cert.raw_serial()),
        mesh::certs::identity_of(&certs[0]).unwrap(),
    )
}
