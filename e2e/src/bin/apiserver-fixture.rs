//! Runs the Kubernetes API server fixture on loopback, seeded from YAML files, and writes a
//! kubeconfig so kubectl (or the gateway) can use it: `export KUBECONFIG=<file>`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use e2e::apiserver::ApiServer;

#[derive(Parser)]
#[command(about = "A Kubernetes API server fixture that real kubectl and kube-rs accept")]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// YAML files to seed, in order (CRDs before their objects).
    #[arg(long = "seed")]
    seeds: Vec<PathBuf>,
    /// Where to write the kubeconfig.
    #[arg(long, default_value = "kubeconfig.fixture")]
    kubeconfig: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port))).await?;
    for seed in &args.seeds {
        let objects = server.seed_file(seed)?;
        eprintln!("seeded {} objects from {}", objects.len(), seed.display());
    }
    server.write_kubeconfig(&args.kubeconfig)?;
    println!("serving {}", server.url());
    println!(
        "export KUBECONFIG={}",
        std::fs::canonicalize(&args.kubeconfig)?.display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
