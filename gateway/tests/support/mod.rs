//! Test helpers: real httpbin (gunicorn), the real `gateway` binary, openssl-made
//! certificates and curl. Every process is owned by a guard that stops it on drop.

#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Directory holding envoy, gunicorn, python...: `$MESHGATE_TOOLS`, else
/// `<workspace>/.cache/tools/bin`.
pub fn tools_bin() -> PathBuf {
    let dir = std::env::var_os("MESHGATE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/tools/bin"));
    if !dir.join("gunicorn").exists() {
        panic!(
            "gunicorn not found in {} (set MESHGATE_TOOLS or run scripts/install-tools)",
            dir.display()
        );
    }
    dir
}

/// A port nothing listens on right now.
// One set of helpers across the workspace: these come from e2e::testing (not every test
// file uses all of them).
#[allow(unused_imports)]
pub use e2e::testing::free_port;
#[allow(unused_imports)]
pub use e2e::testing::yaml::{docs, http_gateway};

/// Waits (polling, e2e's `eventually_blocking`) until `ok` holds; panics naming `what`
/// after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    e2e::testing::eventually_blocking(timeout, || ok().then_some(()))
        .unwrap_or_else(|| panic!("timed out waiting for {what}"));
}

/// A child process stopped (SIGINT, then SIGKILL) when dropped.
pub struct Process {
    child: Child,
    name: String,
}

