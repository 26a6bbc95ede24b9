//! The mesh side of `scripts/bench --mesh`: the test CA, an Envoy sidecar shaped like
//! Istio's STRICT inbound (certificate from its own sds-agent) in front of `--app`, and the
//! gateway pod's sds-agent. Prints `KEY=value` lines once everything is ready, then runs
//! until SIGTERM or SIGINT and tears it all down.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use e2e::ca::TestCa;
use e2e::sidecar::{HttpbinPod, InboundPolicy};
use e2e::testing::start_agent;
use mesh::Identity;

#[derive(Parser)]
#[command(
    about = "Start a test CA, an Istio-shaped Envoy sidecar in front of an app, and the gateway's sds-agent"
)]
struct Args {
    /// The application the sidecar fronts.
    #[arg(long)]
    app: SocketAddr,
    /// Working directory (sockets, logs).
    #[arg(long)]
    dir: PathBuf,
    /// Certificate lifetime for both agents.
    #[arg(long, default_value = "24h")]
    ttl: String,
    /// The sidecar's Envoy worker threads (`--concurrency`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    sidecar_workers: u32,
}

#[tokio::main]
async fn main() {
    e2e::install_crypto();
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir).expect("work dir");
    let ca = TestCa::start().await;
    let app_id = Identity::new("cluster.local", "default", "httpbin").unwrap();
    let pod = HttpbinPod::start_in_front_of(
        &args.dir,
        &ca,
        app_id.clone(),
        InboundPolicy::Strict,
        &args.ttl,
        args.app,
        args.sidecar_workers,
    )
    .await;
    let gw_dir = args.dir.join("gateway-pod");
    std::fs::create_dir_all(&gw_dir).expect("gateway pod dir");
    let gw_id = Identity::new("cluster.local", "gateway-system", "gateway-proxy").unwrap();
    let (_agent, agent_admin, socket) = start_agent(&gw_dir, &ca, &gw_id, &args.ttl).await;
    let mut out = std::io::stdout().lock();
    writeln!(out, "INBOUND={}", pod.inbound).unwrap();
    writeln!(out, "UPSTREAM_IDENTITY={app_id}").unwrap();
    writeln!(out, "GATEWAY_SDS_SOCKET={}", socket.display()).unwrap();
    writeln!(out, "GATEWAY_AGENT_ADMIN={agent_admin}").unwrap();
    writeln!(out, "READY=1").unwrap();
    out.flush().unwrap();
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
