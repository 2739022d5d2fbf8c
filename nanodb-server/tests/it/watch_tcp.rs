//! WATCH, SUBSCRIBE and pushed frames over the binary TCP protocol, with the protocol crate's
//! codec: events for writes made over TCP, gRPC and RESP; prefixes; pipelined requests
//! interleaved with pushes; pub/sub with patterns; the lagged signal and resubscribing; leaks
//! after many cycles and disconnects; bad requests; shutdown.

use nanodb_protocol::Expiry;
use nanodb_protocol::cmd;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use nanodb_protocol::pb::{self, kv_client::KvClient};
use nanodb_protocol::{
    Command, ErrorCode, EventType, Push, PutCondition, Reply, Request, Response, Subscription,
};
use nanodb_server::config::Config;
use nanodb_server::feed::FeedLimits;
use nanodb_server::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::harness::{TcpClient, any_port, b, config, start};

fn put(key: &str, value: &str) -> Command {
    Command::Put(cmd::Put {
        key: b(key),
        value: b(value),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    })
}

fn watch(key: &str, prefix: bool, with_values: bool) -> Subscription {
    Subscription::Watch { key: b(key), prefix, with_values }
}

async fn tcp_only(config: Config) -> Server {
    start(Config { tcp_addr: any_port(), ..config }).await
}

async fn connect(server: &Server) -> TcpClient {
    TcpClient::connect(server.addrs().tcp.expect("tcp on")).await
}

/// Sends one subscription request and returns its reply, which must be the next frame.
pub(crate) async fn subscribe(c: &mut TcpClient, s: Subscription) -> Result<Reply, nanodb_protocol::Error> {
    let id = c.send_request(Request::Subscription(s)).await;
    match c.next_frame().await.expect("connection open") {
        (got, Response::Reply(r)) if got == id => Ok(r),
        (got, Response::Error(e)) if got == id => Err(e),
        other => panic!("expected the reply to {id}, got {other:?}"),
    }
}

/// The next frame, which must be a push.
pub(crate) async fn next_push(c: &mut TcpClient) -> Push {
    match c.next_frame().await.expect("connection open") {
        (0, Response::Push(p)) => p,
        other => panic!("expected a push, got {other:?}"),
    }
}

/// The next frame must be an EVENT; returns `(type, op, key, version, value)`.
async fn next_event(c: &mut TcpClient) -> (EventType, String, Bytes, u64, Option<Bytes>) {
    match next_push(c).await {
        Push::Event { kind, op, key, version, value } => (kind, op.into_owned(), key, version, value),
        other => panic!("expected an EVENT, got {other:?}"),
    }
}

/// Proves nothing else was pushed: a PING's PONG is the very next frame.
async fn assert_no_push(c: &mut TcpClient) {
    let id = c.send(Command::Ping(cmd::Ping {})).await;
    let frame = c.next_frame().await.expect("connection open");
    assert_eq!(frame, (id, Response::Reply(Reply::Pong)), "no push before the PONG");
}

fn subscribers(server: &Server) -> usize {
    server.feed().stats().subscribers.load(Ordering::Relaxed)
}

