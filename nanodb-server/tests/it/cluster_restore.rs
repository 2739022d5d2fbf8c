//! Backup and restore: a running cluster node's snapshot, copied while the node serves, restored
//! with `nanodb-server --restore-from` into fresh data directories, as a single node and as a new
//! cluster of one that another node then joins; a single node's snapshot restored too; damaged
//! backups, data directories that are not empty and flags that cannot apply refused, each with
//! its exit status and nothing written.

use std::path::{Path, PathBuf};

use super::*;

const SERVER: &str = env!("CARGO_BIN_EXE_nanodb-server");

/// `nanodb-server --restore-from FROM --data-dir DIR ARGS...`: (exit status, stdout, stderr).
fn restore(from: &Path, dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(SERVER)
        .arg("--restore-from")
        .arg(from)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run nanodb-server");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The files in `dir`, sorted (none when it does not exist).
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The data every backup here holds: strings, an integer, a hash, a list, a key with a TTL; and
/// a key deleted before the backup. Returns how many keys remain.
async fn write_data(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    for i in 0..100 {
        let () = conn.set(format!("k{i}"), format!("v{i}")).await.expect("SET");
    }
    let _: i64 = conn.incr("counter", 42).await.expect("INCR");
    let () = conn.hset_multiple("h", &[("f1", "a"), ("f2", "b")]).await.expect("HSET");
    let _: i64 = conn.rpush("l", &["x", "y", "z"]).await.expect("RPUSH");
    let () = conn.set_ex("ttl", "soon", 3600).await.expect("SET EX");
    let () = conn.set("gone", "1").await.expect("SET");
    let _: i64 = conn.del("gone").await.expect("DEL");
    104
}

/// Reads every key of [`write_data`] back over RESP, and checks that nothing else is there.
async fn check_data(conn: &mut redis::aio::MultiplexedConnection, keys: usize) {
    for i in 0..100 {
        let v: Option<String> = conn.get(format!("k{i}")).await.expect("GET");
        assert_eq!(v, Some(format!("v{i}")), "k{i}");
    }
    let n: i64 = conn.get("counter").await.expect("GET counter");
    assert_eq!(n, 42);
    let h: std::collections::BTreeMap<String, String> = conn.hgetall("h").await.expect("HGETALL");
    assert_eq!(h, [("f1".to_string(), "a".to_string()), ("f2".to_string(), "b".to_string())].into());
    let l: Vec<String> = conn.lrange("l", 0, -1).await.expect("LRANGE");
    assert_eq!(l, ["x", "y", "z"]);
    let ttl: i64 = conn.ttl("ttl").await.expect("TTL");
    assert!((3000..=3600).contains(&ttl), "the deadline came back: {ttl}");
    let gone: Option<String> = conn.get("gone").await.expect("GET");
    assert_eq!(gone, None, "a key deleted before the backup stays deleted");
    let n: usize = redis::cmd("DBSIZE").query_async(conn).await.expect("DBSIZE");
    assert_eq!(n, keys, "exactly the backup's keys");
}

/// The newest snapshot in a node's `raft/snapshots/` with its index: (index, .snap, .meta).
fn newest_snapshot(dir: &Path) -> Option<(u64, PathBuf, PathBuf)> {
    let snapshots = dir.join("raft").join("snapshots");
    files(&snapshots)
        .iter()
        .filter_map(|n| n.strip_prefix("snapshot-")?.strip_suffix(".meta")?.parse::<u64>().ok())
        .max()
        .map(|i| {
            let base = snapshots.join(format!("snapshot-{i:020}"));
            (i, base.with_extension("snap"), base.with_extension("meta"))
        })
}

/// Node `i` of `c` alone (no `--cluster-peers`) as node `id`.
fn alone(c: &Cluster, i: usize, id: u64) -> Config {
    let mut cfg = c.config(i);
    let cluster = cfg.cluster.as_mut().expect("cluster mode");
    cluster.peers.clear();
    cluster.node_id = id;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_nodes_snapshot_copied_while_it_serves_restores_as_a_single_node_and_as_a_new_cluster() {
    // The source: a one-node cluster that snapshots only when told.
    let mut c = Cluster::new(1, 1_000_000);
    c.start(0).await;
    c.leader().await;
    let source_id = c.node(0).cluster().expect("cluster").cluster_id().expect("id");
    let mut conn = redis_conn(c.node(0).addrs().resp.expect("resp")).await;
    let keys = write_data(&mut conn).await;
    let applied = c.status(0).await.applied_index;
    c.node(0).cluster().expect("cluster").raft().trigger().snapshot().await.expect("trigger a snapshot");
    let (index, snap, meta) = eventually("a snapshot of every write", || async {
        newest_snapshot(c.dirs[0].path()).filter(|(i, _, _)| *i >= applied)
    })
    .await;

    // The backup: both files, copied while a client keeps writing (those writes come after the
    // snapshot's index, so they are not in it).
    let mut late = redis_conn(c.node(0).addrs().resp.expect("resp")).await;
    let writer = tokio::spawn(async move {
        for i in 0..200 {
            let () = late.set(format!("late{i}"), i).await.expect("a write during the backup");
        }
    });
    let backup = tempfile::tempdir().expect("tempdir");
    let (b_snap, b_meta) =
        (backup.path().join("snapshot-backup.snap"), backup.path().join("snapshot-backup.meta"));
    std::fs::copy(&snap, &b_snap).expect("copy the snapshot");
    std::fs::copy(&meta, &b_meta).expect("copy its meta");
    writer.await.expect("writer");

    // Restored as a single node (a directory that does not exist yet): exactly the backup's keys.
    let fresh = tempfile::tempdir().expect("tempdir");
    let single = fresh.path().join("single");
    let (code, out, err) = restore(&b_snap, &single, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("restored {keys} keys")) && out.contains(&format!("log index {index}")),
        "{out}"
    );
    assert!(out.contains("as a single node"), "{out}");
    let (server, mut on_single) = single_node(&single).await;
    check_data(&mut on_single, keys).await;
    let () = on_single.set("after-restore", "1").await.expect("the restored node takes writes");
    server.shutdown().await;

    // Restored as a new cluster of one: a fresh cluster id, exactly the backup's keys.
    let mut r = Cluster::new(2, 1_000_000);
    let raft_addr = format!("127.0.0.1:{}", r.ports[0]);
    let (code, out, err) = restore(&b_snap, r.dirs[0].path(), &["--node-id", "1", "--raft-addr", &raft_addr]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("as node 1, alone in a new cluster"), "{out}");
    assert!(!out.contains(&source_id), "a new cluster id: {out}");
    r.nodes[0] = Some(Server::start(alone(&r, 0, 1)).await.expect("the restored node starts"));
    r.leader().await;
    let restored_id = r.node(0).cluster().expect("cluster").cluster_id().expect("id");
    assert_ne!(restored_id, source_id, "the restored node is a new cluster");
    assert!(out.contains(&restored_id), "{out}");
    let mut on_restored = redis_conn(r.node(0).addrs().resp.expect("resp")).await;
    check_data(&mut on_restored, keys).await;

    // Another node joins it and receives the restored keys (by snapshot: the log holds none).
    r.nodes[1] = Some(Server::start(alone(&r, 1, 5)).await.expect("a second node starts"));
    let mut joiner = redis_conn(r.node(1).addrs().resp.expect("resp")).await;
    let target = r.node(0).addrs().resp.expect("resp");
    let joined: String = redis::cmd("REPLICAOF")
        .arg(target.ip().to_string())
        .arg(target.port())
        .query_async(&mut joiner)
        .await
        .expect("REPLICAOF the restored node");
    assert_eq!(joined, "OK");
    eventually("the new replica to hold every restored key", || async {
        (r.node(1).engine().key_count() == keys).then_some(())
    })
    .await;
    check_data(&mut joiner, keys).await;
    r.stop(1).await;
    r.stop(0).await;
    c.stop(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_refuses_damaged_backups_data_dirs_that_are_not_empty_and_flags_it_cannot_honour() {
    // The source this time: a single node's own snapshot (the same format, no meta).
    let source = tempfile::tempdir().expect("tempdir");
    let (server, mut conn) = single_node(source.path()).await;
    let keys = write_data(&mut conn).await;
    let stats = server.persistence().expect("persistence on").snapshot().expect("snapshot");
    assert_eq!(stats.keys as usize, keys);
    server.shutdown().await;
    let snap = files(source.path())
        .into_iter()
        .find(|n| n.starts_with("snapshot-") && n.ends_with(".snap"))
        .map(|n| source.path().join(n))
        .expect("a snapshot file");
    let work = tempfile::tempdir().expect("tempdir");

    // A data directory that holds anything is refused (exit 4) and left as it was.
    let busy = work.path().join("busy");
    std::fs::create_dir_all(&busy).expect("mkdir");
    std::fs::write(busy.join("notes.txt"), "mine").expect("write");
    let (code, _, err) = restore(&snap, &busy, &[]);
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("not empty") && err.contains("notes.txt") && err.contains("never overwrites"),
        "{err}"
    );
    assert_eq!(files(&busy), ["notes.txt"], "nothing written");
    assert_eq!(std::fs::read_to_string(busy.join("notes.txt")).expect("read"), "mine");

    // A corrupt copy (one byte flipped inside a record) is refused (exit 3) naming the offset.
    let bytes = std::fs::read(&snap).expect("read the snapshot");
    let corrupt = work.path().join("corrupt.snap");
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    std::fs::write(&corrupt, &flipped).expect("write");
    let target = work.path().join("target");
    let (code, _, err) = restore(&corrupt, &target, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("damaged at offset") && err.contains("Nothing was written"), "{err}");
    assert!(!target.exists(), "nothing created");

    // A torn copy (cut short) too.
    let torn = work.path().join("torn.snap");
    std::fs::write(&torn, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let (code, _, err) = restore(&torn, &target, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("damaged") && err.contains("incomplete"), "{err}");
    assert!(!target.exists(), "nothing created");

    // A meta whose checksum fails, beside a sound snapshot.
    let with_meta = work.path().join("snapshot-7.snap");
    std::fs::write(&with_meta, &bytes).expect("write");
    std::fs::write(work.path().join("snapshot-7.meta"), b"\0\0\0\0{\"versions\": 1}").expect("write");
    let (code, _, err) = restore(&with_meta, &target, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("snapshot-7.meta") && err.contains("checksum"), "{err}");
    assert!(!target.exists(), "nothing created");

    // No such file (exit 1); flags a restore cannot honour (exit 2).
    let (code, _, err) = restore(&work.path().join("nowhere.snap"), &target, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no such file"), "{err}");
    let (code, _, err) = restore(
        &snap,
        &target,
        &["--node-id", "1", "--raft-addr", "127.0.0.1:1", "--cluster-peers", "1=127.0.0.1:1"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("drop --cluster-peers"), "{err}");
    let (code, _, err) = restore(&snap, &target, &["--persistence", "off"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(!target.exists(), "nothing created");

    // The sound single-node snapshot restores into an empty directory, and serves every key.
    let empty = work.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let (code, out, err) = restore(&snap, &empty, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("restored {keys} keys")), "{out}");
    let (server, mut conn) = single_node(&empty).await;
    check_data(&mut conn, keys).await;
    server.shutdown().await;
    // Restoring again over it is refused: it holds data now.
    let (code, _, err) = restore(&snap, &empty, &[]);
    assert_eq!(code, Some(4), "{err}");
}

/// A single durable node (no cluster flags) on `data_dir`, and a RESP connection to it.
async fn single_node(data_dir: &Path) -> (nanodb_server::server::Server, redis::aio::MultiplexedConnection) {
    let server = crate::harness::start(Config {
        resp_addr: any_port(),
        data_dir: data_dir.to_path_buf(),
        persistence: true,
        ..config()
    })
    .await;
    let conn = redis_conn(server.addrs().resp.expect("resp")).await;
    (server, conn)
}
