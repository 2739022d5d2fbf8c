//! Compiles the trimmed etcd v3 protos in `proto/` (KV Range and Put, for `--protocol etcd`) with
//! protox, pure Rust like the protocol crate's build: no system protoc.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::Compiler::new([&root])?
        .include_imports(true)
        .open_files(["etcdserverpb/rpc.proto", "mvccpb/kv.proto"])?
        .file_descriptor_set();
    // the server half serves the integration tests' stub etcd
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
