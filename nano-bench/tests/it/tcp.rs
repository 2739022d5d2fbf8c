//! Against NanoDB's binary TCP frontend, started in-process.

use nanodb_protocol::cmd;
use std::process::ExitCode;

use clap::Parser;
use nano_bench::cli::Cli;
use nanodb_server::config::{Config, ListenAddr};
use nanodb_server::server::Server;

use crate::args;

async fn tcp_server() -> (Server, String) {
    let server =
        Server::start(Config { tcp_addr: ListenAddr::On("127.0.0.1:0".into()), ..Config::all_off() })
            .await
            .expect("server starts");
    let addr = server.addrs().tcp.expect("tcp bound").to_string();
    (server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn populate_then_mixed_load_hits_every_key() {
    let (server, addr) = tcp_server().await;
    let a = args(&[
        "--target",
        &addr,
        "--protocol",
        "tcp",
        "--concurrency",
        "4",
        "--pipeline",
        "8",
        "--requests",
        "300",
        "--workload",
        "mixed",
        "--read-ratio",
        "0.8",
        "--keyspace",
        "500",
        "--populate",
        "--key-dist",
        "zipf",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!(s.requests, 4 * 300, "exactly --requests per virtual user");
    assert_eq!((s.errors, s.misses), (0, 0), "{:?}", s.errors_by_kind);
    assert_eq!(server.engine().key_count(), 500, "--populate wrote the whole keyspace");
    assert!(s.ops_per_sec > 0.0 && s.latency_us.p50 >= 1 && s.latency_us.max >= s.latency_us.p99);
    let served = server.stats().ops(nanodb_server::stats::Protocol::Tcp);
    assert!(served >= 1200 + 500, "the server saw every request: {served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_connections_carry_their_users_pipelines() {
    let (server, addr) = tcp_server().await;
    let a = args(&[
        "--target",
        &addr,
        "--concurrency",
        "6",
        "--connections",
        "2",
        "--pipeline",
        "4",
        "--requests",
        "50",
        "--workload",
        "incr",
        "--keyspace",
        "1",
        "--key-prefix",
        "counter",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!((s.requests, s.errors, s.connections), (300, 0, 2));
    // every increment landed on the one key
    let reply = server
        .engine()
        .apply_command(
            nanodb_protocol::Command::Get(cmd::Get {
                key: bytes::Bytes::from_static(b"counter000000000000"),
            }),
            &mut nanodb_server::engine::LogPosition::default(),
        )
        .expect("get");
    match reply {
        nanodb_protocol::Reply::Value(Some(e)) => assert_eq!(&e.value[..], b"300"),
        other => panic!("expected the counter, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_run_with_warmup_writes_every_report() {
    let (_server, addr) = tcp_server().await;
    let dir = std::env::temp_dir().join(format!("nano-bench-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let (json, hgrm, svg) = (dir.join("r.json"), dir.join("r.hgrm"), dir.join("r.svg"));
    let cli = Cli::try_parse_from([
        "nano-bench",
        "--no-progress",
        "--target",
        &addr,
        "--concurrency",
        "2",
        "--duration",
        "300ms",
        "--warmup",
        "100ms",
        "--workload",
        "set",
        "--json",
        json.to_str().expect("utf8"),
        "--hdr-out",
        hgrm.to_str().expect("utf8"),
        "--plot",
        svg.to_str().expect("utf8"),
    ])
    .expect("parses");
    // `run` builds its own runtime: call it off this one
    let code = tokio::task::spawn_blocking(move || nano_bench::run(cli)).await.expect("joins").expect("runs");
    assert_eq!(code, ExitCode::SUCCESS);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json");
    for field in ["protocol", "target", "workload", "requests", "errors", "duration_s", "ops_per_sec"] {
        assert!(!v[field].is_null(), "--json lacks {field}: {v}");
    }
    for field in ["p50", "p90", "p99", "p999", "p9999", "max", "mean"] {
        assert!(v["latency_us"][field].is_number(), "--json lacks latency_us.{field}: {v}");
    }
    assert_eq!((v["protocol"].as_str(), v["workload"].as_str()), (Some("tcp"), Some("set")));
    let d = v["duration_s"].as_f64().expect("duration");
    assert!((0.29..1.5).contains(&d), "measured time excludes the warm-up: {d}");
    let h = std::fs::read_to_string(&hgrm).expect("hgrm written");
    assert!(h.contains("1/(1-Percentile)") && h.contains("#[Max"), "{h}");
    let plot = std::fs::read_to_string(&svg).expect("svg written");
    assert!(plot.starts_with("<svg") && plot.contains("99.9%") && plot.contains("50%"), "svg labels");

    // and the plot subcommand draws several runs into one chart
    let cmp = dir.join("cmp.svg");
    let cli = Cli::try_parse_from([
        "nano-bench",
        "plot",
        "--json",
        json.to_str().expect("utf8"),
        "--json",
        json.to_str().expect("utf8"),
        "--out",
        cmp.to_str().expect("utf8"),
    ])
    .expect("parses");
    let code = tokio::task::spawn_blocking(move || nano_bench::run(cli)).await.expect("joins").expect("runs");
    assert_eq!(code, ExitCode::SUCCESS);
    // one more curve and one more legend mark than the single-run plot
    let lines = |svg: &str| svg.matches("<polyline").count();
    assert_eq!(lines(&std::fs::read_to_string(&cmp).expect("svg")), lines(&plot) + 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_refused_connection_is_one_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }; // closed again: nothing listens there now
    let target = format!("127.0.0.1:{port}");
    for proto in ["tcp", "resp", "http", "grpc"] {
        let a = args(&["--target", &target, "--protocol", proto, "--requests", "1"]);
        let err = nano_bench::bench(&a, false).await.expect_err("must fail");
        let msg = format!("{err:#}");
        assert!(msg.starts_with(&format!("cannot connect to {target} ({proto})")), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn populate_counts_the_keys_it_writes_for_the_progress_bar() {
    use std::sync::atomic::{AtomicU64, Ordering};

    use nano_bench::cli::Protocol;
    use nano_bench::client::{Connector, Pool};
    use nano_bench::workload::Workload;

    let (server, addr) = tcp_server().await;
    let pool =
        Pool::open(Connector { protocol: Protocol::Tcp, target: addr, tls: None, credentials: None }, 1)
            .await
            .expect("pool");
    let mut conn = pool.connect(0).await.expect("connects");
    let workload = Workload::from_args(&args(&["--keyspace", "1000"]));
    let written = AtomicU64::new(0);
    nano_bench::runner::populate_any(&mut conn, &workload, 100..1000, 64, &written).await.expect("populates");
    assert_eq!(written.load(Ordering::Relaxed), 900);
    assert_eq!(server.engine().key_count(), 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_says_where_its_files_were_written() {
    let (_server, addr) = tcp_server().await;
    let dir = std::env::temp_dir().join(format!("nano-bench-it-written-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let (json, hgrm, svg) = (dir.join("r.json"), dir.join("r.hgrm"), dir.join("r.svg"));
    let flags: Vec<String> = [
        "--no-progress",
        "--target",
        &addr,
        "--requests",
        "50",
        "--json",
        json.to_str().expect("utf8"),
        "--hdr-out",
        hgrm.to_str().expect("utf8"),
        "--plot",
        svg.to_str().expect("utf8"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        crate::run_binary(&flags.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("joins");
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    for want in [
        format!("result written to {}", json.display()),
        format!("percentile spectrum written to {}", hgrm.display()),
        format!("latency plot written to {}", svg.display()),
    ] {
        assert!(lines.contains(&want.as_str()), "no line {want:?} in:\n{stdout}");
    }
    let plot = std::fs::read_to_string(&svg).expect("svg written");
    assert!(plot.contains("(get, ") && plot.contains(" ops/s)"), "legend with workload and ops/s");
    let _ = std::fs::remove_dir_all(&dir);
}
