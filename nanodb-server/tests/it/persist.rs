//! Durability end to end: restarts keep data, a full disk refuses writes but serves reads, and
//! `kill -9` at random moments (and at every step of a snapshot) loses no acknowledged write.

use nanodb_protocol::Expiry;
use nanodb_protocol::cmd;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nanodb_protocol::{Command, ErrorCode, ListEnd, PutCondition, Reply};
use nanodb_server::config::Config;
use nanodb_server::persist::FsyncPolicy;

use crate::crash::{ChildServer, Ledger, verify, writer, xorshift};
use crate::harness::{TcpClient, any_port, b, config, put, start};

fn persistent(dir: &Path, fsync: FsyncPolicy) -> Config {
    Config { tcp_addr: any_port(), persistence: true, data_dir: dir.to_path_buf(), fsync, ..config() }
}

#[tokio::test]
async fn a_restart_keeps_every_type_and_drops_what_expired_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    for fsync in [FsyncPolicy::No, FsyncPolicy::EverySec, FsyncPolicy::Always] {
        let server = start(persistent(dir.path(), fsync)).await;
        let mut c = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
        c.call(put("s", "\x00text")).await.expect("put");
        c.call(Command::Incr(cmd::Incr { key: b("n"), delta: 41 })).await.expect("incr");
        c.call(Command::HashSet(cmd::HashSet { key: b("h"), field: b("f"), value: b("v") }))
            .await
            .expect("hset");
        c.call(Command::ListPush(cmd::ListPush {
            key: b("l"),
            end: ListEnd::Front,
            values: vec![b("a"), b("b")],
        }))
        .await
        .expect("push");
        c.call(Command::Put(cmd::Put {
            key: b("gone"),
            value: b("v"),
            expiry: Expiry::from_put_ttl_ms(1),
            condition: PutCondition::Always,
        }))
        .await
        .expect("ttl");
        c.call(Command::Put(cmd::Put {
            key: b("kept"),
            value: b("v"),
            expiry: Expiry::from_put_ttl_ms(3_600_000),
            condition: PutCondition::Always,
        }))
        .await
        .expect("ttl");
        drop(c);
        server.shutdown().await;

        let server = start(persistent(dir.path(), fsync)).await;
        let mut c = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
        let Ok(Reply::Value(Some(s))) = c.call(Command::Get(cmd::Get { key: b("s") })).await else {
            panic!("s lost ({fsync})")
        };
        assert_eq!(s.value, b("\x00text"));
        assert_eq!(
            c.call(Command::Incr(cmd::Incr { key: b("n"), delta: 1 })).await,
            Ok(Reply::Int(42)),
            "{fsync}"
        );
        assert_eq!(
            c.call(Command::HashGet(cmd::HashGet { key: b("h"), field: b("f") })).await,
            Ok(Reply::Bytes(Some(b("v"))))
        );
        assert_eq!(
            c.call(Command::ListRange(cmd::ListRange { key: b("l"), start: 0, stop: -1 })).await,
            Ok(Reply::List(vec![b("b"), b("a")]))
        );
        assert_eq!(c.call(Command::Exists(cmd::Exists { key: b("gone") })).await, Ok(Reply::Bool(false)));
        let Ok(Reply::Int(ttl)) = c.call(Command::Ttl(cmd::Ttl { key: b("kept") })).await else { panic!() };
        assert!(ttl > 3_500_000, "the deadline is absolute and survives restarts: {ttl}");
        // Versions keep growing across restarts (no ABA for compare-and-set).
        let Ok(Reply::Put { version, .. }) = c.call(put("s", "new")).await else { panic!() };
        assert!(version > s.version);
        // Start the next policy from a clean slate.
        for k in ["s", "n", "h", "l", "kept"] {
            c.call(Command::Delete(cmd::Delete { key: b(k) })).await.expect("delete");
        }
        drop(c);
        server.shutdown().await;
    }
}

