//! Cluster operations: the cluster id that keeps a node of one cluster out of another, a node
//! serving alone until `REPLICAOF` joins it to a cluster (and `REPLICAOF NO ONE` takes it out),
//! `WAIT`, and the Raft figures in `/metrics`. Nodes are in-process on loopback.

use serde_json::{Value, json};

use super::*;

/// A one-node cluster (`--cluster-peers` lists only itself: it initializes itself).
async fn one_node_cluster() -> Cluster {
    let mut c = Cluster::new(1, 100_000);
    c.start(0).await;
    c.leader().await;
    c
}

fn identity_file(c: &Cluster, i: usize) -> Value {
    let bytes = std::fs::read(c.dirs[i].path().join("raft").join("identity")).expect("identity file");
    serde_json::from_slice(&bytes).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_member_stores_the_cluster_id_minted_at_initialization() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    c.leader().await;
    let minted = c.node(0).cluster().expect("cluster").cluster_id().expect("node 1 initialized the cluster");
    assert_eq!(minted.len(), 32, "{minted}");
    for i in 0..3 {
        // The others adopt it from the first call they accept from a member.
        let id = eventually("every node to hold the cluster id", || async {
            c.node(i).cluster().expect("cluster").cluster_id()
        })
        .await;
        assert_eq!(id, minted, "node {}", i + 1);
        let stored = identity_file(&c, i);
        assert_eq!(stored["cluster_id"], json!(minted), "node {}: {stored}", i + 1);
        assert_eq!(stored["node_id"], json!(i + 1), "{stored}");
    }
    for i in 0..3 {
        c.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_of_another_cluster_is_refused_at_start_at_the_raft_port_and_as_a_learner() {
    let mut a = one_node_cluster().await;
    let mut b = one_node_cluster().await;
    let (ida, idb) = (
        a.node(0).cluster().expect("cluster").cluster_id().expect("id"),
        b.node(0).cluster().expect("cluster").cluster_id().expect("id"),
    );
    assert_ne!(ida, idb, "two clusters, two ids");

    // Adding B's node to A as a learner is refused: it would refuse every call of A.
    let http = a.node(0).addrs().http.expect("http");
    let r = reqwest::Client::new()
        .post(format!("http://{http}/v1/cluster/members"))
        .json(&json!({"id": 2, "raft_addr": format!("127.0.0.1:{}", b.ports[0])}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), reqwest::StatusCode::CONFLICT);
    let body: Value = r.json().await.expect("json");
    assert!(body.to_string().contains("another cluster"), "{body}");

    // A's node restarted with a peer list naming B's node refuses to start, naming both ids.
    a.stop(0).await;
    let mut cfg = a.config(0);
    cfg.cluster.as_mut().expect("cluster").peers.push((2, format!("127.0.0.1:{}", b.ports[0])));
    let e = Server::start(cfg).await.expect_err("another cluster's peer").to_string();
    assert!(e.contains(&ida) && e.contains(&idb) && e.contains("another cluster"), "{e}");

    // A's data dir under another node id refuses to start too.
    let mut cfg = a.config(0);
    let cluster = cfg.cluster.as_mut().expect("cluster");
    (cluster.node_id, cluster.peers) = (5, Vec::new());
    let e = Server::start(cfg).await.expect_err("another node id").to_string();
    assert!(e.contains("belongs to node 1") && e.contains("--node-id is 5"), "{e}");

    // The binary says so and exits with a failure status.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nanodb-server"))
        .args(["--tcp-addr", "off", "--grpc-addr", "off", "--http-addr", "off", "--resp-addr", "off"])
        .args(["--node-id", "5", "--raft-addr", "127.0.0.1:0", "--data-dir"])
        .arg(a.dirs[0].path())
        .output()
        .expect("run nanodb-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("belongs to node 1"), "{stderr}");

    // Both keep serving: A restarted as it was, B untouched.
    a.start(0).await;
    a.leader().await;
    let mut t = TcpClient::connect(a.tcp(0)).await;
    t.call(put("a", "1")).await.expect("A serves");
    let mut t = TcpClient::connect(b.tcp(0)).await;
    t.call(put("b", "1")).await.expect("B serves");
    a.stop(0).await;
    b.stop(0).await;
}

async fn write_keys(c: &Cluster, via: usize, keys: std::ops::Range<usize>) {
    let mut tcp = TcpClient::connect(c.tcp(via)).await;
    for i in keys {
        // Retried through elections, as a client would.
        let until = Instant::now() + DEADLINE;
        while let Err(e) = tcp.call(put(&format!("k{i}"), &format!("v{i}"))).await {
            assert!(Instant::now() < until, "write k{i} not acknowledged: {e}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Node `i`'s config: the first three found the cluster; the others list no peers (they serve
/// alone), under the node id `id`.
fn standalone_config(c: &Cluster, i: usize, id: u64) -> Config {
    let mut cfg = c.config(i);
    let cluster = cfg.cluster.as_mut().expect("cluster mode");
    if i < 3 {
        cluster.peers.truncate(3);
    } else {
        cluster.peers.clear();
        cluster.node_id = id;
    }
    cfg
}

async fn start_as(c: &mut Cluster, i: usize, id: u64) {
    c.nodes[i] = Some(Server::start(standalone_config(c, i, id)).await.expect("node starts"));
}

async fn resp_of(c: &Cluster, i: usize) -> redis::aio::MultiplexedConnection {
    redis_conn(c.node(i).addrs().resp.expect("resp")).await
}

async fn replicaof(
    conn: &mut redis::aio::MultiplexedConnection,
    target: Option<SocketAddr>,
) -> redis::RedisResult<String> {
    let mut cmd = redis::cmd("REPLICAOF");
    match target {
        Some(a) => cmd.arg(a.ip().to_string()).arg(a.port()),
        None => cmd.arg("NO").arg("ONE"),
    };
    cmd.query_async(conn).await
}

async fn role(conn: &mut redis::aio::MultiplexedConnection) -> Vec<redis::Value> {
    redis::cmd("ROLE").query_async(conn).await.expect("ROLE")
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

async fn metrics(c: &Cluster, i: usize) -> String {
    let http = c.node(i).addrs().http.expect("http");
    reqwest::get(format!("http://{http}/metrics")).await.expect("scrape").text().await.expect("text")
}

/// A sample's value in a Prometheus text exposition (`name{labels}` as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicaof_joins_a_node_serving_alone_by_snapshot_and_no_one_keeps_its_data() {
    // The founders compact their log every 20 entries: a joining node gets a snapshot.
    let mut c = Cluster::new(4, 20);
    for i in 0..3 {
        start_as(&mut c, i, i as u64 + 1).await;
    }
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;

    // Node "9" serves alone: a write makes it a cluster of one, a master without replicas.
    start_as(&mut c, 3, 9).await;
    let mut alone = resp_of(&c, 3).await;
    let () = alone.set("mine", "1").await.expect("a node alone takes writes");
    let r = role(&mut alone).await;
    assert_eq!(text(&r[0]), "master", "{r:?}");
    let started = Instant::now();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(200).query_async(&mut alone).await.expect("WAIT");
    assert_eq!(n, 0, "no replicas");
    assert!(started.elapsed() >= Duration::from_millis(150), "WAIT waited for its timeout");

    write_keys(&c, leader, 0..60).await;

    // REPLICAOF a follower's RESP address: the cluster adds it as a learner with a fresh id
    // (not its --node-id 9: one more than every id the cluster used), it drops its own data and
    // receives the cluster's by snapshot.
    let follower_resp = c.node(follower).addrs().resp.expect("resp");
    assert_eq!(replicaof(&mut alone, Some(follower_resp)).await.expect("REPLICAOF"), "OK");
    eventually("the new replica to hold the cluster's keys and not its own", || async {
        let e = c.node(3).engine();
        (e.key_count() == 60).then_some(())
    })
    .await;
    let s = c.status(3).await;
    assert_eq!((s.node_id, s.role), (4, "learner"), "{s:?}");
    assert_eq!(s.leader_id, Some(leader as u64 + 1));
    let joined_id = c.node(0).cluster().expect("cluster").cluster_id();
    assert_eq!(c.node(3).cluster().expect("cluster").cluster_id(), joined_id, "it took the cluster's id");
    let stored = identity_file(&c, 3);
    assert_eq!((stored["node_id"].clone(), stored["assigned"].clone()), (json!(4), json!(true)), "{stored}");

    // ROLE and INFO replication answer as a Redis replica does.
    let r = role(&mut alone).await;
    assert_eq!(text(&r[0]), "slave", "{r:?}");
    let leader_resp = c.node(leader).addrs().resp.expect("resp");
    assert_eq!((text(&r[1]), text(&r[2])), (leader_resp.ip().to_string(), leader_resp.port().to_string()));
    assert_eq!(text(&r[3]), "connected");
    let info: String = redis::cmd("INFO").arg("replication").query_async(&mut alone).await.expect("INFO");
    assert!(info.contains("role:slave") && info.contains("master_link_status:up"), "{info}");
    let mut on_leader = resp_of(&c, leader).await;
    let info: String = redis::cmd("INFO").arg("replication").query_async(&mut on_leader).await.expect("INFO");
    assert!(info.contains("role:master") && info.contains("connected_slaves:3"), "{info}");

    // A write sent to the learner is forwarded; WAIT counts followers and the learner holding
    // the connection's last write, from the leader's connection and the learner's.
    let () = alone.set("via-replica", "1").await.expect("a write through the learner");
    let n: i64 = redis::cmd("WAIT").arg(3).arg(5000).query_async(&mut alone).await.expect("WAIT");
    assert_eq!(n, 3, "two followers and the learner");
    let () = on_leader.set("via-leader", "1").await.expect("set");
    let n: i64 = redis::cmd("WAIT").arg(3).arg(0).query_async(&mut on_leader).await.expect("WAIT");
    assert_eq!(n, 3);

    // The Raft figures: the leader's view of every peer, and the snapshot the learner installed.
    let m = metrics(&c, leader).await;
    assert_eq!(sample(&m, "nanodb_raft_role{role=\"leader\"}"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "nanodb_raft_leader_id"), Some(leader as f64 + 1.0), "{m}");
    assert!(sample(&m, "nanodb_raft_term").is_some_and(|t| t >= 1.0), "{m}");
    assert!(sample(&m, "nanodb_raft_commit_index").is_some_and(|i| i >= 60.0), "{m}");
    assert!(sample(&m, "nanodb_raft_applied_index").is_some_and(|i| i >= 60.0), "{m}");
    let won = sample(&m, "nanodb_raft_elections_won_total").expect("elections won");
    assert!(won >= 1.0, "{m}");
    assert!(sample(&m, "nanodb_raft_elections_started_total").is_some_and(|n| n >= won), "{m}");
    assert!(sample(&m, "nanodb_raft_snapshots_sent_total").is_some_and(|n| n >= 1.0), "{m}");
    for peer in (1..=4).filter(|p| *p != leader as u64 + 1) {
        let matched = sample(&m, &format!("nanodb_raft_peer_matched_index{{peer=\"{peer}\"}}"));
        assert!(matched.is_some_and(|i| i >= 60.0), "peer {peer}: {m}");
        assert!(sample(&m, &format!("nanodb_raft_peer_lag_entries{{peer=\"{peer}\"}}")).is_some(), "{m}");
    }
    let m = metrics(&c, 3).await;
    assert_eq!(sample(&m, "nanodb_raft_role{role=\"learner\"}"), Some(1.0), "{m}");
    assert!(sample(&m, "nanodb_raft_snapshots_installed_total").is_some_and(|n| n >= 1.0), "{m}");

    // REPLICAOF NO ONE: it leaves (its id retired) and keeps the data as a cluster of one.
    eventually("the replica to apply every write", || async {
        (c.node(3).engine().key_count() == 62).then_some(())
    })
    .await;
    assert_eq!(replicaof(&mut alone, None).await.expect("REPLICAOF NO ONE"), "OK");
    let s = c.status(leader).await;
    assert!(s.removed_ids.contains(&4) && s.members.len() == 3, "{s:?}");
    let () = alone.set("after", "1").await.expect("a write alone again");
    let r = role(&mut alone).await;
    assert_eq!(text(&r[0]), "master", "{r:?}");
    let kept = c.node(3).engine().key_count();
    assert_eq!(kept, 60 + 3, "the cluster's keys, the write through it and the one after");
    // And it keeps them across a restart.
    c.stop(3).await;
    start_as(&mut c, 3, 9).await;
    eventually("the kept data to come back", || async {
        (c.node(3).engine().key_count() == kept).then_some(())
    })
    .await;
    let mut alone = resp_of(&c, 3).await;
    let () = alone.set("restarted", "1").await.expect("a write after the restart");

    // Joining again takes a fresh id: 4 was removed and is never reused.
    assert_eq!(replicaof(&mut alone, Some(leader_resp)).await.expect("REPLICAOF again"), "OK");
    let s = c.status(3).await;
    assert_eq!(s.node_id, 5, "{s:?}");
    for i in 0..4 {
        c.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_node_names_the_flags_replicaof_needs_and_waits_for_no_replica() {
    let server = crate::harness::start(Config { resp_addr: any_port(), ..config() }).await;
    let mut conn = redis_conn(server.addrs().resp.expect("resp")).await;
    for cmd in ["REPLICAOF", "SLAVEOF"] {
        let e = redis::cmd(cmd).arg("127.0.0.1").arg(6379).query_async::<String>(&mut conn).await;
        let e = e.expect_err("no cluster mode").to_string();
        assert!(e.contains("--node-id") && e.contains("--raft-addr"), "{e}");
    }
    let () = conn.set("k", "v").await.expect("set");
    let started = Instant::now();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(0).query_async(&mut conn).await.expect("WAIT");
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(1), "at once, without replicas");
    let e = redis::cmd("WAIT").arg(1).arg(-1).query_async::<i64>(&mut conn).await.expect_err("negative");
    assert!(e.to_string().contains("timeout is negative"), "{e}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_cut_off_mid_stream_is_refused_leaves_nothing_behind_and_the_cluster_keeps_serving() {
    use nanodb_server::cluster::network::{SnapshotHeader, kind, request_frame};
    use tokio::io::AsyncWriteExt;

    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    write_keys(&c, leader, 0..10).await;
    eventually("the follower to apply the writes", || async {
        (c.node(follower).engine().key_count() == 10).then_some(())
    })
    .await;

    // The leader's id, announcing 1000 bytes, sending 100, then the connection drops.
    let header = SnapshotHeader {
        vote: openraft::Vote::new(1, leader as u64 + 1),
        meta: openraft::SnapshotMeta::default(),
        versions: 0,
        last_now: 0,
        len: 1000,
        retired: Vec::new(),
    };
    let raft = c.node(follower).cluster().expect("cluster").raft_addr;
    let mut s = tokio::net::TcpStream::connect(raft).await.expect("connect");
    let from = leader as u64 + 1;
    let json = serde_json::to_vec(&header).expect("json");
    s.write_all(&request_frame(kind::SNAPSHOT, from, 0, &json)).await.expect("header");
    s.write_all(&request_frame(kind::SNAPSHOT_CHUNK, from, 0, &[7u8; 100])).await.expect("chunk");
    drop(s);

    // Nothing half-received stays in the snapshots' directory, the follower keeps its state and
    // follows the log.
    write_keys(&c, leader, 10..20).await;
    eventually("the follower to apply new writes", || async {
        (c.node(follower).engine().key_count() == 20).then_some(())
    })
    .await;
    let snapshots = c.dirs[follower].path().join("raft").join("snapshots");
    let left: Vec<_> = std::fs::read_dir(&snapshots)
        .expect("snapshots dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("incoming") || n.ends_with(".snap"))
        .collect();
    assert!(left.is_empty(), "nothing half-received, and no snapshot installed: {left:?}");
    for i in 0..3 {
        c.stop(i).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicaof_a_node_serving_alone_makes_it_a_master_with_one_replica() {
    // Two nodes without --cluster-peers, neither written to yet.
    let mut c = Cluster::new(5, 100_000);
    start_as(&mut c, 3, 1).await;
    start_as(&mut c, 4, 1).await;
    let a = c.node(3).addrs().resp.expect("resp");
    let mut on_b = resp_of(&c, 4).await;
    assert_eq!(replicaof(&mut on_b, Some(a)).await.expect("REPLICAOF"), "OK");
    let s = c.status(4).await;
    assert_eq!((s.node_id, s.role), (2, "learner"), "the first id after the master's own: {s:?}");

    let mut on_a = resp_of(&c, 3).await;
    let () = on_a.set("k", "v").await.expect("set on the master");
    let n: i64 = redis::cmd("WAIT").arg(1).arg(5000).query_async(&mut on_a).await.expect("WAIT");
    assert_eq!(n, 1, "one replica holds it");
    let started = Instant::now();
    let n: i64 = redis::cmd("WAIT").arg(2).arg(200).query_async(&mut on_a).await.expect("WAIT");
    assert_eq!(n, 1, "there is only one");
    assert!(started.elapsed() >= Duration::from_millis(150), "it waited for the timeout");
    let r = role(&mut on_a).await;
    assert_eq!(text(&r[0]), "master", "{r:?}");
    let got: Option<String> = on_b.get("k").await.expect("a linearizable read on the replica");
    assert_eq!(got.as_deref(), Some("v"));
    // Again: already there.
    assert_eq!(
        replicaof(&mut on_b, Some(a)).await.expect("REPLICAOF again"),
        "OK Already connected to specified master"
    );
    c.stop(3).await;
    c.stop(4).await;
}
