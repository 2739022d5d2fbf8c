//! The change feed across protocols: a write over each protocol reaches a watcher on every
//! protocol (gRPC Watch, REST SSE, Redis keyspace notifications, binary-protocol WATCH), and a
//! message published over each protocol reaches a subscriber on every protocol.

use nanodb_protocol::Expiry;
use nanodb_protocol::cmd;
use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use nanodb_protocol::pb::{self, kv_client::KvClient};
use nanodb_protocol::{Command, Push, PutCondition, Reply, Subscription};
use nanodb_server::config::Config;
use nanodb_server::feed::NotifyFlags;
use nanodb_server::server::Server;
use tonic::transport::Channel;

use crate::harness::{TcpClient, any_port, b, config, start};
use crate::watch_http::Sse;
use crate::watch_tcp::{next_push, subscribe};

const WRITERS: [&str; 4] = ["tcp", "resp", "http", "grpc"];
const WAIT: Duration = Duration::from_secs(5);

/// One client per protocol, all against one server.
struct Clients {
    tcp: TcpClient,
    resp: redis::aio::MultiplexedConnection,
    http: reqwest::Client,
    base: String,
    grpc: KvClient<Channel>,
}

async fn server() -> (Server, Clients) {
    let server = start(Config {
        tcp_addr: any_port(),
        resp_addr: any_port(),
        http_addr: any_port(),
        grpc_addr: any_port(),
        notify_keyspace_events: NotifyFlags::parse("KEA").expect("flags"),
        ..config()
    })
    .await;
    let a = server.addrs();
    let tcp = TcpClient::connect(a.tcp.expect("tcp")).await;
    let redis = redis::Client::open(format!("redis://{}/", a.resp.expect("resp"))).expect("url");
    let resp = redis.get_multiplexed_async_connection().await.expect("resp connects");
    let base = format!("http://{}", a.http.expect("http"));
    let channel = Channel::from_shared(format!("http://{}", a.grpc.expect("grpc"))).expect("uri");
    let grpc = KvClient::new(channel.connect().await.expect("grpc connects"));
    (server, Clients { tcp, resp, http: reqwest::Client::new(), base, grpc })
}

/// Writes `x:<protocol>` = `v-<protocol>` over `protocol`.
async fn write(c: &mut Clients, protocol: &str) {
    let (key, value) = (format!("x:{protocol}"), format!("v-{protocol}"));
    match protocol {
        "tcp" => {
            let cmd = Command::Put(cmd::Put {
                key: b(&key),
                value: b(&value),
                expiry: Expiry::Persist,
                condition: PutCondition::Always,
            });
            c.tcp.call(cmd).await.expect("tcp put");
        }
        "resp" => {
            let () =
                redis::cmd("SET").arg(&key).arg(&value).query_async(&mut c.resp).await.expect("resp set");
        }
        "http" => {
            let r = c.http.put(format!("{}/v1/kv/{key}", c.base)).body(value).send().await.expect("http put");
            assert!(r.status().is_success(), "{}", r.status());
        }
        _ => {
            let req = pb::PutRequest { key: b(&key), value: b(&value), ..Default::default() };
            c.grpc.put(req).await.expect("grpc put");
        }
    }
}

/// Publishes `from-<protocol>` to `news` over `protocol`; returns the receiver count it reports.
async fn publish(c: &mut Clients, protocol: &str) -> i64 {
    let message = format!("from-{protocol}");
    match protocol {
        "tcp" => match c
            .tcp
            .call(Command::Publish(cmd::Publish { channel: b("news"), message: b(&message) }))
            .await
        {
            Ok(Reply::Int(n)) => n,
            other => panic!("tcp publish: {other:?}"),
        },
        "resp" => {
            redis::cmd("PUBLISH").arg("news").arg(&message).query_async(&mut c.resp).await.expect("publish")
        }
        "http" => {
            let r =
                c.http.post(format!("{}/v1/publish/news", c.base)).body(message).send().await.expect("post");
            r.json::<serde_json::Value>().await.expect("JSON")["receivers"].as_i64().expect("receivers")
        }
        _ => {
            let req = pb::PublishRequest { channel: b("news"), message: b(&message) };
            c.grpc.publish(req).await.expect("grpc publish").into_inner().receivers as i64
        }
    }
}

fn expected(prefix: &str) -> BTreeSet<(String, String)> {
    WRITERS.iter().map(|p| (format!("x:{p}"), format!("{prefix}{p}"))).collect()
}

