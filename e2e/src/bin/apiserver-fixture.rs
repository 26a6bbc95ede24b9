//! Runs the Kubernetes API server fixture on loopback, seeded from YAML files, and writes a
//! kubeconfig so kubectl (or the gateway) can use it: `export KUBECONFIG=<file>`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use e2e::apiserver::{ApiServer, Store, seed_store_file};

#[derive(Parser)]
#[command(about = "A Kubernetes API server fixture that real kubectl and kube-rs accept")]
struct Args {
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to listen on (the mesh lab serves its pods on the bridge).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    address: IpAddr,
    /// Start in resourceVersion epoch N (after seeding): objects get resourceVersions from
    /// N million up, so a client that watched an earlier run of the fixture gets 410 Gone
    /// and relists, as after an etcd restore. The mesh lab restarts the fixture this way.
    #[arg(long, default_value_t = 0)]
    epoch: u32,
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
    // Seeded before it listens, so no client lists half a seed (a large one takes seconds).
    let store = Store::new();
    for seed in &args.seeds {
        let objects = seed_store_file(&store, seed)?;
        eprintln!("seeded {} objects from {}", objects.len(), seed.display());
    }
    for _ in 0..args.epoch {
        store.restart_epoch();
    }
    let server = ApiServer::start_with_store(
        SocketAddr::from((args.address, args.port)),
        Duration::from_secs(1),
        store,
    )
    .await?;
    server.write_kubeconfig(&args.kubeconfig)?;
    println!("serving {}", server.url());
    println!(
        "export KUBECONFIG={}",
        std::fs::canonicalize(&args.kubeconfig)?.display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
