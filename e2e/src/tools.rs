//! Where the real components installed by `scripts/install-tools` live.

use std::path::PathBuf;

/// The tools bin directory: `$MESHGATE_TOOLS`, else `<workspace>/.cache/tools/bin`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("MESHGATE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/tools/bin"))
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
