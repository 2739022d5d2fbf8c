//! The binary TCP protocol end to end: handshake, every command, pipelining, many connections, bad
//! frames, limits and graceful shutdown.

use bytes::Bytes;
use nanodb_protocol::{Command, Entry, ErrorCode, PutCondition, Reply};

use crate::harness::{TcpClient, tcp_server};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn put_then_get_round_trips_binary_values() {
    let server = tcp_server().await;
    let mut c = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    let value = Bytes::from_static(b"\x00\xff\x00bin\r\n");
    let put = Command::Put { key: b("k"), value: value.clone(), ttl_ms: 0, condition: PutCondition::Always };
    let Ok(Reply::Put { applied: true, version }) = c.call(put).await else { panic!("put failed") };
    assert_eq!(
        c.call(Command::Get { key: b("k") }).await,
        Ok(Reply::Value(Some(Entry { value, version, ttl_ms: -1 })))
    );
    assert_eq!(c.call(Command::Get { key: b("missing") }).await, Ok(Reply::Value(None)));
    let err = c.call(Command::Get { key: Bytes::new() }).await.expect_err("empty key");
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    server.shutdown().await;
}
