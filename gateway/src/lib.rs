//! meshgate edge proxy: Kubernetes Gateway API routing on hyper 1, tokio and rustls.
//!
//! Configuration flows one way: [`providers`] (objects from files) -> [`translate`]
//! (objects to [`ir`], with per-object conditions) -> [`dataplane`] (runtime tables,
//! swapped atomically) -> [`proxy`] (the request path). Beside them: [`identity`] (the
//! mesh certificate from SDS), [`upstream`] (pools, connector, per-attempt hook),
//! [`observe`] (metrics, access log, debug), [`admin`], [`cli`], [`server`] (wiring),
//! [`workers`] (the data-plane threads), [`memory`] (freed memory back to the OS).

pub mod admin;
pub mod api;
pub mod cli;
pub mod dataplane;
pub mod identity;
pub mod ir;
pub mod memory;
pub mod observe;
pub mod providers;
pub mod proxy;
pub mod server;
pub mod translate;
pub mod upstream;
pub mod validate;
pub mod workers;

use std::process::ExitCode;

/// Installs rustls' ring crypto provider for the process (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Initializes the gateway's own logs on stderr (access logs go to stdout).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // rustls warns once per ClientHello carrying an odd SNI: a line per connection that
    // any client can trigger, so only its errors are logged unless RUST_LOG names rustls.
    let names_rustls = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("rustls"));
    let filter = match "rustls=error".parse() {
        Ok(d) if !names_rustls => filter.add_directive(d),
        _ => filter,
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let _ = b.json().try_init();
    } else {
        let _ = b.try_init();
    }
}

/// Runs the gateway on a current-thread runtime: the control plane, and with `--workers 1`
/// the connections too; with more, [`workers`] serve the connections, each on a thread and
/// runtime of its own (see the README's concurrency model).
pub fn run(config: cli::Config) -> ExitCode {
    init_logging(config.log_json);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(workers = config.workers, provider = ?config.provider, "starting gateway");
    match rt.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gateway failed");
            ExitCode::FAILURE
        }
    }
}