#[tokio::test]
async fn a_write_over_any_protocol_reaches_watchers_on_every_protocol() {
    let (server, mut c) = server().await;

    // One watcher per protocol on the prefix `x:`, each registered before the first write.
    let mut grpc = c
        .grpc
        .watch(pb::WatchRequest { key: b("x:"), prefix: true, include_values: true })
        .await
        .expect("grpc watch")
        .into_inner();
    let mut sse = Sse::open(&format!("{}/v1/watch?prefix=x:&values=true", c.base)).await;
    let redis = redis::Client::open(format!("redis://{}/", server.addrs().resp.expect("resp"))).expect("url");
    let mut pubsub = redis.get_async_pubsub().await.expect("pubsub");
    pubsub.psubscribe("__keyspace@0__:x:*").await.expect("psubscribe");
    let mut tcp_watcher = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
    subscribe(&mut tcp_watcher, Subscription::Watch { key: b("x:"), prefix: true, with_values: true })
        .await
        .expect("tcp watch");

    for protocol in WRITERS {
        write(&mut c, protocol).await;
    }

    let mut got = BTreeSet::new();
    for _ in WRITERS {
        let e =
            tokio::time::timeout(WAIT, grpc.next()).await.expect("in time").expect("open").expect("event");
        got.insert((
            String::from_utf8_lossy(&e.key).into_owned(),
            String::from_utf8_lossy(&e.value).into_owned(),
        ));
    }
    assert_eq!(got, expected("v-"), "gRPC Watch");

    let mut got = BTreeSet::new();
    for _ in WRITERS {
        let e = sse.event().await.data;
        got.insert((e["key"].as_str().expect("key").into(), e["value"].as_str().expect("value").into()));
    }
    assert_eq!(got, expected("v-"), "REST SSE");

    // Redis keyspace notifications carry the event name, not the value.
    let mut messages = pubsub.on_message();
    let mut got = BTreeSet::new();
    for _ in WRITERS {
        let m = tokio::time::timeout(WAIT, messages.next()).await.expect("in time").expect("message");
        let key = m.get_channel_name().trim_start_matches("__keyspace@0__:").to_owned();
        got.insert((key, m.get_payload::<String>().expect("payload")));
    }
    let want: BTreeSet<_> = WRITERS.iter().map(|p| (format!("x:{p}"), "set".to_owned())).collect();
    assert_eq!(got, want, "RESP keyspace notifications");

    let mut got = BTreeSet::new();
    for _ in WRITERS {
        match tokio::time::timeout(WAIT, next_push(&mut tcp_watcher)).await.expect("in time") {
            Push::Event { key, value, .. } => {
                let value = value.expect("values were asked for");
                got.insert((
                    String::from_utf8_lossy(&key).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                ));
            }
            other => panic!("expected an EVENT, got {other:?}"),
        }
    }
    assert_eq!(got, expected("v-"), "binary-protocol WATCH");
    assert!(server.shutdown().await);
}

#[tokio::test]
async fn a_message_published_over_any_protocol_reaches_subscribers_on_every_protocol() {
    let (server, mut c) = server().await;

    let mut grpc = c
        .grpc
        .subscribe(pb::SubscribeRequest { channels: vec![b("news")], patterns: vec![] })
        .await
        .expect("grpc subscribe")
        .into_inner();
    let mut sse = Sse::open(&format!("{}/v1/subscribe/news", c.base)).await;
    let redis = redis::Client::open(format!("redis://{}/", server.addrs().resp.expect("resp"))).expect("url");
    let mut pubsub = redis.get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe("news").await.expect("subscribe");
    let mut tcp_sub = TcpClient::connect(server.addrs().tcp.expect("tcp")).await;
    subscribe(&mut tcp_sub, Subscription::Subscribe { channel: b("news") }).await.expect("tcp subscribe");

    // Published one after another, so every subscriber sees them in this order.
    for protocol in WRITERS {
        assert_eq!(publish(&mut c, protocol).await, 4, "{protocol}: four subscribers, one per protocol");
    }
    let want: Vec<String> = WRITERS.iter().map(|p| format!("from-{p}")).collect();

    let mut got = Vec::new();
    for _ in WRITERS {
        let m =
            tokio::time::timeout(WAIT, grpc.next()).await.expect("in time").expect("open").expect("message");
        got.push(String::from_utf8_lossy(&m.message).into_owned());
    }
    assert_eq!(got, want, "gRPC Subscribe");

    let mut got = Vec::new();
    for _ in WRITERS {
        got.push(sse.event().await.data["message"].as_str().expect("message").to_owned());
    }
    assert_eq!(got, want, "REST SSE");

    let mut messages = pubsub.on_message();
    let mut got = Vec::new();
    for _ in WRITERS {
        let m = tokio::time::timeout(WAIT, messages.next()).await.expect("in time").expect("message");
        got.push(m.get_payload::<String>().expect("payload"));
    }
    assert_eq!(got, want, "RESP SUBSCRIBE");

    let mut got = Vec::new();
    for _ in WRITERS {
        match tokio::time::timeout(WAIT, next_push(&mut tcp_sub)).await.expect("in time") {
            Push::Message { payload, .. } => got.push(String::from_utf8_lossy(&payload).into_owned()),
            other => panic!("expected a MESSAGE, got {other:?}"),
        }
    }
    assert_eq!(got, want, "binary-protocol SUBSCRIBE");
    assert!(server.shutdown().await);
}
