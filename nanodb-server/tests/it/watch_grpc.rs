//! gRPC `Watch`, `Publish` and `Subscribe` with the generated tonic client: event shapes, prefix
//! matching, expiry, pub/sub with patterns, the lagged signal, streams outliving the request
//! timeout, and streams ending at shutdown.

use nanodb_protocol::Expiry;
use nanodb_protocol::cmd;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use nanodb_protocol::pb::{self, kv_client::KvClient};
use nanodb_protocol::{Command, PutCondition};
use nanodb_server::config::Config;
use nanodb_server::feed::FeedLimits;
use nanodb_server::server::Server;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{TcpClient, any_port, b, config, start};

/// A server with gRPC and the binary TCP protocol (the writer in most tests).
async fn server(config: Config) -> (Server, KvClient<Channel>, TcpClient) {
    let server = start(Config { grpc_addr: any_port(), tcp_addr: any_port(), ..config }).await;
    let addr: SocketAddr = server.addrs().grpc.expect("grpc on");
    let channel =
        Channel::from_shared(format!("http://{addr}")).expect("succeeds").connect().await.expect("connect");
    let tcp = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    (server, KvClient::new(channel), tcp)
}

fn watch_req(key: &str, prefix: bool, include_values: bool) -> pb::WatchRequest {
    pb::WatchRequest { key: b(key), prefix, include_values }
}

async fn next<T>(stream: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event within 5 s")
        .expect("stream open")
        .expect("no error")
}

