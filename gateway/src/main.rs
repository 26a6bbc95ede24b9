use std::process::ExitCode;

use clap::Parser;
use gateway::cli::{Cli, Command, Config};

// mimalloc rather than glibc malloc: the request path allocates a few dozen times per
// request, and a reload of a large route table allocates millions of small objects;
// glibc's free lists fragment under both (README, "Route-table size").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    gateway::install_crypto_provider();
    match cli.command {
        Some(Command::Validate { config }) => {
            let opts = Config::from(cli.run);
            match gateway::validate::run(&config, &opts.translate, opts.max_config_bytes) {
                true => ExitCode::SUCCESS,
                false => ExitCode::FAILURE,
            }
        }
        Some(Command::Probe {
            admin_addr,
            path,
            timeout,
        }) => mesh::admin::probe_exit_code(admin_addr, &path, timeout),
        None => gateway::run(Config::from(cli.run)),
    }
}