/// Polls until the hub has no subscriber and no watched key (a connection's task ends after its
/// client disconnects, so this is eventual).
async fn assert_feed_freed(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while subscribers(server) > 0 || server.feed().is_active() {
        assert!(Instant::now() < deadline, "{} subscribers left", subscribers(server));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_key_watch_sees_writes_over_tcp_grpc_and_resp_with_values_and_versions() {
    let server = start(Config {
        tcp_addr: any_port(),
        grpc_addr: any_port(),
        resp_addr: any_port(),
        sweep_interval: Duration::from_millis(10),
        ..config()
    })
    .await;
    let mut watcher = connect(&server).await;
    let mut writer = connect(&server).await;
    assert_eq!(subscribe(&mut watcher, watch("k", false, true)).await, Ok(Reply::Int(1)));

    // Over the binary protocol, on another connection.
    let Ok(Reply::Put { version, .. }) = writer.call(put("k", "v1")).await else { panic!("put") };
    assert_eq!(
        next_event(&mut watcher).await,
        (EventType::Put, "set".into(), b("k"), version, Some(b("v1")))
    );

    // Over gRPC.
    let addr: SocketAddr = server.addrs().grpc.expect("grpc on");
    let channel =
        Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let mut kv = KvClient::new(channel);
    let put_grpc = kv.put(pb::PutRequest { key: b("k"), value: b("v2"), ..Default::default() }).await;
    let version = put_grpc.expect("grpc put").into_inner().version;
    assert_eq!(
        next_event(&mut watcher).await,
        (EventType::Put, "set".into(), b("k"), version, Some(b("v2")))
    );

    // Over RESP.
    let resp = server.addrs().resp.expect("resp on");
    let client = redis::Client::open(format!("redis://{resp}/")).expect("client");
    let mut con = client.get_multiplexed_async_connection().await.expect("connect");
    let _: () = redis::cmd("SET").arg("k").arg("v3").query_async(&mut con).await.expect("SET");
    let (kind, op, key, _, value) = next_event(&mut watcher).await;
    assert_eq!((kind, op.as_str(), key, value), (EventType::Put, "set", b("k"), Some(b("v3"))));

    // Deletion and expiry carry no value.
    writer.call(Command::Delete(cmd::Delete { key: b("k") })).await.expect("delete");
    let (kind, op, _, _, value) = next_event(&mut watcher).await;
    assert_eq!((kind, op.as_str(), value), (EventType::Delete, "del", None));
    let ttl = Command::Put(cmd::Put {
        key: b("k"),
        value: b("t"),
        expiry: Expiry::from_put_ttl_ms(30),
        condition: PutCondition::Always,
    });
    writer.call(ttl).await.expect("put");
    assert_eq!(next_event(&mut watcher).await.0, EventType::Put);
    let (kind, op, _, _, value) = next_event(&mut watcher).await;
    assert_eq!((kind, op.as_str(), value), (EventType::Expire, "expired", None));

    // Another key is not watched.
    writer.call(put("other", "x")).await.expect("put");
    assert_no_push(&mut watcher).await;
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn a_prefix_watch_sees_only_its_keys_and_unwatch_stops_it() {
    let server = tcp_only(config()).await;
    let mut watcher = connect(&server).await;
    let mut writer = connect(&server).await;
    assert_eq!(subscribe(&mut watcher, watch("user:", true, false)).await, Ok(Reply::Int(1)));
    for key in ["other", "user:1", "use", "user:2"] {
        writer.call(put(key, "v")).await.expect("put");
    }
    let first = next_event(&mut watcher).await;
    let second = next_event(&mut watcher).await;
    assert_eq!((first.2, first.4), (b("user:1"), None), "no value unless asked");
    assert_eq!(second.2, b("user:2"));
    assert!(second.3 > first.3, "versions grow");

    // UNWATCH of something not held changes nothing; of the prefix, stops its events.
    assert_eq!(subscribe(&mut watcher, watch("user:", false, false)).await, Ok(Reply::Int(2)));
    let unwatch = Subscription::Unwatch { key: b("nothing"), prefix: true };
    assert_eq!(subscribe(&mut watcher, unwatch).await, Ok(Reply::Int(2)));
    let unwatch = Subscription::Unwatch { key: b("user:"), prefix: true };
    assert_eq!(subscribe(&mut watcher, unwatch).await, Ok(Reply::Int(1)));
    writer.call(put("user:3", "v")).await.expect("put");
    assert_no_push(&mut watcher).await;
    let unwatch = Subscription::Unwatch { key: b("user:"), prefix: false };
    assert_eq!(subscribe(&mut watcher, unwatch).await, Ok(Reply::Int(0)));
    assert_eq!(subscribers(&server), 0, "a connection holding no topic holds no subscriber");
    assert!(server.shutdown().await);
}

/// Pipelined requests on a watching connection: replies stay in request order and each is
/// answered once, pushes come between them, a WATCH's reply precedes its events, and the event
/// for a write made on the same connection follows that write's reply.
#[tokio::test]
async fn pipelined_requests_interleave_with_pushes_in_a_defined_order() {
    let server = tcp_only(config()).await;
    let mut c = connect(&server).await;
    let watch_id = c.send_request(Request::Subscription(watch("k", false, true))).await;
    let mut writes = Vec::new();
    for i in 0..100 {
        writes.push(c.send(put("k", &i.to_string())).await);
        c.send(Command::Get(cmd::Get { key: b("k") })).await;
    }
    let last = c.send(Command::Ping(cmd::Ping {})).await;
    let mut replies = Vec::new();
    let mut events = Vec::new();
    while replies.last() != Some(&last) || events.len() < 100 {
        match c.next_frame().await.expect("open") {
            (0, Response::Push(Push::Event { value, .. })) => {
                assert!(replies.contains(&watch_id), "an event before the WATCH reply");
                let v: usize =
                    std::str::from_utf8(&value.expect("with values")).expect("utf8").parse().expect("n");
                assert!(replies.contains(&writes[v]), "event {v} before its write's reply");
                events.push(v);
            }
            (id, Response::Reply(_)) => replies.push(id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(replies, (watch_id..=last).collect::<Vec<_>>(), "one reply per request, in order");
    assert_eq!(events, (0..100).collect::<Vec<_>>(), "per-key order");
    assert_no_push(&mut c).await;
    assert!(server.shutdown().await);
}

/// Another connection writes while the watcher keeps pipelining: every event arrives in order
/// and every reply stays in request order.
#[tokio::test]
async fn pushes_from_concurrent_writers_do_not_disturb_pipelined_replies() {
    let server = tcp_only(config()).await;
    let mut c = connect(&server).await;
    assert_eq!(subscribe(&mut c, watch("n", false, true)).await, Ok(Reply::Int(1)));
    let mut writer = connect(&server).await;
    let writes = tokio::spawn(async move {
        for i in 1..=500 {
            writer.call(Command::Incr(cmd::Incr { key: b("n"), delta: 1 })).await.expect("incr");
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let mut expected_reply = 0;
    let mut next_value = 1;
    let mut sent = 0;
    while next_value <= 500 || expected_reply < sent {
        if sent < 2_000 && sent - expected_reply < 200 {
            c.send(Command::Exists(cmd::Exists { key: b("n") })).await;
            sent += 1;
            if sent % 20 != 0 {
                continue;
            }
        }
        match c.next_frame().await.expect("open") {
            (0, Response::Push(Push::Event { value, .. })) => {
                assert_eq!(value, Some(b(&next_value.to_string())), "events in write order");
                next_value += 1;
            }
            (id, Response::Reply(Reply::Bool(_))) => {
                expected_reply += 1;
                assert_eq!(id, expected_reply + 1, "replies in request order"); // id 1 was WATCH
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    writes.await.expect("writer");
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn publish_reaches_channel_and_pattern_subscribers_from_tcp_and_grpc() {
    let server = start(Config { tcp_addr: any_port(), grpc_addr: any_port(), ..config() }).await;
    let mut sub = connect(&server).await;
    let mut publisher = connect(&server).await;
    assert_eq!(subscribe(&mut sub, Subscription::Subscribe { channel: b("news") }).await, Ok(Reply::Int(1)));
    assert_eq!(subscribe(&mut sub, Subscription::PSubscribe { pattern: b("n*") }).await, Ok(Reply::Int(2)));
    let publish = Command::Publish(cmd::Publish { channel: b("news"), message: b("hello") });
    assert_eq!(publisher.call(publish).await, Ok(Reply::Int(2)), "exact and pattern both count");
    let mut got = vec![next_push(&mut sub).await, next_push(&mut sub).await];
    got.sort_by_key(|p| matches!(p, Push::Message { pattern: Some(_), .. }));
    assert_eq!(
        got,
        vec![
            Push::Message { channel: b("news"), payload: b("hello"), pattern: None },
            Push::Message { channel: b("news"), payload: b("hello"), pattern: Some(b("n*")) },
        ]
    );

    // Over gRPC, to a channel only the pattern matches.
    let addr: SocketAddr = server.addrs().grpc.expect("grpc on");
    let channel =
        Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let mut kv = KvClient::new(channel);
    let sent = kv.publish(pb::PublishRequest { channel: b("nope"), message: b("m") }).await.expect("publish");
    assert_eq!(sent.into_inner().receivers, 1);
    assert_eq!(
        next_push(&mut sub).await,
        Push::Message { channel: b("nope"), payload: b("m"), pattern: Some(b("n*")) }
    );

    // Channels are not keys; undoing each subscription counts down; then nobody receives.
    a_key_named_like_a_channel_pushes_nothing(&mut publisher, &mut sub).await;
    let unsub = Subscription::Unsubscribe { channel: b("news") };
    assert_eq!(subscribe(&mut sub, unsub).await, Ok(Reply::Int(1)));
    let unsub = Subscription::PUnsubscribe { pattern: b("n*") };
    assert_eq!(subscribe(&mut sub, unsub).await, Ok(Reply::Int(0)));
    let publish = Command::Publish(cmd::Publish { channel: b("news"), message: b("again") });
    assert_eq!(publisher.call(publish).await, Ok(Reply::Int(0)));
    assert_no_push(&mut sub).await;
    assert!(server.shutdown().await);
}

/// A key named like a subscribed channel changes without a MESSAGE.
async fn a_key_named_like_a_channel_pushes_nothing(writer: &mut TcpClient, sub: &mut TcpClient) {
    writer.call(put("news", "not a message")).await.expect("put");
    assert_no_push(sub).await;
}

/// Pushes queued before an UNSUBSCRIBE go out before its reply; none follow it. The messages
/// are published on the subscribing connection itself, pipelined with the UNSUBSCRIBE, so they
/// are all still queued when it is applied.
#[tokio::test]
async fn messages_queued_before_an_unsubscribe_precede_its_reply() {
    let server = tcp_only(config()).await;
    let mut sub = connect(&server).await;
    assert_eq!(subscribe(&mut sub, Subscription::Subscribe { channel: b("c") }).await, Ok(Reply::Int(1)));
    let mut publishes = Vec::new();
    for i in 0..50 {
        publishes.push(
            sub.send(Command::Publish(cmd::Publish { channel: b("c"), message: b(&i.to_string()) })).await,
        );
    }
    let id = sub.send_request(Request::Subscription(Subscription::Unsubscribe { channel: b("c") })).await;
    let (mut messages, mut replies) = (0, 0);
    loop {
        match sub.next_frame().await.expect("open") {
            (0, Response::Push(Push::Message { payload, .. })) => {
                assert_eq!(payload, b(&messages.to_string()));
                assert!(replies > messages, "a message before its PUBLISH's reply");
                messages += 1;
            }
            (got, Response::Reply(Reply::Int(1))) if got == publishes[replies] => replies += 1,
            (got, Response::Reply(Reply::Int(0))) if got == id => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        (replies, messages),
        (50, 50),
        "every message published before the UNSUBSCRIBE, before its reply"
    );
    assert_no_push(&mut sub).await;
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_lagged_unsubscribed_and_can_resubscribe() {
    let feed = FeedLimits { queue_len: 16, ..FeedLimits::default() };
    let server = tcp_only(Config { feed, ..config() }).await;
    let mut watcher = connect(&server).await;
    let mut writer = connect(&server).await;
    assert_eq!(subscribe(&mut watcher, watch("k", true, true)).await, Ok(Reply::Int(1)));
    assert_eq!(subscribe(&mut watcher, Subscription::Subscribe { channel: b("c") }).await, Ok(Reply::Int(2)));
    // Far more than the queue and the sockets' buffers hold, written while the watcher reads
    // nothing; the writer is never slowed.
    let (n, value) = (2_000, Bytes::from(vec![b'v'; 32 * 1024]));
    for chunk in 0..n / 100 {
        let mut ids = Vec::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            let cmd = Command::Put(cmd::Put {
                key: b(&format!("k{i}")),
                value: value.clone(),
                expiry: Expiry::Persist,
                condition: PutCondition::Always,
            });
            ids.push(writer.send(cmd).await);
        }
        for id in ids {
            writer.recv(id).await.expect("put");
        }
    }
    let mut events = 0;
    let dropped = loop {
        match next_push(&mut watcher).await {
            Push::Event { .. } => events += 1,
            Push::Lagged { dropped } => break dropped,
            other => panic!("unexpected {other:?}"),
        }
    };
    // `dropped` counts what was lost before the signal; after it the watch is gone, so later
    // writes are neither delivered nor counted.
    assert!(dropped > 0 && events + dropped <= n, "{events} + {dropped} > {n}");
    // Every subscription was cancelled: nothing is pushed and the hub holds nothing.
    writer.call(put("k0", "after")).await.expect("put");
    writer.call(Command::Publish(cmd::Publish { channel: b("c"), message: b("m") })).await.expect("publish");
    assert_no_push(&mut watcher).await;
    assert_eq!(subscribers(&server), 0, "the lagged connection's subscriber was dropped");
    // Resubscribing starts afresh.
    assert_eq!(subscribe(&mut watcher, watch("k0", false, true)).await, Ok(Reply::Int(1)));
    writer.call(put("k0", "again")).await.expect("put");
    assert_eq!(next_event(&mut watcher).await.4, Some(b("again")));
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn ten_thousand_subscribe_cycles_and_disconnects_free_everything() {
    let server = tcp_only(config()).await;
    let mut c = connect(&server).await;
    for chunk in 0..20 {
        let mut ids = Vec::new();
        for i in chunk * 500..(chunk + 1) * 500 {
            let key = b(&format!("key{i}"));
            let (on, off) = match i % 3 {
                0 => (
                    Subscription::Watch { key: key.clone(), prefix: i % 2 == 0, with_values: true },
                    Subscription::Unwatch { key, prefix: i % 2 == 0 },
                ),
                1 => (
                    Subscription::Subscribe { channel: key.clone() },
                    Subscription::Unsubscribe { channel: key },
                ),
                _ => (
                    Subscription::PSubscribe { pattern: key.clone() },
                    Subscription::PUnsubscribe { pattern: key },
                ),
            };
            ids.push((c.send_request(Request::Subscription(on)).await, 1));
            ids.push((c.send_request(Request::Subscription(off)).await, 0));
        }
        for (id, held) in ids {
            assert_eq!(c.next_frame().await, Some((id, Response::Reply(Reply::Int(held)))));
        }
    }
    assert_eq!(subscribers(&server), 0);
    assert!(!server.feed().is_active(), "writers skip the feed again");
    assert_eq!(server.feed().pattern_count(), 0);
    assert!(server.feed().channels(None).is_empty());

    // A connection that goes away while subscribed frees its subscriptions too.
    assert_eq!(subscribe(&mut c, watch("k", false, false)).await, Ok(Reply::Int(1)));
    assert_eq!(subscribe(&mut c, Subscription::Subscribe { channel: b("c") }).await, Ok(Reply::Int(2)));
    assert_eq!(subscribers(&server), 1);
    drop(c);
    assert_feed_freed(&server).await;
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn bad_subscriptions_get_error_frames_and_change_nothing() {
    let feed = FeedLimits { max_topics: 2, max_topic_len: 16, ..FeedLimits::default() };
    let server = tcp_only(Config { feed, ..config() }).await;
    let mut c = connect(&server).await;
    let err = subscribe(&mut c, watch("", false, false)).await.expect_err("empty key");
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(subscribers(&server), 0, "a refused first subscription leaves no subscriber");
    let long = "x".repeat(17);
    let err = subscribe(&mut c, Subscription::Subscribe { channel: b(&long) }).await.expect_err("long");
    assert_eq!(err.code(), ErrorCode::KeyTooLarge);
    assert_eq!(subscribe(&mut c, watch("a", false, false)).await, Ok(Reply::Int(1)));
    assert_eq!(subscribe(&mut c, watch("b", false, false)).await, Ok(Reply::Int(2)));
    let err = subscribe(&mut c, watch("c", false, false)).await.expect_err("over max_topics");
    assert_eq!(err.code(), ErrorCode::LimitExceeded);
    // The refused topic was not added; the others still work.
    let mut writer = connect(&server).await;
    writer.call(put("c", "v")).await.expect("put");
    writer.call(put("b", "v")).await.expect("put");
    assert_eq!(next_event(&mut c).await.2, b("b"));

    // A truncated WATCH body is MALFORMED with its id; the connection goes on.
    let mut raw = TcpStream::connect(server.addrs().tcp.expect("tcp")).await.expect("connect");
    raw.write_all(b"\x00\x00\x00\x0b\x01\x00\x00\x00\x01NANO\x00\x01").await.expect("hello");
    raw.write_all(b"\x00\x00\x00\x0a\x71\x00\x00\x00\x07\x00\x00\x00\x01k").await.expect("watch");
    raw.write_all(b"\x00\x00\x00\x05\x02\x00\x00\x00\x08").await.expect("ping");
    let mut buf = vec![0; 15];
    raw.read_exact(&mut buf).await.expect("hello reply");
    let mut header = [0; 9];
    raw.read_exact(&mut header).await.expect("error header");
    assert_eq!(&header[4..], b"\xff\x00\x00\x00\x07", "ERROR for id 7");
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let mut body = vec![0; len - 5];
    raw.read_exact(&mut body).await.expect("error body");
    assert_eq!(&body[..2], &10u16.to_be_bytes(), "MALFORMED");
    raw.read_exact(&mut header).await.expect("pong");
    assert_eq!(header, *b"\x00\x00\x00\x05\x81\x00\x00\x00\x08");
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn a_subscription_before_hello_is_refused() {
    let server = tcp_only(config()).await;
    let stream = TcpStream::connect(server.addrs().tcp.expect("tcp")).await.expect("connect");
    let mut framed = tokio_util::codec::Framed::new(stream, nanodb_protocol::ClientCodec::default());
    framed.send((3, Request::Subscription(watch("k", false, false)))).await.expect("send");
    match framed.next().await {
        Some(Ok((3, Response::Error(e)))) => assert_eq!(e.code(), ErrorCode::HandshakeRequired),
        other => panic!("expected HANDSHAKE_REQUIRED, got {other:?}"),
    }
    assert_eq!(subscribers(&server), 0);
    assert!(server.shutdown().await);
}

/// Shutdown ends subscribed connections, the one that reads and the one that stopped reading
/// with its socket full, so draining is not held up.
#[tokio::test]
async fn shutdown_closes_subscribed_connections_cleanly() {
    let server = tcp_only(config()).await;
    let mut reader = connect(&server).await;
    let mut stuck = connect(&server).await;
    let mut writer = connect(&server).await;
    assert_eq!(subscribe(&mut reader, watch("k", false, false)).await, Ok(Reply::Int(1)));
    assert_eq!(subscribe(&mut stuck, Subscription::Subscribe { channel: b("c") }).await, Ok(Reply::Int(1)));
    let payload = Bytes::from(vec![b'm'; 64 * 1024]);
    for _ in 0..20 {
        let mut ids = Vec::new();
        for _ in 0..20 {
            ids.push(
                writer
                    .send(Command::Publish(cmd::Publish { channel: b("c"), message: payload.clone() }))
                    .await,
            );
        }
        for id in ids {
            writer.recv(id).await.expect("publish");
        }
    }
    let stopped = tokio::spawn(server.shutdown());
    assert_eq!(reader.next_frame().await, None, "closed without a push or an error");
    assert!(stopped.await.expect("joins"), "shutdown drained in time");
    drop(stuck);
}

/// With persistence on, an event is held until its write is durable; an UNWATCH must still send
/// the events of writes applied before it ahead of its reply, rather than skip the ones the log
/// has not reached yet (which then followed the acknowledgement, or were lost with the last
/// topic). A write in the same pipelined batch is the sure case: its record cannot be durable yet.
#[tokio::test]
async fn with_persistence_events_queued_before_an_unwatch_precede_its_reply() {
    use nanodb_server::persist::FsyncPolicy;
    for fsync in [FsyncPolicy::Always, FsyncPolicy::No] {
        let dir = tempfile::tempdir().expect("tempdir");
        let server =
            tcp_only(Config { persistence: true, data_dir: dir.path().to_path_buf(), fsync, ..config() })
                .await;
        let mut c = connect(&server).await;
        for round in 0..20 {
            // Odd rounds hold another topic, so the subscriber outlives the UNWATCH.
            let other = round % 2 == 1;
            if other {
                assert_eq!(subscribe(&mut c, watch("other", false, false)).await, Ok(Reply::Int(1)));
            }
            let held = 1 + i64::from(other);
            assert_eq!(subscribe(&mut c, watch("k", false, false)).await, Ok(Reply::Int(held)));
            let put_id = c.send(put("k", "v")).await;
            let unwatch_id = c
                .send_request(Request::Subscription(Subscription::Unwatch { key: b("k"), prefix: false }))
                .await;
            let mut events = 0;
            loop {
                match c.next_frame().await.expect("open") {
                    (0, Response::Push(Push::Event { key, .. })) => {
                        assert_eq!(key, b("k"));
                        events += 1;
                    }
                    (id, Response::Reply(_)) if id == put_id => {}
                    (id, Response::Reply(r)) if id == unwatch_id => {
                        assert_eq!(r, Reply::Int(held - 1));
                        break;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(events, 1, "{fsync}, round {round}: the PUT's event must precede the UNWATCH reply");
            if other {
                let unwatch = Subscription::Unwatch { key: b("other"), prefix: false };
                assert_eq!(subscribe(&mut c, unwatch).await, Ok(Reply::Int(0)));
            }
        }
        assert_no_push(&mut c).await;
        assert!(server.shutdown().await);
    }
}
