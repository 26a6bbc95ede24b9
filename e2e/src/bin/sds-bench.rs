//! Measures the sds-agent against the test CA:
//! 1. agent start -> first certificate on an SDS stream (process spawn to first response);
//! 2. CA issuance of a rotated certificate -> new version on N concurrent SDS streams.
//!
//! Reports p50/p99 over repeated runs. Run through `scripts/bench-sds`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use e2e::ca::TestCa;
use e2e::sds_client::{self, SdsStream};
use e2e::testing::{AgentFiles, ChildGuard};
use mesh::Identity;

#[derive(Parser)]
#[command(about = "Benchmark sds-agent start-up and rotation fan-out against the test CA")]
struct Args {
    /// The sds-agent binary to measure.
    #[arg(long)]
    agent: PathBuf,
    /// Start-up runs.
    #[arg(long, default_value_t = 20)]
    starts: usize,
    /// Rotations to observe.
    #[arg(long, default_value_t = 30)]
    rotations: usize,
    /// Concurrent SDS streams during rotations.
    #[arg(long, default_value_t = 100)]
    streams: usize,
}

struct Env {
    dir: tempfile::TempDir,
    ca: TestCa,
    files: AgentFiles,
}

impl Env {
    async fn new(bin: &Path) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::start().await;
        let identity = Identity::new("cluster.local", "gateway-system", "gateway-proxy").unwrap();
        let mut files = AgentFiles::new(dir.path(), &ca, &identity);
        files.bin = bin.to_path_buf();
        Env { dir, ca, files }
    }

    /// An agent on `socket` (and a fresh admin port), logging warnings only.
    fn agent(&mut self, ttl: &str, socket: &Path) -> ChildGuard {
        self.files.socket = socket.to_path_buf();
        self.files.new_admin_port();
        let mut cmd = self.files.istiod_command(&self.ca, ttl);
        cmd.env("RUST_LOG", "warn");
        self.files.spawn(cmd)
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<48} n={:<4} p50={:>9.2?} p99={:>9.2?} min={:>9.2?} max={:>9.2?}",
        samples.len(),
        pct(&samples, 0.5),
        pct(&samples, 0.99),
        samples[0],
        samples[samples.len() - 1]
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    e2e::install_crypto();
    let args = Args::parse();
    let mut env = Env::new(&args.agent).await;

    // 1. Start-up: spawn -> first SDS response carrying a certificate.
    let mut starts = Vec::new();
    for i in 0..args.starts {
        let socket = env.dir.path().join(format!("start-{i}.sock"));
        let t0 = Instant::now();
        let mut agent = env.agent("24h", &socket);
        let mut client = sds_client::connect_retry(&socket, Duration::from_secs(10)).await;
        let mut stream = SdsStream::open(&mut client, &["default"]).await.unwrap();
        let update = stream
            .next_within(Duration::from_secs(10))
            .await
            .expect("first cert")
            .unwrap();
        assert!(update.certificate().is_some());
        starts.push(t0.elapsed());
        agent.kill();
    }

    // 2. Rotation fan-out: a short TTL makes the agent renew about every second.
    let socket = env.dir.path().join("rotate.sock");
    let _agent = env.agent("2s", &socket);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, SystemTime)>();
    for _ in 0..args.streams {
        let socket = socket.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut client = sds_client::connect_retry(&socket, Duration::from_secs(10)).await;
            let mut stream = SdsStream::open(&mut client, &["default"]).await.unwrap();
            while let Ok(u) = stream.next().await {
                // Stamped on arrival; the serial comes from the version string
                // (`<n>-<serial>`) so the clock does not include certificate parsing.
                let at = SystemTime::now();
                let serial = match u.version.rsplit_once('-') {
                    Some((_, serial)) => serial.to_string(),
                    None => leaf_serial(&u),
                };
                if tx.send((serial, at)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut seen: std::collections::HashMap<String, Vec<SystemTime>> = Default::default();
    let mut fanout = Vec::new();
    let mut per_stream = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30 + 3 * args.rotations as u64);
    while fanout.len() < args.rotations && Instant::now() < deadline {
        let Ok(Some((serial, at))) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
        else {
            continue;
        };
        let distinct = seen.len() + usize::from(!seen.contains_key(&serial));
        let arrivals = seen.entry(serial.clone()).or_default();
        arrivals.push(at);
        if arrivals.len() == args.streams {
            let issued = env
                .ca
                .calls()
                .into_iter()
                .find(|c| c.issued_serial.as_deref() == Some(serial.as_str()))
                .map(|c| c.at);
            // The first certificate arrives before all streams are open; measure rotations only.
            if let Some(issued) = issued.filter(|_| distinct > 1) {
                let last = arrivals.iter().max().unwrap();
                fanout.push(last.duration_since(issued).unwrap_or_default());
                per_stream.extend(
                    arrivals
                        .iter()
                        .map(|a| a.duration_since(issued).unwrap_or_default()),
                );
            }
        }
    }
    println!(
        "sds-agent benchmark ({} start-ups, {} rotations x {} streams)",
        args.starts,
        fanout.len(),
        args.streams
    );
    report("agent start -> first cert on an SDS stream", starts);
    report(
        &format!("CA issue -> new version on all {} streams", args.streams),
        fanout,
    );
    report("CA issue -> new version on one stream", per_stream);
}

/// The leaf's serial, lowercase hex, parsed from the served chain.
fn leaf_serial(update: &sds_client::Update) -> String {
    let (chain, _) = update.certificate().expect("default is a certificate");
    let certs = mesh::certs::parse_pem_certs(&chain, "chain").unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    leaf.raw_serial()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}
