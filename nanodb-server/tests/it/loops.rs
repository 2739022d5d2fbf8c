//! Every frontend on event loops of its own (`--tcp-threads`, `--grpc-threads`, `--http-threads`,
//! `--resp-threads`): many concurrent connections per protocol spread over two loops each, their
//! writes visible to every other protocol, and shutdown draining them (open watch streams and
//! idle keep-alive connections included); and the same protocols with 0 loops, on the server's
//! shared runtime.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use nanodb_protocol::pb::{self, kv_client::KvClient};
use nanodb_protocol::{Command, Entry, Reply, Subscription, cmd};
use nanodb_server::config::Config;
use nanodb_server::server::Server;
use nanodb_server::stats::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use crate::harness::{TcpClient, any_port, b, config, start};
use crate::watch_tcp::subscribe;

/// Connections per protocol: several per loop, and more than a round robin of two could place
/// evenly by accident.
const CONNECTIONS: usize = 24;

/// Every protocol on, each with `threads` event loops.
async fn server(threads: usize) -> Server {
    start(Config {
        tcp_addr: any_port(),
        grpc_addr: any_port(),
        http_addr: any_port(),
        resp_addr: any_port(),
        tcp_threads: threads,
        grpc_threads: threads,
        http_threads: threads,
        resp_threads: threads,
        ..config()
    })
    .await
}

/// One binary-protocol connection: writes its key, reads it back.
async fn tcp_round(addr: SocketAddr, i: usize) -> TcpClient {
    let mut c = TcpClient::connect(addr).await;
    let put = Command::Put(cmd::Put {
        key: b(&format!("tcp:{i}")),
        value: b(&i.to_string()),
        condition: nanodb_protocol::PutCondition::Always,
        expiry: nanodb_protocol::Expiry::Keep,
    });
    c.call(put).await.expect("put");
    let got = c.call(Command::Get(cmd::Get { key: b(&format!("tcp:{i}")) })).await;
    let Ok(Reply::Value(Some(Entry { value, .. }))) = got else { panic!("tcp get: {got:?}") };
    assert_eq!(value, b(&i.to_string()));
    c
}

/// One gRPC connection (a channel of its own): writes its key, reads it back.
async fn grpc_round(addr: SocketAddr, i: usize) -> KvClient<Channel> {
    let channel =
        Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let mut c = KvClient::new(channel);
    let key = b(&format!("grpc:{i}"));
    c.put(pb::PutRequest { key: key.clone(), value: b(&i.to_string()), ..Default::default() })
        .await
        .expect("put");
    let got = c.get(pb::GetRequest { key }).await.expect("get").into_inner();
    assert_eq!((got.found, got.value), (true, b(&i.to_string())));
    c
}

/// One REST connection (a client of its own, kept alive): writes its key, reads it back.
async fn http_round(base: String, i: usize) -> reqwest::Client {
    let c = reqwest::Client::new();
    let url = format!("{base}/v1/kv/http:{i}");
    let put = c.put(&url).body(i.to_string()).send().await.expect("put");
    assert!(put.status().is_success(), "{}", put.status());
    let got = c.get(&url).send().await.expect("get");
    assert_eq!(got.bytes().await.expect("body"), i.to_string().as_bytes());
    c
}

/// One RESP connection: SET, then GET.
async fn resp_round(addr: SocketAddr, i: usize) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (key, value) = (format!("resp:{i}"), i.to_string());
    let set = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n", key.len(), value.len());
    s.write_all(set.as_bytes()).await.expect("set");
    let mut ok = [0u8; 5];
    s.read_exact(&mut ok).await.expect("+OK");
    assert_eq!(&ok, b"+OK\r\n");
    s
}

