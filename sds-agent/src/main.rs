use std::process::ExitCode;

use clap::Parser;
use sds_agent::app::{self, Agent};
use sds_agent::config::{Cli, Command};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Probe(p)) = cli.command {
        return match sds_agent::probe::probe(p.admin_addr, &p.path, p.timeout).await {
            Ok(200) => ExitCode::SUCCESS,
            Ok(code) => {
                eprintln!("{} answered {code}", p.path);
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("probe failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
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
