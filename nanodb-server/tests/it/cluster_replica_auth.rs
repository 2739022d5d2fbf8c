//! `REPLICAOF` against a cluster whose nodes require authentication: Redis's `masteruser` and
//! `masterauth`, by flag and by `CONFIG SET`. Nodes are in-process on loopback.

use super::*;

/// The target cluster's users: an admin, and a user with no key and no command category, which
/// may still run `INFO` (any authenticated user may): all a joining node needs of the target.
const USERS: &str =
    "user default off\nuser admin on >adminpw allkeys allchannels +@all\nuser repl on >replpw -@all\n";

/// Node `i` alone (no `--cluster-peers`) as node id `id`, with `auth`.
fn alone(c: &Cluster, i: usize, id: u64, auth: AuthConfig) -> Config {
    let mut cfg = c.config(i);
    let cluster = cfg.cluster.as_mut().expect("cluster mode");
    cluster.peers.clear();
    cluster.node_id = id;
    Config { auth, ..cfg }
}

async fn resp_as(addr: SocketAddr, user: &str, pass: &str) -> redis::aio::MultiplexedConnection {
    redis_conn_to(format!("redis://{user}:{pass}@{addr}/")).await
}

async fn replicaof(
    conn: &mut redis::aio::MultiplexedConnection,
    target: SocketAddr,
) -> redis::RedisResult<String> {
    redis::cmd("REPLICAOF").arg(target.ip().to_string()).arg(target.port()).query_async(conn).await
}

async fn config_get(conn: &mut redis::aio::MultiplexedConnection, name: &str) -> Vec<String> {
    redis::cmd("CONFIG").arg("GET").arg(name).query_async(conn).await.expect("CONFIG GET")
}

/// What node `i` holds, and that it still serves alone as a master.
async fn still_alone_with(c: &Cluster, i: usize, conn: &mut redis::aio::MultiplexedConnection) {
    let got: Option<String> = conn.get("mine").await.expect("GET");
    assert_eq!(got.as_deref(), Some("kept"), "the node kept its data");
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await.expect("ROLE");
    assert_eq!(role.first(), Some(&redis::Value::BulkString(b"master".to_vec())), "{role:?}");
    let s = c.status(i).await;
    assert_eq!(s.members.len(), 1, "still a cluster of one: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicaof_a_cluster_that_requires_a_password_authenticates_with_masteruser_and_masterauth() {
    let users_dir = tempfile::tempdir().expect("tempdir");
    let users = users_dir.path().join("users.acl");
    std::fs::write(&users, USERS).expect("users file");
    let mut c = Cluster::new(3, 100_000);

    // The target: a cluster of one whose users need passwords, holding data.
    let target_auth = AuthConfig { users_file: Some(users.clone()), ..AuthConfig::default() };
    c.nodes[0] = Some(Server::start(alone(&c, 0, 1, target_auth)).await.expect("target starts"));
    let target = c.node(0).addrs().resp.expect("resp");
    let mut admin = resp_as(target, "admin", "adminpw").await;
    for i in 0..20 {
        let () = admin.set(format!("k{i}"), format!("v{i}")).await.expect("write on the target");
    }

    // The joining node: no users of its own, data of its own.
    c.nodes[1] = Some(Server::start(alone(&c, 1, 7, AuthConfig::default())).await.expect("node starts"));
    let mut joiner = redis_conn(c.node(1).addrs().resp.expect("resp")).await;
    let () = joiner.set("mine", "kept").await.expect("a node alone takes writes");

    // No credentials: the target's INFO needs a user; refused clearly, nothing changed here.
    let e = replicaof(&mut joiner, target).await.expect_err("no credentials").to_string();
    assert!(e.contains("requires authentication") && e.contains(&target.to_string()), "{e}");
    assert!(e.contains("masterauth"), "the error says what to set: {e}");
    still_alone_with(&c, 1, &mut joiner).await;

    // A wrong password: the error names the target and says authentication failed.
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("masteruser")
        .arg("repl")
        .arg("masterauth")
        .arg("not-the-password")
        .query_async(&mut joiner)
        .await
        .expect("CONFIG SET");
    let e = replicaof(&mut joiner, target).await.expect_err("wrong password").to_string();
    assert!(
        e.contains("authentication to") && e.contains("failed") && e.contains(&target.to_string()),
        "{e}"
    );
    assert!(!e.contains("not-the-password"), "the password is never echoed: {e}");
    still_alone_with(&c, 1, &mut joiner).await;
    // CONFIG GET shows the user, never the password.
    assert_eq!(config_get(&mut joiner, "masteruser").await, ["masteruser", "repl"]);
    let shown = config_get(&mut joiner, "master*").await;
    assert!(shown.contains(&"masterauth".to_string()), "{shown:?}");
    assert!(!shown.iter().any(|v| v.contains("not-the-password")), "{shown:?}");

    // The right password: it joins as a learner, drops its own data and receives the target's.
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("masterauth")
        .arg("replpw")
        .query_async(&mut joiner)
        .await
        .expect("CONFIG SET");
    assert_eq!(replicaof(&mut joiner, target).await.expect("REPLICAOF with credentials"), "OK");
    eventually("the replica to hold the target's keys and not its own", || async {
        (c.node(1).engine().key_count() == 20).then_some(())
    })
    .await;
    let got: Option<String> = joiner.get("k7").await.expect("GET on the replica");
    assert_eq!(got.as_deref(), Some("v7"));
    let s = c.status(1).await;
    assert_eq!(s.role, "learner", "{s:?}");

    // The flags do the same at start (`--masteruser`, `--masterauth`), with `AUTH user pass`.
    let flags = AuthConfig {
        masteruser: Some("repl".into()),
        masterauth: Some("replpw".into()),
        ..AuthConfig::default()
    };
    c.nodes[2] = Some(Server::start(alone(&c, 2, 9, flags)).await.expect("node starts"));
    let mut third = redis_conn(c.node(2).addrs().resp.expect("resp")).await;
    assert_eq!(config_get(&mut third, "masterauth").await, ["masterauth", "******"], "masked");
    assert_eq!(replicaof(&mut third, target).await.expect("REPLICAOF with the flags' credentials"), "OK");
    eventually("the second replica to hold the target's keys", || async {
        (c.node(2).engine().key_count() == 20).then_some(())
    })
    .await;
    let s = c.status(0).await;
    assert_eq!(s.members.len(), 3, "the target leads two learners: {s:?}");
    for i in 0..3 {
        c.stop(i).await;
    }
}
