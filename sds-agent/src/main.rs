use std::process::ExitCode;

use clap::Parser;
use sds_agent::app::{self, Agent};
use sds_agent::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The probe runs before (and without) the agent's runtime.
    if let Some(Command::Probe(p)) = &cli.command {
        return mesh::admin::probe_exit_code(p.admin_addr, &p.path, p.timeout);
    }
    run(cli)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn run(cli: Cli) -> ExitCode {
    // One crypto provider for the whole process (kube and rcgen also pull in ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let format = cli.run.log_format;
    app::init_logging(format);
    let config = match cli.run.into_config(std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let agent = match Agent::start(config).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    app::shutdown_signal().await;
    agent.shutdown().await;
    ExitCode::SUCCESS
}
