//! nano-bench: NanoDB's load generator. Its real implementation is issue #6; until then this binary
//! says so plainly instead of pretending to measure anything.
use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("nano-bench is not built yet (issue #6); measure with redis-benchmark, wrk or h2load for now");
    ExitCode::from(2)
}
