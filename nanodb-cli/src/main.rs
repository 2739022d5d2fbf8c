//! `nanodb-cli`: parse the arguments, pick the output format, run one command, the shell, the bulk
//! loader or the monitor, and exit with 0 (success), 1 (the server said no), 2 (usage) or 3
//! (cannot connect).

mod args;
mod client;
mod grpc;
mod monitor;
mod output;
mod pipe;
mod repl;
mod run;
mod txn;
mod words;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Cmd, Format};
use client::{Client, Failure};
use output::Printer;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.pipe && cli.command.is_some() {
        eprintln!("nanodb-cli: (usage) --pipe reads its commands from stdin; give no command with it");
        return ExitCode::from(2);
    }
    let format =
        cli.output.unwrap_or(if std::io::stdout().is_terminal() { Format::Human } else { Format::Raw });
    let printer = Printer { format };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nanodb-cli: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match &cli.command {
        None if cli.pipe => {
            let mut stdout = std::io::stdout();
            match rt.block_on(pipe::run(&cli.conn, cli.pipe_batch as usize, &mut stdout)) {
                Ok(code) => code,
                Err(f) => fail(&f),
            }
        }
        None => repl::run(&rt, &cli.conn, printer),
        Some(Cmd::Monitor { interval }) => match rt.block_on(monitor::run(&cli.conn, *interval)) {
            Ok(()) => 0,
            Err(f) => fail(&f),
        },
        Some(Cmd::Stats) => {
            let mut stdout = std::io::stdout();
            let r = rt.block_on(async {
                let stats = grpc::stats(&cli.conn).await?;
                let out = printer.render(&output::Out::Json(grpc::stats_json(&stats)));
                std::io::Write::write_all(&mut stdout, &out)
                    .map_err(|e| Failure::Connect(format!("stdout: {e}")))
            });
            r.map_or_else(|f| fail(&f), |()| 0)
        }
        Some(command) => rt.block_on(async {
            let mut client = match Client::connect(&cli.conn).await {
                Ok(c) => c,
                Err(f) => return fail(&f),
            };
            let interrupt = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let mut stdout = std::io::stdout();
            match run::run(&mut client, &cli.conn, command, printer, &mut stdout, interrupt).await {
                Ok(()) => 0,
                Err(f) => fail(&f),
            }
        }),
    };
    ExitCode::from(code)
}

fn fail(f: &Failure) -> u8 {
    eprintln!("nanodb-cli: {}", f.message());
    f.exit_code()
}