impl Process {
    /// Guards a child spawned by the test itself.
    pub fn adopt(child: Child, name: &str) -> Process {
        Process {
            child,
            name: name.into(),
        }
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM without waiting.
    pub fn send_term(&self) {
        self.signal("-TERM");
    }

    /// Sends SIGTERM and waits for exit; returns whether it exited in time.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        self.signal("-TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // gunicorn: INT is a quick shutdown of master and workers.
        self.signal("-INT");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop; killing", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real httpbin: `gunicorn -b 127.0.0.1:<port> -w 2 httpbin:app`.
pub struct Httpbin {
    pub port: u16,
    /// gunicorn's access log (`METHOD PATH QUERY HOST STATUS` per line), when kept.
    access_log: Option<tempfile::NamedTempFile>,
    _process: Process,
}

impl Httpbin {
    pub fn start() -> Httpbin {
        Httpbin::spawn(&[], false)
    }

    /// httpbin whose every request is written to an access log ([`Httpbin::requests`]).
    pub fn start_logged() -> Httpbin {
        Httpbin::spawn(&[], true)
    }

    /// httpbin serving TLS with `cert`/`key` (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> Httpbin {
        let args = [
            "--certfile".to_string(),
            cert.display().to_string(),
            "--keyfile".to_string(),
            key.display().to_string(),
        ];
        Httpbin::spawn(&args, true)
    }

    /// httpbin serving TLS with `cert`/`key` that requires a client certificate signed
    /// by `client_ca` (gunicorn `--cert-reqs 2`: ssl.CERT_REQUIRED).
    pub fn start_mutual_tls(cert: &Path, key: &Path, client_ca: &Path) -> Httpbin {
        let args = [
            "--certfile".to_string(),
            cert.display().to_string(),
            "--keyfile".to_string(),
            key.display().to_string(),
            "--cert-reqs".to_string(),
            "2".to_string(),
            "--ca-certs".to_string(),
            client_ca.display().to_string(),
        ];
        Httpbin::spawn(&args, true)
    }

    fn spawn(extra: &[String], log: bool) -> Httpbin {
        let bin = tools_bin();
        let port = free_port();
        let access_log = log.then(|| tempfile::NamedTempFile::new().unwrap());
        let mut cmd = Command::new(bin.join("gunicorn"));
        cmd.args(["-b", &format!("127.0.0.1:{port}"), "-w", "2"])
            .args(extra);
        if let Some(f) = &access_log {
            cmd.arg("--access-logfile")
                .arg(f.path())
                .args(["--access-logformat", "%(m)s %(U)s %(q)s %({host}i)s %(s)s"]);
        }
        let child = cmd
            .arg("httpbin:app")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gunicorn");
        let process = Process {
            child,
            name: "httpbin".into(),
        };
        let tls = !extra.is_empty();
        wait_for("httpbin", Duration::from_secs(30), || {
            if tls {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            } else {
                http_get_status(SocketAddr::from(([127, 0, 0, 1], port)), "/status/200")
                    == Some(200)
            }
        });
        Httpbin {
            port,
            access_log,
            _process: process,
        }
    }

    /// Requests httpbin served so far (`METHOD PATH QUERY HOST STATUS`).
    pub fn requests(&self) -> Vec<String> {
        let f = self
            .access_log
            .as_ref()
            .expect("started with an access log");
        std::fs::read_to_string(f.path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Minimal HTTP/1.1 GET returning the status code.
pub fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::Write;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The real gateway binary, configured from a directory of YAML files.
pub struct Gateway {
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    log_dir: tempfile::TempDir,
    process: Option<Process>,
}

impl Gateway {
    /// Writes `config.yaml` into a fresh directory and starts the gateway on it; waits
    /// for `/ready`.
    pub fn start(config: &str) -> Gateway {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &str, extra_args: &[&str]) -> Gateway {
        Self::start_waiting_for(config, extra_args, "/ready")
    }

    /// Starts the gateway and waits until admin `wait_path` answers 200 (`/healthz` for
    /// a gateway that cannot be ready, e.g. mesh upstreams without an SDS identity).
    pub fn start_waiting_for(config: &str, extra_args: &[&str], wait_path: &str) -> Gateway {
        Self::start_with_env(config, extra_args, wait_path, &[])
    }

    /// Starts the gateway with extra environment variables (e.g. `OTEL_*`).
    pub fn start_with_env(
        config: &str,
        extra_args: &[&str],
        wait_path: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        Self::start_attempt(config, extra_args, wait_path, env, 3)
    }

    fn start_attempt(
        config: &str,
        extra_args: &[&str],
        wait_path: &str,
        env: &[(&str, &str)],
        attempts: u32,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let log_dir = tempfile::tempdir().unwrap();
        // `--admin-addr` in `extra_args` replaces the default (a free loopback port);
        // the gateway is always reached on loopback.
        let given = extra_args
            .iter()
            .position(|a| *a == "--admin-addr")
            .and_then(|i| extra_args.get(i + 1))
            .map(|a| a.parse::<SocketAddr>().expect("--admin-addr value"));
        let bind = given.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let admin = SocketAddr::from(([127, 0, 0, 1], bind.port()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
        if given.is_none() {
            cmd.args(["--admin-addr", &admin.to_string()]);
        }
        let child = cmd
            .arg("--config")
            .arg(dir.path())
            .args(["--poll-interval", "100ms"])
            // Two workers (two worker threads, each with its own pools) unless the test
            // picks its own.
            .args(if extra_args.contains(&"--workers") {
                &[][..]
            } else {
                &["--workers", "2"][..]
            })
            .args(["--log-format", "text"])
            .args(extra_args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(log_dir.path().join("access.log")).unwrap())
            .stderr(std::fs::File::create(log_dir.path().join("gateway.log")).unwrap())
            .spawn()
            .expect("spawn gateway");
        let gw = Gateway {
            admin,
            dir,
            log_dir,
            process: Some(Process {
                child,
                name: "gateway".into(),
            }),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get_status(admin, wait_path) != Some(200) {
            // The admin port was free when picked, but the kernel can hand it out again
            // meanwhile (as another connection's source port): pick another, start again.
            if given.is_none() && attempts > 1 && gw.admin_port_was_taken() {
                drop(gw);
                return Self::start_attempt(config, extra_args, wait_path, env, attempts - 1);
            }
            if Instant::now() > deadline {
                panic!("gateway {wait_path} not 200; its log:\n{}", gw.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Replaces the config (atomically, by rename, like a ConfigMap update).
    pub fn write_config(&self, config: &str) {
        let tmp = self.dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, config).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    /// The gateway's own log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// The gateway exited because its admin port was in use.
    fn admin_port_was_taken(&self) -> bool {
        let log = self.log();
        log.contains("binding admin address") && log.contains("Address already in use")
    }

    /// Access log lines (stdout), parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.log_dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until an access log line satisfies `f`.
    pub fn wait_access_log(&self, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(l) = self.access_log().into_iter().find(|l| f(l)) {
                return l;
            }
            if Instant::now() > deadline {
                panic!("no matching access log line in {:#?}", self.access_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET an admin path with curl; (status, body).
    /// The gateway's explanation of an error response (admin `/debug/requests/<id>`).
    pub fn explain(&self, r: &CurlResult) -> serde_json::Value {
        let id = r.header("x-request-id").expect("x-request-id");
        let (status, body) = self.admin_get(&format!("/debug/requests/{id}"));
        assert_eq!(status, 200, "no explanation for {id}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let r = curl(&[&format!("http://{}{path}", self.admin)]);
        (r.status, r.body)
    }

    /// Value of a metric line starting with `prefix` (0 if absent).
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn process(&mut self) -> &mut Process {
        self.process.as_mut().unwrap()
    }

    /// Waits until the metric line(s) starting with `prefix` sum to `value`.
    pub fn wait_metric(&self, prefix: &str, value: f64) {
        self.wait_metric_where(prefix, &format!("{value}"), |v| v == value);
    }

    /// Waits until the metric line(s) starting with `prefix` sum to at least `min`.
    pub fn wait_metric_at_least(&self, prefix: &str, min: f64) {
        self.wait_metric_where(prefix, &format!(">= {min}"), |v| v >= min);
    }

    fn wait_metric_where(&self, prefix: &str, want: &str, ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok(self.metric(prefix)) {
            if Instant::now() > deadline {
                panic!(
                    "{prefix} is {} (want {want}):\n{}\nlog:\n{}",
                    self.metric(prefix),
                    self.admin_get("/metrics").1,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the gateway's own log contains `text`.
    pub fn wait_log(&self, text: &str) {
        wait_for(
            &format!("{text:?} in the gateway log"),
            Duration::from_secs(10),
            || self.log().contains(text),
        );
    }
}

/// Sends `bytes` on a new connection to `port` and reads until the gateway closes it;
/// the answer as a [`CurlResult`] (status 0 when none came).
pub fn raw_request(port: u16, bytes: &[u8]) -> CurlResult {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&String::from_utf8_lossy(&buf))
}

/// Splits a raw HTTP/1.1 response into a [`CurlResult`].
pub fn parse_response(text: &str) -> CurlResult {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    CurlResult {
        status,
        headers: head.replace("\r\n", "\n"),
        body: body.to_string(),
        exit_code: 0,
        stderr: String::new(),
    }
}

/// How a connection the test holds open ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The gateway closed it (EOF or reset) without sending a byte.
    ClosedSilently,
    /// The gateway sent these bytes and then closed it.
    ClosedAfter(Vec<u8>),
    /// Still open when the test's safety limit ran out.
    StillOpen,
}

/// Reads until the gateway closes `s` (or `limit` passes, a safety net: the outcome
/// then is [`Ended::StillOpen`]).
pub fn wait_closed(s: &mut TcpStream, limit: Duration) -> Ended {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => return Ended::StillOpen,
        }
    }
    if got.is_empty() {
        Ended::ClosedSilently
    } else {
        Ended::ClosedAfter(got)
    }
}

/// The reason code of a gateway-made error body (`<status> <code> (request id <id>)`),
/// checking that the body names nothing else and carries the response's request id.
pub fn error_code(r: &CurlResult) -> String {
    let id = r
        .header("x-request-id")
        .expect("error responses carry x-request-id");
    let expected_tail = format!(" (request id {id})\n");
    let head = r
        .body
        .strip_suffix(&expected_tail)
        .unwrap_or_else(|| panic!("not a gateway error body: {:?}", r.body));
    let (status, code) = head.split_once(' ').expect("status and code");
    assert_eq!(status, r.status.to_string(), "{:?}", r.body);
    assert!(!code.contains(' '), "one code only: {:?}", r.body);
    code.to_string()
}

/// A curl result.
#[derive(Debug)]
pub struct CurlResult {
    pub status: u16,
    pub headers: String,
    pub body: String,
    pub exit_code: i32,
    pub stderr: String,
}

impl CurlResult {
    /// First value of a response header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Runs curl with `args` (plus `-sS`); captures status, headers and body.
pub fn curl(args: &[&str]) -> CurlResult {
    let hdr = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(hdr.path())
        .args(["-w", "\n__STATUS__%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = stdout
        .rsplit_once("\n__STATUS__")
        .map(|(b, s)| (b.to_string(), s.trim().parse().unwrap_or(0)))
        .unwrap_or((stdout.clone(), 0));
    CurlResult {
        status,
        headers: std::fs::read_to_string(hdr.path()).unwrap_or_default(),
        body,
        exit_code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Certificates made with the openssl CLI.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap()
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `<name>.crt` / `<name>.key`: a self-signed CA.
    pub fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    /// `<name>.crt` / `<name>.key` signed by CA `ca`; `dns` SANs; server or client use.
    pub fn leaf(&self, name: &str, ca: &str, dns: &[&str], client: bool) {
        let san = dns
            .iter()
            .map(|d| format!("DNS:{d}"))
            .collect::<Vec<_>>()
            .join(",");
        let ext = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={}\n{}",
            if client { "clientAuth" } else { "serverAuth" },
            if san.is_empty() {
                String::new()
            } else {
                format!("subjectAltName={san}\n")
            }
        );
        std::fs::write(self.path(&format!("{name}.ext")), ext).unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    /// A `kubernetes.io/tls` Secret YAML document for `<name>.crt`/`<name>.key`.
    pub fn tls_secret(&self, secret: &str, name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {secret}, namespace: default}}\n\
             type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&self.read(&format!("{name}.crt"))),
            indent(&self.read(&format!("{name}.key")))
        )
    }

    /// A Secret YAML document `ns/secret` with `stringData` from files: `(key, file)`.
    pub fn secret_in(&self, ns: &str, secret: &str, kind: &str, items: &[(&str, &str)]) -> String {
        let data: String = items
            .iter()
            .map(|(k, file)| format!("  {k}: |\n{}", indent(&self.read(file))))
            .collect();
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {secret}, namespace: {ns}}}\n\
             type: {kind}\nstringData:\n{data}"
        )
    }

    /// A ConfigMap YAML document holding `ca.crt` from `<ca>.crt`.
    pub fn ca_config_map(&self, cm: &str, ca: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {cm}, namespace: default}}\n\
             data:\n  ca.crt: |\n{}",
            indent(&self.read(&format!("{ca}.crt")))
        )
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// A Service named `name` on port 80 whose EndpointSlice points at `127.0.0.1:<port>`.
pub fn local_service(name: &str, port: u16) -> String {
    local_service_in("default", name, port)
}

/// A Service `ns/name` (port 80) whose one endpoint is `127.0.0.1:port`.
pub fn local_service_in(ns: &str, name: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: {ns}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
  - addresses: [127.0.0.1]
"#
    )
}

/// Polls `f` every 50 ms until it returns true; panics naming `what` after 10 s.
pub fn eventually(what: &str, f: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(10), f);
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

/// A socat TCP echo server (`fork`: one `cat` per connection; `cat` ends at the
/// client's half-close, and socat then closes its side).
pub struct Echo {
    pub port: u16,
    _process: Process,
}

impl Echo {
    pub fn start() -> Echo {
        let port = free_port();
        let child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg("EXEC:cat")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn socat (scripts/install-tools installs it)");
        let process = Process::adopt(child, "socat");
        wait_for("socat echo", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Echo {
            port,
            _process: process,
        }
    }
}

/// A hyper HTTP/1.1 upstream answering 200 with `body` to everything, on a thread (and
/// runtime) of its own, so that in-process tests do not count or slow it.
pub fn hyper_upstream(body: &'static [u8]) -> u16 {
    hyper_http1_upstream(move || async move { body })
}

/// A hyper HTTP/1.1 upstream on a thread (and runtime) of its own: every request is
/// answered 200 with the body that `answer()`'s future resolves to (it may wait first);
/// its port.
pub fn hyper_http1_upstream<F, Fut>(answer: F) -> u16
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = &'static [u8]> + Send + 'static,
{
    upstream_on_own_thread(move |tcp| {
        let answer = answer.clone();
        async move {
            let svc = hyper::service::service_fn(move |_req| {
                let body = answer();
                async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(body.await)),
                    ))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        }
    })
}

/// An upstream on a thread (and current-thread runtime) of its own, so that in-process
/// tests do not count or slow it: `serve` runs as a task for each connection it
/// accepts. Its port.
pub fn upstream_on_own_thread<F, Fut>(serve: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(tcp));
            }
        });
    });
    port
}

/// A DestinationRule for Service `host` in `default` with this `trafficPolicy` (YAML).
pub fn destination_rule(host: &str, traffic_policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: {host}, namespace: default}}\n\
         spec:\n  host: {host}\n  trafficPolicy:\n{}",
        traffic_policy
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    )
}
