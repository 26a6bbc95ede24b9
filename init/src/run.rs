//! One run of `gateway-init`: validate, plan, then apply, print, clean up or verify.

use std::process::ExitCode;

use tracing::info;

use crate::apply::{self, ApplyError, Backend, Iptables};
use crate::config::{Action, BackendChoice, ConfigError, Ipv6Choice, Options};
use crate::plan::{Family, Plan};
use crate::render;

/// Exit status when `--verify` finds the live rules differ from the plan.
pub const EXIT_VERIFY_MISMATCH: u8 = 3;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Runs the action the options ask for and returns the process exit status: 0 on
/// success, 1 on an error, 3 when `--verify` finds a difference.
pub fn run(options: &Options) -> ExitCode {
    match execute(options) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gateway-init: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The families to program, as `--ipv6` says.
pub fn families(choice: Ipv6Choice) -> Vec<Family> {
    let ipv6 = match choice {
        Ipv6Choice::True => true,
        Ipv6Choice::False => false,
        Ipv6Choice::Auto => apply::kernel_has_ipv6(),
    };
    if ipv6 {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

fn execute(options: &Options) -> Result<ExitCode, RunError> {
    let config = options.config()?;
    let plan = Plan::build(&config);
    let families = families(options.ipv6);
    let action = options.action();
    if action == Action::DryRun {
        let plans: Vec<_> = families.iter().map(|f| plan.family(*f)).collect();
        print!("{}", render::dry_run(&plans));
        return Ok(ExitCode::SUCCESS);
    }

    apply::require_net_admin()?;
    let iptables = match options.backend {
        BackendChoice::Auto => Iptables::detect(families)?,
        BackendChoice::Nft => Iptables::new(Backend::Nft, families)?,
        BackendChoice::Legacy => Iptables::new(Backend::Legacy, families)?,
    };
    info!(
        mode = ?config.mode,
        backend = iptables.backend.name(),
        families = ?iptables.families,
        action = ?action,
        "gateway-init"
    );
    match action {
        Action::Apply => {
            iptables.apply(&plan)?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Cleanup => {
            iptables.cleanup()?;
            info!("removed every chain and jump gateway-init adds");
            Ok(ExitCode::SUCCESS)
        }
        Action::Verify => {
            let differences = iptables.verify(&plan)?;
            if differences.is_empty() {
                info!("live rules match the plan");
                return Ok(ExitCode::SUCCESS);
            }
            for (family, difference) in &differences {
                eprintln!("gateway-init: verify {}: {difference}", family.name());
            }
            Ok(ExitCode::from(EXIT_VERIFY_MISMATCH))
        }
        Action::DryRun => unreachable!("handled above"),
    }
}
