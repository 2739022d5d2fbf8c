//! Membership at runtime: a learner added over REST or gRPC catches up (by log, or by snapshot
//! when the log was compacted), is promoted, a voter is removed; a removed id is refused for
//! good; overlapping changes and non-admins are refused. Nodes are in-process on loopback; the
//! three founders list each other in `--cluster-peers`, a joining node lists no peers.

use base64::Engine as _;
use nanodb_protocol::pb::{self, cluster_client::ClusterClient};
use serde_json::{Value, json};

use super::*;

/// `n` nodes of which the first three found the cluster; the others start with no peers and wait
/// to be added.
fn with_joiners(n: usize, snapshot_every: u64) -> Cluster {
    Cluster::new(n, snapshot_every)
}

fn node_config(c: &Cluster, i: usize) -> Config {
    let mut cfg = c.config(i);
    let cluster = cfg.cluster.as_mut().expect("cluster mode");
    if i < 3 {
        cluster.peers.truncate(3);
    } else {
        cluster.peers.clear();
    }
    cfg
}

async fn start_node(c: &mut Cluster, i: usize) {
    let server = Server::start(node_config(c, i)).await.expect("node starts");
    c.nodes[i] = Some(server);
}

async fn founders(c: &mut Cluster) -> usize {
    for i in 0..3 {
        start_node(c, i).await;
    }
    c.leader().await
}

fn raft_addr(c: &Cluster, i: usize) -> String {
    format!("127.0.0.1:{}", c.ports[i])
}

fn http(c: &Cluster, i: usize) -> String {
    format!("http://{}", c.node(i).addrs().http.expect("http"))
}

/// POSTs a membership change; its status and body. Retries while the cluster has no leader.
async fn post_member(c: &Cluster, via: usize, body: Value) -> (u16, Value) {
    let web = reqwest::Client::new();
    eventually("a membership answer that is not 503", || {
        let (url, body, web) = (format!("{}/v1/cluster/members", http(c, via)), body.clone(), web.clone());
        async move {
            let r = web.post(url).json(&body).send().await.expect("post");
            let status = r.status().as_u16();
            (status != 503).then_some((status, r.json().await.expect("json")))
        }
    })
    .await
}

