//! Redis pub/sub and keyspace notifications over RESP: exact reply bytes on raw sockets
//! (confirmations, pushes, subscribed-mode errors, PING), the `redis` crate's async pub/sub
//! client, PUBSUB introspection, keyspace notifications from writes over RESP and over the binary
//! TCP protocol, a slow subscriber being disconnected while the writer carries on, shutdown
//! ending subscribed connections, and subscriptions freeing everything they took.

use nanodb_protocol::Expiry;
use nanodb_protocol::cmd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use nanodb_protocol::{Command, Limits, PutCondition, Reply};
use nanodb_server::config::Config;
use nanodb_server::feed::{FeedLimits, NotifyFlags};
use nanodb_server::server::Server;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{TcpClient, any_port, config, start};

async fn server(config: Config) -> Server {
    start(Config { resp_addr: any_port(), tcp_addr: any_port(), ..config }).await
}

fn url(server: &Server) -> String {
    format!("redis://{}/", server.addrs().resp.expect("resp on"))
}

async fn connect(server: &Server) -> MultiplexedConnection {
    let client = redis::Client::open(url(server)).expect("client");
    client.get_multiplexed_async_connection().await.expect("connect")
}

async fn q(con: &mut MultiplexedConnection, words: &[&str]) -> Value {
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(*w);
    }
    cmd.query_async(con).await.unwrap_or_else(|e| panic!("{words:?} failed: {e}"))
}

async fn raw_connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.addrs().resp.expect("resp on")).await.expect("connect")
}

/// Reads exactly `want.len()` bytes (within 5 s) and compares them to `want`.
async fn expect(stream: &mut TcpStream, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {:?}", String::from_utf8_lossy(want)))
        .expect("read");
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

/// Sends `send` and expects exactly `want` back.
async fn exchange(stream: &mut TcpStream, send: &[u8], want: &[u8]) {
    stream.write_all(send).await.expect("write");
    expect(stream, want).await;
}

/// Reads until the server closes the connection (within `secs`); the bytes read.
async fn read_to_close(stream: &mut TcpStream, secs: u64) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(secs), stream.read(&mut buf))
            .await
            .expect("the server closes the connection in time")
            .unwrap_or(0);
        if n == 0 {
            return total;
        }
        total += n;
    }
}

fn bulk(s: &str) -> String {
    format!("${}\r\n{s}\r\n", s.len())
}

fn confirm(word: &str, name: &str, count: usize) -> String {
    format!("*3\r\n{}{}:{count}\r\n", bulk(word), bulk(name))
}

fn message(channel: &str, payload: &str) -> String {
    format!("*3\r\n{}{}{}", bulk("message"), bulk(channel), bulk(payload))
}

fn pmessage(pattern: &str, channel: &str, payload: &str) -> String {
    format!("*4\r\n{}{}{}{}", bulk("pmessage"), bulk(pattern), bulk(channel), bulk(payload))
}

fn subscribers(server: &Server) -> usize {
    server.feed().stats().subscribers.load(Ordering::Relaxed)
}

