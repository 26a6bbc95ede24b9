//! Golden tests of the planner: for each combination of options, the rendered
//! iptables-restore input (IPv4 and IPv6) must equal the file checked in under
//! `tests/golden/`. After a deliberate change, rewrite them with
//! `UPDATE_GOLDEN=1 cargo test -p gateway-init --test golden` and review the diff.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use gateway_init::annotations::Annotations;
use gateway_init::config::Options;
use gateway_init::plan::Plan;
use gateway_init::render;

#[path = "support/cases.rs"]
mod cases;

use cases::{CASES, Case};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn render_case(case: &Case) -> String {
    let mut argv = vec!["gateway-init"];
    argv.extend_from_slice(case.args);
    let options = Options::try_parse_from(&argv).expect("case arguments parse");
    let annotations = match case.annotations {
        Some(text) => Annotations::parse(Path::new("/etc/podinfo/annotations"), text).unwrap(),
        None => Annotations::default(),
    };
    let config = options.config_with(&annotations).expect("case validates");
    let plan = Plan::build(&config);
    let mut out = format!("# gateway-init {}\n", shell_words(case.args));
    if let Some(text) = case.annotations {
        out.push_str("# with the annotations file:\n");
        for line in text.lines() {
            out.push_str(&format!("#   {line}\n"));
        }
    }
    out.push_str(&render::dry_run(&[&plan.v4, &plan.v6]));
    out
}

fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(['*', ' ']) {
                format!("'{a}'")
            } else {
                (*a).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn planner_output_matches_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let dir = golden_dir();
    let mut failures = Vec::new();
    for case in CASES {
        let path = dir.join(format!("{}.rules", case.name));
        let actual = render_case(case);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}: differs from {}\n--- expected\n{expected}\n--- actual\n{actual}",
                case.name,
                path.display()
            )),
            Err(e) => failures.push(format!("{}: {}: {e}", case.name, path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(rewrite with UPDATE_GOLDEN=1 after checking the change is intended)",
        failures.join("\n")
    );
}

#[test]
fn every_golden_file_belongs_to_a_case() {
    let names: Vec<String> = CASES.iter().map(|c| format!("{}.rules", c.name)).collect();
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(names.contains(&name), "stale golden file {name}");
    }
}

#[test]
fn dry_run_of_the_binary_prints_the_planned_rules() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway-init"))
        .args(["--mode", "sidecar", "--dry-run", "--ipv6", "true"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let case = CASES.iter().find(|c| c.name == "sidecar-defaults").unwrap();
    let body: String = render_case(case)
        .lines()
        .skip_while(|l| l.starts_with("# gateway-init"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), body);
}

#[test]
fn invalid_values_fail_with_the_value_and_option_named() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway-init"))
        .args([
            "--mode",
            "sidecar",
            "--dry-run",
            "--exclude-outbound-ip-ranges",
            "10.0.0.0/8,10.0.0.300/32",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--exclude-outbound-ip-ranges"), "{stderr}");
    assert!(stderr.contains("`10.0.0.300/32`"), "{stderr}");
}