/// Without the `rocksdb` feature, `--storage rocksdb` stops the start-up with how to build it,
/// before the data directory is touched.
#[cfg(not(feature = "rocksdb"))]
#[tokio::test]
async fn storage_rocksdb_without_the_feature_is_refused_saying_how_to_build_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        storage: nanodb_server::config::Storage::Rocksdb,
        ..persistent(dir.path(), FsyncPolicy::Always)
    };
    let err = nanodb_server::server::Server::start(config).await.expect_err("refused").to_string();
    assert!(err.contains("built without RocksDB") && err.contains("--features rocksdb"), "{err}");
    assert_eq!(listing(dir.path()), Vec::<String>::new(), "nothing was written to the data dir");
}

#[tokio::test]
async fn a_full_disk_refuses_writes_on_every_request_and_keeps_serving_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(persistent(dir.path(), FsyncPolicy::EverySec)).await;
    let mut c = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
    c.call(put("before", "v")).await.expect("put");
    server.persistence().expect("persistence on").log().fail_next_write();
    let err = c.call(put("during", "v")).await.expect_err("not acknowledged");
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(err.to_string().contains("No space left"), "{err}");
    let err = c.call(Command::Incr(cmd::Incr { key: b("n"), delta: 1 })).await.expect_err("refused");
    assert_eq!(err.code(), ErrorCode::Unavailable, "every later write is refused");
    let Ok(Reply::Value(Some(v))) = c.call(Command::Get(cmd::Get { key: b("before") })).await else {
        panic!()
    };
    assert_eq!(v.value, b("v"), "reads keep working");
    assert_eq!(
        c.call(Command::Exists(cmd::Exists { key: b("n") })).await,
        Ok(Reply::Bool(false)),
        "the refused write changed nothing"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_write() {
    let mut rng = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_nanos()
        as u64
        | 1;
    let seed = rng;
    for fsync in ["always", "everysec"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut history: Vec<Ledger> = (0..4).map(|_| Ledger::default()).collect();
        for cycle in 0..6 {
            // Snapshot often in some cycles so kills also land during compaction.
            let every = if cycle % 2 == 0 { "16KiB" } else { "64MiB" };
            let server = ChildServer::start(dir.path(), fsync, &["--snapshot-every", every], None);
            let context = format!("fsync={fsync} cycle={cycle} seed={seed}");
            verify(server.addr, &history, &context).await;
            let run_for = Duration::from_millis(100 + xorshift(&mut rng) % 400);
            let until = Instant::now() + Duration::from_secs(10);
            let writers: Vec<_> =
                (0..4).map(|client| tokio::spawn(writer(server.addr, client, until))).collect();
            tokio::time::sleep(run_for).await; // the random moment of the crash, not a readiness wait
            server.kill9();
            for (client, w) in writers.into_iter().enumerate() {
                let ledger = w.await.expect("writer");
                for (k, v) in ledger.acked {
                    history[client].acked.insert(k, v);
                }
                for (k, v) in ledger.sent {
                    let e = history[client].sent.entry(k).or_default();
                    *e = (*e).max(v);
                }
            }
        }
        let server = ChildServer::start(dir.path(), fsync, &[], None);
        verify(server.addr, &history, &format!("fsync={fsync} final seed={seed}")).await;
        let acked: usize = history.iter().map(|l| l.acked.len()).sum();
        assert!(acked > 0, "the test wrote something");
        server.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_snapshot_step_recovers_everything_acknowledged() {
    for failpoint in [
        "snapshot-mid-write",
        "snapshot-before-fsync",
        "snapshot-before-rename",
        "snapshot-before-dir-fsync",
        "snapshot-after-rename",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server =
            ChildServer::start(dir.path(), "everysec", &["--snapshot-every", "8KiB"], Some(failpoint));
        let until = Instant::now() + Duration::from_secs(20);
        let ledger = writer(server.addr, 0, until).await;
        // The writer stops when the server dies at the failpoint.
        let status = server.child.wait().expect("wait");
        assert_eq!(status.code(), Some(101), "{failpoint}: the server stopped at the failpoint");
        assert!(ledger.acked.len() == 16, "{failpoint}: writes were acknowledged before the crash");
        let restarted = ChildServer::start(dir.path(), "everysec", &[], None);
        verify(restarted.addr, &[ledger], failpoint).await;
        restarted.kill9();
    }
}

#[tokio::test]
async fn after_a_log_failure_no_protocol_acknowledges_a_write_and_all_still_read() {
    use nanodb_protocol::pb::{self, kv_client::KvClient};
    use redis::AsyncCommands;

    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(Config {
        grpc_addr: any_port(),
        http_addr: any_port(),
        resp_addr: any_port(),
        ..persistent(dir.path(), FsyncPolicy::Always)
    })
    .await;
    let a = server.addrs();
    let mut tcp = TcpClient::connect(a.tcp.expect("tcp")).await;
    tcp.call(put("seen", "v")).await.expect("put before the failure");
    server.persistence().expect("on").log().fail_next_write();
    let err = tcp.call(put("lost", "v")).await.expect_err("the failing write is not acknowledged");
    assert_eq!(err.code(), ErrorCode::Unavailable);

    let mut grpc = KvClient::connect(format!("http://{}", a.grpc.expect("grpc"))).await.expect("grpc");
    let status = grpc
        .put(pb::PutRequest { key: b("g"), value: b("v"), ..Default::default() })
        .await
        .expect_err("gRPC write refused");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let got = grpc.get(pb::GetRequest { key: b("seen") }).await.expect("gRPC read").into_inner();
    assert!(got.found);

    let http = reqwest::Client::new();
    let base = format!("http://{}/v1/kv", a.http.expect("http"));
    let r = http.put(format!("{base}/h")).body("v").send().await.expect("http");
    assert_eq!(r.status(), 503, "REST write refused");
    let r = http.get(format!("{base}/seen")).send().await.expect("http");
    assert_eq!(r.status(), 200, "REST read works");

    let redis = redis::Client::open(format!("redis://{}/", a.resp.expect("resp"))).expect("redis");
    let mut resp = redis.get_multiplexed_async_connection().await.expect("resp");
    let refused: redis::RedisResult<()> = resp.set("r", "v").await;
    let e = refused.expect_err("RESP write refused");
    assert!(e.to_string().contains("unavailable"), "{e}");
    let v: String = resp.get("seen").await.expect("RESP read works");
    assert_eq!(v, "v");

    // Writes refused after the failure were never applied. (The one write whose log write failed
    // was applied in memory before the failure was known; it was not acknowledged and is not
    // durable: it is gone after a restart.)
    for k in ["g", "h", "r"] {
        assert_eq!(
            tcp.call(Command::Exists(cmd::Exists { key: b(k) })).await,
            Ok(Reply::Bool(false)),
            "{k} was never written"
        );
    }
    drop(tcp);
    server.shutdown().await;
}

/// The names of the files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_second_server_on_a_data_dir_in_use_is_refused_and_the_first_keeps_its_data() {
    use nanodb_server::persist::{LockError, PersistError};
    use nanodb_server::server::{Server, StartError};

    let dir = tempfile::tempdir().expect("tempdir");
    let first = start(persistent(dir.path(), FsyncPolicy::Always)).await;
    let addr = first.addrs().tcp.expect("tcp");
    let mut c = TcpClient::connect(addr).await;
    c.call(put("k", "before")).await.expect("put");
    let files = listing(dir.path());
    assert!(files.iter().any(|f| f == "LOCK"), "{files:?}");

    let Err(err) = Server::start(persistent(dir.path(), FsyncPolicy::Always)).await else {
        panic!("a second server started on a data dir in use")
    };
    let StartError::Persist(PersistError::Lock(LockError::Held { pid, .. })) = &err else {
        panic!("expected the lock error, got {err:?}")
    };
    assert_eq!(*pid, Some(std::process::id()), "the holder's PID, read from the lock file");
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "names the dir: {msg}");
    assert!(msg.contains(&format!("PID {}", std::process::id())), "names the holder: {msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");

    // The refused server read, wrote and deleted nothing: the first goes on as before.
    assert_eq!(listing(dir.path()), files, "the refused server touched the directory");
    assert_eq!(c.call(Command::Get(cmd::Get { key: b("k") })).await.map(value_of), Ok(Some("before".into())));
    c.call(put("k", "after")).await.expect("the first server still writes");
    first.shutdown().await;

    // Released at shutdown: a new server starts on the directory, with everything.
    let next = start(persistent(dir.path(), FsyncPolicy::Always)).await;
    let mut c = TcpClient::connect(next.addrs().tcp.expect("tcp")).await;
    assert_eq!(c.call(Command::Get(cmd::Get { key: b("k") })).await.map(value_of), Ok(Some("after".into())));
    next.shutdown().await;
}

fn value_of(r: Reply) -> Option<String> {
    match r {
        Reply::Value(v) => v.map(|e| String::from_utf8_lossy(&e.value).into_owned()),
        other => panic!("expected a value, got {other:?}"),
    }
}

/// Runs the server binary on `dir` expecting it to exit on its own within `within`; returns its
/// exit code and stderr. Killed (and the test failed) if it is still running then.
fn run_to_exit(dir: &Path, within: Duration) -> (Option<i32>, String) {
    let mut child = Process::new(env!("CARGO_BIN_EXE_nanodb-server"))
        .args(["--tcp-addr", "127.0.0.1:0", "--grpc-addr", "off", "--http-addr", "off", "--resp-addr", "off"])
        .args(["--log-level", "info", "--data-dir"])
        .arg(dir)
        .env_remove("NANODB_FAILPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nanodb-server");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the second server on a locked data dir was still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20)); // polling the child's exit, not the server
    };
    (status.code(), reader.join().expect("stderr reader"))
}