async fn delete_member(c: &Cluster, via: usize, id: u64) -> (u16, Value) {
    let web = reqwest::Client::new();
    eventually("a removal answer that is not 503", || {
        let (url, web) = (format!("{}/v1/cluster/members/{id}", http(c, via)), web.clone());
        async move {
            let r = web.delete(url).send().await.expect("delete");
            let status = r.status().as_u16();
            (status != 503).then_some((status, r.json().await.expect("json")))
        }
    })
    .await
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

fn snapshot_files(c: &Cluster, i: usize) -> usize {
    std::fs::read_dir(c.dirs[i].path().join("raft").join("snapshots"))
        .map(|d| {
            d.filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".snap"))).count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_catches_up_by_log_is_promoted_and_a_removed_voters_id_is_never_reused() {
    let mut c = with_joiners(4, 100_000);
    let leader = founders(&mut c).await;
    let follower = (leader + 1) % 3;
    write_keys(&c, follower, 0..30).await;

    // Node 4 starts alone, belonging to no cluster, and is added through a follower (forwarded).
    start_node(&mut c, 3).await;
    let (status, body) = post_member(&c, follower, json!({"id": 4, "raft_addr": raft_addr(&c, 3)})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["voters"], json!([1, 2, 3]), "{body}");
    assert_eq!(body["learners"], json!([4]), "{body}");

    // It catches up by the log (nothing was compacted) and keeps receiving it.
    eventually("the learner to hold every key", || async {
        (c.node(3).engine().key_count() == 30).then_some(())
    })
    .await;
    write_keys(&c, leader, 30..40).await;
    eventually("the learner to receive new writes", || async {
        (c.node(3).engine().key_count() == 40).then_some(())
    })
    .await;
    assert_eq!(snapshot_files(&c, 3), 0, "caught up by the log, not a snapshot");
    let s = c.status(3).await;
    assert_eq!(s.role, "learner");
    assert_eq!(s.leader_id, Some(leader as u64 + 1));
    // A write through the learner is forwarded to the leader; a read there is linearizable.
    let mut t4 = TcpClient::connect(c.tcp(3)).await;
    t4.call(put("via-learner", "1")).await.expect("a write through a learner");
    assert_eq!(value_of(t4.call(get("k39")).await), Some(b("v39")));

    // Promoted over gRPC, through another node.
    let other = (leader + 2) % 3;
    let mut admin = ClusterClient::new(grpc(c.node(other).addrs().grpc.expect("grpc")).await);
    let m = admin.promote_learner(pb::PromoteLearnerRequest { id: 4 }).await.expect("promote").into_inner();
    assert_eq!((m.voters, m.learners), (vec![1, 2, 3, 4], vec![]));
    let again =
        admin.promote_learner(pb::PromoteLearnerRequest { id: 4 }).await.expect_err("already a voter");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    eventually("node 4 to see itself a follower", || async {
        (c.status(3).await.role == "follower").then_some(())
    })
    .await;

    // A voter other than the leader is removed; its id is retired everywhere.
    let gone = follower as u64 + 1;
    let (status, body) = delete_member(&c, leader, gone).await;
    assert_eq!(status, 200, "{body}");
    let mut voters: Vec<u64> = (1..=4).filter(|id| *id != gone).collect();
    voters.sort_unstable();
    assert_eq!(body["voters"], json!(voters), "{body}");
    assert_eq!(body["removed_ids"], json!([gone]), "{body}");
    c.stop(follower).await;
    write_keys(&c, leader, 40..45).await;
    let s = c.status(3).await;
    assert_eq!(s.removed_ids, vec![gone], "replicated: node 4 knows the removed id");
    assert_eq!(s.joint_voters, None);

    // The removed id is refused, whatever the address, over REST and gRPC.
    let (status, body) = post_member(&c, 3, json!({"id": gone, "raft_addr": "127.0.0.1:1"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("never reused")), "{body}");
    let reused = admin
        .add_learner(pb::AddLearnerRequest { id: gone, raft_addr: "127.0.0.1:1".into() })
        .await
        .expect_err("a removed id");
    assert_eq!(reused.code(), tonic::Code::FailedPrecondition, "{reused:?}");
    // Bad input changes nothing.
    for (body, want) in [
        (json!({"id": 0, "raft_addr": "127.0.0.1:1"}), 400),
        (json!({"id": 9, "raft_addr": "nowhere"}), 400),
        (json!({"id": 9}), 400),
        (json!({"id": 9, "role": "voter"}), 404),
        (json!({"id": 9, "role": "boss", "raft_addr": "127.0.0.1:1"}), 400),
        (json!({"id": 4, "raft_addr": "127.0.0.1:2"}), 409),
    ] {
        let (status, answer) = post_member(&c, leader, body.clone()).await;
        assert_eq!(status, want, "{body} -> {answer}");
    }
    let (status, _) = delete_member(&c, leader, 77).await;
    assert_eq!(status, 404);
    let after = c.status(leader).await;
    assert_eq!(after.members.iter().map(|m| m.id).collect::<Vec<_>>(), voters);

    // Restarted from disk, the removed id is still known (the membership record is durable).
    c.stop(3).await;
    start_node(&mut c, 3).await;
    eventually("node 4 to rejoin", || async { c.status(3).await.leader_id.map(|_| ()) }).await;
    assert_eq!(c.status(3).await.removed_ids, vec![gone]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_added_after_compaction_catches_up_by_snapshot_and_the_removed_are_refused() {
    let mut c = with_joiners(5, 10);
    let leader = founders(&mut c).await;
    write_keys(&c, leader, 0..60).await;
    eventually("the leader to purge its log", || async {
        let m = c.node(leader).cluster().expect("cluster").raft().metrics().borrow().clone();
        m.purged.is_some_and(|p| p.index > 10).then_some(())
    })
    .await;

    start_node(&mut c, 3).await;
    let (status, body) = post_member(&c, leader, json!({"id": 4, "raft_addr": raft_addr(&c, 3)})).await;
    assert_eq!(status, 200, "{body}");
    eventually("the learner to install the snapshot", || async {
        (c.node(3).engine().key_count() == 60).then_some(())
    })
    .await;
    assert!(snapshot_files(&c, 3) >= 1, "the learner holds an installed snapshot");

    // Remove the learner, then add a fifth node: the fifth receives a snapshot that carries the
    // removed id (the membership record travels with snapshots).
    let (status, body) = delete_member(&c, leader, 4).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["learners"], json!([]), "{body}");
    write_keys(&c, leader, 60..100).await;
    eventually("the leader to snapshot past the removal", || async {
        let m = c.node(leader).cluster().expect("cluster").raft().metrics().borrow().clone();
        m.purged.is_some_and(|p| p.index > m.membership_config.log_id().map_or(0, |l| l.index)).then_some(())
    })
    .await;
    start_node(&mut c, 4).await;
    let (status, body) = post_member(&c, leader, json!({"id": 5, "raft_addr": raft_addr(&c, 4)})).await;
    assert_eq!(status, 200, "{body}");
    eventually("node 5 to catch up", || async { (c.node(4).engine().key_count() == 100).then_some(()) })
        .await;
    eventually("node 5 to know the removed id", || async {
        (c.status(4).await.removed_ids == vec![4]).then_some(())
    })
    .await;

    // The removed node (still running, still thinking itself a learner) is cut off: no new write
    // reaches it, and the cluster keeps serving.
    let held = c.node(3).engine().key_count();
    write_keys(&c, leader, 100..110).await;
    eventually("node 5 to receive the new writes", || async {
        (c.node(4).engine().key_count() == 110).then_some(())
    })
    .await;
    assert_eq!(c.node(3).engine().key_count(), held, "a removed node receives nothing more");

    // A Raft call from the removed id is refused, saying why, and the cluster keeps serving.
    {
        use nanodb_server::cluster::network::{FAILED, kind, read_answer, request_frame};
        use tokio::io::AsyncWriteExt;
        let raft = c.node(leader).cluster().expect("cluster").raft_addr;
        let mut s = tokio::net::TcpStream::connect(raft).await.expect("connect");
        s.write_all(&request_frame(kind::VOTE, 4, 0, b"{}")).await.expect("send");
        let (status, why) = read_answer(&mut s).await.expect("an answer");
        assert_eq!(status, FAILED);
        assert!(String::from_utf8_lossy(&why).contains("removed"), "{}", String::from_utf8_lossy(&why));
    }
    write_keys(&c, leader, 110..111).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_changes_are_refused_a_stuck_joint_configuration_is_reported_and_non_admins_are_refused()
{
    let users_dir = tempfile::tempdir().expect("tempdir");
    let users = users_dir.path().join("users.acl");
    std::fs::write(
        &users,
        "user default off\nuser admin on >adminpw allkeys allchannels +@all\nuser alice on >alicepw allkeys +@read +@write\n",
    )
    .expect("users file");
    let mut c = with_joiners(4, 100_000);
    for i in 0..4 {
        if i == 3 {
            // Started once the founders agree on a leader (it knows of none until added).
            c.leader().await;
        }
        let auth = AuthConfig { users_file: Some(users.clone()), ..AuthConfig::default() };
        let server = Server::start(Config { auth, ..node_config(&c, i) }).await.expect("node starts");
        c.nodes[i] = Some(server);
    }
    let leader = c.status(0).await.leader_id.expect("a leader") as usize - 1;
    let web = reqwest::Client::new();
    let base = http(&c, leader);
    let post = |user: &'static str, pass: &'static str, body: Value| {
        let (url, web) = (format!("{base}/v1/cluster/members"), web.clone());
        async move {
            let r = web.post(url).basic_auth(user, Some(pass)).json(&body).send().await.expect("post");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }
    };

    // Not an admin: refused on the receiving node, over REST and gRPC; nothing changes.
    let learner = json!({"id": 4, "raft_addr": raft_addr(&c, 3)});
    let (status, body) = post("alice", "alicepw", learner.clone()).await;
    assert_eq!(status, 403, "{body}");
    let r = web.delete(format!("{base}/v1/cluster/members/2")).send().await.expect("delete");
    assert_eq!(r.status().as_u16(), 401, "anonymous");
    let mut g = ClusterClient::new(grpc(c.node(leader).addrs().grpc.expect("grpc")).await);
    let mut req = tonic::Request::new(pb::RemoveMemberRequest { id: 2 });
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:alicepw"));
    req.metadata_mut().insert("authorization", basic.parse().expect("ascii"));
    let refused = g.remove_member(req).await.expect_err("not an admin");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(c.status(leader).await.members.len(), 3);

    // The admin adds node 4 as a learner.
    let (status, body) = post("admin", "adminpw", learner).await;
    assert_eq!(status, 200, "{body}");

    // Two voters stop: promoting node 4 goes into a joint configuration that cannot commit.
    let down: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for &i in &down {
        c.stop(i).await;
    }
    let stuck = {
        let url = format!("{base}/v1/cluster/members");
        let web = web.clone();
        tokio::spawn(async move {
            let r = web
                .post(url)
                .basic_auth("admin", Some("adminpw"))
                .json(&json!({"id": 4, "role": "voter"}))
                .send()
                .await
                .expect("post");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        })
    };
    let joint = eventually("the status to report the joint configuration", || async {
        c.status(leader).await.joint_voters
    })
    .await;
    assert_eq!(joint.len(), 2, "{joint:?}");
    assert!(joint[1].contains(&4), "{joint:?}");
    // A second change meanwhile is refused at once, with a clear error.
    let (status, body) = post("admin", "adminpw", json!({"id": 5, "raft_addr": "127.0.0.1:1"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("in progress")), "{body}");
    // The stuck change answers that it did not commit, and says where to look.
    let (status, body) = stuck.await.expect("join");
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("/v1/cluster")), "{body}");
    // Still in progress (openraft's own refusal) while the joint configuration stands.
    let (status, body) = post("admin", "adminpw", json!({"id": 5, "raft_addr": "127.0.0.1:1"})).await;
    assert!(status == 409 || status == 503, "{status} {body}");

    // The voters come back: the change completes, the status shows a uniform configuration.
    for &i in &down {
        let auth = AuthConfig { users_file: Some(users.clone()), ..AuthConfig::default() };
        let server = Server::start(Config { auth, ..node_config(&c, i) }).await.expect("node restarts");
        c.nodes[i] = Some(server);
    }
    eventually("the configuration to become uniform with node 4 a voter", || async {
        let s = c.status(leader).await;
        let voters = s.members.iter().filter(|m| m.role != "learner").count();
        (s.joint_voters.is_none() && voters == 4).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_node_id_in_the_peer_list_refuses_to_start() {
    let c = with_joiners(3, 100_000);
    let mut cfg = node_config(&c, 0);
    let cluster = cfg.cluster.as_mut().expect("cluster mode");
    cluster.peers[2].0 = 2;
    let e = Server::start(cfg).await.expect_err("a duplicate id refuses to start");
    assert!(e.to_string().contains("node id 2 twice"), "{e}");
}
