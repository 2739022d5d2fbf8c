//! Compiles `../proto` with protox (pure Rust: no system protoc) into prost/tonic code, and writes
//! the encoded descriptor set that the gRPC server serves through reflection.
use std::{env, fs, path::PathBuf};

use prost::Message;

const FILES: &[&str] = &[
    "nanodb/v1/kv.proto",
    "nanodb/v1/watch.proto",
    "nanodb/v1/admin.proto",
    "nanodb/v1/auth.proto",
    "nanodb/v1/cluster.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let fds = protox::Compiler::new([&proto_root])?
        .include_source_info(true)
        .include_imports(true)
        .open_files(FILES)?
        .file_descriptor_set();

    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("nanodb_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        // `bytes::Bytes` for every bytes field: the server hands values out of the engine without copying.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
