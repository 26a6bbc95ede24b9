//! Release builds of the `gateway` binary on x86_64 Linux are linked with the functions a
//! serving gateway executes placed first (`link/function-order.txt`, written by
//! `scripts/order-functions`), so they fill ~3 MiB of contiguous text instead of pages
//! spread over all 15 MiB: less resident memory, fewer instruction-TLB misses.
//!
//! Its relative relocations are packed (`-z pack-relative-relocs`, DT_RELR): the loader
//! reads 20k of them at start-up, and as RELA entries they were 0.5 MiB of the binary
//! kept resident for the process's life. The loader must be glibc >= 2.36 (Debian 12,
//! the distroless image); an older one refuses the binary by name (`GLIBC_ABI_DT_RELR`).
//!
//! Both need lld, the default linker of Rust (>= 1.90) on x86_64-unknown-linux-gnu; other
//! targets and debug builds link as usual. `MESHGATE_NO_FUNCTION_ORDER=1` turns both off
//! (for a linker other than lld).

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=link/function-order.txt");
    println!("cargo:rerun-if-env-changed=MESHGATE_NO_FUNCTION_ORDER");
    let target = env::var("TARGET").unwrap_or_default();
    let profile = env::var("PROFILE").unwrap_or_default();
    let off = env::var_os("MESHGATE_NO_FUNCTION_ORDER").is_some_and(|v| v != "0");
    if target != "x86_64-unknown-linux-gnu" || profile != "release" || off {
        return;
    }
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&manifest).join("link/function-order.txt");
    println!(
        "cargo:rustc-link-arg-bin=gateway=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    // Names that a later change renamed or inlined are expected: lld skips them.
    println!("cargo:rustc-link-arg-bin=gateway=-Wl,--no-warn-symbol-ordering");
    println!("cargo:rustc-link-arg-bin=gateway=-Wl,-z,pack-relative-relocs");
}
