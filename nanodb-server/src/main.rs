//! `nanodb-server`: flags -> configuration -> logging -> [`server::run`] until SIGINT/SIGTERM (or,
//! with `--restore-from`, [`restore::run`] and exit).

use std::io::IsTerminal;
use std::process::ExitCode;

use nanodb_server::config::{self, ConfigError};
use nanodb_server::{restore, server};
use tracing_subscriber::EnvFilter;

/// mimalloc: fast small allocations from many threads, and exact size classes (8-byte steps to 64,
/// then 80, 96, 112, 128, ...) for the small entries a key-value store is made of: a 16-byte key
/// with a 64-byte value is one 96-byte block (see [`nanodb_server::allocator`]).
#[global_allocator]
static GLOBAL: nanodb_server::allocator::Mimalloc = nanodb_server::allocator::Mimalloc;

fn main() -> ExitCode {
    let config = match config::load(std::env::args_os()) {
        Ok(c) => c,
        Err(ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("nanodb-server: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = match EnvFilter::try_new(&config.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("nanodb-server: --log-level '{}': {e}", config.log_level);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    if config.restore_from.is_some() {
        // Offline: seed the data directory from a backup, then exit (see `restore`).
        return match restore::run(&config) {
            Ok(restored) => {
                println!("{restored}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nanodb-server: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nanodb-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nanodb-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
