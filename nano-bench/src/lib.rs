//! nano-bench: NanoDB's load generator (issue #6).
//!
//! - [`cli`]: the command line (flag names are part of the product).
//! - [`workload`]: operations, key distributions (uniform, zipf) and values.
//! - [`client`]: one [`client::Conn`] interface, one implementation per protocol.
//! - [`runner`]: workers, closed and open loop, coordinated-omission correction.
//! - [`report`]: summary table, `--json`, `--hdr-out`, `--plot`.
//! - [`progress`]: the live progress bar.
//! - [`watch`]: the change feed under load: `--watchers` and `watch-latency`.
//!
//! [`run`] is what the binary calls; [`bench`] runs one benchmark and returns its [`report::Summary`].

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub mod cli;
pub mod client;
pub mod progress;
pub mod report;
pub mod runner;
pub mod watch;
pub mod workload;

use cli::{BenchArgs, Cli, Cmd, Protocol, WatchLatencyArgs};
use client::{Connector, Pool};
use report::Summary;
use runner::{Clock, Live, Plan, WorkerResult};
use workload::{Generator, Workload};

/// Exit code when the run completed but some requests failed.
pub const EXIT_REQUEST_ERRORS: u8 = 2;

/// Default measured time when neither `--duration` nor `--requests` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Runs the command line: a benchmark (exit 0, or [`EXIT_REQUEST_ERRORS`] when requests failed)
/// or a subcommand. Setup failures (bad flags, a refused connection) are errors.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(Cmd::Plot(p)) = &cli.command {
        let runs = p.json.iter().map(|f| report::read_json(f)).collect::<anyhow::Result<Vec<_>>>()?;
        report::plot(&runs, &p.out, &p.title)?;
        println!("latency plot written to {}", p.out.display());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Cmd::WatchLatency(w)) = &cli.command {
        return run_watch_latency(w);
    }
    let args = cli.bench;
    args.validate().map_err(anyhow::Error::msg)?;
    let rt = runtime(args.threads)?;
    let show = progress::wanted(args.no_progress);
    let (summary, hist) = rt.block_on(bench_with_histogram(&args, show))?;
    print!("{}", report::table(&summary));
    write_outputs(&summary, &hist, args.json.as_deref(), args.hdr_out.as_deref())?;
    if let Some(path) = &args.plot {
        report::plot(std::slice::from_ref(&summary), path, "Latency by percentile")?;
        println!("latency plot written to {}", path.display());
    }
    Ok(if summary.errors > 0 { ExitCode::from(EXIT_REQUEST_ERRORS) } else { ExitCode::SUCCESS })
}

/// Writes `--json` and `--hdr-out` if asked, saying where each went.
fn write_outputs(
    summary: &Summary,
    hist: &hdrhistogram::Histogram<u64>,
    json: Option<&std::path::Path>,
    hdr_out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        report::write_json(summary, path)?;
        println!("result written to {}", path.display());
    }
    if let Some(path) = hdr_out {
        std::fs::write(path, report::hgrm(hist)).with_context(|| format!("writing {}", path.display()))?;
        println!("percentile spectrum written to {}", path.display());
    }
    Ok(())
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all().build().context("starting the runtime")
}

/// `nano-bench watch-latency`: exit 0, or [`EXIT_REQUEST_ERRORS`] when an event was missing or
/// anything else went wrong in the run.
fn run_watch_latency(args: &WatchLatencyArgs) -> anyhow::Result<ExitCode> {
    args.validate().map_err(anyhow::Error::msg)?;
    let (summary, hist) = runtime(args.threads)?.block_on(watch::latency(args))?;
    print!("{}", report::table(&summary));
    write_outputs(&summary, &hist, args.json.as_deref(), args.hdr_out.as_deref())?;
    Ok(if summary.errors > 0 { ExitCode::from(EXIT_REQUEST_ERRORS) } else { ExitCode::SUCCESS })
}

/// How many virtual users worker `i` of `workers` carries, `users` in all.
fn users_of(i: usize, workers: usize, users: usize) -> usize {
    users / workers + usize::from(i < users % workers)
}

