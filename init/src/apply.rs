//! Drives iptables: picks the backend (nft or legacy), applies a plan atomically with
//! `iptables-restore --noflush` (rolling back on failure), removes our rules, and compares
//! the live rules with a plan.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tracing::{debug, info, warn};

use crate::live::{Difference, LiveRules};
use crate::loopback;
use crate::plan::{Family, FamilyPlan, Plan, Table};
use crate::render;

/// Seconds legacy iptables waits for the xtables lock.
const XTABLES_LOCK_WAIT_SECONDS: u32 = 10;

/// Why iptables could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "gateway-init needs CAP_NET_ADMIN in the pod's network namespace (effective \
         capabilities: {effective}); run it as an init container with \
         securityContext.capabilities.add: [NET_ADMIN]"
    )]
    NoNetAdmin { effective: String },
    #[error("iptables is not installed: none of {looked_for} found in $PATH")]
    IptablesMissing { looked_for: String },
    #[error("adding {address} to lo (the sidecar's inbound passthrough source): {source}")]
    LoopbackAddress {
        address: String,
        source: std::io::Error,
    },
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    SaveFailed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("the {family} rules were not applied: {failure}; rollback: {rollback}")]
    RestoreFailed {
        family: &'static str,
        failure: Box<RestoreFailure>,
        /// What the rollback did.
        rollback: String,
    },
}

/// How one `iptables-restore` run failed.
#[derive(Debug, Clone)]
pub struct RestoreFailure {
    /// The program run.
    pub program: String,
    /// Its exit status.
    pub status: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// The input line it named, if any: ` (input line N: `...`)`.
    pub failed_line: String,
}

impl std::fmt::Display for RestoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed ({}): {}{}",
            self.program, self.status, self.stderr, self.failed_line
        )
    }
}

/// An iptables implementation: which binaries to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-nft-*` (nf_tables).
    Nft,
    /// `iptables-legacy-*` (x_tables).
    Legacy,
    /// Plain `iptables-*`, where the installation has no `-nft`/`-legacy` variants.
    Plain,
}

impl Backend {
    fn infix(self) -> &'static str {
        match self {
            Backend::Nft => "-nft",
            Backend::Legacy => "-legacy",
            Backend::Plain => "",
        }
    }

    /// The binary name of a tool (`save` or `restore`) for a family.
    pub fn program(self, family: Family, tool: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        format!("{base}{}-{tool}", self.infix())
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
            Backend::Plain => "iptables (plain)",
        }
    }
}

/// Looks a program up in `$PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Fails unless this process holds CAP_NET_ADMIN (read from `/proc/self/status`).
pub fn require_net_admin() -> Result<(), ApplyError> {
    const CAP_NET_ADMIN: u32 = 12;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .unwrap_or("unknown");
    match u64::from_str_radix(effective, 16) {
        Ok(caps) if caps & (1 << CAP_NET_ADMIN) != 0 => Ok(()),
        // No /proc to ask: let iptables itself report.
        Err(_) if effective == "unknown" => Ok(()),
        _ => Err(ApplyError::NoNetAdmin {
            effective: format!("0x{effective}"),
        }),
    }
}

/// Whether the kernel has IPv6 in this network namespace.
pub fn kernel_has_ipv6() -> bool {
    Path::new("/proc/net/if_inet6").exists()
}

/// The iptables binaries of one backend, for the families in use.
#[derive(Debug, Clone)]
pub struct Iptables {
    /// Which implementation.
    pub backend: Backend,
    /// The families programmed, IPv4 first.
    pub families: Vec<Family>,
}

impl Iptables {
    /// Uses `backend`, checking that its binaries exist for every family.
    pub fn new(backend: Backend, families: Vec<Family>) -> Result<Self, ApplyError> {
        let tools = Self { backend, families };
        let missing: Vec<String> = tools
            .families
            .iter()
            .flat_map(|f| [backend.program(*f, "save"), backend.program(*f, "restore")])
            .filter(|p| find_program(p).is_none())
            .collect();
        if missing.is_empty() {
            Ok(tools)
        } else {
            Err(ApplyError::IptablesMissing {
                looked_for: missing.join(", "),
            })
        }
    }

    /// Picks the backend that already holds rules in this namespace (the one with more, if
    /// both do); nft when neither does; plain `iptables` when neither variant is installed.
    pub fn detect(families: Vec<Family>) -> Result<Self, ApplyError> {
        let mut candidates = Vec::new();
        for backend in [Backend::Nft, Backend::Legacy] {
            if let Ok(tools) = Self::new(backend, families.clone()) {
                let rules: usize = families
                    .iter()
                    .map(|f| match tools.save(*f) {
                        Ok(text) => LiveRules::parse(&text).rule_count(),
                        Err(e) => {
                            debug!("{} cannot list rules: {e}", backend.name());
                            0
                        }
                    })
                    .sum();
                debug!("{} backend holds {rules} rules", backend.name());
                candidates.push((tools, rules));
            }
        }
        // Most rules wins; on a tie the first (nft).
        let best = candidates
            .into_iter()
            .reduce(|best, next| if next.1 > best.1 { next } else { best });
        match best {
            Some((tools, rules)) => {
                info!(
                    backend = tools.backend.name(),
                    existing_rules = rules,
                    "iptables backend"
                );
                Ok(tools)
            }
            None => Self::new(Backend::Plain, families).map_err(|_| ApplyError::IptablesMissing {
                looked_for: "iptables-nft-restore, iptables-legacy-restore, iptables-restore"
                    .to_owned(),
            }),
        }
    }

