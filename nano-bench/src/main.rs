//! nano-bench: NanoDB's load generator. Parses the command line and hands over to [`nano_bench::run`].
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = nano_bench::cli::Cli::parse();
    match nano_bench::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nano-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
