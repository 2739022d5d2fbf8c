//! Pipelined requests on one connection in a cluster (binary TCP and RESP, on the leader and on a
//! follower): the writes reach the log together and in the order sent, every reply comes back
//! in order, and a read after writes on the same connection sees them.

use nanodb_protocol::ErrorCode;

use super::*;

/// Writes of each burst.
const BURST: usize = 200;

/// The counter's value on node `i`, read linearizably over a fresh connection.
async fn counter_on(c: &Cluster, i: usize, key: &str) -> Option<Bytes> {
    let mut t = TcpClient::connect(c.tcp(i)).await;
    value_of(t.call(get(key)).await)
}

fn resp(c: &Cluster, i: usize) -> SocketAddr {
    c.node(i).addrs().resp.expect("resp on")
}

/// One burst over the binary protocol: `BURST` times (INCR counter, PUT last = i), then GET last,
/// all sent before any reply is read. Returns how many log entries the burst took on the leader.
async fn tcp_burst(c: &Cluster, leader: usize, node: usize, counter: &str, last: &str) -> u64 {
    let before = c.status(leader).await.applied_index;
    let mut t = TcpClient::connect(c.tcp(node)).await;
    let mut ids = Vec::new();
    for i in 0..BURST {
        ids.push(t.send(Command::Incr(cmd::Incr { key: b(counter), delta: 1 })).await);
        ids.push(t.send(put(last, &i.to_string())).await);
    }
    let read = t.send(get(last)).await;
    for (n, pair) in ids.chunks(2).enumerate() {
        assert_eq!(t.recv(pair[0]).await, Ok(Reply::Int(n as i64 + 1)), "INCR {n} through node {}", node + 1);
        let put = t.recv(pair[1]).await;
        assert!(matches!(put, Ok(Reply::Put { applied: true, .. })), "PUT {n}: {put:?}");
    }
    assert_eq!(value_of(t.recv(read).await), Some(b(&(BURST - 1).to_string())), "read after the writes");
    c.status(leader).await.applied_index - before
}