/// Polls until no subscriber, channel or pattern is left in the hub (connections close
/// asynchronously), failing after 5 s.
async fn hub_is_empty(server: &Server) {
    let hub = server.feed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while subscribers(server) != 0 || !hub.channels(None).is_empty() || hub.pattern_count() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hub not empty: {} subscribers, {:?} channels, {} patterns",
            subscribers(server),
            hub.channels(None),
            hub.pattern_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const ONLY: &str = "only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context";

#[tokio::test]
async fn confirmations_pushes_and_subscribed_mode_have_redis_bytes() {
    let server = server(config()).await;
    let mut sub = raw_connect(&server).await;
    let mut publisher = connect(&server).await;

    let want = confirm("subscribe", "a", 1) + &confirm("subscribe", "b", 2);
    exchange(&mut sub, b"SUBSCRIBE a b\r\n", want.as_bytes()).await;
    // Subscribing again to a held channel does not change the count.
    exchange(&mut sub, b"SUBSCRIBE a\r\n", confirm("subscribe", "a", 2).as_bytes()).await;
    exchange(&mut sub, b"PSUBSCRIBE c*\r\n", confirm("psubscribe", "c*", 3).as_bytes()).await;

    // Subscribed mode: only (P)(UN)SUBSCRIBE, PING, QUIT, RESET; unknown commands and arity
    // errors come first, as in Redis; PING answers in the push shape.
    let get = format!("-ERR Can't execute 'get': {ONLY}\r\n");
    exchange(&mut sub, b"GET x\r\n", get.as_bytes()).await;
    let cfg = format!("-ERR Can't execute 'config|get': {ONLY}\r\n");
    exchange(&mut sub, b"CONFIG GET maxclients\r\n", cfg.as_bytes()).await;
    exchange(&mut sub, b"NOSUCH\r\n", b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n").await;
    exchange(&mut sub, b"PING\r\n", b"*2\r\n$4\r\npong\r\n$0\r\n\r\n").await;
    exchange(&mut sub, b"PING hi\r\n", b"*2\r\n$4\r\npong\r\n$2\r\nhi\r\n").await;

    // Pushes: exact subscribers and matching patterns, each counted by PUBLISH.
    assert_eq!(q(&mut publisher, &["PUBLISH", "a", "hello"]).await, Value::Int(1));
    expect(&mut sub, message("a", "hello").as_bytes()).await;
    assert_eq!(q(&mut publisher, &["PUBLISH", "cx", "m"]).await, Value::Int(1));
    expect(&mut sub, pmessage("c*", "cx", "m").as_bytes()).await;
    assert_eq!(q(&mut publisher, &["PUBLISH", "nobody", "m"]).await, Value::Int(0));

    // UNSUBSCRIBE with no channel drops every channel (in the hub's order), counting down.
    sub.write_all(b"UNSUBSCRIBE\r\n").await.expect("write");
    let (ua, ub) = (confirm("unsubscribe", "a", 2), confirm("unsubscribe", "b", 1));
    let mut got = vec![0u8; ua.len() + ub.len()];
    tokio::time::timeout(Duration::from_secs(5), sub.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    let (ua1, ub1) = (confirm("unsubscribe", "a", 1), confirm("unsubscribe", "b", 2));
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(got == ua + &ub || got == ub1 + &ua1, "{got:?}");
    // Still subscribed to the pattern; unsubscribing a channel not held still confirms.
    exchange(&mut sub, b"UNSUBSCRIBE zz\r\n", confirm("unsubscribe", "zz", 1).as_bytes()).await;
    exchange(&mut sub, b"PUNSUBSCRIBE\r\n", confirm("punsubscribe", "c*", 0).as_bytes()).await;
    // Out of subscribed mode: commands run again; nothing held: a nil name and 0.
    exchange(&mut sub, b"GET x\r\n", b"$-1\r\n").await;
    exchange(&mut sub, b"UNSUBSCRIBE\r\n", b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n").await;
    exchange(&mut sub, b"PUNSUBSCRIBE\r\n", b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n").await;
    exchange(&mut sub, b"PING\r\n", b"+PONG\r\n").await;
    assert_eq!(subscribers(&server), 0, "the last unsubscribe drops the connection's subscriber");

    // RESET leaves subscribed mode without confirmations.
    exchange(&mut sub, b"SUBSCRIBE a\r\n", confirm("subscribe", "a", 1).as_bytes()).await;
    exchange(&mut sub, b"RESET\r\n", b"+RESET\r\n").await;
    exchange(&mut sub, b"GET x\r\n", b"$-1\r\n").await;
    assert_eq!(q(&mut publisher, &["PUBLISH", "a", "late"]).await, Value::Int(0));
    hub_is_empty(&server).await;

    // Arity as in Redis's table; QUIT works in subscribed mode and closes.
    exchange(&mut sub, b"SUBSCRIBE\r\n", b"-ERR wrong number of arguments for 'subscribe' command\r\n").await;
    exchange(&mut sub, b"SUBSCRIBE q\r\nQUIT\r\n", (confirm("subscribe", "q", 1) + "+OK\r\n").as_bytes())
        .await;
    assert_eq!(read_to_close(&mut sub, 5).await, 0);
    hub_is_empty(&server).await;
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn messages_published_before_a_command_arrive_before_its_reply() {
    let server = server(config()).await;
    let mut sub = raw_connect(&server).await;
    let mut publisher = connect(&server).await;
    exchange(&mut sub, b"SUBSCRIBE ch\r\n", confirm("subscribe", "ch", 1).as_bytes()).await;
    for i in 0..100 {
        assert_eq!(q(&mut publisher, &["PUBLISH", "ch", &i.to_string()]).await, Value::Int(1));
    }
    // The unsubscribe confirmation comes after every message published before it, in order.
    let mut want: String = (0..100).map(|i| message("ch", &i.to_string())).collect();
    want += &confirm("unsubscribe", "ch", 0);
    exchange(&mut sub, b"UNSUBSCRIBE ch\r\n", want.as_bytes()).await;
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn the_redis_crate_subscribes_and_pubsub_introspects() {
    let server = server(config()).await;
    let client = redis::Client::open(url(&server)).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub connection");
    pubsub.subscribe(&["news", "sport"]).await.expect("subscribe");
    pubsub.psubscribe("n*").await.expect("psubscribe");
    let mut con = connect(&server).await;

    // A channel subscriber plus a matching pattern: two receivers, as Redis counts.
    assert_eq!(q(&mut con, &["PUBLISH", "news", "one"]).await, Value::Int(2));
    assert_eq!(q(&mut con, &["PUBLISH", "sport", "two"]).await, Value::Int(1));
    let mut channels = q(&mut con, &["PUBSUB", "CHANNELS"]).await;
    if let Value::Array(v) = &mut channels {
        v.sort_by_key(|x| format!("{x:?}"));
    }
    assert_eq!(
        channels,
        Value::Array(vec![Value::BulkString(b"news".to_vec()), Value::BulkString(b"sport".to_vec())])
    );
    assert_eq!(
        q(&mut con, &["PUBSUB", "CHANNELS", "s*"]).await,
        Value::Array(vec![Value::BulkString(b"sport".to_vec())])
    );
    assert_eq!(
        q(&mut con, &["PUBSUB", "NUMSUB", "news", "none"]).await,
        Value::Array(vec![
            Value::BulkString(b"news".to_vec()),
            Value::Int(1),
            Value::BulkString(b"none".to_vec()),
            Value::Int(0),
        ])
    );
    assert_eq!(q(&mut con, &["PUBSUB", "NUMPAT"]).await, Value::Int(1));
    let Value::BulkString(info) = q(&mut con, &["INFO", "stats"]).await else {
        panic!("INFO is a bulk string")
    };
    let info = String::from_utf8(info).expect("utf-8");
    assert!(info.contains("\r\npubsub_channels:2\r\npubsub_patterns:1\r\n"), "{info}");
    let Value::BulkString(list) = q(&mut con, &["CLIENT", "LIST"]).await else { panic!("a bulk string") };
    let list = String::from_utf8(list).expect("utf-8");
    assert!(list.lines().any(|l| l.contains(" flags=P db=0 sub=2 psub=1 ")), "{list}");
    assert!(list.lines().any(|l| l.contains(" flags=N db=0 sub=0 psub=0 ")), "{list}");
    let err = redis::cmd("PUBSUB").arg("NOPE").query_async::<Value>(&mut con).await.expect_err("fails");
    assert_eq!(err.detail(), Some("unknown subcommand 'NOPE'. Try PUBSUB HELP."));

    let mut stream = pubsub.on_message();
    let mut got = Vec::new();
    for _ in 0..3 {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a message in time")
            .expect("stream open");
        let pattern: Option<String> = msg.from_pattern().then(|| msg.get_pattern().expect("pattern"));
        got.push((
            pattern,
            msg.get_channel_name().to_string(),
            msg.get_payload::<String>().expect("payload"),
        ));
    }
    // Per subscriber, in publish order; for "news" the channel and the pattern delivery are both
    // there (their relative order is the hub's).
    assert_eq!(got[2], (None, "sport".into(), "two".into()));
    got.truncate(2);
    got.sort();
    assert_eq!(
        got,
        vec![(None, "news".into(), "one".into()), (Some("n*".into()), "news".into(), "one".into())]
    );
    drop(stream);
    drop(pubsub);
    hub_is_empty(&server).await;
    assert_eq!(q(&mut con, &["PUBSUB", "NUMPAT"]).await, Value::Int(0));
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn command_table_lists_the_pubsub_commands() {
    let server = server(config()).await;
    let mut con = connect(&server).await;
    let Value::Array(entries) = q(&mut con, &["COMMAND", "INFO", "subscribe", "publish", "pubsub"]).await
    else {
        panic!("COMMAND INFO is an array")
    };
    let arity: Vec<_> = entries
        .iter()
        .map(|e| match e {
            Value::Array(fields) => (fields[0].clone(), fields[1].clone(), fields[2].clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(arity[0].0, Value::BulkString(b"subscribe".to_vec()));
    assert_eq!(arity[0].1, Value::Int(-2));
    assert!(matches!(&arity[0].2, Value::Array(f) if f.contains(&Value::SimpleString("pubsub".into()))));
    assert_eq!(arity[1].1, Value::Int(3));
    assert_eq!(arity[2].1, Value::Int(-2));
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn publish_and_subscribe_obey_the_limits() {
    let base = config();
    let limits = Limits { max_key_len: 8, ..base.limits.clone() };
    let feed = FeedLimits { max_topic_len: 8, ..base.feed };
    let server = server(Config { limits, feed, ..base }).await;
    let mut con = connect(&server).await;
    let long = "c".repeat(9);
    let err =
        redis::cmd("PUBLISH").arg(&long).arg("m").query_async::<Value>(&mut con).await.expect_err("fails");
    assert_eq!(err.code(), Some("ERR"));
    let mut sub = raw_connect(&server).await;
    // The first channel is subscribed; the refused one ends the command with an error.
    sub.write_all(format!("SUBSCRIBE ok {long}\r\n").as_bytes()).await.expect("write");
    expect(&mut sub, confirm("subscribe", "ok", 1).as_bytes()).await;
    let mut line = [0u8; 5];
    sub.read_exact(&mut line).await.expect("read");
    assert_eq!(&line, b"-ERR ");
    assert_eq!(q(&mut con, &["PUBLISH", "ok", "m"]).await, Value::Int(1));
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn config_set_switches_keyspace_notifications_with_redis_errors() {
    let server = server(Config { sweep_interval: Duration::from_millis(10), ..config() }).await;
    let mut con = connect(&server).await;
    let get = || ["CONFIG", "GET", "notify-keyspace-events"];
    let shown = |s: &str| {
        Value::Array(vec![Value::BulkString(b"notify-keyspace-events".to_vec()), Value::BulkString(s.into())])
    };
    assert_eq!(q(&mut con, &get()).await, shown(""));
    let bad = redis::cmd("CONFIG")
        .arg(&["SET", "notify-keyspace-events", "KEq"])
        .query_async::<Value>(&mut con)
        .await
        .expect_err("fails");
    assert_eq!(
        bad.detail(),
        Some(
            "CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - Invalid event class character. Use 'Ag$lshzxeKEtmdn'."
        )
    );
    let unknown = redis::cmd("CONFIG")
        .arg(&["SET", "nosuch", "1"])
        .query_async::<Value>(&mut con)
        .await
        .expect_err("fails");
    assert_eq!(unknown.detail(), Some("Unknown option or number of arguments for CONFIG SET - 'nosuch'"));
    // A bad pair changes nothing, not even the good pair before it.
    let mixed = redis::cmd("CONFIG")
        .arg(&["SET", "notify-keyspace-events", "KEA", "maxclients", "5"])
        .query_async::<Value>(&mut con)
        .await
        .expect_err("fails");
    assert_eq!(
        mixed.detail(),
        Some("CONFIG SET failed (possibly related to argument 'maxclients') - can't set immutable config")
    );
    assert_eq!(q(&mut con, &get()).await, shown(""));
    assert_eq!(q(&mut con, &["CONFIG", "SET", "notify-keyspace-events", "KEA"]).await, Value::Okay);
    assert_eq!(q(&mut con, &get()).await, shown("AKE"));
    assert_eq!(server.feed().notify_flags(), NotifyFlags::parse("AKE").expect("parses"));
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn keyspace_notifications_follow_writes_over_resp_and_tcp() {
    let server = server(Config { sweep_interval: Duration::from_millis(10), ..config() }).await;
    let mut con = connect(&server).await;
    assert_eq!(q(&mut con, &["CONFIG", "SET", "notify-keyspace-events", "KEA"]).await, Value::Okay);
    let mut sub = raw_connect(&server).await;
    let want = confirm("psubscribe", "__key*@0__:*", 1);
    exchange(&mut sub, b"PSUBSCRIBE __key*@0__:*\r\n", want.as_bytes()).await;

    let note = |key: &str, event: &str| {
        pmessage("__key*@0__:*", &format!("__keyspace@0__:{key}"), event)
            + &pmessage("__key*@0__:*", &format!("__keyevent@0__:{event}"), key)
    };
    let writes: &[(&[&str], &str, &str)] = &[
        (&["SET", "k", "v"], "k", "set"),
        (&["EXPIRE", "k", "100"], "k", "expire"),
        (&["DEL", "k"], "k", "del"),
        (&["HSET", "h", "f", "v"], "h", "hset"),
        (&["LPUSH", "l", "x"], "l", "lpush"),
    ];
    let mut want = String::new();
    for (words, key, event) in writes {
        q(&mut con, words).await;
        want += &note(key, event);
    }
    expect(&mut sub, want.as_bytes()).await;

    // A write over the binary TCP protocol notifies RESP subscribers alike.
    let mut tcp = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    let put = Command::Put(cmd::Put {
        key: Bytes::from_static(b"t"),
        value: Bytes::from_static(b"1"),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    });
    tcp.call(put).await.expect("put");
    let del = Command::Delete(cmd::Delete { key: Bytes::from_static(b"t") });
    assert_eq!(tcp.call(del).await, Ok(Reply::Bool(true)));
    expect(&mut sub, (note("t", "set") + &note("t", "del")).as_bytes()).await;

    // Expiry (found by the sweeper) is `expired`, class x.
    q(&mut con, &["SET", "e", "v", "PX", "20"]).await;
    expect(&mut sub, (note("e", "set") + &note("e", "expired")).as_bytes()).await;

    // Narrower classes: only string events on the keyevent channels.
    assert_eq!(q(&mut con, &["CONFIG", "SET", "notify-keyspace-events", "E$"]).await, Value::Okay);
    q(&mut con, &["HSET", "h", "g", "v"]).await;
    q(&mut con, &["SET", "s", "v"]).await;
    expect(&mut sub, pmessage("__key*@0__:*", "__keyevent@0__:set", "s").as_bytes()).await;
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn a_slow_subscriber_is_disconnected_while_the_writer_keeps_going() {
    let feed = FeedLimits { queue_len: 16, queue_bytes: 64 * 1024, ..FeedLimits::default() };
    let server = server(Config { feed, ..config() }).await;
    let mut slow = raw_connect(&server).await;
    exchange(&mut slow, b"SUBSCRIBE ch\r\n", confirm("subscribe", "ch", 1).as_bytes()).await;
    // A subscriber that reads keeps up and stays.
    let mut reader = raw_connect(&server).await;
    exchange(&mut reader, b"SUBSCRIBE other\r\n", confirm("subscribe", "other", 1).as_bytes()).await;

    // 32 MiB published at the slow subscriber, far beyond its queue, its output allowance and the
    // socket buffers; every PUBLISH is answered.
    let mut con = connect(&server).await;
    let payload = "p".repeat(16 * 1024);
    let mut answered = 0;
    for _ in 0..64 {
        let mut pipe = redis::pipe();
        for _ in 0..32 {
            pipe.cmd("PUBLISH").arg("ch").arg(&payload);
        }
        let replies: Vec<i64> = pipe.query_async(&mut con).await.expect("publishes are answered");
        assert!(replies.iter().all(|&n| n <= 1));
        answered += replies.len();
    }
    assert_eq!(answered, 2048);
    // The slow subscriber was closed: its registration is gone, and its socket ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.feed().subscriber_count(b"ch") != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the slow subscriber is still registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(q(&mut con, &["PUBLISH", "ch", "after"]).await, Value::Int(0));
    let received = read_to_close(&mut slow, 10).await;
    assert!(received < 2048 * payload.len(), "it did not get everything: {received} bytes");

    // The reading subscriber is unaffected.
    assert_eq!(q(&mut con, &["PUBLISH", "other", "hi"]).await, Value::Int(1));
    expect(&mut reader, message("other", "hi").as_bytes()).await;
    assert_eq!(subscribers(&server), 1);
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn ten_thousand_subscribe_cycles_leave_nothing_behind() {
    let server = server(config()).await;
    let mut s = raw_connect(&server).await;
    // One connection, 10,000 pipelined subscribe/unsubscribe cycles (channels and patterns).
    let mut send = Vec::new();
    let mut want = Vec::new();
    for i in 0..10_000 {
        let (sub, unsub, name) = if i % 2 == 0 {
            ("subscribe", "unsubscribe", format!("c{i}"))
        } else {
            ("psubscribe", "punsubscribe", format!("p{i}*"))
        };
        send.extend_from_slice(format!("{sub} {name}\r\n{unsub} {name}\r\n").as_bytes());
        want.extend_from_slice(confirm(sub, &name, 1).as_bytes());
        want.extend_from_slice(confirm(unsub, &name, 0).as_bytes());
    }
    {
        let (mut rd, mut wr) = s.split();
        let mut got = vec![0u8; want.len()];
        let read = tokio::time::timeout(Duration::from_secs(30), rd.read_exact(&mut got));
        let (written, read) = tokio::join!(wr.write_all(&send), read);
        written.expect("write");
        read.expect("in time").expect("read");
        assert!(got == want, "replies differ from 10,000 confirmation pairs");
    }
    hub_is_empty(&server).await;
    let stats = server.feed().stats();
    assert_eq!(stats.subscribers.load(Ordering::Relaxed), 0);

    // Disconnecting while subscribed frees everything too.
    let mut conns = Vec::new();
    for i in 0..100 {
        let mut c = raw_connect(&server).await;
        let want = confirm("subscribe", &format!("d{i}"), 1) + &confirm("psubscribe", "d*", 2);
        exchange(&mut c, format!("SUBSCRIBE d{i}\r\nPSUBSCRIBE d*\r\n").as_bytes(), want.as_bytes()).await;
        conns.push(c);
    }
    assert_eq!(subscribers(&server), 100);
    assert_eq!(server.feed().pattern_count(), 1);
    drop(conns);
    drop(s);
    hub_is_empty(&server).await;
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn shutdown_ends_subscribed_connections() {
    let server = server(config()).await;
    let mut sub = raw_connect(&server).await;
    exchange(&mut sub, b"SUBSCRIBE ch\r\n", confirm("subscribe", "ch", 1).as_bytes()).await;
    let stopped = tokio::spawn(server.shutdown());
    assert_eq!(read_to_close(&mut sub, 5).await, 0);
    assert!(stopped.await.expect("joins"), "shutdown drained in time");
}

#[tokio::test]
async fn writes_over_http_and_publishes_over_grpc_reach_resp_subscribers() {
    use nanodb_protocol::pb::{self, kv_client::KvClient};
    let server = server(Config { http_addr: any_port(), grpc_addr: any_port(), ..config() }).await;
    let mut con = connect(&server).await;
    assert_eq!(q(&mut con, &["CONFIG", "SET", "notify-keyspace-events", "E$"]).await, Value::Okay);
    let mut sub = raw_connect(&server).await;
    let want = confirm("subscribe", "ch", 1) + &confirm("psubscribe", "__keyevent@0__:*", 2);
    exchange(&mut sub, b"SUBSCRIBE ch\r\nPSUBSCRIBE __keyevent@0__:*\r\n", want.as_bytes()).await;

    let base = format!("http://{}", server.addrs().http.expect("http on"));
    let r = reqwest::Client::new().put(format!("{base}/v1/kv/web")).body("v").send().await.expect("put");
    assert!(r.status().is_success(), "{}", r.status());
    expect(&mut sub, pmessage("__keyevent@0__:*", "__keyevent@0__:set", "web").as_bytes()).await;

    let grpc = format!("http://{}", server.addrs().grpc.expect("grpc on"));
    let mut kv = KvClient::connect(grpc).await.expect("connect");
    let reply = kv
        .publish(pb::PublishRequest {
            channel: Bytes::from_static(b"ch"),
            message: Bytes::from_static(b"rpc"),
        })
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(reply.receivers, 1);
    expect(&mut sub, message("ch", "rpc").as_bytes()).await;
    assert!(server.shutdown().await);
}
