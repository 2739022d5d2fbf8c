//! The RocksDB store (`--storage rocksdb`, docs/ROCKSDB.md) end to end, over real clients: every
//! type and TTL survives a restart, atomic groups are all-or-nothing after `kill -9`, `kill -9`
//! under load with `--fsync always` loses no acknowledged write, expired keys are gone after a
//! restart and compaction drops them, and the configurations it cannot serve are refused.
//!
//! Run with `cargo test -p nanodb-server --features rocksdb --test rocksdb` (the bundled RocksDB
//! build is too slow for every CI step; .ci/run has one step for it).
#![cfg(feature = "rocksdb")]

#[allow(dead_code)] // this binary uses a part of the suite's harness
#[path = "it/harness.rs"]
mod harness;

#[allow(dead_code)]
#[path = "it/crash.rs"]
mod crash;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use nanodb_protocol::{Command, Reply, cmd};
use nanodb_server::config::{ClusterConfig, Config, ReadConsistency, Storage};
use nanodb_server::persist::FsyncPolicy;
use nanodb_server::server::Server;
use redis::AsyncCommands;

use crash::{ChildServer, Ledger, verify, writer, xorshift};
use harness::{TcpClient, any_port, b, config, start};

fn rocks(dir: &Path, fsync: FsyncPolicy) -> Config {
    Config {
        tcp_addr: any_port(),
        resp_addr: any_port(),
        persistence: true,
        storage: Storage::Rocksdb,
        data_dir: dir.to_path_buf(),
        fsync,
        ..config()
    }
}

async fn redis_conn(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    redis::Client::open(format!("redis://{addr}/"))
        .expect("client")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect")
}

/// Everything a client can see of the keyspace: per key its type, value and whether it has a TTL.
async fn dump(c: &mut redis::aio::MultiplexedConnection) -> BTreeMap<String, (String, String, bool)> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(c).await.expect("keys");
    let mut out = BTreeMap::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(c).await.expect("type");
        let value = match kind.as_str() {
            "string" => c.get::<_, String>(&key).await.expect("get"),
            "hash" => {
                let map: BTreeMap<String, String> = c.hgetall(&key).await.expect("hgetall");
                format!("{map:?}")
            }
            "list" => format!("{:?}", c.lrange::<_, Vec<String>>(&key, 0, -1).await.expect("lrange")),
            other => panic!("{key}: unexpected type {other}"),
        };
        let ttl: i64 = c.pttl(&key).await.expect("pttl");
        out.insert(key, (kind, value, ttl > 0));
    }
    out
}

/// Writes every kind of effect: strings, integers, hash sets and deletes, pushes and pops at both
/// ends, TTLs set and removed, deletes, a type replaced by another, MSET and MULTI/EXEC.
async fn write_everything(c: &mut redis::aio::MultiplexedConnection) {
    let _: () = c.set("s", "\x00text").await.expect("set");
    let _: () = c.set("n", "41").await.expect("set");
    let _: i64 = c.incr("n", 1).await.expect("incr");
    let _: i64 = c.incr("counter", 7).await.expect("incr");
    let _: () = c.hset_multiple("h", &[("a", "1"), ("b", "2"), ("c", "3")]).await.expect("hset");
    let _: i64 = c.hdel("h", "b").await.expect("hdel");
    let _: i64 = c.hset("h", "a", "one").await.expect("hset");
    let _: i64 = c.rpush("l", &["x", "y", "z"]).await.expect("rpush");
    let _: i64 = c.lpush("l", &["w", "v"]).await.expect("lpush");
    let _: Option<String> = c.lpop("l", None).await.expect("lpop");
    let _: Option<String> = c.rpop("l", None).await.expect("rpop");
    let _: i64 = c.rpush("drained", "only").await.expect("rpush");
    let _: Option<String> = c.rpop("drained", None).await.expect("rpop");
    // A hash replaced by a string, a string by a list: nothing of the old value may come back.
    let _: i64 = c.hset("was-hash", "f", "v").await.expect("hset");
    let _: () = c.set("was-hash", "now a string").await.expect("set");
    let _: () = c.set("was-string", "s").await.expect("set");
    let _: i64 = c.del("was-string").await.expect("del");
    let _: i64 = c.rpush("was-string", "a list now").await.expect("rpush");
    let _: i64 = c.hset("deleted-hash", "f", "v").await.expect("hset");
    let _: i64 = c.del("deleted-hash").await.expect("del");
    let _: () = c.pset_ex("ttl", "v", 3_600_000).await.expect("psetex");
    let _: i64 = c.hset("ttl-hash", "f", "v").await.expect("hset");
    let _: bool = c.pexpire("ttl-hash", 3_600_000).await.expect("pexpire");
    let _: i64 = c.hset("ttl-hash", "g", "w").await.expect("hset keeps the TTL");
    let _: () = c.pset_ex("persisted", "v", 3_600_000).await.expect("psetex");
    let _: bool = c.persist("persisted").await.expect("persist");
    let _: () = c.mset(&[("m1", "a"), ("m2", "b"), ("m3", "c")]).await.expect("mset");
    let (): () = redis::pipe()
        .atomic()
        .set("tx:a", "1")
        .ignore()
        .incr("tx:n", 5)
        .ignore()
        .rpush("tx:l", &["p", "q"])
        .ignore()
        .hset("tx:h", "f", "v")
        .ignore()
        .query_async(c)
        .await
        .expect("exec");
}

