use std::process::ExitCode;

use clap::Parser;
use gateway::config::{Cli, Command, Config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    gateway::install_crypto_provider();
    match cli.command {
        Some(Command::Validate { config }) => {
            let opts = Config::from(cli.run).translate;
            match gateway::translate::load(&config, &opts) {
                Ok(table) => {
                    for w in &table.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!("{}: configuration is valid", config.display());
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("error: {e}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Probe {
            admin_addr,
            path,
            timeout,
        }) => mesh::admin::probe_exit_code(admin_addr, &path, timeout),
        None => {
            let config = Config::from(cli.run);
            gateway::init_logging(config.log_json);
            let rt = if config.workers == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(config.workers)
                    .enable_all()
                    .build()
            };
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(workers = config.workers, config = %config.config_path.display(), "starting gateway");
            match rt.block_on(gateway::server::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "gateway failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
