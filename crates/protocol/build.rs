//! Compiles `proto/` with the protoc binary vendored by `protoc-bin-vendored`, never the system's.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        root.join("taurus/v1/taurus.proto"),
        root.join("taurus/internal/v1/raft.proto"),
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("taurus_descriptor.bin"))
        .compile_protos(&files, std::slice::from_ref(&root))?;
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    Ok(())
}
