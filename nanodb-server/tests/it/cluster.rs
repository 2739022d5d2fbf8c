//! Cluster mode: three in-process nodes on loopback, each with its own data directory, driven by
//! real clients of every protocol. Every wait is a poll with a deadline, never a fixed sleep.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nanodb_protocol::pb::{self, cluster_client::ClusterClient, kv_client::KvClient};
use nanodb_protocol::{Command, Error, Expiry, PutCondition, Reply, cmd};
use nanodb_server::cluster::status::Status;
use nanodb_server::config::{AuthConfig, ClusterConfig, Config, ReadConsistency};
use nanodb_server::persist::FsyncPolicy;
use nanodb_server::server::Server;
use redis::AsyncCommands;
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::harness::{TcpClient, any_port, b, config};

const DEADLINE: Duration = Duration::from_secs(20);

/// A free loopback port for a Raft address (these must be known before the nodes start: every
/// node gets the same `--cluster-peers`, so they cannot be bound at port 0 by the server).
///
/// Taken below the kernel's ephemeral range (32768 and up on Linux): a port found free by binding
/// port 0 and released is in that range, where any test's outgoing connection may take it before
/// the node binds it (CI saw "Address already in use"). One counter per test process hands out
/// each port once; the start is spread by process id, and a port something else holds is skipped.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(397) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// Polls `f` until it yields `Some`, or panics after [`DEADLINE`] naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three nodes' settings: their Raft ports and data directories.
struct Cluster {
    ports: Vec<u16>,
    dirs: Vec<TempDir>,
    snapshot_every: u64,
    nodes: Vec<Option<Server>>,
}

impl Cluster {
    fn new(n: usize, snapshot_every: u64) -> Self {
        Self {
            ports: (0..n).map(|_| free_port()).collect(),
            dirs: (0..n).map(|_| tempfile::tempdir().expect("tempdir")).collect(),
            snapshot_every,
            nodes: (0..n).map(|_| None).collect(),
        }
    }

    fn config(&self, i: usize) -> Config {
        let peers =
            self.ports.iter().enumerate().map(|(j, p)| (j as u64 + 1, format!("127.0.0.1:{p}"))).collect();
        Config {
            tcp_addr: any_port(),
            resp_addr: any_port(),
            http_addr: any_port(),
            grpc_addr: any_port(),
            data_dir: self.dirs[i].path().to_path_buf(),
            fsync: FsyncPolicy::Always,
            request_timeout: Duration::from_secs(3),
            cluster: Some(ClusterConfig {
                node_id: i as u64 + 1,
                raft_addr: format!("127.0.0.1:{}", self.ports[i]),
                peers,
                // The default: a shorter one (elections after ~100 ms without a heartbeat) lets a
                // loaded 2-core CI machine, running every test at once, depose healthy leaders
                // mid-test.
                election_timeout: Duration::from_millis(1000),
                snapshot_every: self.snapshot_every,
                read_consistency: ReadConsistency::Linearizable,
            }),
            ..config()
        }
    }

    async fn start(&mut self, i: usize) {
        let server = Server::start(self.config(i)).await.expect("node starts");
        self.nodes[i] = Some(server);
    }

    async fn stop(&mut self, i: usize) {
        if let Some(s) = self.nodes[i].take() {
            s.shutdown().await;
        }
    }

    fn node(&self, i: usize) -> &Server {
        self.nodes[i].as_ref().expect("node running")
    }

    async fn status(&self, i: usize) -> Status {
        self.node(i).cluster().expect("cluster mode").status().await
    }

    /// Once the three nodes agree on a leader, stops the leader and one follower: the node left
    /// (its index) has no quorum and no leader.
    async fn keep_one_without_quorum(&mut self) -> usize {
        let leader = self.leader().await;
        let survivor = (leader + 1) % 3;
        for i in 0..3 {
            if i != survivor {
                self.stop(i).await;
            }
        }
        survivor
    }

    /// Waits until every running node names the same leader; its index.
    async fn leader(&self) -> usize {
        eventually("a leader every running node agrees on", || async {
            let mut seen = None;
            for (i, n) in self.nodes.iter().enumerate() {
                if n.is_none() {
                    continue;
                }
                let s = self.status(i).await;
                let leader = s.leader_id?;
                if seen.is_some_and(|l| l != leader) {
                    return None;
                }
                seen = Some(leader);
            }
            let leader = seen? as usize - 1;
            self.nodes[leader].as_ref().map(|_| leader)
        })
        .await
    }

    fn tcp(&self, i: usize) -> SocketAddr {
        self.node(i).addrs().tcp.expect("tcp on")
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Put(cmd::Put {
        key: b(key),
        value: b(value),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    })
}

fn get(key: &str) -> Command {
    Command::Get(cmd::Get { key: b(key) })
}

fn value_of(reply: Result<Reply, Error>) -> Option<Bytes> {
    match reply {
        Ok(Reply::Value(Some(e))) => Some(e.value),
        _ => None,
    }
}

/// A RESP connection that waits longer than a write may take (the crate's default is 500 ms).
async fn redis_conn(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    redis_conn_to(format!("redis://{addr}/")).await
}

/// [`redis_conn`] to a `redis://` URL (one with credentials, say).
async fn redis_conn_to(url: String) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect")
}

