//! The binary TCP protocol end to end: handshake, every command, pipelining, many connections, bad
//! frames, limits and graceful shutdown.

use bytes::Bytes;
use nanodb_protocol::Expiry;
use nanodb_protocol::cmd;
use nanodb_protocol::{Command, Entry, ErrorCode, PutCondition, Reply};

use crate::harness::{TcpClient, b, put, tcp_server};

#[tokio::test]
async fn put_then_get_round_trips_binary_values() {
    let server = tcp_server().await;
    let mut c = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    let value = Bytes::from_static(b"\x00\xff\x00bin\r\n");
    let put = Command::Put(cmd::Put {
        key: b("k"),
        value: value.clone(),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    });
    let Ok(Reply::Put { applied: true, version }) = c.call(put).await else { panic!("put failed") };
    assert_eq!(
        c.call(Command::Get(cmd::Get { key: b("k") })).await,
        Ok(Reply::Value(Some(Entry { value, version, ttl_ms: -1 })))
    );
    assert_eq!(c.call(Command::Get(cmd::Get { key: b("missing") })).await, Ok(Reply::Value(None)));
    let err = c.call(Command::Get(cmd::Get { key: Bytes::new() })).await.expect_err("empty key");
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    server.shutdown().await;
}

#[tokio::test]
async fn pipelining_1000_requests_on_one_connection_answers_in_order() {
    let server = tcp_server().await;
    let mut c = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    let mut ids = Vec::new();
    for i in 0..1_000 {
        ids.push(c.send(Command::Incr(cmd::Incr { key: b("ctr"), delta: 1 })).await);
        if i % 3 == 0 {
            ids.push(c.send(Command::Get(cmd::Get { key: b("ctr") })).await);
        }
    }
    c.flush().await;
    let mut last = 0;
    for id in ids {
        match c.recv(id).await {
            Ok(Reply::Int(n)) => {
                assert_eq!(n, last + 1, "increments are applied in request order");
                last = n;
            }
            Ok(Reply::Value(Some(e))) => assert_eq!(e.value, b(&last.to_string())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(last, 1_000);
    server.shutdown().await;
}

#[tokio::test]
async fn many_connections_at_once_see_one_keyspace() {
    let server = tcp_server().await;
    let addr = server.addrs().tcp.expect("tcp on");
    let clients: Vec<_> = (0..64)
        .map(|n| {
            tokio::spawn(async move {
                let mut c = TcpClient::connect(addr).await;
                for i in 0..50 {
                    let key = b(&format!("conn{n}:{i}"));
                    let put = Command::Put(cmd::Put {
                        key,
                        value: b("v"),
                        expiry: Expiry::Persist,
                        condition: PutCondition::Always,
                    });
                    assert!(matches!(c.call(put).await, Ok(Reply::Put { applied: true, .. })));
                    c.call(Command::Incr(cmd::Incr { key: b("shared"), delta: 1 })).await.expect("incr");
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("client task");
    }
    let mut c = TcpClient::connect(addr).await;
    assert_eq!(c.call(Command::KeyCount(cmd::KeyCount {})).await, Ok(Reply::Int(64 * 50 + 1)));
    assert_eq!(
        c.call(Command::Incr(cmd::Incr { key: b("shared"), delta: 0 })).await,
        Ok(Reply::Int(64 * 50))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn every_command_over_the_wire() {
    let server = tcp_server().await;
    let mut c = TcpClient::connect(server.addrs().tcp.expect("tcp on")).await;
    assert_eq!(c.call(Command::Ping(cmd::Ping {})).await, Ok(Reply::Pong));
    let put = |k: &str, ttl_ms, condition| {
        Command::Put(cmd::Put {
            key: b(k),
            value: b("v"),
            expiry: Expiry::from_put_ttl_ms(ttl_ms),
            condition,
        })
    };
    let Ok(Reply::Put { version, .. }) = c.call(put("k", 0, PutCondition::IfAbsent)).await else { panic!() };
    assert_eq!(
        c.call(put("k", 0, PutCondition::IfVersion(version + 1))).await,
        Ok(Reply::Put { applied: false, version })
    );
    assert_eq!(c.call(Command::Exists(cmd::Exists { key: b("k") })).await, Ok(Reply::Bool(true)));
    assert_eq!(c.call(Command::Ttl(cmd::Ttl { key: b("k") })).await, Ok(Reply::Int(-1)));
    assert_eq!(
        c.call(Command::Expire(cmd::Expire { key: b("k"), expiry: Expiry::from_expire_ttl_ms(60_000) }))
            .await,
        Ok(Reply::Bool(true))
    );
    let Ok(Reply::Int(ttl)) = c.call(Command::Ttl(cmd::Ttl { key: b("k") })).await else { panic!() };
    assert!((59_000..=60_000).contains(&ttl), "{ttl}");
    assert_eq!(c.call(Command::Delete(cmd::Delete { key: b("k") })).await, Ok(Reply::Bool(true)));
    assert_eq!(c.call(Command::Incr(cmd::Incr { key: b("n"), delta: -5 })).await, Ok(Reply::Int(-5)));
    assert_eq!(
        c.call(Command::HashSet(cmd::HashSet { key: b("h"), field: b("f"), value: b("1") })).await,
        Ok(Reply::Bool(true))
    );
    assert_eq!(
        c.call(Command::HashGet(cmd::HashGet { key: b("h"), field: b("f") })).await,
        Ok(Reply::Bytes(Some(b("1"))))
    );
    assert_eq!(
        c.call(Command::HashGetAll(cmd::HashGetAll { key: b("h") })).await,
        Ok(Reply::Pairs(vec![(b("f"), b("1"))]))
    );
    assert_eq!(
        c.call(Command::HashDelete(cmd::HashDelete { key: b("h"), field: b("f") })).await,
        Ok(Reply::Bool(true))
    );
    let push = Command::ListPush(cmd::ListPush {
        key: b("l"),
        end: nanodb_protocol::ListEnd::Back,
        values: vec![b("a"), b("b")],
    });
    assert_eq!(c.call(push).await, Ok(Reply::Int(2)));
    assert_eq!(
        c.call(Command::ListRange(cmd::ListRange { key: b("l"), start: 0, stop: -1 })).await,
        Ok(Reply::List(vec![b("a"), b("b")]))
    );
    let pop = Command::ListPop(cmd::ListPop { key: b("l"), end: nanodb_protocol::ListEnd::Front, count: 1 });
    assert_eq!(c.call(pop).await, Ok(Reply::List(vec![b("a")])));
    let err = c.call(Command::Get(cmd::Get { key: b("l") })).await.expect_err("wrong type");
    assert_eq!(err.code(), ErrorCode::WrongType);
    let batch = Command::Batch(cmd::Batch {
        ops: vec![Command::Incr(cmd::Incr { key: b("n"), delta: 1 }), Command::Get(cmd::Get { key: b("l") })],
    });
    let Ok(Reply::Batch(results)) = c.call(batch).await else { panic!() };
    assert_eq!(results[0], Ok(Reply::Int(-4)));
    assert_eq!(results[1].as_ref().map_err(|e| e.code()), Err(ErrorCode::WrongType));
    // Scan pages through everything exactly once.
    for i in 0..250 {
        c.call(put(&format!("scan:{i}"), 0, PutCondition::Always)).await.expect("put");
    }
    let mut cursor = Bytes::new();
    let mut seen = std::collections::HashSet::new();
    loop {
        let scan = Command::Scan(cmd::Scan { prefix: b("scan:"), limit: 40, cursor: cursor.clone() });
        let Ok(Reply::Scan { entries, next_cursor }) = c.call(scan).await else { panic!() };
        for e in entries {
            assert!(seen.insert(e.key), "a key came back twice");
        }
        if next_cursor.is_empty() {
            break;
        }
        cursor = next_cursor;
    }
    assert_eq!(seen.len(), 250);
    server.shutdown().await;
}

/// Raw socket helpers for malformed input the codec would never produce.
mod raw {
    use bytes::{BufMut, BytesMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub fn frame(kind: u8, id: u32, body: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u32(5 + body.len() as u32);
        b.put_u8(kind);
        b.put_u32(id);
        b.put_slice(body);
        b.to_vec()
    }

    pub fn hello() -> Vec<u8> {
        frame(0x01, 0, b"NANO\x00\x01")
    }

    /// Reads one frame: (kind, id, body); None at EOF.
    pub async fn read(s: &mut TcpStream) -> Option<(u8, u32, Vec<u8>)> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.ok()?;
        let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut rest).await.ok()?;
        Some((rest[0], u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]), rest[5..].to_vec()))
    }

    pub fn error_code(body: &[u8]) -> u16 {
        u16::from_be_bytes([body[0], body[1]])
    }

    pub async fn connect(addr: std::net::SocketAddr, handshake: bool) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if handshake {
            s.write_all(&hello()).await.expect("write");
            let (kind, _, _) = read(&mut s).await.expect("hello reply");
            assert_eq!(kind, 0x8F);
        }
        s
    }
}

#[tokio::test]
async fn bad_body_gets_an_error_frame_and_the_connection_goes_on() {
    use tokio::io::AsyncWriteExt;
    let server = tcp_server().await;
    let mut s = raw::connect(server.addrs().tcp.expect("tcp on"), true).await;
    let mut bytes = raw::frame(0x10, 7, &[0, 0, 0, 50, b'x']); // GET with a key length past the body
    bytes.extend(raw::frame(0x7E, 8, b"")); // unknown kind
    bytes.extend(raw::frame(0x02, 9, b"")); // a good PING after them
    s.write_all(&bytes).await.expect("write");
    let (kind, id, body) = raw::read(&mut s).await.expect("reply");
    assert_eq!((kind, id, raw::error_code(&body)), (0xFF, 7, ErrorCode::Malformed.as_u16()));
    let (kind, id, body) = raw::read(&mut s).await.expect("reply");
    assert_eq!((kind, id, raw::error_code(&body)), (0xFF, 8, ErrorCode::Malformed.as_u16()));
    let (kind, id, _) = raw::read(&mut s).await.expect("reply");
    assert_eq!((kind, id), (0x81, 9), "the connection still serves");
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_frame_is_refused_before_buffering_and_closes_only_that_connection() {
    use nanodb_server::config::Config;
    use tokio::io::AsyncWriteExt;
    let config =
        Config { tcp_addr: crate::harness::any_port(), max_frame_len: 1024, ..crate::harness::config() };
    let server = crate::harness::start(config).await;
    let addr = server.addrs().tcp.expect("tcp on");
    let mut bystander = TcpClient::connect(addr).await;
    assert_eq!(bystander.max_frame_len, 1024);
    let mut s = raw::connect(addr, true).await;
    // Claims 2 GiB; sends only the header. The server must answer at once, not wait for 2 GiB.
    s.write_all(&[0x80, 0, 0, 0, 0x11, 0, 0, 0, 1]).await.expect("write");
    let (kind, _, body) = raw::read(&mut s).await.expect("error frame");
    assert_eq!((kind, raw::error_code(&body)), (0xFF, ErrorCode::FrameTooLarge.as_u16()));
    assert!(raw::read(&mut s).await.is_none(), "then the connection is closed");
    assert_eq!(
        bystander.call(Command::Ping(cmd::Ping {})).await,
        Ok(Reply::Pong),
        "other connections are unaffected"
    );
    // A real request one byte over the frame limit is refused the same way, on its own connection.
    let big = Command::Put(cmd::Put {
        key: b("k"),
        value: Bytes::from(vec![0; 2048]),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    });
    let mut encoded = bytes::BytesMut::new();
    nanodb_protocol::wire::encode_request(5, &nanodb_protocol::Request::Command(big), &mut encoded)
        .expect("encodes");
    let mut s2 = raw::connect(addr, true).await;
    s2.write_all(&encoded).await.expect("write");
    let (kind, _, body) = raw::read(&mut s2).await.expect("error frame");
    assert_eq!((kind, raw::error_code(&body)), (0xFF, ErrorCode::FrameTooLarge.as_u16()));
    server.shutdown().await;
}

#[tokio::test]
async fn handshake_is_required_and_versioned() {
    use tokio::io::AsyncWriteExt;
    let server = tcp_server().await;
    let addr = server.addrs().tcp.expect("tcp on");
    let mut s = raw::connect(addr, false).await;
    s.write_all(&raw::frame(0x02, 3, b"")).await.expect("write");
    let (kind, id, body) = raw::read(&mut s).await.expect("error frame");
    assert_eq!((kind, id, raw::error_code(&body)), (0xFF, 3, ErrorCode::HandshakeRequired.as_u16()));
    assert!(raw::read(&mut s).await.is_none());

    let mut s = raw::connect(addr, false).await;
    s.write_all(&raw::frame(0x01, 4, b"NANO\x00\x63")).await.expect("write");
    let (kind, id, body) = raw::read(&mut s).await.expect("error frame");
    assert_eq!((kind, id, raw::error_code(&body)), (0xFF, 4, ErrorCode::UnsupportedVersion.as_u16()));
    let message = String::from_utf8_lossy(&body[6..]).into_owned();
    assert!(message.contains("99") && message.contains('1'), "{message}");
    server.shutdown().await;
}

#[tokio::test]
async fn silent_clients_are_dropped_after_the_handshake_timeout() {
    use nanodb_server::config::Config;
    use std::time::Duration;
    let config = Config {
        tcp_addr: crate::harness::any_port(),
        handshake_timeout: Duration::from_millis(200),
        ..crate::harness::config()
    };
    let server = crate::harness::start(config).await;
    let mut s = raw::connect(server.addrs().tcp.expect("tcp on"), false).await;
    let read = tokio::time::timeout(Duration::from_secs(5), raw::read(&mut s)).await.expect("closed in time");
    let (kind, _, body) = read.expect("a timeout error frame");
    assert_eq!((kind, raw::error_code(&body)), (0xFF, ErrorCode::Timeout.as_u16()));
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_with_a_reason() {
    use nanodb_server::config::Config;
    let config =
        Config { tcp_addr: crate::harness::any_port(), max_connections: 2, ..crate::harness::config() };
    let server = crate::harness::start(config).await;
    let addr = server.addrs().tcp.expect("tcp on");
    let mut a = TcpClient::connect(addr).await;
    let _b = TcpClient::connect(addr).await;
    let mut s = raw::connect(addr, false).await;
    let (kind, _, body) = raw::read(&mut s).await.expect("refusal frame");
    assert_eq!((kind, raw::error_code(&body)), (0xFF, ErrorCode::TooManyConnections.as_u16()));
    assert!(raw::read(&mut s).await.is_none());
    assert_eq!(a.call(Command::Ping(cmd::Ping {})).await, Ok(Reply::Pong));
    drop(a);
    // The slot frees when a connection closes (poll: the close is observed asynchronously).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut s = raw::connect(addr, false).await;
        use tokio::io::AsyncWriteExt;
        s.write_all(&raw::hello()).await.expect("write");
        match raw::read(&mut s).await {
            Some((0x8F, _, _)) => break,
            _ if tokio::time::Instant::now() < deadline => tokio::task::yield_now().await,
            other => panic!("slot never freed: {other:?}"),
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_answers_what_was_sent_and_stops_accepting() {
    let server = tcp_server().await;
    let addr = server.addrs().tcp.expect("tcp on");
    let mut c = TcpClient::connect(addr).await;
    let ids = {
        let mut ids = Vec::new();
        for _ in 0..100 {
            ids.push(c.send(Command::Incr(cmd::Incr { key: b("n"), delta: 1 })).await);
        }
        ids
    };
    c.flush().await;
    let mut last = 0;
    for id in ids {
        let Ok(Reply::Int(n)) = c.recv(id).await else { panic!() };
        last = n;
    }
    assert_eq!(last, 100);
    let started = std::time::Instant::now();
    assert!(server.shutdown().await, "drained within the grace period");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "idle connections do not hold shutdown");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

/// Encodes `requests` as one pipelined byte stream, ids 1, 2, ...
fn pipelined(requests: &[Command]) -> Vec<u8> {
    let mut encoded = bytes::BytesMut::new();
    for (i, cmd) in requests.iter().enumerate() {
        let request = nanodb_protocol::Request::Command(cmd.clone());
        nanodb_protocol::wire::encode_request(i as u32 + 1, &request, &mut encoded).expect("encodes");
    }
    encoded.to_vec()
}

#[tokio::test]
async fn a_pipelined_batch_split_at_every_byte_is_answered_whole_and_in_order() {
    use tokio::io::AsyncWriteExt;
    let server = tcp_server().await;
    let addr = server.addrs().tcp.expect("tcp on");
    let requests = [
        put("split", "v1"),
        Command::Get(cmd::Get { key: b("split") }),
        Command::Incr(cmd::Incr { key: b("n"), delta: 1 }),
        Command::Get(cmd::Get { key: b("absent") }),
        Command::Ping(cmd::Ping {}),
    ];
    let bytes = pipelined(&requests);
    // Expected reply kinds: R_PUT, R_VALUE, R_INT, R_VALUE, R_PONG.
    let kinds = [0x83, 0x82, 0x85, 0x82, 0x81];
    let mut s = raw::connect(addr, true).await;
    for cut in 0..=bytes.len() {
        // Two writes, the server reading between them where the scheduler lets it.
        s.write_all(&bytes[..cut]).await.expect("write");
        s.flush().await.expect("flush");
        tokio::task::yield_now().await;
        s.write_all(&bytes[cut..]).await.expect("write");
        for (i, kind) in kinds.iter().enumerate() {
            let (k, id, _) = raw::read(&mut s).await.expect("reply");
            assert_eq!((k, id), (*kind, i as u32 + 1), "cut {cut}");
        }
    }
    // And one byte per write: every read the server makes ends inside a frame.
    let mut s = raw::connect(addr, true).await;
    for byte in &bytes {
        s.write_all(std::slice::from_ref(byte)).await.expect("write");
    }
    for (i, kind) in kinds.iter().enumerate() {
        let (k, id, body) = raw::read(&mut s).await.expect("reply");
        assert_eq!((k, id), (*kind, i as u32 + 1));
        if i == 1 {
            // found, then the value "v1"
            assert_eq!(&body[..7], &[1, 0, 0, 0, 2, b'v', b'1']);
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_batch_of_replies_larger_than_the_socket_buffers_is_written_whole() {
    use tokio::io::AsyncWriteExt;
    let server = tcp_server().await;
    let addr = server.addrs().tcp.expect("tcp on");
    let mut c = TcpClient::connect(addr).await;
    let value = Bytes::from((0..256 * 1024).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let put = Command::Put(cmd::Put {
        key: b("big"),
        value: value.clone(),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    });
    assert!(matches!(c.call(put).await, Ok(Reply::Put { applied: true, .. })));
    // 200 GETs of 256 KiB in one write: 50 MiB of replies to requests that all arrived at once,
    // far beyond what the sockets buffer, so the server's writes block and resume.
    let gets: Vec<Command> = (0..200).map(|_| Command::Get(cmd::Get { key: b("big") })).collect();
    let mut s = raw::connect(addr, true).await;
    s.write_all(&pipelined(&gets)).await.expect("write");
    for i in 0..200u32 {
        let (kind, id, body) = raw::read(&mut s).await.expect("reply");
        assert_eq!((kind, id), (0x82, i + 1));
        assert_eq!(body[0], 1, "found");
        assert_eq!(&body[5..5 + value.len()], &value[..], "reply {i} intact");
    }
    // The connection still serves afterwards.
    s.write_all(&raw::frame(0x02, 999, b"")).await.expect("write");
    assert_eq!(raw::read(&mut s).await.map(|(k, id, _)| (k, id)), Some((0x81, 999)));
    server.shutdown().await;
}
