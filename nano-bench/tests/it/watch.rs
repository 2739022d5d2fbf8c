//! The change feed under load: `--watchers` against NanoDB's gRPC frontend (in-process), and
//! `watch-latency` against NanoDB (every write protocol) and against a stub that loses an event.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use nano_bench::cli::{Cli, Cmd, WatchLatencyArgs};
use nanodb_server::config::{Config, ListenAddr};
use nanodb_server::server::Server;

use crate::{args, stubs};

fn on() -> ListenAddr {
    ListenAddr::On("127.0.0.1:0".into())
}

/// NanoDB with every frontend on a free port.
async fn server() -> Server {
    Server::start(Config {
        grpc_addr: on(),
        tcp_addr: on(),
        resp_addr: on(),
        http_addr: on(),
        ..Config::all_off()
    })
    .await
    .expect("server starts")
}

fn subscribers(server: &Server) -> usize {
    server.feed().stats().subscribers.load(Ordering::Relaxed)
}

fn latency_args(flags: &[&str]) -> WatchLatencyArgs {
    let mut argv = vec!["nano-bench", "watch-latency"];
    argv.extend_from_slice(flags);
    match Cli::try_parse_from(argv).expect("flags parse").command {
        Some(Cmd::WatchLatency(w)) => w,
        other => panic!("not watch-latency: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watchers_stay_open_for_the_whole_run_and_close_after_it() {
    let server = server().await;
    let (tcp, grpc) = (server.addrs().tcp.expect("tcp").to_string(), server.addrs().grpc.expect("grpc"));
    // the most subscribers the server had at once while the benchmark ran
    let (peak, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let hub = server.feed().clone();
    let poll = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(hub.stats().subscribers.load(Ordering::Relaxed), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let grpc = grpc.to_string();
    let a = args(&[
        "--target",
        &tcp,
        "--protocol",
        "tcp",
        "--workload",
        "set",
        "--concurrency",
        "4",
        "--keyspace",
        "100",
        "--duration",
        "300ms",
        "--watchers",
        "120",
        "--watch-addr",
        &grpc,
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    done.store(true, Ordering::Relaxed);
    poll.await.expect("poller");
    assert_eq!((s.watchers, s.errors), (120, 0), "{:?}", s.errors_by_kind);
    assert!(s.requests > 0);
    assert_eq!(peak.load(Ordering::Relaxed), 120, "every watcher was registered during the run");
    // the idle keys are never written: the workload's keys are all there is
    assert!(server.engine().key_count() <= 100);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while subscribers(&server) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "watchers still open: {}", subscribers(&server));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // and over gRPC alone, the watchers default to --target
    let a = args(&[
        "--target",
        &grpc,
        "--protocol",
        "grpc",
        "--workload",
        "set",
        "--requests",
        "20",
        "--watchers",
        "3",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!((s.watchers, s.requests, s.errors), (3, 50 * 20, 0));
    assert!(server.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_stream_ending_mid_run_fails_the_run() {
    // writes go to one server, the watchers to another that shuts down mid-run
    let (writes, watches) = (server().await, server().await);
    let tcp = writes.addrs().tcp.expect("tcp").to_string();
    let grpc = watches.addrs().grpc.expect("grpc").to_string();
    let a = args(&[
        "--target",
        &tcp,
        "--protocol",
        "tcp",
        "--workload",
        "set",
        "--concurrency",
        "2",
        "--duration",
        "1500ms",
        "--watchers",
        "4",
        "--watch-addr",
        &grpc,
    ]);
    let run = tokio::spawn(async move { nano_bench::bench(&a, false).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while subscribers(&watches) < 4 {
        assert!(tokio::time::Instant::now() < deadline, "watchers never registered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(watches.shutdown().await);
    let err = run.await.expect("joins").expect_err("the run fails");
    assert!(format!("{err:#}").contains("--watchers"), "{err:#}");
    // and a watcher that cannot be opened fails the run before it starts
    let a = args(&["--target", &tcp, "--protocol", "tcp", "--watchers", "1", "--watch-addr", &grpc]);
    assert!(nano_bench::bench(&a, false).await.is_err());
    assert!(writes.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_latency_records_exactly_the_events_written_over_every_protocol() {
    let server = server().await;
    let addrs = server.addrs();
    let grpc = addrs.grpc.expect("grpc").to_string();
    for (proto, target) in [
        ("tcp", addrs.tcp.expect("tcp").to_string()),
        ("resp", addrs.resp.expect("resp").to_string()),
        ("http", addrs.http.expect("http").to_string()),
        ("grpc", grpc.clone()),
    ] {
        let w = latency_args(&[
            "--target",
            &grpc,
            "--write-protocol",
            proto,
            "--write-target",
            &target,
            "--concurrency",
            "2",
            "--rate",
            "400",
            "--duration",
            "500ms",
            "--keyspace",
            "50",
            "--key-prefix",
            &format!("lat:{proto}:"),
        ]);
        let (s, hist) = nano_bench::watch::latency(&w).await.expect("runs");
        let e = s.events.clone().expect("event counts");
        // 400/s for 0.5 s; fewer only if this busy machine stalled the writers near the end
        assert!((100..=201).contains(&e.written), "{proto}: {e:?}");
        assert_eq!(
            (e.acknowledged, e.received, e.recorded, e.missing, e.duplicates),
            (e.written, e.written, e.written, 0, 0),
            "{proto}"
        );
        assert_eq!(
            (s.errors, s.requests, hist.len()),
            (0, e.written, e.written),
            "{proto}: {:?}",
            s.errors_by_kind
        );
        assert!(s.latency_us.p50 >= 1 && s.latency_us.max >= s.latency_us.p99, "{proto}");
        assert_eq!(s.protocol, proto);
    }
    // the watcher was closed with its run
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while subscribers(&server) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "watch still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_events_are_checked_but_not_recorded() {
    let (addr, _store) = stubs::grpc().await;
    let addr = addr.to_string();
    let w = latency_args(&[
        "--target",
        &addr,
        "--rate",
        "200",
        "--warmup",
        "250ms",
        "--duration",
        "250ms",
        "--drain",
        "2s",
    ]);
    let (s, _) = nano_bench::watch::latency(&w).await.expect("runs");
    let e = s.events.expect("event counts");
    assert_eq!((e.received, e.missing, s.errors), (e.written, 0, 0), "{:?}", s.errors_by_kind);
    assert!((50..=101).contains(&e.written), "200/s for 0.5 s: {e:?}");
    assert!(e.recorded > 0 && e.recorded < e.written, "the warm-up's events are not recorded: {e:?}");
    assert_eq!(s.requests, e.recorded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_event_is_an_error() {
    let (addr, _store) = stubs::grpc_dropping(Some(5)).await;
    let addr = addr.to_string();
    let w = latency_args(&["--target", &addr, "--rate", "200", "--duration", "300ms", "--drain", "300ms"]);
    let (s, _) = nano_bench::watch::latency(&w).await.expect("runs");
    let e = s.events.clone().expect("event counts");
    assert!(e.written > 10, "{e:?}");
    assert_eq!((e.missing, e.received, e.acknowledged), (1, e.written - 1, e.written));
    assert_eq!(s.errors_by_kind.get("missing event"), Some(&1), "{:?}", s.errors_by_kind);
    assert_eq!(s.errors, 1);

    // and the command exits with the request-errors code, its JSON saying what went missing
    let dir = std::env::temp_dir().join(format!("nano-bench-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let json = dir.join("lat.json");
    let cli = Cli::try_parse_from([
        "nano-bench",
        "watch-latency",
        "--target",
        &addr,
        "--rate",
        "200",
        "--duration",
        "300ms",
        "--drain",
        "300ms",
        "--json",
        json.to_str().expect("utf8"),
    ])
    .expect("parses");
    let code = tokio::task::spawn_blocking(move || nano_bench::run(cli)).await.expect("joins").expect("runs");
    assert_eq!(code, ExitCode::from(nano_bench::EXIT_REQUEST_ERRORS));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json");
    assert_eq!(v["events"]["missing"].as_u64(), Some(1), "{v}");
    assert_eq!(v["watchers"].as_u64(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}
