//! Generates the gRPC code for the mesh's protocols from `proto/` at build time.
//! protox parses the files in Rust, so the build needs no `protoc`.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    // Istio's CA: the sds-agent calls it, the test CA serves it.
    generate("istio/security/v1alpha1/ca.proto", true)?;
    // SPIFFE Workload API: the sds-agent reads it through the `spiffe` crate's own
    // client; only the test double's server side is needed here.
    generate("spiffe/workload.proto", false)?;
    Ok(())
}

fn generate(proto: &str, client: bool) -> Result<(), Box<dyn Error>> {
    let files = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(client)
        // Test doubles implement only the calls they stand in for; the rest answer
        // UNIMPLEMENTED, as a real server without that method would.
        .generate_default_stubs(true)
        .compile_fds(files)?;
    Ok(())
}