#[tokio::test]
async fn every_type_and_ttl_survives_a_restart_on_each_fsync_policy() {
    for fsync in [FsyncPolicy::No, FsyncPolicy::EverySec, FsyncPolicy::Always] {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = start(rocks(dir.path(), fsync)).await;
        let mut c = redis_conn(server.addrs().resp.expect("resp")).await;
        write_everything(&mut c).await;
        let before = dump(&mut c).await;
        assert_eq!(before.len(), 17, "{fsync}: {before:?}");
        let mut t = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
        let Ok(Reply::Value(Some(s))) = t.call(Command::Get(cmd::Get { key: b("s") })).await else {
            panic!()
        };
        drop((c, t));
        server.shutdown().await;

        let server = start(rocks(dir.path(), fsync)).await;
        let mut c = redis_conn(server.addrs().resp.expect("resp")).await;
        assert_eq!(dump(&mut c).await, before, "{fsync}: the restart kept every key as it was");
        assert_eq!(c.incr::<_, _, i64>("n", 1).await, Ok(43), "{fsync}: INCR goes on from the integer");
        assert_eq!(c.lpush::<_, _, i64>("l", "u").await, Ok(4), "{fsync}: the list's ends were kept");
        assert_eq!(c.lrange::<_, Vec<String>>("l", 0, -1).await.expect("lrange"), ["u", "w", "x", "y"]);
        let ttl: i64 = c.pttl("ttl").await.expect("pttl");
        assert!(ttl > 3_500_000, "{fsync}: the deadline is absolute and survives restarts: {ttl}");
        // Versions keep growing across restarts (no ABA for compare-and-set).
        let mut t = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
        let Ok(Reply::Put { version, .. }) = t.call(harness::put("s", "new")).await else { panic!() };
        assert!(version > s.version, "{fsync}: {version} after {}", s.version);
        drop((c, t));
        server.shutdown().await;
    }
}

#[tokio::test]
async fn expired_keys_are_gone_after_a_restart_and_compaction_drops_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with_http = |fsync| Config { http_addr: any_port(), ..rocks(dir.path(), fsync) };
    let server = start(with_http(FsyncPolicy::Always)).await;
    let mut c = redis_conn(server.addrs().resp.expect("resp")).await;
    for i in 0..50 {
        let _: () = c.pset_ex(format!("short:{i}"), "v", 150).await.expect("psetex");
    }
    let _: i64 = c.rpush("short-list", &["a", "b"]).await.expect("rpush");
    let _: bool = c.pexpire("short-list", 150).await.expect("pexpire");
    let _: () = c.set("long", "v").await.expect("set");
    tokio::time::sleep(Duration::from_millis(300)).await; // the TTLs above must pass
    let store = server.rocks().expect("the RocksDB store");
    store.compact();
    let metrics = reqwest::get(format!("http://{}/metrics", server.addrs().http.expect("http")))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    let counter = |name: &str| -> u64 {
        let line =
            metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
        line.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("a number")
    };
    assert!(counter("nanodb_rocksdb_compaction_filter_drops_total") >= 51, "{metrics}");
    for name in [
        "nanodb_rocksdb_block_cache_hits_total",
        "nanodb_rocksdb_block_cache_misses_total",
        "nanodb_rocksdb_write_stall_micros_total",
        "nanodb_rocksdb_compaction_write_bytes_total",
    ] {
        counter(name);
    }
    assert!(counter("nanodb_rocksdb_sst_bytes") > 0, "compaction wrote an SST file: {metrics}");
    drop(c);
    server.shutdown().await;

    let server = start(with_http(FsyncPolicy::Always)).await;
    let mut c = redis_conn(server.addrs().resp.expect("resp")).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.expect("keys");
    assert_eq!(keys, ["long"], "only the key without a TTL is back");
    // The expired list's elements are gone too: a new list of that name starts empty.
    let _: i64 = c.rpush("short-list", "new").await.expect("rpush");
    assert_eq!(c.lrange::<_, Vec<String>>("short-list", 0, -1).await.expect("lrange"), ["new"]);
    drop(c);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_with_fsync_always_loses_no_acknowledged_write() {
    let mut rng = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_nanos()
        as u64
        | 1;
    let seed = rng;
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--storage", "rocksdb"];
    let mut history: Vec<Ledger> = (0..4).map(|_| Ledger::default()).collect();
    for cycle in 0..5 {
        let server = ChildServer::start(dir.path(), "always", &args, None);
        let context = format!("cycle={cycle} seed={seed}");
        verify(server.addr, &history, &context).await;
        let run_for = Duration::from_millis(100 + xorshift(&mut rng) % 400);
        let until = Instant::now() + Duration::from_secs(10);
        let writers: Vec<_> = (0..4).map(|client| tokio::spawn(writer(server.addr, client, until))).collect();
        tokio::time::sleep(run_for).await; // the random moment of the crash, not a readiness wait
        server.kill9();
        for (client, w) in writers.into_iter().enumerate() {
            let ledger = w.await.expect("writer");
            history[client].acked.extend(ledger.acked);
            for (k, v) in ledger.sent {
                let e = history[client].sent.entry(k).or_default();
                *e = (*e).max(v);
            }
        }
    }
    let server = ChildServer::start(dir.path(), "always", &args, None);
    verify(server.addr, &history, &format!("final seed={seed}")).await;
    let acked: usize = history.iter().map(|l| l.acked.len()).sum();
    assert!(acked > 0, "the test wrote something");
    server.kill9();
}

