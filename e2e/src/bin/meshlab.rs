//! `meshlab`: the local mesh lab (network namespaces standing in for pods) and the
//! end-to-end suite that runs on it. Needs root (namespaces, iptables).

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use e2e::lab::{HTTP_PORT, HTTPS_PORT, Lab, LabOptions, MTLS_PORT, netns, scenarios, telemetry};

#[derive(Parser)]
#[command(
    about = "The local mesh lab: istiod's CA, a Kubernetes API server (the fixture), both \
             gateway-pod variants, two httpbin pods behind Istio-shaped sidecars and a client, \
             each in its own network namespace",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the lab, print its addresses as KEY=value lines (with `export KUBECONFIG=...`
    /// for kubectl against the lab's API server; then READY=1) and run until SIGTERM or
    /// Ctrl-C, then remove everything.
    Up {
        #[command(flatten)]
        lab: LabArgs,
    },
    /// Start the lab, run the end-to-end scenarios, print the table, remove everything.
    /// Exits 1 if any scenario failed.
    E2e {
        #[command(flatten)]
        lab: LabArgs,
        /// Run only these scenarios (comma-separated numbers; 10 is the teardown check).
        #[arg(long, value_delimiter = ',')]
        only: Vec<u8>,
    },
    /// Stop a running lab, and remove whatever an earlier lab left behind (processes,
    /// namespaces).
    Down,
    /// Print one trace from the lab collector's log (`ROTEL_LOG`) as a span tree; exits 1
    /// while no span of it has arrived.
    Trace {
        /// rotel's output (`ROTEL_LOG` from `meshlab up`).
        #[arg(long)]
        log: PathBuf,
        /// The trace id (32 hex digits).
        trace_id: String,
    },
}

#[derive(clap::Args)]
struct LabArgs {
    /// Working directory: per-pod config, sockets and logs (cleared at start).
    #[arg(long, default_value = "/tmp/meshlab")]
    dir: PathBuf,
    /// Workload certificate lifetime for every sds-agent (SECRET_TTL).
    #[arg(long, default_value = "1h")]
    secret_ttl: String,
}

impl LabArgs {
    fn options(self) -> LabOptions {
        LabOptions {
            dir: self.dir,
            secret_ttl: self.secret_ttl,
        }
    }
}

#[tokio::main]
async fn main() {
    e2e::install_crypto();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("meshlab: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Up { lab } => up(lab.options()).await,
        Cmd::E2e { lab, only } => {
            let outcomes = scenarios::run_suite(lab.options(), &only, &mut std::io::stdout()).await;
            if outcomes.iter().any(|o| o.result.is_err()) {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Trace { log, trace_id } => {
            let text = std::fs::read_to_string(&log)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", log.display()))?;
            let spans = e2e::telemetry::parse_spans(&text);
            if !spans.iter().any(|s| s.get("Trace ID") == trace_id) {
                anyhow::bail!("no span of trace {trace_id} in {} yet", log.display());
            }
            print!("{}", e2e::telemetry::span_tree(&spans, &trace_id));
            Ok(())
        }
        Cmd::Down => {
            if let Some(pid) = netns::stop_owner(std::time::Duration::from_secs(20)) {
                println!("asked the running lab (pid {pid}) to stop");
            }
            let removed = netns::remove_all()?;
            println!("removed {} namespaces {}", removed.len(), removed.join(" "));
            Ok(())
        }
    }
}

async fn up(options: LabOptions) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // A signal during start-up drops the half-built lab, which removes it.
    let lab = tokio::select! {
        lab = Lab::start(options) => lab?,
        _ = term.recv() => return Ok(()),
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    let mut out = std::io::stdout().lock();
    for pod in [
        &lab.istiod,
        &lab.gateway,
        &lab.gateway_sidecar,
        &lab.httpbin,
        &lab.httpbin_v2,
        &lab.client,
        &lab.apiserver,
    ] {
        let key = pod.name.to_uppercase().replace('-', "_");
        writeln!(out, "{key}_NS={}", pod.ns)?;
        writeln!(out, "{key}_IP={}", pod.addr)?;
        writeln!(out, "{key}_IDENTITY={}", pod.identity)?;
        writeln!(out, "{key}_DIR={}", pod.dir.display())?;
    }
    writeln!(out, "HTTP_PORT={HTTP_PORT}")?;
    writeln!(out, "HTTPS_PORT={HTTPS_PORT}")?;
    writeln!(out, "MTLS_PORT={MTLS_PORT}")?;
    writeln!(out, "EDGE_CA={}", lab.certs.server_ca.display())?;
    writeln!(out, "CLIENT_CERT={}", lab.certs.client_cert.display())?;
    writeln!(out, "CLIENT_KEY={}", lab.certs.client_key.display())?;
    // Prometheus's API (inside the gateway pod) and the collector's output.
    writeln!(out, "PROMETHEUS_URL=http://{}", telemetry::PROMETHEUS)?;
    writeln!(out, "OTLP_ENDPOINT={}", lab.otlp_endpoint())?;
    writeln!(
        out,
        "ROTEL_LOG={}",
        lab.istiod.dir.join("rotel.log").display()
    )?;
    // kubectl from the host reaches the lab's API server with this (a forwarded port).
    let kubeconfig = lab.kube.host_kubeconfig.display();
    writeln!(out, "KUBECONFIG={kubeconfig}")?;
    writeln!(out, "export KUBECONFIG={kubeconfig}")?;
    writeln!(out, "READY=1")?;
    out.flush()?;
    drop(out);
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    lab.teardown()
}