/// Runs one benchmark and returns its summary (and the merged histogram, for `--hdr-out`).
pub async fn bench_with_histogram(
    args: &BenchArgs,
    show_progress: bool,
) -> anyhow::Result<(Summary, hdrhistogram::Histogram<u64>)> {
    args.validate().map_err(anyhow::Error::msg)?;
    // the watchers are registered before the first request and outlive the last one
    let watchers = match args.watchers {
        0 => None,
        n => Some(watch::IdleWatchers::open(&args.watch_target(), n).await?),
    };
    let connections = args.effective_connections();
    let pool = Pool::open(
        Connector {
            protocol: args.protocol,
            target: args.target_addr().to_string(),
            tls: args.ca.as_deref().map(client::tls::TlsClient::new).transpose()?,
            credentials: args
                .password
                .as_ref()
                .map(|p| client::Credentials { user: args.user.clone(), password: p.clone() }),
        },
        connections,
    )
    .await?;
    let workers = match args.protocol {
        Protocol::Tcp | Protocol::Resp => connections,
        Protocol::Grpc | Protocol::Etcd | Protocol::Http => args.concurrency,
    };
    let conns = futures::future::try_join_all((0..workers).map(|i| pool.connect(i))).await?;
    let workload = Arc::new(Workload::from_args(args));

    // --populate: every key once, split over the connections, before the clock starts
    let conns = if args.populate {
        let per = args.keyspace.div_ceil(workers as u64);
        let written = Arc::new(AtomicU64::new(0));
        let bar_done = CancellationToken::new();
        let bar = show_progress
            .then(|| tokio::spawn(progress::populate(written.clone(), args.keyspace, bar_done.clone())));
        let tasks = conns.into_iter().enumerate().map(|(i, mut c)| {
            let (w, written) = (workload.clone(), written.clone());
            let range = (i as u64 * per).min(w.keyspace)..((i as u64 + 1) * per).min(w.keyspace);
            tokio::spawn(
                async move { runner::populate_any(&mut c, &w, range, 64, &written).await.map(|()| c) },
            )
        });
        let mut out = Ok(Vec::with_capacity(workers));
        for t in tasks {
            match (t.await.context("populate task").and_then(|r| r), &mut out) {
                (Ok(c), Ok(conns)) => conns.push(c),
                // the first failure is the error; the bar is cleared before it is printed
                (Err(e), Ok(_)) => out = Err(e),
                (_, Err(_)) => {}
            }
        }
        bar_done.cancel();
        if let Some(b) = bar {
            let _ = b.await;
        }
        out?
    } else {
        conns
    };

    let duration = match (args.duration, args.requests) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_DURATION),
    };
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let clock = Arc::new(Clock {
        start,
        measure_from,
        end: duration.map(|d| measure_from + d),
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
    });
    if let Some(end) = clock.end {
        let abort = clock.abort.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(end + runner::DRAIN).await;
            abort.cancel();
        });
    }
    {
        // Ctrl-C: stop issuing, report what was measured; replies still missing after DRAIN are lost
        let (stop, abort) = (clock.stop.clone(), clock.abort.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
                tokio::time::sleep(runner::DRAIN).await;
                abort.cancel();
            }
        });
    }
    let live: Arc<Vec<Live>> = Arc::new((0..workers).map(|_| Live::default()).collect());
    let bar_done = CancellationToken::new();
    let bar = show_progress.then(|| {
        let goal = match (duration, args.requests) {
            (Some(d), _) => progress::Goal::Time(d + args.warmup),
            (None, Some(n)) => progress::Goal::Requests(n * args.concurrency as u64),
            (None, None) => progress::Goal::Time(DEFAULT_DURATION),
        };
        tokio::spawn(progress::run(live.clone(), goal, args.warmup, bar_done.clone()))
    });

    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let users = if workers == args.concurrency { 1 } else { users_of(i, workers, args.concurrency) };
            let rate = args.rate.map(|r| r * users as f64 / args.concurrency as f64);
            let phase =
                rate.map_or(Duration::ZERO, |r| Duration::from_secs_f64(i as f64 / workers as f64 / r));
            let plan = Plan {
                slots: users * args.pipeline,
                rate,
                phase,
                requests: args.requests.map(|n| n * users as u64),
            };
            let generator = Generator::new(workload.clone(), args.seed, i as u64);
            let (clock, live) = (clock.clone(), live.clone());
            tokio::spawn(async move { runner::drive_any(conn, generator, plan, &clock, &live[i]).await })
        })
        .collect();
    let mut total: Option<WorkerResult> = None;
    for h in handles {
        let r = h.await.context("worker task")?;
        match &mut total {
            None => total = Some(r),
            Some(t) => t.merge(&r),
        }
    }
    bar_done.cancel();
    if let Some(b) = bar {
        let _ = b.await;
    }
    let total = total.ok_or_else(|| anyhow::anyhow!("no workers ran"))?;
    let watchers = match watchers {
        Some(w) => w.finish().await?,
        None => 0,
    };
    let duration_s = total.last.map_or(0.0, |l| l.saturating_duration_since(measure_from).as_secs_f64());
    let errors = total.error_count();
    let summary = Summary {
        label: args.run_label(),
        protocol: args.protocol.name().to_string(),
        target: args.target_addr().to_string(),
        workload: args.workload.name().to_string(),
        requests: total.requests,
        errors,
        errors_by_kind: total.errors.clone(),
        misses: total.misses,
        duration_s,
        ops_per_sec: if duration_s > 0.0 { total.requests as f64 / duration_s } else { 0.0 },
        latency_us: report::latency(&total.hist),
        concurrency: args.concurrency,
        connections,
        pipeline: args.pipeline,
        rate: args.rate,
        keyspace: args.keyspace,
        value_size: args.value_size,
        key_dist: format!("{:?}", args.key_dist).to_lowercase(),
        spectrum: report::spectrum(&total.hist),
        watchers,
        events: None,
    };
    Ok((summary, total.hist))
}

/// Runs one benchmark and returns its summary.
pub async fn bench(args: &BenchArgs, show_progress: bool) -> anyhow::Result<Summary> {
    Ok(bench_with_histogram(args, show_progress).await?.0)
}