/// MSETs of three keys holding one sequence number, until the server dies.
async fn group_writer(addr: SocketAddr, client: usize, until: Instant) -> u64 {
    let Some(mut c) = TcpClient::try_connect(addr).await else { return 0 };
    let mut acked = 0;
    let mut seq = 0u64;
    while Instant::now() < until {
        seq += 1;
        let v = b(&seq.to_string());
        let pairs = (0..3).map(|i| (b(&format!("g{client}:{}:{i}", seq % 8)), v.clone())).collect();
        let send = c.try_call(Command::MultiPut(cmd::MultiPut { pairs, only_if_none_exist: false }));
        match tokio::time::timeout(Duration::from_secs(5), send).await {
            Ok(Some(Ok(_))) => acked += 1,
            _ => break,
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mset_is_all_or_nothing_after_kill_9() {
    let mut rng = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_nanos()
        as u64
        | 1;
    let seed = rng;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked = 0;
    for (cycle, fsync) in ["no", "everysec", "always", "no"].into_iter().enumerate() {
        let server = ChildServer::start(dir.path(), fsync, &["--storage", "rocksdb"], None);
        let mut c = TcpClient::connect(server.addr).await;
        // Every group of three keys holds one sequence number, whatever the crash cut off.
        for client in 0..3 {
            for group in 0..8 {
                let mut values = Vec::new();
                for i in 0..3 {
                    let key = b(&format!("g{client}:{group}:{i}"));
                    values.push(match c.call(Command::Get(cmd::Get { key })).await {
                        Ok(Reply::Value(v)) => v.map(|e| e.value),
                        other => panic!("get: {other:?}"),
                    });
                }
                assert!(
                    values.iter().all(|v| *v == values[0]),
                    "cycle {cycle} seed {seed}: group g{client}:{group} was torn: {values:?}"
                );
            }
        }
        drop(c);
        let run_for = Duration::from_millis(100 + xorshift(&mut rng) % 300);
        let until = Instant::now() + Duration::from_secs(10);
        let writers: Vec<_> =
            (0..3).map(|client| tokio::spawn(group_writer(server.addr, client, until))).collect();
        tokio::time::sleep(run_for).await; // the random moment of the crash
        server.kill9();
        for w in writers {
            acked += w.await.expect("writer");
        }
    }
    assert!(acked > 0, "the test wrote something");
}

fn refusal(config: Config) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    match runtime.block_on(Server::start(config)) {
        Ok(_) => panic!("the server started"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn configurations_it_cannot_serve_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = ClusterConfig {
        node_id: 1,
        raft_addr: "127.0.0.1:0".into(),
        peers: vec![(1, "127.0.0.1:0".into())],
        election_timeout: Duration::from_millis(500),
        snapshot_every: 1000,
        read_consistency: ReadConsistency::Linearizable,
    };
    let e = refusal(Config { cluster: Some(cluster), ..rocks(dir.path(), FsyncPolicy::Always) });
    assert!(e.contains("cluster mode") && e.contains("Raft log"), "{e}");
    let e = refusal(Config { persistence: false, ..rocks(dir.path(), FsyncPolicy::Always) });
    assert!(e.contains("--persistence off"), "{e}");

    // A data dir of one storage is never silently opened as the other.
    let memory = |dir: &Path| Config {
        persistence: true,
        data_dir: dir.to_path_buf(),
        tcp_addr: any_port(),
        ..config()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let log_dir = tempfile::tempdir().expect("tempdir");
    runtime.block_on(async { start(memory(log_dir.path())).await.shutdown().await });
    let e = refusal(rocks(log_dir.path(), FsyncPolicy::Always));
    assert!(e.contains("append-only log") && e.contains("--storage memory"), "{e}");
    runtime.block_on(async { start(rocks(dir.path(), FsyncPolicy::Always)).await.shutdown().await });
    let e = refusal(memory(dir.path()));
    assert!(e.contains("holds a RocksDB store") && e.contains("--storage rocksdb"), "{e}");

    // The data dir's LOCK still applies.
    let first = runtime.block_on(start(rocks(dir.path(), FsyncPolicy::Always)));
    let e = refusal(rocks(dir.path(), FsyncPolicy::Always));
    assert!(e.contains(&format!("PID {}", std::process::id())), "{e}");
    runtime.block_on(first.shutdown());
}
