//! nano-bench's integration suite: it runs the real benchmark loop briefly against servers started
//! in-process on 127.0.0.1:0 — NanoDB itself where the frontend exists on this branch (tcp), and
//! small stub servers answering the documented routes elsewhere (resp, grpc, http), plus a RESP
//! stub that stalls, to check the open-loop schedule. `mismatch` points every protocol at every
//! other frontend of one NanoDB: the run must stop before it starts, with one line.

mod grpc;
mod http;
mod mismatch;
mod resp;
mod scheduler;
mod stubs;
mod tcp;
mod watch;

use clap::Parser;
use nano_bench::cli::{BenchArgs, Cli};

/// Benchmark arguments as a user would type them (after `nano-bench`).
pub fn args(flags: &[&str]) -> BenchArgs {
    let mut argv = vec!["nano-bench", "--no-progress"];
    argv.extend_from_slice(flags);
    Cli::try_parse_from(argv).expect("flags parse").bench
}
