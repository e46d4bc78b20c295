//! Compiles `proto/` with protox (pure Rust: no system `protoc`), generates the
//! tonic client and server, and writes the descriptor set for server reflection.
use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["weave/v1/weave.proto"], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("weave_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // These carry secrets: their Debug impls (in lib.rs) redact them.
        .skip_debug([
            ".weave.v1.JoinRequest",
            ".weave.v1.JoinResponse",
            ".weave.v1.CreateTokenResponse",
            ".weave.v1.RotateAdminCredentialResponse",
        ])
        .compile_fds(fds)?;
    Ok(())
}
