//! The real `sds-agent` binary against the test CA, launched the way a pod runs it.
//!
//! [`AgentFiles`] writes what the agent reads (mesh root, service-account token) into a
//! directory and builds its command line; [`start_agent`] is the one-call form that
//! waits for `/ready`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mesh::Identity;

use crate::ca::{ISTIOD_HOST, TestCa};
use crate::process::{ChildGuard, free_port};
use crate::tools::workspace_bin;

/// How long an agent may take to become ready.
const STARTUP: Duration = Duration::from_secs(30);

/// What one agent reads and where it listens, all inside `dir`.
#[derive(Debug, Clone)]
pub struct AgentFiles {
    /// The agent binary (default: this workspace's, same profile as the test).
    pub bin: PathBuf,
    /// The directory holding the files below and `agent.log`.
    pub dir: PathBuf,
    /// The workload identity the token authenticates as.
    pub identity: Identity,
    /// The mesh root (`CA_ROOT_CERT`).
    pub root_file: PathBuf,
    /// The service-account token (`CA_TOKEN_FILE`).
    pub token_file: PathBuf,
    /// The SDS unix socket.
    pub socket: PathBuf,
    /// The admin server's address (a free loopback port).
    pub admin: SocketAddr,
}

impl AgentFiles {
    /// Writes `ca`'s root and a token for `identity` into `dir`.
    pub fn new(dir: &Path, ca: &TestCa, identity: &Identity) -> AgentFiles {
        let root_file = dir.join("root-cert.pem");
        std::fs::write(&root_file, ca.root_pem()).expect("write root");
        let token_file = dir.join("istio-token");
        std::fs::write(&token_file, ca.issue_token(identity)).expect("write token");
        AgentFiles {
            bin: workspace_bin("sds-agent"),
            dir: dir.to_path_buf(),
            identity: identity.clone(),
            root_file,
            token_file,
            socket: dir.join("sds.sock"),
            admin: loopback(free_port()),
        }
    }

    /// A plain agent command: socket, admin, fast file watching, text logs; the source
    /// is the caller's to choose (`--source files|spiffe ...`).
    pub fn bare_command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .env("RUST_LOG", "info,sds_agent=debug")
            .arg("--sds-socket")
            .arg(&self.socket)
            .args(["--admin-addr", &self.admin.to_string()])
            .args(["--watch-interval", "200ms", "--log-format", "text"]);
        cmd
    }

    /// The agent with the istiod source pointed at `ca`, configured through the
    /// environment as in a pod; certificates requested for `ttl` (e.g. `1h`, `6s`).
    pub fn istiod_command(&self, ca: &TestCa, ttl: &str) -> Command {
        let mut cmd = self.bare_command();
        cmd.env("CA_ADDR", ca.addr().to_string())
            .env("CA_TLS_SERVER_NAME", ISTIOD_HOST)
            .env("TRUST_DOMAIN", self.identity.trust_domain())
            .env("POD_NAMESPACE", self.identity.namespace())
            .env("SERVICE_ACCOUNT", self.identity.service_account())
            .env("SECRET_TTL", ttl)
            .arg("--root-cert")
            .arg(&self.root_file)
            .arg("--token-file")
            .arg(&self.token_file);
        cmd
    }

    /// Spawns `cmd` (one of the commands above) with its output in `agent.log`.
    pub fn spawn(&self, cmd: Command) -> ChildGuard {
        ChildGuard::spawn("sds-agent", cmd, self.dir.join("agent.log"))
    }

    /// Picks a new admin port (after a start lost a race for the old one).
    pub fn new_admin_port(&mut self) {
        self.admin = loopback(free_port());
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts an sds-agent for `identity` against `ca` in `dir` (root, token, socket and log
/// live there) and waits until `/ready` answers 200; returns it with its admin address
/// and socket. Retries twice on a fresh port if it does not come up.
pub async fn start_agent(
    dir: &Path,
    ca: &TestCa,
    identity: &Identity,
    secret_ttl: &str,
) -> (ChildGuard, SocketAddr, PathBuf) {
    let mut files = AgentFiles::new(dir, ca, identity);
    let mut last = String::new();
    for _ in 0..3 {
        let mut agent = files.spawn(files.istiod_command(ca, secret_ttl));
        let deadline = Instant::now() + STARTUP;
        while agent.is_running() && Instant::now() < deadline {
            if let Ok((200, _)) = crate::http::get(files.admin, "/ready").await {
                return (agent, files.admin, files.socket.clone());
            }
            tokio::time::sleep(crate::testing::POLL).await;
        }
        last = agent.output();
        agent.kill();
        files.new_admin_port();
    }
    panic!("sds-agent for {identity} never became ready; log:\n{last}");
}
