//! `gateway validate`: the whole pipeline of a reload (parse, translate, data-plane build)
//! run offline, printing each object's conditions and every error.

use std::path::Path;
use std::sync::Arc;

use crate::translate::status::ConditionType;
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
    for (obj, st) in &out.status.objects {
        let conds = st
            .conditions
            .iter()
            .chain(st.parents.values().flatten())
            .chain(st.listeners.values().flat_map(|l| l.conditions.iter()));
        let rejected = conds
            .clone()
            .any(|c| c.kind == ConditionType::Accepted && !c.status);
        println!(
            "{obj}: {}",
            if rejected {
                "Accepted=False"
            } else {
                "Accepted"
            }
        );
        for (name, l) in &st.listeners {
            println!("  listener {name}: attachedRoutes={}", l.attached_routes);
        }
    }
    for w in &out.config.warnings {
        eprintln!("warning: {w}");
    }
    let (ir, _) = match out.accepted() {
        Ok(ok) => ok,
        Err(errors) => {
            errors.0.iter().for_each(|e| eprintln!("error: {e}"));
            return false;
        }
    };
    if let Err(e) = dataplane::build(Arc::new(ir)) {
        e.0.iter().for_each(|e| eprintln!("error: {e}"));
        return false;
    }
    println!("{}: configuration is valid", path.display());
    true
}