    fn command(&self, family: Family, tool: &str) -> (String, Command) {
        let name = self.backend.program(family, tool);
        let path: OsString = find_program(&name)
            .map(PathBuf::into_os_string)
            .unwrap_or_else(|| name.clone().into());
        (name, Command::new(path))
    }

    /// The family's live rules, as `iptables-save` prints them.
    pub fn save(&self, family: Family) -> Result<String, ApplyError> {
        let (program, mut cmd) = self.command(family, "save");
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ApplyError::Spawn {
                program: program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(ApplyError::SaveFailed {
                program,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Feeds `input` to `iptables-restore` (`--noflush` unless `replace`); on failure,
    /// returns the program name, status, stderr and the input line it named.
    fn restore(&self, family: Family, input: &str, replace: bool) -> Result<(), RestoreFailure> {
        let (program, mut cmd) = self.command(family, "restore");
        if !replace {
            cmd.arg("--noflush");
        }
        if self.backend == Backend::Legacy {
            cmd.arg(format!("--wait={XTABLES_LOCK_WAIT_SECONDS}"));
        }
        debug!("{program} input:\n{input}");
        let not_run = |e: std::io::Error| RestoreFailure {
            program: program.clone(),
            status: "not run".into(),
            stderr: e.to_string(),
            failed_line: String::new(),
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(not_run)?;
        // A restore that dies early closes its stdin: what it printed and its status say
        // more than the broken pipe, so the write error counts only if it then succeeds.
        let written = match child.stdin.take() {
            Some(mut stdin) => stdin.write_all(input.as_bytes()),
            None => Ok(()),
        };
        let out = child.wait_with_output().map_err(not_run)?;
        if out.status.success() {
            return written.map_err(not_run);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let failed_line = failed_line_number(&stderr)
            .and_then(|n| input.lines().nth(n.saturating_sub(1)).map(|l| (n, l)))
            .map(|(n, l)| format!(" (input line {n}: `{l}`)"))
            .unwrap_or_default();
        Err(RestoreFailure {
            program,
            status: out.status.to_string(),
            stderr,
            failed_line,
        })
    }

    /// Makes the live rules match the plan, atomically per family: our chains emptied and
    /// refilled, old jumps into them replaced (never duplicated), chains no longer planned
    /// removed. If any family fails, every family is put back as it was.
    pub fn apply(&self, plan: &Plan) -> Result<(), ApplyError> {
        let plans: Vec<&FamilyPlan> = self.families.iter().map(|f| plan.family(*f)).collect();
        // Addresses first: adding one is idempotent and harmless, and a failure here then
        // leaves the rules untouched.
        for address in plans.iter().flat_map(|p| &p.loopback_addresses) {
            loopback::add(*address).map_err(|source| ApplyError::LoopbackAddress {
                address: address.to_string(),
                source,
            })?;
            info!(%address, "address on lo");
        }
        self.converge(&plans)
    }

    /// Removes every chain and jump of ours, leaving other rules untouched.
    pub fn cleanup(&self) -> Result<(), ApplyError> {
        let empty: Vec<FamilyPlan> = self
            .families
            .iter()
            .map(|f| FamilyPlan::empty(*f))
            .collect();
        self.converge(&empty.iter().collect::<Vec<_>>())
    }

    fn converge(&self, plans: &[&FamilyPlan]) -> Result<(), ApplyError> {
        let mut snapshots: Vec<(Family, String)> = Vec::new();
        let mut inputs = Vec::new();
        for plan in plans {
            let saved = self.save(plan.family)?;
            let hk = LiveRules::parse(&saved).housekeeping(&plan.chains);
            inputs.push((plan.family, render::restore_input(plan, &hk)));
            snapshots.push((plan.family, saved));
        }
        for (index, (family, input)) in inputs.iter().enumerate() {
            if input.is_empty() {
                info!(family = family.name(), "nothing to change");
                continue;
            }
            match self.restore(*family, input, false) {
                Ok(()) => info!(
                    family = family.name(),
                    input_lines = input.lines().count(),
                    "iptables-restore --noflush succeeded"
                ),
                Err(failure) => {
                    // The failed family is rolled back too: iptables-restore (nft and
                    // legacy alike) commits table by table, so it may be half applied.
                    let rollback = self.rollback(&snapshots[..=index], &inputs[..=index]);
                    return Err(ApplyError::RestoreFailed {
                        family: family.name(),
                        failure: Box::new(failure),
                        rollback,
                    });
                }
            }
        }
        Ok(())
    }

    /// Puts back, for each family attempted, the tables the restore touched as they were
    /// before. Returns what it did, for the error message.
    fn rollback(&self, snapshots: &[(Family, String)], inputs: &[(Family, String)]) -> String {
        let mut report = Vec::new();
        for ((family, snapshot), (_, input)) in snapshots.iter().zip(inputs) {
            let touched: Vec<Table> = Table::ALL
                .into_iter()
                .filter(|t| input.lines().any(|l| l == format!("*{}", t.name())))
                .collect();
            if touched.is_empty() {
                continue;
            }
            let text: String = touched
                .iter()
                .map(|t| table_section(snapshot, *t).unwrap_or_else(|| empty_table(*t)))
                .collect();
            match self.restore(*family, &text, true) {
                Ok(()) => report.push(format!("{} restored as it was", family.name())),
                Err(failure) => {
                    warn!("rollback of {} failed: {failure}", family.name());
                    report.push(format!("{} rollback FAILED ({failure})", family.name()));
                }
            }
        }
        if report.is_empty() {
            "nothing had changed".to_owned()
        } else {
            report.join(", ")
        }
    }

    /// How the live rules differ from the plan, per family; empty when they match.
    pub fn verify(&self, plan: &Plan) -> Result<Vec<(Family, Difference)>, ApplyError> {
        let mut all = Vec::new();
        for family in &self.families {
            let live = LiveRules::parse(&self.save(*family)?);
            let planned = plan.family(*family);
            all.extend(live.differences(planned).into_iter().map(|d| (*family, d)));
            for address in &planned.loopback_addresses {
                if !loopback::has(*address) {
                    all.push((*family, Difference::MissingLoopbackAddress(*address)));
                }
            }
        }
        Ok(all)
    }
}

/// The input line iptables-restore blames. The wording varies (`Error occurred at line:
/// N`, `line N: CHAIN_DEL failed`, `iptables-restore: line N failed`): the first `line`
/// followed by a number.
fn failed_line_number(stderr: &str) -> Option<usize> {
    stderr.match_indices("line").find_map(|(at, word)| {
        let rest = stderr[at + word.len()..].trim_start_matches([':', ' ']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// One table's section (`*table` .. `COMMIT`) of `iptables-save` output.
fn table_section(saved: &str, table: Table) -> Option<String> {
    let header = format!("*{}", table.name());
    let mut lines = saved.lines().skip_while(|l| l.trim() != header);
    let mut out = String::new();
    for line in lines.by_ref() {
        out.push_str(line);
        out.push('\n');
        if line.trim() == "COMMIT" {
            return Some(out);
        }
    }
    None
}

/// A table as a fresh namespace has it: built-in chains, policy ACCEPT, no rules.
fn empty_table(table: Table) -> String {
    let mut out = format!("*{}\n", table.name());
    for chain in table.builtin_chains() {
        out.push_str(&format!(":{chain} ACCEPT [0:0]\n"));
    }
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_name_their_binaries() {
        assert_eq!(
            Backend::Nft.program(Family::V4, "restore"),
            "iptables-nft-restore"
        );
        assert_eq!(
            Backend::Legacy.program(Family::V6, "save"),
            "ip6tables-legacy-save"
        );
        assert_eq!(Backend::Plain.program(Family::V4, "save"), "iptables-save");
    }

    #[test]
    fn a_table_section_is_cut_from_save_output() {
        let saved = "# c\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n# c\n*nat\n:OUTPUT ACCEPT [0:0]\n\
                     -A OUTPUT -j RETURN\nCOMMIT\n";
        assert_eq!(
            table_section(saved, Table::Nat).unwrap(),
            "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j RETURN\nCOMMIT\n"
        );
        assert_eq!(table_section("", Table::Nat), None);
        assert!(empty_table(Table::Filter).contains(":FORWARD ACCEPT [0:0]"));
    }

    #[test]
    fn the_blamed_input_line_is_found_in_both_backends_messages() {
        let legacy = "iptables-restore v1.8.9 (legacy): Couldn't load target `NOPE'\n\n\
                      Error occurred at line: 2\nTry `iptables-restore -h'";
        assert_eq!(failed_line_number(legacy), Some(2));
        let nft = "iptables-nft-restore v1.8.9 (nf_tables): \nline 27: CHAIN_DEL failed \
                   (Device or resource busy): chain X";
        assert_eq!(failed_line_number(nft), Some(27));
        assert_eq!(
            failed_line_number("iptables-restore: line 27 failed"),
            Some(27)
        );
        assert_eq!(failed_line_number("something else"), None);
    }

    #[test]
    fn a_missing_program_is_not_found() {
        assert!(find_program("gateway-init-no-such-program").is_none());
        assert!(find_program("sh").is_some());
    }
}
