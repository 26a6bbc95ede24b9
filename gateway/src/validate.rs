//! `gateway validate`: the whole pipeline of a reload (parse, translate, data-plane build)
//! run offline, printing each object's conditions and every error.

use std::path::Path;
use std::sync::Arc;

use crate::translate::status::{Condition, Report};
use crate::translate::{self, TranslateOptions};
use crate::{dataplane, providers};

/// Checks a config path; prints conditions to stdout and errors to stderr. Returns
/// whether a reload would accept it.
pub fn run(path: &Path, opts: &TranslateOptions, max_bytes: u64) -> bool {
    let snap = match providers::file::load(path, max_bytes) {
        Ok(s) => s,
        Err(e) => {
            e.0.iter().for_each(|e| eprintln!("error: {e}"));
            return false;
        }
    };
    let out = translate::translate(&snap, opts);
    print_conditions(&out.status);
    for w in &out.config.warnings {
        eprintln!("warning: {w}");
    }
    out.errors.iter().for_each(|e| eprintln!("error: {e}"));
    let clean = out.errors.is_empty();
    let (ir, _) = match out.accepted() {
        Ok(ok) => ok,
        Err(errors) => {
            errors
                .0
                .iter()
                .take(1)
                .for_each(|e| eprintln!("error: {e}"));
            return false;
        }
    };
    let tables = dataplane::build(Arc::new(ir));
    for (listener, why) in &tables.unprogrammed {
        eprintln!("error: listener {listener} cannot be programmed: {why}");
    }
    if clean && tables.unprogrammed.is_empty() {
        println!("{}: configuration is valid", path.display());
        true
    } else {
        false
    }
}

/// One line per object and per listener or parent, with each condition and its reason.
fn print_conditions(report: &Report) {
    let line = |c: &Condition| format!("{:?}={} ({:?})", c.kind, c.status, c.reason);
    for (obj, st) in &report.objects {
        let conds: Vec<String> = st.conditions.iter().map(line).collect();
        println!("{obj}: {}", conds.join(" "));
        for (name, l) in &st.listeners {
            let conds: Vec<String> = l.conditions.iter().map(line).collect();
            println!(
                "  listener {name}: attachedRoutes={} {}",
                l.attached_routes,
                conds.join(" ")
            );
        }
        for (parent, cs) in &st.parents {
            let conds: Vec<String> = cs.iter().map(line).collect();
            println!("  parent {parent}: {}", conds.join(" "));
        }
    }
}