/// Connects within a deadline (the readiness probe).
async fn connect_within(addr: SocketAddr, within: Duration) -> TcpClient {
    let deadline = Instant::now() + within;
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return TcpClient::connect(addr).await,
            Err(e) if Instant::now() > deadline => panic!("{addr} not ready within {within:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_binary_refuses_a_locked_dir_in_one_line_and_restarts_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = ChildServer::start(dir.path(), "always", &[], None);
    let mut c = connect_within(first.addr, Duration::from_secs(30)).await;
    c.call(put("k", "v")).await.expect("put");

    let (code, stderr) = run_to_exit(dir.path(), Duration::from_secs(30));
    assert_eq!(code, Some(1), "exit code; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(lines[0].contains(&dir.path().display().to_string()), "names the dir: {}", lines[0]);
    assert!(lines[0].contains(&format!("PID {}", first.child.id())), "names the holder: {}", lines[0]);
    // The first server is untouched.
    assert_eq!(c.call(Command::Get(cmd::Get { key: b("k") })).await.map(value_of), Ok(Some("v".into())));

    // A lock is never left behind by a dead process: the kernel drops it with the process.
    drop(c);
    first.kill9();
    assert!(dir.path().join("LOCK").exists(), "the dead server's lock file is still there");
    let second = ChildServer::start(dir.path(), "always", &[], None);
    let mut c = connect_within(second.addr, Duration::from_secs(30)).await;
    assert_eq!(c.call(Command::Get(cmd::Get { key: b("k") })).await.map(value_of), Ok(Some("v".into())));
    second.kill9();
}

/// The log segments in `dir` with the bytes of records each holds (a segment's 16-byte header
/// excluded), and the snapshots' sequence numbers.
fn segments_and_snapshots(dir: &Path) -> (Vec<(String, u64)>, Vec<String>) {
    let mut segments = Vec::new();
    let mut snapshots = Vec::new();
    for name in listing(dir) {
        if name.ends_with(".aof") {
            let len = std::fs::metadata(dir.join(&name)).expect("stat").len();
            segments.push((name, len.saturating_sub(16)));
        } else if name.ends_with(".snap") {
            snapshots.push(name);
        }
    }
    (segments, snapshots)
}

/// Every key's (value, version, has a TTL) through GET.
async fn read_all(c: &mut TcpClient, keys: &[String]) -> Vec<(String, Bytes, u64, bool)> {
    let mut out = Vec::new();
    for k in keys {
        let Ok(Reply::Value(Some(e))) = c.call(Command::Get(cmd::Get { key: b(k) })).await else {
            panic!("{k} missing")
        };
        out.push((k.clone(), e.value, e.version, e.ttl_ms > 0));
    }
    out
}

#[tokio::test]
async fn a_clean_shutdown_leaves_a_snapshot_and_the_restart_replays_no_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys: Vec<String> = (0..2_000).map(|i| format!("key:{i}")).collect();
    let server = start(persistent(dir.path(), FsyncPolicy::EverySec)).await;
    let mut c = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
    for (i, k) in keys.iter().enumerate() {
        // Every third key with a TTL; the first hundred written twice (a later version).
        let expiry = if i % 3 == 0 { Expiry::from_put_ttl_ms(3_600_000) } else { Expiry::Persist };
        let put = cmd::Put { key: b(k), value: b(&format!("v{i}")), expiry, condition: PutCondition::Always };
        c.call(Command::Put(put)).await.expect("put");
    }
    for k in &keys[..100] {
        c.call(put(k, "again")).await.expect("put");
    }
    c.call(Command::HashSet(cmd::HashSet { key: b("h"), field: b("f"), value: b("v") })).await.expect("hset");
    let before = read_all(&mut c, &keys).await;
    drop(c);
    server.shutdown().await;

    // One snapshot, and the only segment (the one started by its rotation) holds no record.
    let (segments, snapshots) = segments_and_snapshots(dir.path());
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert!(segments.iter().all(|(_, records)| *records == 0), "log left to replay: {segments:?}");

    let server = start(persistent(dir.path(), FsyncPolicy::EverySec)).await;
    let mut c = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
    assert_eq!(read_all(&mut c, &keys).await, before, "every key, value, version and TTL");
    assert_eq!(
        c.call(Command::HashGet(cmd::HashGet { key: b("h"), field: b("f") })).await,
        Ok(Reply::Bytes(Some(b("v"))))
    );
    drop(c);
    server.shutdown().await;
    // Nothing was written: this shutdown found no growth and took no second snapshot.
    assert_eq!(segments_and_snapshots(dir.path()).1, snapshots);
}

#[tokio::test]
async fn with_snapshot_on_shutdown_off_the_log_is_left_to_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config { snapshot_on_shutdown: false, ..persistent(dir.path(), FsyncPolicy::EverySec) };
    let server = start(config.clone()).await;
    let mut c = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
    c.call(put("k", "v")).await.expect("put");
    drop(c);
    server.shutdown().await;
    let (segments, snapshots) = segments_and_snapshots(dir.path());
    assert!(snapshots.is_empty(), "{snapshots:?}");
    assert!(segments.iter().any(|(_, records)| *records > 0), "{segments:?}");
    let server = start(config).await;
    let mut c = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
    assert_eq!(c.call(Command::Get(cmd::Get { key: b("k") })).await.map(value_of), Ok(Some("v".into())));
    drop(c);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_the_shutdown_snapshot_loses_nothing() {
    for failpoint in ["snapshot-mid-write", "snapshot-before-rename", "snapshot-after-rename"] {
        let dir = tempfile::tempdir().expect("tempdir");
        // No scheduled snapshot: the one SIGTERM starts is the only one.
        let mut server =
            ChildServer::start(dir.path(), "everysec", &["--snapshot-every", "1GiB"], Some(failpoint));
        let ledger = writer(server.addr, 0, Instant::now() + Duration::from_millis(300)).await;
        assert!(!ledger.acked.is_empty(), "{failpoint}: writes were acknowledged");
        // SIGTERM: the graceful path, which snapshots and dies at the failpoint.
        let term = Process::new("kill").args(["-TERM", &server.child.id().to_string()]).status();
        assert!(term.expect("kill -TERM").success());
        let status = server.child.wait().expect("wait");
        assert_eq!(status.code(), Some(101), "{failpoint}: the server stopped in its shutdown snapshot");
        let restarted = ChildServer::start(dir.path(), "everysec", &[], None);
        verify(restarted.addr, &[ledger], failpoint).await;
        restarted.kill9();
    }
}

/// A read never shows a write the log has not made durable: under `--fsync always`, with the
/// log's writes held back, a SET applied in memory is not acknowledged, and a GET of its key on
/// every protocol waits with it instead of answering with a value a `kill -9` could take back
/// (which the crash harness would see as a history no order of events explains). Once the log
/// writes, the SET is acknowledged and every read answers with its value.
#[tokio::test]
async fn a_read_waits_until_the_writes_it_could_see_are_durable() {
    use nanodb_protocol::pb::{self, kv_client::KvClient};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(Config {
        resp_addr: any_port(),
        http_addr: any_port(),
        grpc_addr: any_port(),
        ..persistent(dir.path(), FsyncPolicy::Always)
    })
    .await;
    let addrs = server.addrs();
    let tcp = addrs.tcp.expect("tcp");
    let mut writer = TcpClient::connect(tcp).await;
    writer.call(put("k", "old")).await.expect("first write");
    let first = server.engine().version_of(b"k");
    let mut tcp_reader = TcpClient::connect(tcp).await;
    let redis = redis::Client::open(format!("redis://{}/", addrs.resp.expect("resp"))).expect("client");
    let mut resp_reader = redis.get_multiplexed_async_connection().await.expect("connect");
    let mut grpc_reader =
        KvClient::connect(format!("http://{}", addrs.grpc.expect("grpc"))).await.expect("grpc");
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/kv/k", addrs.http.expect("http"));

    let log = server.persistence().expect("persistence on").log();
    let held = log.hold_writes();
    let id = writer.send(put("k", "new")).await;
    writer.flush().await;
    // Applied in memory (the engine itself says so), not yet in the log's file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.engine().version_of(b"k") == first {
        assert!(Instant::now() < deadline, "the second write was never applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let get = Command::Get(cmd::Get { key: b("k") });
    let tcp_read = tokio::spawn(async move { tcp_reader.call(get).await });
    let resp_read = tokio::spawn(async move {
        redis::cmd("GET").arg("k").query_async::<Option<String>>(&mut resp_reader).await
    });
    let grpc_read = tokio::spawn(async move { grpc_reader.get(pb::GetRequest { key: b("k") }).await });
    let http_read = tokio::spawn(async move { http.get(url).send().await?.text().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (protocol, finished) in [
        ("binary TCP", tcp_read.is_finished()),
        ("RESP", resp_read.is_finished()),
        ("gRPC", grpc_read.is_finished()),
        ("REST", http_read.is_finished()),
    ] {
        assert!(!finished, "a {protocol} read answered while the write it could see was not durable");
    }

    drop(held);
    let ack = writer.recv(id).await.expect("the write is acknowledged");
    assert!(matches!(ack, Reply::Put { applied: true, .. }), "{ack:?}");
    let value = |r: Reply| match r {
        Reply::Value(Some(e)) => e.value,
        other => panic!("GET answered {other:?}"),
    };
    assert_eq!(value(tcp_read.await.expect("task").expect("tcp read")), b("new"));
    assert_eq!(resp_read.await.expect("task").expect("resp read").as_deref(), Some("new"));
    assert_eq!(grpc_read.await.expect("task").expect("grpc read").into_inner().value, b("new"));
    assert_eq!(http_read.await.expect("task").expect("http read"), "new");
}