/// A burst of [`BURST`] INCRs and SETs through `name` landed as a pipeline should: in far fewer
/// log entries than writes (awaited one by one, the 400 writes were 400 entries at least;
/// pipelined, a run of them goes to the leader's group commit together), and with the same final
/// values on every node.
async fn burst_landed(c: &Cluster, name: &str, entries: u64, counter: &str, last: &str) {
    assert!(
        entries < 2 * BURST as u64 / 4,
        "{} writes through the {name} took {entries} log entries",
        2 * BURST
    );
    for i in 0..3 {
        assert_eq!(
            counter_on(c, i, counter).await,
            Some(b(&BURST.to_string())),
            "{counter} on node {}",
            i + 1
        );
        assert_eq!(
            counter_on(c, i, last).await,
            Some(b(&(BURST - 1).to_string())),
            "{last} on node {}",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_writes_over_tcp_keep_their_order_and_share_log_entries_on_the_leader_and_a_follower() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    for (node, name) in [(leader, "leader"), (follower, "follower")] {
        let (counter, last) = (format!("n-{name}"), format!("last-{name}"));
        let entries = tcp_burst(&c, leader, node, &counter, &last).await;
        burst_landed(&c, name, entries, &counter, &last).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tcp_pipeline_mixing_writes_reads_and_refusals_answers_each_in_order() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let follower = (leader + 2) % 3;
    let mut t = TcpClient::connect(c.tcp(follower)).await;
    let too_long = Command::Put(cmd::Put {
        key: Bytes::from(vec![b'k'; 100_000]),
        value: b("v"),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    });
    let ids = [
        t.send(put("k", "a")).await,
        t.send(put("k", "b")).await,
        t.send(get("k")).await,
        t.send(too_long).await,
        t.send(Command::Incr(cmd::Incr { key: b("k"), delta: 1 })).await,
        t.send(put("k", "7")).await,
        t.send(Command::Incr(cmd::Incr { key: b("k"), delta: 1 })).await,
        t.send(get("k")).await,
        t.send(get("k")).await,
    ];
    assert!(matches!(t.recv(ids[0]).await, Ok(Reply::Put { applied: true, .. })));
    assert!(matches!(t.recv(ids[1]).await, Ok(Reply::Put { applied: true, .. })));
    assert_eq!(value_of(t.recv(ids[2]).await), Some(b("b")), "a read sees the writes before it");
    let refused = t.recv(ids[3]).await;
    assert!(matches!(refused, Err(Error::Remote { code: ErrorCode::KeyTooLarge, .. })), "{refused:?}");
    let incr = t.recv(ids[4]).await;
    assert!(
        matches!(incr, Err(Error::Remote { code: ErrorCode::NotAnInteger, .. })),
        "INCR of \"b\": {incr:?}"
    );
    assert!(matches!(t.recv(ids[5]).await, Ok(Reply::Put { applied: true, .. })));
    assert_eq!(t.recv(ids[6]).await, Ok(Reply::Int(8)));
    assert_eq!(value_of(t.recv(ids[7]).await), Some(b("8")));
    assert_eq!(value_of(t.recv(ids[8]).await), Some(b("8")));
    for i in 0..3 {
        assert_eq!(counter_on(&c, i, "k").await, Some(b("8")), "node {}", i + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_writes_over_resp_keep_their_order_on_the_leader_and_a_follower() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    for (node, name) in [(leader, "leader"), (follower, "follower")] {
        let (counter, last) = (format!("n-{name}"), format!("last-{name}"));
        let before = c.status(leader).await.applied_index;
        let mut conn = redis_conn(resp(&c, node)).await;
        let mut pipe = redis::pipe();
        for i in 0..BURST {
            pipe.cmd("INCR").arg(&counter).cmd("SET").arg(&last).arg(i);
        }
        pipe.cmd("GET").arg(&last);
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await.expect("pipeline");
        assert_eq!(replies.len(), 2 * BURST + 1);
        for n in 0..BURST {
            assert_eq!(replies[2 * n], redis::Value::Int(n as i64 + 1), "INCR {n} through the {name}");
            assert_eq!(replies[2 * n + 1], redis::Value::Okay, "SET {n} through the {name}");
        }
        assert_eq!(
            replies[2 * BURST],
            redis::Value::BulkString((BURST - 1).to_string().into_bytes()),
            "GET after the writes through the {name}"
        );
        let entries = c.status(leader).await.applied_index - before;
        burst_landed(&c, name, entries, &counter, &last).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resp_pipeline_mixing_held_writes_with_reads_and_other_commands_answers_each_in_order() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let leader = c.leader().await;
    let follower = (leader + 2) % 3;
    let mut conn = redis_conn(resp(&c, follower)).await;
    let replies: Vec<redis::Value> = redis::pipe()
        .ignore_errors()
        // SET a, SET b, then GET: the read waits for both.
        .cmd("SET")
        .arg("k")
        .arg("a")
        .cmd("SET")
        .arg("k")
        .arg("b")
        .cmd("GET")
        .arg("k")
        // DEL of two keys runs one command per key: not held, it runs after the writes settle.
        .cmd("SET")
        .arg("other")
        .arg("x")
        .cmd("DEL")
        .arg("k")
        .arg("other")
        .cmd("GET")
        .arg("k")
        .cmd("SET")
        .arg("k")
        .arg("c")
        .cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("1")
        .cmd("HSET")
        .arg("h")
        .arg("f2")
        .arg("2")
        .arg("f3")
        .arg("3")
        .cmd("HINCRBY")
        .arg("h")
        .arg("f")
        .arg("5")
        .cmd("SET")
        .arg("n")
        .arg("0")
        // A script runs after the writes before it, as itself.
        .cmd("EVAL")
        .arg("return redis.call('INCR', KEYS[1])")
        .arg(1)
        .arg("n")
        .cmd("INCR")
        .arg("n")
        .cmd("SET")
        .arg("n")
        .arg("x")
        .arg("BAD")
        .cmd("HMGET")
        .arg("h")
        .arg("f")
        .arg("f2")
        .arg("f3")
        .arg("k")
        .query_async(&mut conn)
        .await
        .expect("pipeline");
    use redis::Value::{BulkString, Int, Nil, Okay};
    let bulk = |s: &str| BulkString(s.as_bytes().to_vec());
    assert_eq!(replies.len(), 15, "{replies:?}");
    assert_eq!(&replies[..3], &[Okay, Okay, bulk("b")]);
    assert_eq!(&replies[3..7], &[Okay, Int(2), Nil, Okay]);
    assert_eq!(&replies[7..13], &[Int(1), Int(2), Int(6), Okay, Int(1), Int(2)]);
    assert!(
        matches!(&replies[13], redis::Value::ServerError(e) if e.details().is_some_and(|d| d.contains("syntax"))),
        "{:?}",
        replies[13]
    );
    assert_eq!(replies[14], redis::Value::Array(vec![bulk("6"), bulk("2"), bulk("3"), Nil]));
    for i in 0..3 {
        let mut conn = redis_conn(resp(&c, i)).await;
        let k: Option<String> = conn.get("k").await.expect("get");
        let n: i64 = conn.get("n").await.expect("get");
        assert_eq!((k.as_deref(), n), (Some("c"), 2), "node {}", i + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_leader_every_pipelined_write_fails_retryably_within_the_timeout() {
    let mut c = Cluster::new(3, 100_000);
    for i in 0..3 {
        c.start(i).await;
    }
    let survivor = c.keep_one_without_quorum().await;
    let timeout = Duration::from_secs(3) + Duration::from_secs(2);

    // Not one of them could be proposed: each is sent again until the deadline, then fails with
    // the retryable error, in its place.
    let started = Instant::now();
    let mut t = TcpClient::connect(c.tcp(survivor)).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(t.send(put(&format!("k{i}"), "v")).await);
    }
    for id in ids {
        let err = t.recv(id).await.expect_err("no quorum");
        assert_eq!(err.code(), ErrorCode::Unavailable, "{err:?}");
    }
    assert!(started.elapsed() < timeout, "answered within the request timeout");

    let started = Instant::now();
    let mut conn = redis_conn(resp(&c, survivor)).await;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for i in 0..20 {
        pipe.cmd("SET").arg(format!("k{i}")).arg("v");
    }
    let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await.expect("pipeline");
    assert_eq!(replies.len(), 20);
    for reply in replies {
        assert!(matches!(&reply, redis::Value::ServerError(e) if e.code() == "CLUSTERDOWN"), "{reply:?}");
    }
    assert!(started.elapsed() < timeout, "answered within the request timeout");
    c.stop(survivor).await;
}