#[tokio::test]
async fn a_key_watch_sees_puts_deletes_and_expiry_with_versions() {
    let (server, mut kv, mut tcp) =
        server(Config { sweep_interval: Duration::from_millis(10), ..config() }).await;
    let mut events = kv.watch(watch_req("k", false, true)).await.expect("watch").into_inner();

    let put =
        kv.put(pb::PutRequest { key: b("k"), value: b("v1"), ..Default::default() }).await.expect("succeeds");
    let e = next(&mut events).await;
    assert_eq!(e.r#type(), pb::WatchEventType::Put);
    assert_eq!((e.key, e.value, e.has_value, e.version), (b("k"), b("v1"), true, put.into_inner().version));
    assert_eq!(e.op, "set");

    // An empty value is still a value.
    tcp.call(Command::Put(cmd::Put {
        key: b("k"),
        value: Bytes::new(),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    }))
    .await
    .expect("succeeds");
    let e = next(&mut events).await;
    assert!(e.has_value && e.value.is_empty());

    tcp.call(Command::Delete(cmd::Delete { key: b("k") })).await.expect("succeeds");
    assert_eq!(next(&mut events).await.r#type(), pb::WatchEventType::Delete);

    tcp.call(Command::Put(cmd::Put {
        key: b("k"),
        value: b("t"),
        expiry: Expiry::from_put_ttl_ms(30),
        condition: PutCondition::Always,
    }))
    .await
    .expect("succeeds");
    assert_eq!(next(&mut events).await.r#type(), pb::WatchEventType::Put);
    // Nobody reads the key: the sweeper reports the expiry.
    let e = next(&mut events).await;
    assert_eq!((e.r#type(), e.op.as_str()), (pb::WatchEventType::Expire, "expired"));
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn a_prefix_watch_sees_only_its_keys_and_no_values_unless_asked() {
    let (server, mut kv, mut tcp) = server(config()).await;
    let mut events = kv.watch(watch_req("user:", true, false)).await.expect("succeeds").into_inner();
    for key in ["other", "user:1", "use", "user:2"] {
        tcp.call(Command::Put(cmd::Put {
            key: b(key),
            value: b("v"),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        }))
        .await
        .expect("succeeds");
    }
    let first = next(&mut events).await;
    let second = next(&mut events).await;
    assert_eq!((first.key, second.key), (b("user:1"), b("user:2")));
    assert!(!first.has_value && first.value.is_empty());
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn publish_reaches_channel_and_pattern_subscribers() {
    let (server, mut kv, _tcp) = server(config()).await;
    let mut exact = kv
        .subscribe(pb::SubscribeRequest { channels: vec![b("news")], patterns: vec![] })
        .await
        .expect("succeeds")
        .into_inner();
    let mut pattern = kv
        .subscribe(pb::SubscribeRequest { channels: vec![], patterns: vec![b("n*")] })
        .await
        .expect("succeeds")
        .into_inner();
    let sent =
        kv.publish(pb::PublishRequest { channel: b("news"), message: b("hello") }).await.expect("succeeds");
    assert_eq!(sent.into_inner().receivers, 2);
    let m = next(&mut exact).await;
    assert_eq!((m.channel, m.message, m.pattern), (b("news"), b("hello"), Bytes::new()));
    let m = next(&mut pattern).await;
    assert_eq!((m.channel, m.message, m.pattern), (b("news"), b("hello"), b("n*")));
    // Channels are not keys.
    assert!(!kv.get(pb::GetRequest { key: b("news") }).await.expect("succeeds").into_inner().found);
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn bad_watch_and_subscribe_requests_are_invalid_arguments() {
    let (server, mut kv, _tcp) = server(config()).await;
    let empty_key = kv.watch(watch_req("", false, false)).await.expect_err("fails");
    assert_eq!(empty_key.code(), Code::InvalidArgument);
    let nothing = kv.subscribe(pb::SubscribeRequest::default()).await.expect_err("fails");
    assert_eq!(nothing.code(), Code::InvalidArgument);
    let long = Bytes::from(vec![b'x'; 1 << 20]);
    let too_long =
        kv.publish(pb::PublishRequest { channel: long, message: b("m") }).await.expect_err("fails");
    assert_eq!(too_long.code(), Code::InvalidArgument);
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn a_watcher_that_falls_behind_gets_lagged_and_the_stream_ends() {
    let feed = FeedLimits { queue_len: 16, ..FeedLimits::default() };
    let (server, mut kv, mut tcp) = server(Config { feed, ..config() }).await;
    let mut events = kv.watch(watch_req("k", true, true)).await.expect("succeeds").into_inner();
    // Far more than the queue and the transport's buffers hold, written while nobody reads.
    let value = Bytes::from(vec![b'v'; 4096]);
    for i in 0..2_000 {
        tcp.call(Command::Put(cmd::Put {
            key: b(&format!("k{i}")),
            value: value.clone(),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        }))
        .await
        .expect("succeeds");
    }
    let mut puts = 0;
    let dropped = loop {
        let e = next(&mut events).await;
        match e.r#type() {
            pb::WatchEventType::Put => puts += 1,
            pb::WatchEventType::Lagged => break e.dropped,
            other => panic!("unexpected {other:?}"),
        }
    };
    // Every put up to the lagged signal is either delivered or counted. The stream, on gRPC's
    // event loop, may take the signal before the writer is done (it catches up whenever the
    // transport has room), and nothing is counted after the signal: at most the 2,000.
    assert!(dropped > 0 && puts + dropped as usize <= 2_000, "{puts} + {dropped}");
    let end = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("ends");
    assert!(end.is_none(), "the stream ends after LAGGED");
    let addr = server.addrs().grpc.expect("grpc on");
    let mut admin = nanodb_protocol::pb::admin_client::AdminClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let stats = admin.stats(pb::StatsRequest {}).await.expect("stats").into_inner().feed.expect("feed stats");
    assert_eq!((stats.subscribers, stats.lagged, stats.dropped), (0, 1, dropped));
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn a_stream_outlives_the_request_timeout_and_ends_at_shutdown() {
    let (server, mut kv, mut tcp) =
        server(Config { request_timeout: Duration::from_millis(100), ..config() }).await;
    let mut events = kv.watch(watch_req("k", false, false)).await.expect("succeeds").into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tcp.call(Command::Put(cmd::Put {
        key: b("k"),
        value: b("v"),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    }))
    .await
    .expect("succeeds");
    assert_eq!(next(&mut events).await.r#type(), pb::WatchEventType::Put);
    let stopped = tokio::spawn(server.shutdown());
    let end = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("ends at shutdown");
    assert!(!matches!(end, Some(Ok(_))), "no event after shutdown: {end:?}");
    assert!(stopped.await.expect("succeeds"), "shutdown drained in time");
}

#[tokio::test]
async fn with_persistence_every_fsync_policy_delivers_events_once_durable() {
    use nanodb_server::persist::FsyncPolicy;
    for fsync in [FsyncPolicy::No, FsyncPolicy::EverySec, FsyncPolicy::Always] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, mut kv, mut tcp) =
            server(Config { persistence: true, data_dir: dir.path().to_path_buf(), fsync, ..config() }).await;
        let mut events = kv.watch(watch_req("k", true, true)).await.expect("watch").into_inner();
        for i in 0..50 {
            tcp.call(Command::Put(cmd::Put {
                key: b(&format!("k{i}")),
                value: b(&i.to_string()),
                expiry: Expiry::Persist,
                condition: PutCondition::Always,
            }))
            .await
            .expect("put");
        }
        for i in 0..50 {
            let e = next(&mut events).await;
            assert_eq!((e.key, e.value), (b(&format!("k{i}")), b(&i.to_string())), "{fsync}");
        }
        assert!(server.shutdown().await);
    }
}

/// Open streams outlive their request, so the in-flight limit does not count them: like SSE and
/// WebSocket streams, they are bounded by `max_streams` (each holds a subscriber and a queue
/// of up to `--watch-queue-bytes`), and a freed place can be taken again.
#[tokio::test]
async fn open_streams_are_bounded_by_max_streams() {
    let (server, mut kv, _tcp) = server(Config { max_streams: 2, ..config() }).await;
    let first = kv.watch(watch_req("a", false, false)).await.expect("first stream").into_inner();
    let _second = kv
        .subscribe(pb::SubscribeRequest { channels: vec![b("c")], patterns: vec![] })
        .await
        .expect("second stream")
        .into_inner();
    let refused = kv.watch(watch_req("b", false, false)).await.expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match kv.watch(watch_req("b", false, false)).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::ResourceExhausted && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("a freed place is not taken again: {e}"),
        }
    }
    assert!(server.shutdown().await);
}

/// gRPC's ready signal is the response headers: the server registers the watch before it answers
/// them, and the generated client's call returns once they arrive. So a write made the moment the
/// call returns is delivered, and no READY message is needed on the stream.
#[tokio::test]
async fn a_write_made_right_after_the_call_returns_is_always_seen() {
    let (server, mut kv, mut tcp) = server(config()).await;
    for i in 0..50 {
        let key = format!("r{i}");
        let mut events = kv.watch(watch_req(&key, false, true)).await.expect("watch").into_inner();
        tcp.call(Command::Put(cmd::Put {
            key: b(&key),
            value: b("v"),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        }))
        .await
        .expect("put");
        let e = next(&mut events).await;
        assert_eq!((e.r#type(), e.key), (pb::WatchEventType::Put, b(&key)));

        let channel = format!("c{i}");
        let mut messages = kv
            .subscribe(pb::SubscribeRequest { channels: vec![b(&channel)], patterns: vec![] })
            .await
            .expect("subscribe")
            .into_inner();
        let r = kv.publish(pb::PublishRequest { channel: b(&channel), message: b("m") }).await;
        assert_eq!(r.expect("publish").into_inner().receivers, 1);
        assert_eq!(next(&mut messages).await.message, b("m"));
    }
    assert!(server.shutdown().await);
}