async fn grpc(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_on_a_follower_over_every_protocol_is_read_linearizably_on_every_node() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;

    // The binary TCP protocol, then a linearizable read on another follower at once.
    let mut tcp = TcpClient::connect(c.tcp(follower)).await;
    let reply = tcp.call(put("tcp", "1")).await.expect("put via a follower");
    assert!(matches!(reply, Reply::Put { applied: true, .. }), "{reply:?}");
    let other = (leader + 2) % 3;
    let mut tcp_other = TcpClient::connect(c.tcp(other)).await;
    assert_eq!(value_of(tcp_other.call(get("tcp")).await), Some(b("1")), "read after write on another node");

    // gRPC.
    let mut kv = KvClient::new(grpc(c.node(follower).addrs().grpc.expect("grpc")).await);
    let p = kv
        .put(pb::PutRequest { key: b("grpc"), value: b("2"), ..Default::default() })
        .await
        .expect("grpc put")
        .into_inner();
    assert!(p.applied);

    // REST.
    let http = c.node(follower).addrs().http.expect("http");
    let web = reqwest::Client::new();
    let r = web.put(format!("http://{http}/v1/kv/http")).body("0").send().await.expect("http put");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED, "a new key, as on a single node");
    let r = web.put(format!("http://{http}/v1/kv/http")).body("3").send().await.expect("http put");
    assert_eq!(r.status(), reqwest::StatusCode::OK, "an existing key");

    // RESP.
    let resp = c.node(follower).addrs().resp.expect("resp");
    let mut conn = redis_conn(resp).await;
    let () = conn.set("resp", "4").await.expect("set via a follower");
    let n: i64 = conn.incr("counter", 5).await.expect("incr via a follower");
    assert_eq!(n, 5);

    // Every node sees every write, read linearizably (no waiting for replication).
    for i in 0..3 {
        let mut t = TcpClient::connect(c.tcp(i)).await;
        for (k, v) in [("tcp", "1"), ("grpc", "2"), ("http", "3"), ("resp", "4"), ("counter", "5")] {
            assert_eq!(value_of(t.call(get(k)).await), Some(b(v)), "node {} key {k}", i + 1);
        }
    }

    // Status over REST and gRPC, on a follower.
    let s: serde_json::Value = web
        .get(format!("http://{http}/v1/cluster"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(s["node_id"], follower as u64 + 1);
    assert_eq!(s["leader_id"], leader as u64 + 1);
    assert_eq!(s["role"], "follower");
    let members = s["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    for m in members {
        assert!(m["grpc_addr"].is_string() && m["resp_addr"].is_string(), "{m}");
    }
    let mut cl = ClusterClient::new(grpc(c.node(leader).addrs().grpc.expect("grpc")).await);
    let st = cl.status(pb::ClusterStatusRequest {}).await.expect("grpc status").into_inner();
    assert_eq!((st.role.as_str(), st.leader_id), ("leader", Some(leader as u64 + 1)));
    assert!(st.commit_index >= 7 && st.members.iter().all(|m| m.matched_index.is_some()), "{st:?}");

    // ROLE in Redis's shapes.
    let role: redis::Value = redis::cmd("ROLE").query_async(&mut conn).await.expect("role");
    let redis::Value::Array(parts) = role else { panic!("{role:?}") };
    assert_eq!(parts[0], redis::Value::BulkString(b"slave".to_vec()));
    let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await.expect("info");
    assert!(info.contains("role:slave") && info.contains("master_link_status:up"), "{info}");

    // PUBLISH on one node reaches a subscriber on another.
    let mut sub = redis::Client::open(format!("redis://{}/", c.node(leader).addrs().resp.expect("resp")))
        .expect("client")
        .get_async_pubsub()
        .await
        .expect("pubsub");
    sub.subscribe("news").await.expect("subscribe");
    let delivered: i64 = conn.publish("news", "hello").await.expect("publish via a follower");
    assert!(delivered >= 0);
    let mut messages = sub.on_message();
    let msg = tokio::time::timeout(DEADLINE, futures::StreamExt::next(&mut messages))
        .await
        .expect("a message within the deadline")
        .expect("a message");
    assert_eq!(msg.get_payload::<String>().expect("payload"), "hello");
    drop(messages);

    // A committed write reaches a watcher on another node (keyspace notifications on the third
    // node, the write sent to the leader).
    let third = (leader + 2) % 3;
    let third_resp = c.node(third).addrs().resp.expect("resp");
    let mut third_conn = redis_conn(third_resp).await;
    let () = redis::cmd("CONFIG")
        .arg(&["SET", "notify-keyspace-events", "KEA"])
        .query_async(&mut third_conn)
        .await
        .expect("config set");
    let mut watch = redis::Client::open(format!("redis://{third_resp}/"))
        .expect("client")
        .get_async_pubsub()
        .await
        .expect("pubsub");
    watch.subscribe("__keyspace@0__:watched").await.expect("subscribe");
    let mut on_leader = TcpClient::connect(c.tcp(leader)).await;
    on_leader.call(put("watched", "x")).await.expect("put on the leader");
    let mut events = watch.on_message();
    let event = tokio::time::timeout(DEADLINE, futures::StreamExt::next(&mut events))
        .await
        .expect("an event within the deadline")
        .expect("an event");
    assert_eq!(event.get_payload::<String>().expect("payload"), "set");
    drop(events);

    for i in 0..3 {
        c.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_node_catches_up_by_snapshot_and_every_node_restarts_from_disk() {
    let mut c = Cluster::new(3, 10);
    c.start(0).await;
    c.start(1).await;
    let leader = c.leader().await;
    let mut tcp = TcpClient::connect(c.tcp(leader)).await;
    for i in 0..60 {
        tcp.call(put(&format!("k{i}"), &format!("v{i}"))).await.expect("put");
    }
    // The leader compacted its log behind a snapshot.
    eventually("the leader to purge its log", || async {
        let m = c.node(leader).cluster().expect("cluster").raft().metrics().borrow().clone();
        m.purged.is_some_and(|p| p.index > 10).then_some(())
    })
    .await;

    // Node 3 joins late: entries it needs are gone, so it installs the snapshot.
    c.start(2).await;
    eventually("node 3 to catch up", || async { (c.node(2).engine().key_count() == 60).then_some(()) }).await;
    let snapshots = std::fs::read_dir(c.dirs[2].path().join("raft").join("snapshots"))
        .expect("snapshot dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".snap")))
        .count();
    assert!(snapshots >= 1, "node 3 holds an installed snapshot");
    let mut t3 = TcpClient::connect(c.tcp(2)).await;
    assert_eq!(value_of(t3.call(get("k0")).await), Some(b("v0")));
    assert_eq!(value_of(t3.call(get("k59")).await), Some(b("v59")));

    // Every node restarts from its data directory and keeps everything.
    for i in 0..3 {
        c.stop(i).await;
    }
    // In a cluster the Raft log is the log: no single-node log segment was ever written.
    for dir in &c.dirs {
        let aof = std::fs::read_dir(dir.path())
            .expect("data dir")
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".aof")))
            .count();
        assert_eq!(aof, 0, "no append-only log segment in {}", dir.path().display());
    }
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let mut tcp = TcpClient::connect(c.tcp(leader)).await;
    tcp.call(put("after", "restart")).await.expect("writes resume");
    for i in 0..3 {
        let mut t = TcpClient::connect(c.tcp(i)).await;
        for k in [0, 31, 59] {
            assert_eq!(
                value_of(t.call(get(&format!("k{k}"))).await),
                Some(b(&format!("v{k}"))),
                "node {}",
                i + 1
            );
        }
        assert_eq!(value_of(t.call(get("after")).await), Some(b("restart")));
    }
    for i in 0..3 {
        c.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_leader_writes_fail_with_each_protocols_retryable_error_within_the_timeout() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let survivor = c.keep_one_without_quorum().await;
    let timeout = Duration::from_secs(3) + Duration::from_secs(2);

    let started = Instant::now();
    let mut tcp = TcpClient::connect(c.tcp(survivor)).await;
    let err = tcp.call(put("k", "v")).await.expect_err("no quorum");
    assert_eq!(err.code(), nanodb_protocol::ErrorCode::Unavailable, "{err:?}");
    assert!(started.elapsed() < timeout, "answered within the request timeout");

    let http = c.node(survivor).addrs().http.expect("http");
    let r =
        reqwest::Client::new().put(format!("http://{http}/v1/kv/k")).body("v").send().await.expect("http");
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));

    let mut kv = KvClient::new(grpc(c.node(survivor).addrs().grpc.expect("grpc")).await);
    let e = kv
        .put(pb::PutRequest { key: b("k"), value: b("v"), ..Default::default() })
        .await
        .expect_err("no quorum");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");

    let resp = c.node(survivor).addrs().resp.expect("resp");
    let mut conn = redis_conn(resp).await;
    let e = conn.set::<_, _, ()>("k", "v").await.expect_err("no quorum");
    assert_eq!(e.code(), Some("CLUSTERDOWN"), "{e:?}");
    c.stop(survivor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_raft_port_refuses_unknown_nodes_and_malformed_bodies_and_keeps_serving() {
    use nanodb_server::cluster::network::{FAILED, kind, read_answer, request_frame};
    use tokio::io::AsyncWriteExt;

    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let raft = c.node(leader).cluster().expect("cluster").raft_addr;
    for (from, body) in [(99u64, &b"{}"[..]), (2, b"not json"), (3, b"")] {
        let mut s = tokio::net::TcpStream::connect(raft).await.expect("connect");
        s.write_all(&request_frame(kind::VOTE, from, 0, body)).await.expect("send");
        let (status, why) = read_answer(&mut s).await.expect("an answer");
        assert_eq!(status, FAILED, "from {from}: {}", String::from_utf8_lossy(&why));
    }
    // A member's id with another cluster's id (a node started on another cluster's data dir).
    let mut s = tokio::net::TcpStream::connect(raft).await.expect("connect");
    s.write_all(&request_frame(kind::VOTE, 2, 0x5eed, b"{}")).await.expect("send");
    let (status, why) = read_answer(&mut s).await.expect("an answer");
    let why = String::from_utf8_lossy(&why);
    assert_eq!(status, FAILED, "{why}");
    assert!(why.contains("cluster id mismatch"), "{why}");
    // A length over the limit is refused before anything is read: the connection is closed.
    let mut s = tokio::net::TcpStream::connect(raft).await.expect("connect");
    s.write_all(&u32::MAX.to_be_bytes()).await.expect("send");
    assert!(read_answer(&mut s).await.is_err(), "closed without an answer");
    // The cluster keeps serving (a client retries the retryable error of an election).
    let mut tcp = TcpClient::connect(c.tcp(leader)).await;
    let until = Instant::now() + DEADLINE;
    loop {
        match tcp.call(put("still", "serving")).await {
            Ok(_) => break,
            Err(Error::Unavailable(e)) if Instant::now() < until => {
                eprintln!("retrying a write after the refusals: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("a write after the refusals: {e}"),
        }
    }
    for i in 0..3 {
        c.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_expires_keys_everywhere_and_a_stopped_leader_is_replaced_then_catches_up() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let mut conn = redis_conn(c.node(follower).addrs().resp.expect("resp")).await;
    let () = redis::cmd("SET")
        .arg("ttl")
        .arg("v")
        .arg("PX")
        .arg(200)
        .query_async(&mut conn)
        .await
        .expect("set px");
    let mut tcp = TcpClient::connect(c.tcp(follower)).await;
    tcp.call(Command::Put(cmd::Put {
        key: b("ttl2"),
        value: b("v"),
        expiry: Expiry::In(200),
        condition: PutCondition::Always,
    }))
    .await
    .expect("put with a ttl");
    // Every node removes them, through the deletes the leader proposes.
    eventually("the expired keys to be removed on every node", || async {
        (0..3).all(|i| c.node(i).engine().key_count() == 0).then_some(())
    })
    .await;

    // The leader stops: the others elect a new one and writes resume, through any survivor.
    c.stop(leader).await;
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    let survivor = if (leader + 1) % 3 == new_leader { (leader + 2) % 3 } else { (leader + 1) % 3 };
    let mut t = TcpClient::connect(c.tcp(survivor)).await;
    t.call(put("after-failover", "yes")).await.expect("writes resume");

    // The old leader restarts, rejoins and catches up.
    c.start(leader).await;
    let mut old = TcpClient::connect(c.tcp(leader)).await;
    let until = Instant::now() + DEADLINE;
    while value_of(old.call(get("after-failover")).await) != Some(b("yes")) {
        assert!(Instant::now() < until, "timed out waiting for the old leader to catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..3 {
        c.stop(i).await;
    }
}

/// Users on a cluster: every node loads the same users file. Authorization happens on the node
/// that receives a command, before it is forwarded: a permitted write through a follower (RESP and
/// REST) reaches every node; a refused one gets NOPERM / 403 and appears nowhere; the status route
/// wants credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_are_authorized_on_the_receiving_node_before_a_write_is_forwarded() {
    let users_dir = tempfile::tempdir().expect("tempdir");
    let users = users_dir.path().join("users.acl");
    std::fs::write(
        &users,
        "user default off\nuser admin on >adminpw allkeys allchannels +@all\nuser alice on >alicepw ~app:* +@read +@write\n",
    )
    .expect("users file");
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        let auth = AuthConfig { users_file: Some(users.clone()), ..AuthConfig::default() };
        let server = Server::start(Config { auth, ..c.config(i) }).await.expect("node starts");
        c.nodes[i] = Some(server);
    }
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let resp_as = |i: usize, user: &str, pass: &str| {
        let url = format!("redis://{user}:{pass}@{}/", c.node(i).addrs().resp.expect("resp"));
        async move {
            let config =
                redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
            redis::Client::open(url)
                .expect("client")
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .expect("connect")
        }
    };

    // RESP through a follower: the permitted key is written, the other refused there.
    let mut alice = resp_as(follower, "alice", "alicepw").await;
    let () = alice.set("app:resp", "1").await.expect("set app:resp via a follower");
    let refused: redis::RedisResult<()> = alice.set("other", "x").await;
    let e = refused.expect_err("NOPERM");
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
    assert!(e.to_string().contains("No permissions to access a key"), "{e}");

    // REST through the same follower.
    let http = c.node(follower).addrs().http.expect("http");
    let web = reqwest::Client::new();
    let r = web
        .put(format!("http://{http}/v1/kv/app:http"))
        .basic_auth("alice", Some("alicepw"))
        .body("2")
        .send()
        .await
        .expect("http put");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let r = web
        .put(format!("http://{http}/v1/kv/other-http"))
        .basic_auth("alice", Some("alicepw"))
        .body("x")
        .send()
        .await
        .expect("http put");
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "NOPERM", "{body}");

    // Every node holds the two permitted keys and nothing else (linearizable reads as admin, then
    // the engine's own count, which the read barrier has brought up to date).
    for i in 0..3 {
        let mut admin = resp_as(i, "admin", "adminpw").await;
        let got: (Option<String>, Option<String>, Option<String>, Option<String>) = redis::pipe()
            .get("app:resp")
            .get("app:http")
            .get("other")
            .get("other-http")
            .query_async(&mut admin)
            .await
            .expect("reads as admin");
        assert_eq!(got, (Some("1".into()), Some("2".into()), None, None), "node {}", i + 1);
        assert_eq!(c.node(i).engine().key_count(), 2, "node {}: only the permitted writes", i + 1);
    }

    // The status wants credentials on REST and gRPC alike; a user gets it.
    let r = web.get(format!("http://{http}/v1/cluster")).send().await.expect("status");
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key(reqwest::header::WWW_AUTHENTICATE));
    let r = web
        .get(format!("http://{http}/v1/cluster"))
        .basic_auth("alice", Some("alicepw"))
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let s: serde_json::Value = r.json().await.expect("json");
    assert_eq!(s["leader_id"], leader as u64 + 1);
    let mut cl = ClusterClient::new(grpc(c.node(follower).addrs().grpc.expect("grpc")).await);
    let e = cl.status(pb::ClusterStatusRequest {}).await.expect_err("no credentials");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    for i in 0..3 {
        c.stop(i).await;
    }
}

/// A follower forwards its clients' writes to the leader in shared batches: many clients writing
/// at once through one follower all get their own answer, each write applies exactly once (the
/// counter adds up, no write lost or doubled) and every node holds every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_a_follower_each_apply_once_and_get_their_own_answer() {
    const CLIENTS: usize = 40;
    const EACH: usize = 5;
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let addr = c.tcp(follower);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            tokio::spawn(async move {
                let mut t = TcpClient::connect(addr).await;
                let mut counts = Vec::new();
                for i in 0..EACH {
                    let key = format!("k{n}-{i}");
                    // An election on a loaded machine answers "retry": retried, as a client does.
                    let reply = loop {
                        match t.call(put(&key, &format!("{n}.{i}"))).await {
                            Err(Error::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                            other => break other,
                        }
                    };
                    assert!(matches!(reply, Ok(Reply::Put { applied: true, .. })), "{key}: {reply:?}");
                    let incr = t.call(Command::Incr(cmd::Incr { key: b("hits"), delta: 1 })).await;
                    match incr {
                        Ok(Reply::Int(v)) => counts.push(Some(v)),
                        // A retryable error mid-election: it may or may not have applied.
                        Err(Error::Unavailable(_)) => counts.push(None),
                        other => panic!("incr through a follower: {other:?}"),
                    }
                }
                counts
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut unknown = 0;
    for client in clients {
        for v in client.await.expect("client") {
            match v {
                Some(v) => seen.push(v),
                None => unknown += 1,
            }
        }
    }
    // Every INCR got its own answer: distinct values of the counter, none past the writes sent.
    let total = (CLIENTS * EACH) as i64;
    seen.sort_unstable();
    let answered = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), answered, "two INCRs answered the same value");
    assert!(seen.iter().all(|v| (1..=total).contains(v)), "{seen:?}");
    let mut t = TcpClient::connect(c.tcp(leader)).await;
    let hits: i64 = match value_of(t.call(get("hits")).await) {
        Some(v) => String::from_utf8_lossy(&v).parse().expect("a number"),
        None => panic!("no counter"),
    };
    assert!(
        (answered as i64..=answered as i64 + unknown).contains(&hits),
        "{hits} of {answered} (+{unknown})"
    );
    for i in 0..3 {
        let mut t = TcpClient::connect(c.tcp(i)).await;
        assert_eq!(value_of(t.call(get("hits")).await), Some(b(&hits.to_string())), "node {}", i + 1);
        for n in 0..CLIENTS {
            for k in 0..EACH {
                let key = format!("k{n}-{k}");
                assert_eq!(
                    value_of(t.call(get(&key)).await),
                    Some(b(&format!("{n}.{k}"))),
                    "node {} {key}",
                    i + 1
                );
            }
        }
    }
}

/// Keys of the snapshot-install test: `k00000`.. (written twice), `pad000`.. (written after the
/// node stopped), and `gone`, `same`, `new`.
const SWAP_KEYS: usize = 3000;
const SWAP_PADS: usize = 150;

fn mset(keys: std::ops::Range<usize>, value: &str) -> Command {
    Command::MultiPut(cmd::MultiPut {
        pairs: keys.map(|i| (b(&format!("k{i:05}")), b(value))).collect(),
        only_if_none_exist: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_installs_at_once_for_readers_and_tells_watchers_what_it_changed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use nanodb_protocol::{EventType, Push, Request, Response, Subscription};

    let mut c = Cluster::new(3, 50);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let mut tcp = TcpClient::connect(c.tcp(leader)).await;
    for from in (0..SWAP_KEYS).step_by(500) {
        tcp.call(mset(from..from + 500, "a")).await.expect("mset a");
    }
    for (k, v) in [("gone", "g"), ("same", "s")] {
        tcp.call(put(k, v)).await.expect("put");
    }
    // The third node to stop is neither the leader nor the one that will lead without it.
    let late = (leader + 1) % 3;
    eventually("the late node to hold the first state", || async {
        (c.node(late).engine().key_count() == SWAP_KEYS + 2).then_some(())
    })
    .await;
    c.stop(late).await;

    // While it is away: every `k` key rewritten, one key deleted, one created, and enough more
    // entries that both others compact their logs past everything it has.
    for from in (0..SWAP_KEYS).step_by(500) {
        tcp.call(mset(from..from + 500, "b")).await.expect("mset b");
    }
    tcp.call(Command::Delete(cmd::Delete { key: b("gone") })).await.expect("delete");
    tcp.call(put("new", "n")).await.expect("put");
    let written = c.status(leader).await.commit_index;
    for i in 0..SWAP_PADS {
        tcp.call(put(&format!("pad{i:03}"), "p")).await.expect("pad");
    }
    let others: Vec<usize> = (0..3).filter(|&i| i != late).collect();
    for &i in &others {
        eventually("the others to compact their logs behind a snapshot", || async {
            let m = c.node(i).cluster().expect("cluster").raft().metrics().borrow().clone();
            m.purged.is_some_and(|p| p.index > written).then_some(())
        })
        .await;
    }
    for &i in &others {
        c.stop(i).await;
    }

    // The late node restarts alone (no leader: nothing can reach it yet), serving stale reads,
    // with a reader polling it and a watcher on every key.
    let mut config = c.config(late);
    if let Some(cluster) = config.cluster.as_mut() {
        cluster.read_consistency = ReadConsistency::Stale;
    }
    c.nodes[late] = Some(Server::start(config).await.expect("late node starts"));
    let first_state = SWAP_KEYS as i64 + 2;
    eventually("the late node to recover its own state", || async {
        (c.node(late).engine().key_count() as i64 == first_state).then_some(())
    })
    .await;
    let mut watcher = TcpClient::connect(c.tcp(late)).await;
    let id = watcher
        .send_request(Request::Subscription(Subscription::Watch {
            key: Bytes::new(),
            prefix: true,
            with_values: true,
        }))
        .await;
    match watcher.next_frame().await.expect("connection open") {
        (got, Response::Reply(_)) if got == id => {}
        other => panic!("the watch was refused: {other:?}"),
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, reads, addr) = (stop.clone(), reads.clone(), c.tcp(late));
        tokio::spawn(async move {
            let mut t = TcpClient::connect(addr).await;
            let mut i = 0usize;
            // Every committed state holds at least the first state's keys, `same`, and a value
            // for every `k` key: fewer keys or a missing one is a partly loaded state.
            while !stop.load(Ordering::Relaxed) {
                match t.call(Command::KeyCount(cmd::KeyCount {})).await {
                    Ok(Reply::Int(n)) => assert!(n >= first_state, "a read saw {n} keys: a partial state"),
                    other => panic!("key count: {other:?}"),
                }
                let key = format!("k{:05}", (i * 7919) % SWAP_KEYS);
                for k in [key.as_str(), "same"] {
                    assert!(value_of(t.call(get(k)).await).is_some(), "a read found no {k}: a partial state");
                }
                i += 1;
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // The others come back; the leader's log no longer has what the late node needs, so it
    // sends a snapshot.
    for &i in &others {
        c.start(i).await;
    }
    let final_state = first_state as usize + SWAP_PADS;
    eventually("the late node to install the snapshot", || async {
        (c.node(late).engine().key_count() == final_state).then_some(())
    })
    .await;
    let polled = reads.load(Ordering::Relaxed);
    eventually("the reader to poll past the install", || async {
        // A reader that stopped early panicked: awaited below, its message is the failure.
        (reads.load(Ordering::Relaxed) > polled + 3 || reader.is_finished()).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    reader.await.expect("the reader never saw a partial state");
    let installed = std::fs::read_dir(c.dirs[late].path().join("raft").join("snapshots"))
        .expect("snapshot dir")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("snapshot-")?.strip_suffix(".snap")?.parse::<u64>().ok()
        })
        .max();
    assert!(installed.is_some_and(|i| i > written), "the late node installed a snapshot: {installed:?}");

    // The watcher was told every change the snapshot stood for, as puts and deletes in key
    // order (what it saw before, replays of the node's own log, comes first), then the entries
    // after the snapshot as they applied: every key exactly once, `same` never.
    let mut expected: Vec<(EventType, String, Option<Bytes>)> =
        vec![(EventType::Delete, "gone".into(), None)];
    expected.extend((0..SWAP_KEYS).map(|i| (EventType::Put, format!("k{i:05}"), Some(b("b")))));
    expected.push((EventType::Put, "new".into(), Some(b("n"))));
    expected.extend((0..SWAP_PADS).map(|i| (EventType::Put, format!("pad{i:03}"), Some(b("p")))));
    let mut seen = Vec::new();
    while seen.last().map(|(_, k, _): &(EventType, String, Option<Bytes>)| k.as_str())
        != Some(&format!("pad{:03}", SWAP_PADS - 1))
    {
        let frame = tokio::time::timeout(DEADLINE, watcher.next_frame()).await.expect("an event in time");
        match frame.expect("connection open") {
            (0, Response::Push(Push::Event { kind, key, value, .. })) => {
                seen.push((kind, String::from_utf8_lossy(&key).into_owned(), value))
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }
    let from = seen
        .iter()
        .rposition(|(kind, key, _)| *kind == EventType::Delete && key == "gone")
        .expect("the delete of `gone` was announced");
    assert!(seen[..from].iter().all(|(_, _, v)| v.as_deref() != Some(b"b".as_slice())), "nothing new before");
    assert_eq!(seen[from..], expected[..], "the announced difference, in key order");
    for i in 0..3 {
        c.stop(i).await;
    }
}

/// A RESP pub/sub connection subscribed to `channel` on `node`.
async fn subscribed(c: &Cluster, node: usize, channel: &str) -> redis::aio::PubSub {
    let addr = c.node(node).addrs().resp.expect("resp");
    let mut sub = redis::Client::open(format!("redis://{addr}/"))
        .expect("client")
        .get_async_pubsub()
        .await
        .expect("pubsub");
    sub.subscribe(channel).await.expect("subscribe");
    sub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_answers_how_many_subscribers_of_the_receiving_node_got_the_message() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let (a, b_node) = ((leader + 1) % 3, (leader + 2) % 3);
    // Two subscribers on a follower, one on the leader, none on the third node.
    let mut subs = vec![subscribed(&c, a, "news").await, subscribed(&c, a, "news").await];
    subs.push(subscribed(&c, leader, "news").await);
    for (node, expected) in [(a, 2), (leader, 1), (b_node, 0)] {
        let addr = c.node(node).addrs().resp.expect("resp");
        let mut conn = redis_conn(addr).await;
        let message = format!("from node {}", node + 1);
        let until = Instant::now() + DEADLINE;
        let answer: i64 = loop {
            // An election in between is retryable, as for a client.
            match conn.publish("news", &message).await {
                Ok(n) => break n,
                Err(e) => assert!(Instant::now() < until, "publish: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(answer, expected, "PUBLISH on node {} answers its own subscribers", node + 1);
        // Every subscriber, on every node, got it.
        for sub in &mut subs {
            let mut messages = sub.on_message();
            let msg = tokio::time::timeout(DEADLINE, futures::StreamExt::next(&mut messages))
                .await
                .expect("a message within the deadline")
                .expect("a message");
            assert_eq!(msg.get_payload::<String>().expect("payload"), message);
        }
    }
    // Publishes inside a batch (the binary TCP protocol's), among other writes, count the same
    // way, each its own.
    let publish =
        |channel: &str| Command::Publish(cmd::Publish { channel: b(channel), message: b("batched") });
    let batch =
        Command::Batch(cmd::Batch { ops: vec![publish("news"), put("between", "x"), publish("nobody")] });
    let mut tcp = TcpClient::connect(c.tcp(a)).await;
    match tcp.call(batch).await {
        Ok(Reply::Batch(r)) => {
            assert_eq!(r.len(), 3, "{r:?}");
            assert_eq!((&r[0], &r[2]), (&Ok(Reply::Int(2)), &Ok(Reply::Int(0))), "{r:?}");
        }
        other => panic!("batch: {other:?}"),
    }
    for i in 0..3 {
        c.stop(i).await;
    }
}

/// Membership at runtime (`cluster::membership`): learners, promotion, removal.
#[path = "cluster_members.rs"]
mod members;

/// The version of `key` on node `i` (TCP GET), `None` when missing.
async fn version_on(c: &Cluster, i: usize, key: &str) -> Option<u64> {
    let mut t = TcpClient::connect(c.tcp(i)).await;
    match t.call(get(key)).await {
        Ok(Reply::Value(Some(e))) => Some(e.version),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_script_on_any_node_writes_through_the_log_and_every_node_sees_it() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    // RESP on a follower: strings, lists and hashes, one script.
    let mut conn = redis_conn(c.node(follower).addrs().resp.expect("resp")).await;
    let n: i64 = redis::cmd("EVAL")
        .arg(
            "redis.call('set', KEYS[1], ARGV[1]) redis.call('rpush', KEYS[2], 'a', 'b', 'c') \
             redis.call('hset', KEYS[3], 'f', 'v') redis.call('expire', KEYS[1], 100) \
             return redis.call('incr', KEYS[4])",
        )
        .arg(4)
        .arg(&["s", "l", "h", "n"])
        .arg("one")
        .query_async(&mut conn)
        .await
        .expect("eval on a follower");
    assert_eq!(n, 1);
    // gRPC on the other follower, by SHA-1 after the source; the script cache is per node.
    let mut kv = KvClient::new(grpc(c.node(other).addrs().grpc.expect("grpc")).await);
    let text = "redis.call('lpop', KEYS[2]) return redis.call('incrby', KEYS[1], ARGV[1])";
    let sha = nanodb_server::scripting::sha1_hex(text.as_bytes());
    let req =
        |script| pb::EvalRequest { script: Some(script), keys: vec![b("n"), b("l")], args: vec![b("10")] };
    let e = kv.eval(req(pb::eval_request::Script::Sha1(sha.clone()))).await.expect_err("not cached there");
    assert_eq!(e.code(), tonic::Code::NotFound);
    let r = kv.eval(req(pb::eval_request::Script::Source(b(text)))).await.expect("grpc eval").into_inner();
    assert_eq!(r.value.map(|v| v.integer), Some(11));
    let r = kv.eval(req(pb::eval_request::Script::Sha1(sha))).await.expect("evalsha").into_inner();
    assert_eq!(r.value.map(|v| v.integer), Some(21));
    // The binary TCP protocol on the leader; a read-only script proposes nothing.
    let mut tcp = TcpClient::connect(c.tcp(leader)).await;
    let eval = |text: &str, keys: &[&str]| {
        Command::Eval(cmd::Eval {
            script: nanodb_protocol::ScriptSource::Text(b(text)),
            keys: keys.iter().map(|k| b(k)).collect(),
            args: vec![],
        })
    };
    let r = tcp.call(eval("return redis.call('hget', KEYS[1], 'f')", &["h"])).await;
    assert_eq!(r, Ok(Reply::Script(nanodb_protocol::ScriptValue::Bulk(b("v")))));
    // A script that fails after writing writes nothing, on any node.
    let r = tcp
        .call(eval("redis.call('set', KEYS[1], 'no') return redis.call('incr', KEYS[2])", &["bad", "s"]))
        .await;
    assert!(matches!(&r, Err(Error::Remote { message, .. }) if message.contains("not an integer")), "{r:?}");
    // A script cannot touch a key it did not declare, in a cluster either.
    let r = tcp.call(eval("return redis.call('set', 'undeclared', 'x')", &["s"])).await;
    assert!(matches!(&r, Err(Error::Remote { message, .. }) if message.contains("not declared")), "{r:?}");

    // Every node has every write, at the same versions (the scripts' local runs drew none).
    for i in 0..3 {
        let mut t = TcpClient::connect(c.tcp(i)).await;
        assert_eq!(value_of(t.call(get("s")).await), Some(b("one")), "node {}", i + 1);
        assert_eq!(value_of(t.call(get("n")).await), Some(b("21")), "node {}", i + 1);
        assert_eq!(value_of(t.call(get("bad")).await), None, "node {}", i + 1);
        assert_eq!(value_of(t.call(get("undeclared")).await), None, "node {}", i + 1);
        let list = t
            .call(Command::ListRange(cmd::ListRange { key: b("l"), start: 0, stop: -1 }))
            .await
            .expect("lrange");
        assert_eq!(list, Reply::List(vec![b("c")]), "node {}", i + 1);
        let ttl = t.call(Command::Ttl(cmd::Ttl { key: b("s") })).await.expect("ttl");
        assert!(matches!(ttl, Reply::Int(ms) if ms > 0 && ms <= 100_000), "node {}: {ttl:?}", i + 1);
    }
    for key in ["s", "n"] {
        let versions =
            [version_on(&c, 0, key).await, version_on(&c, 1, key).await, version_on(&c, 2, key).await];
        assert!(versions[0].is_some() && versions.iter().all(|v| *v == versions[0]), "{key}: {versions:?}");
    }
    for i in 0..3 {
        c.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contended_read_modify_write_scripts_from_two_nodes_count_exactly() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let nodes = [leader, (leader + 1) % 3];
    // GET then SET, not INCR: only the compares at apply keep two nodes' runs from both writing
    // the same next value.
    let script = "local v = tonumber(redis.call('get', KEYS[1]) or '0') + 1 \
                  redis.call('set', KEYS[1], v) return v";
    const TASKS: usize = 3;
    const EACH: usize = 15;
    let mut tasks = Vec::new();
    for node in nodes {
        for _ in 0..TASKS {
            let addr = c.node(node).addrs().resp.expect("resp");
            tasks.push(tokio::spawn(async move {
                let mut conn = redis_conn(addr).await;
                let mut got = Vec::new();
                let until = Instant::now() + DEADLINE;
                while got.len() < EACH {
                    assert!(Instant::now() < until, "scripts kept conflicting");
                    let r: redis::RedisResult<i64> =
                        redis::cmd("EVAL").arg(script).arg(1).arg("counter").query_async(&mut conn).await;
                    match r {
                        Ok(v) => got.push(v),
                        // Retryable: other scripts kept changing the key.
                        Err(e) if e.code() == Some("TRYAGAIN") => {}
                        Err(e) => panic!("eval: {e}"),
                    }
                }
                got
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    let total = (nodes.len() * TASKS * EACH) as i64;
    assert_eq!(all, (1..=total).collect::<Vec<_>>(), "every run saw its own count");
    for i in 0..3 {
        let mut t = TcpClient::connect(c.tcp(i)).await;
        assert_eq!(value_of(t.call(get("counter")).await), Some(b(&total.to_string())), "node {}", i + 1);
    }
    for i in 0..3 {
        c.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_exec_and_watch_work_on_any_node_and_count_exactly_under_contention() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let resp = |i: usize| c.node(i).addrs().resp.expect("resp");

    // A transaction on a follower: its replies, then every node has all of it.
    let mut conn = redis_conn(resp(follower)).await;
    let (set, n, len, both): (String, i64, i64, Vec<Option<String>>) = redis::pipe()
        .atomic()
        .set("tx:a", "1")
        .incr("tx:n", 5)
        .rpush("tx:l", &["x", "y"])
        .mget(&["tx:a", "tx:n"])
        .query_async(&mut conn)
        .await
        .expect("exec on a follower");
    assert_eq!((set.as_str(), n, len), ("OK", 5, 2));
    assert_eq!(both, vec![Some("1".to_string()), Some("5".to_string())]);
    for i in 0..3 {
        let mut t = TcpClient::connect(c.tcp(i)).await;
        assert_eq!(value_of(t.call(get("tx:a")).await), Some(b("1")), "node {}", i + 1);
        assert_eq!(value_of(t.call(get("tx:n")).await), Some(b("5")), "node {}", i + 1);
    }
    // A WATCHed key written on another node makes EXEC answer null, writing nothing.
    let () = redis::cmd("WATCH").arg("tx:w").query_async(&mut conn).await.expect("watch");
    let mut other = redis_conn(resp(leader)).await;
    let () = other.set("tx:w", "changed").await.expect("set on the leader");
    let r: Option<(String,)> =
        redis::pipe().atomic().set("tx:after", "no").query_async(&mut conn).await.expect("exec");
    assert_eq!(r, None, "EXEC after a WATCHed key changed");
    let mut t = TcpClient::connect(c.tcp(leader)).await;
    assert_eq!(value_of(t.call(get("tx:after")).await), None);

    // The WATCH idiom from two nodes: the counter ends at exactly the number of increments.
    const CLIENTS: usize = 2;
    const K: usize = 10;
    let mut tasks = Vec::new();
    for node in [leader, follower] {
        for _ in 0..CLIENTS {
            let addr = resp(node);
            tasks.push(tokio::spawn(async move {
                let mut c = redis_conn(addr).await;
                let until = Instant::now() + DEADLINE;
                let mut done = 0;
                while done < K {
                    assert!(Instant::now() < until, "transactions kept conflicting");
                    let () = redis::cmd("WATCH").arg("tx:counter").query_async(&mut c).await.expect("watch");
                    let v: Option<i64> =
                        redis::cmd("GET").arg("tx:counter").query_async(&mut c).await.expect("get");
                    let r: redis::RedisResult<Option<()>> = redis::pipe()
                        .atomic()
                        .cmd("SET")
                        .arg("tx:counter")
                        .arg(v.unwrap_or(0) + 1)
                        .ignore()
                        .query_async(&mut c)
                        .await;
                    match r {
                        Ok(Some(())) => done += 1,
                        Ok(None) => {}
                        Err(e) if e.code() == Some("TRYAGAIN") => {}
                        Err(e) => panic!("exec: {e}"),
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("client");
    }
    let total = (2 * CLIENTS * K).to_string();
    for i in 0..3 {
        let mut t = TcpClient::connect(c.tcp(i)).await;
        assert_eq!(value_of(t.call(get("tx:counter")).await), Some(b(&total)), "node {}", i + 1);
    }
    for i in 0..3 {
        c.stop(i).await;
    }
}

/// Cluster operations (issue #17): the cluster id, REPLICAOF, WAIT, the Raft figures.
#[path = "cluster_ops.rs"]
mod ops;

/// `REPLICAOF` a cluster that requires authentication (`masteruser`, `masterauth`).
#[path = "cluster_replica_auth.rs"]
mod replica_auth;

/// Backups restored with `--restore-from`.
#[path = "cluster_restore.rs"]
mod restore;

/// A counter from node `i`'s Raft figures (`/metrics`).
fn raft_counter(c: &Cluster, i: usize, name: &str) -> u64 {
    let mut text = String::new();
    c.node(i).cluster().expect("cluster mode").render_metrics(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from node {}'s metrics", i + 1))
}

/// Concurrent linearizable reads share read-index rounds (one quorum round on the leader, one
/// call to the leader from a follower, for every read waiting), and each still sees the write
/// its client had acknowledged just before sending it, on the leader and on a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_linearizable_reads_share_read_index_rounds_and_see_acknowledged_writes() {
    const CLIENTS: usize = 50;
    const EACH: usize = 4;
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    for node in [leader, (leader + 1) % 3] {
        let reads_before = raft_counter(&c, node, "nanodb_raft_read_index_reads_total");
        let rounds_before = raft_counter(&c, node, "nanodb_raft_read_index_rounds_total");
        let addr = c.tcp(node);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                tokio::spawn(async move {
                    let mut t = TcpClient::connect(addr).await;
                    for i in 0..EACH {
                        let (key, value) = (format!("r{node}-{n}-{i}"), format!("{n}.{i}"));
                        // An election on a loaded machine answers "retry": retried, as a client does.
                        loop {
                            match t.call(put(&key, &value)).await {
                                Err(Error::Unavailable(_)) => {
                                    tokio::time::sleep(Duration::from_millis(20)).await
                                }
                                Ok(Reply::Put { applied: true, .. }) => break,
                                other => panic!("{key}: {other:?}"),
                            }
                        }
                        let read = loop {
                            match t.call(get(&key)).await {
                                Err(Error::Unavailable(_)) => {
                                    tokio::time::sleep(Duration::from_millis(20)).await
                                }
                                other => break value_of(other),
                            }
                        };
                        assert_eq!(read, Some(b(&value)), "node {}: {key} read after its write", node + 1);
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("client");
        }
        let reads = raft_counter(&c, node, "nanodb_raft_read_index_reads_total") - reads_before;
        let rounds = raft_counter(&c, node, "nanodb_raft_read_index_rounds_total") - rounds_before;
        assert!(reads >= (CLIENTS * EACH) as u64, "node {}: {reads} reads counted", node + 1);
        assert!(rounds < reads, "node {}: {rounds} rounds for {reads} reads: none shared", node + 1);
    }
}

#[path = "cluster_pipeline.rs"]
mod pipeline;

/// `--max-memory` in a cluster (#20): an evicting policy refuses to start (an eviction is one
/// node's decision; every node must apply the same log), and under `noeviction` a write past the
/// limit is refused on the node that took it with Redis's `-OOM`, while deletes still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_takes_noeviction_only_and_refuses_writes_past_max_memory() {
    use nanodb_server::engine::Policy;
    use nanodb_server::server::StartError;

    let c = Cluster::new(1, 64 << 20);
    let evicting = Config { max_memory: 1 << 20, maxmemory_policy: Policy::AllKeysLru, ..c.config(0) };
    match Server::start(evicting).await {
        Err(StartError::Memory(why)) => assert!(why.contains("noeviction"), "{why}"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("an evicting policy started in cluster mode"),
    }
    let server = Server::start(Config { max_memory: 100_000, ..c.config(0) }).await.expect("node starts");
    let mut con = redis_conn(server.addrs().resp.expect("resp")).await;
    let value = "v".repeat(1000);
    let mut written = 0;
    let refused = loop {
        assert!(written < 1000, "100 kB never ran out");
        match con.set::<_, _, ()>(format!("k{written}"), &value).await {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(refused.code(), Some("OOM"), "{refused:?}");
    let evict: redis::RedisResult<()> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut con)
        .await;
    assert!(evict.is_err(), "CONFIG SET took an evicting policy in cluster mode");
    let deleted: i64 = con.del("k0").await.expect("a delete still runs");
    assert_eq!(deleted, 1);
    let kept: Option<String> = con.get("k1").await.expect("reads still run");
    assert_eq!(kept.as_deref(), Some(value.as_str()));
    server.shutdown().await;
}