/// The names of this process's threads (the server runs in it).
fn thread_names() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// Runs every protocol's rounds at once, then checks each protocol sees the others' writes.
async fn serve_everything(server: &Server) -> (Vec<TcpClient>, Vec<KvClient<Channel>>, Vec<reqwest::Client>) {
    let addrs = server.addrs();
    let (tcp, grpc, http, resp) = (
        addrs.tcp.expect("tcp on"),
        addrs.grpc.expect("grpc on"),
        addrs.http.expect("http on"),
        addrs.resp.expect("resp on"),
    );
    let base = format!("http://{http}");
    let (tcps, grpcs, https, resps) = tokio::join!(
        join_all((0..CONNECTIONS).map(|i| tcp_round(tcp, i))),
        join_all((0..CONNECTIONS).map(|i| grpc_round(grpc, i))),
        join_all((0..CONNECTIONS).map(|i| http_round(base.clone(), i))),
        join_all((0..CONNECTIONS).map(|i| resp_round(resp, i))),
    );
    drop(resps);
    // Every protocol's writes, read over the binary protocol from another loop's connection.
    let mut reader = TcpClient::connect(tcp).await;
    for i in 0..CONNECTIONS {
        for proto in ["tcp", "grpc", "http", "resp"] {
            let got = reader.call(Command::Get(cmd::Get { key: b(&format!("{proto}:{i}")) })).await;
            let Ok(Reply::Value(Some(Entry { value, .. }))) = got else { panic!("{proto}:{i}: {got:?}") };
            assert_eq!(value, b(&i.to_string()), "{proto}:{i}");
        }
    }
    for (proto, at_least) in
        [(Protocol::Tcp, CONNECTIONS), (Protocol::Grpc, CONNECTIONS), (Protocol::Http, CONNECTIONS)]
    {
        let open = server.stats().connections(proto);
        assert!(open >= at_least as i64, "{proto:?}: {open} connections open");
    }
    (tcps, grpcs, https)
}

#[tokio::test]
async fn every_protocol_on_two_loops_serves_many_connections_and_drains_at_shutdown() {
    let server = server(2).await;
    let (mut tcps, grpcs, https) = serve_everything(&server).await;
    // Linux names threads in /proc; elsewhere there is nothing to check.
    let names = thread_names();
    for name in ["nanodb-tcp-1", "nanodb-grpc-1", "nanodb-http-1", "nanodb-resp-1"]
        .into_iter()
        .filter(|_| !names.is_empty())
    {
        assert!(names.iter().any(|n| n == name), "a thread named {name} among {names:?}");
    }

    // Streams that outlive requests, open at shutdown: a binary-protocol subscriber, a gRPC watch
    // and an SSE stream.
    let sub = &mut tcps[0];
    assert_eq!(subscribe(sub, Subscription::Subscribe { channel: b("news") }).await, Ok(Reply::Int(1)));
    let mut watch = grpcs[0]
        .clone()
        .watch(pb::WatchRequest { key: b("grpc:0"), ..Default::default() })
        .await
        .expect("watch")
        .into_inner();
    let base = format!("http://{}", server.addrs().http.expect("http on"));
    let sse = https[0].get(format!("{base}/v1/watch?key=http:0")).send().await.expect("sse");
    assert!(sse.status().is_success());

    // Shutdown drains every loop's connections (idle keep-alives and open streams alike) within
    // the grace period, then stops the loops.
    let drained = tokio::time::timeout(Duration::from_secs(20), server.shutdown()).await;
    assert_eq!(drained, Ok(true), "drained within the grace period");
    let ended =
        tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = watch.next().await {} })
            .await;
    assert!(ended.is_ok(), "the gRPC watch ended at shutdown");
    let ended = tokio::time::timeout(Duration::from_secs(5), sse.bytes()).await;
    assert!(ended.is_ok(), "the SSE stream ended at shutdown");
    assert!(tcps[1].try_call(Command::Get(cmd::Get { key: b("tcp:1") })).await.is_none_or(|r| r.is_err()));
}

#[tokio::test]
async fn zero_loops_serves_every_protocol_on_the_shared_runtime() {
    let server = server(0).await;
    let (tcps, grpcs, https) = serve_everything(&server).await;
    drop((tcps, grpcs, https));
    let drained = tokio::time::timeout(Duration::from_secs(20), server.shutdown()).await;
    assert_eq!(drained, Ok(true), "drained within the grace period");
}
