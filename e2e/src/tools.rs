//! Where the real components installed by `scripts/install-tools` live.

use std::path::PathBuf;

/// The tools bin directory: `$MESHGATE_TOOLS`, else `<workspace>/.cache/tools/bin`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("MESHGATE_TOOLS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join(".cache/tools/bin"),
    }
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}

/// Path of an installed tool; panics with the fix if it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: run scripts/install-tools (or set MESHGATE_TOOLS to its bin dir)",
        path.display()
    );
    path
}

/// `name` on `$PATH` (Debian packages such as shellcheck, curl, iptables), if there.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A tool from the tools directory, else from `$PATH`; panics with the fix if neither has it.
pub fn tool_or_system(name: &str) -> PathBuf {
    let own = bin_dir().join(name);
    if own.is_file() {
        return own;
    }
    on_path(name).unwrap_or_else(|| {
        panic!(
            "{name} not found in {} nor on PATH: run scripts/install-tools",
            bin_dir().display()
        )
    })
}

/// A binary of this workspace built in the same profile as the running test.
pub fn workspace_bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps, binaries one level up; a binary of
    // this crate (e.g. bench-mesh) sits beside them.
    let exe = std::env::current_exe().expect("current exe");
    let here = exe.parent().expect("exe dir");
    let path = [here, here.parent().unwrap_or(here)]
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| here.join(name));
    assert!(
        path.exists(),
        "{} not built: run `cargo build -p {name}` (cargo test --workspace builds it)",
        path.display()
    );
    path
}
