//! nano-bench's integration suite: it runs the real benchmark loop briefly against servers started
//! in-process on 127.0.0.1:0 — NanoDB itself where the frontend exists on this branch (tcp), and
//! small stub servers answering the documented routes elsewhere (resp, grpc, http), plus a RESP
//! stub that stalls, to check the open-loop schedule. `mismatch` points every protocol at every
//! other frontend of one NanoDB: the run must stop before it starts, with one line.

mod auth;
mod etcd;
mod grpc;
mod help;
mod http;
mod mismatch;
mod resp;
mod scheduler;
mod stubs;
mod tcp;
mod tls;
mod txn;
mod watch;

use clap::Parser;
use nano_bench::cli::{BenchArgs, Cli};

/// Benchmark arguments as a user would type them (after `nano-bench`).
pub fn args(flags: &[&str]) -> BenchArgs {
    let mut argv = vec!["nano-bench", "--no-progress"];
    argv.extend_from_slice(flags);
    Cli::try_parse_from(argv).expect("flags parse").bench
}

/// Runs the nano-bench binary as a user would: exit code, stdout, stderr.
pub fn run_binary(flags: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nano-bench"))
        .args(flags)
        .output()
        .expect("nano-bench runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}
