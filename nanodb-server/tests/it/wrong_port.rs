//! Another protocol's client on the binary TCP or the RESP port: told where to go in its own
//! protocol (an HTTP 400, an HTTP/2 GOAWAY, a RESP error, a binary error frame), closed, and not
//! logged at the default level, however many connect.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use nanodb_protocol::wire::PROTOCOL_VERSION;
use nanodb_protocol::{ClientCodec, Error, ErrorCode, Request, Response};
use nanodb_server::config::Config;
use nanodb_server::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::harness::{any_port, config, start};

async fn server() -> Server {
    start(Config { tcp_addr: any_port(), resp_addr: any_port(), ..config() }).await
}

/// A TLS 1.2/1.3 ClientHello's first bytes: a handshake record (0x16), version 3.1, a length, then
/// the ClientHello header.
const CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0xF1, 0x01, 0x00, 0x00, 0xED, 0x03, 0x03];

/// Sends `bytes`, then reads until the server closes (within 5 s); what it answered.
async fn answer(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("send");
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await {
        Ok(Ok(_)) => out,
        Ok(Err(e)) => {
            panic!("the answer to {:?} ended in {e} (a reset loses it)", String::from_utf8_lossy(bytes))
        }
        Err(_) => panic!("the server kept {:?} open", String::from_utf8_lossy(bytes)),
    }
}

#[tokio::test]
async fn an_http_request_on_the_tcp_and_resp_ports_gets_a_400_saying_where_rest_is() {
    let s = server().await;
    let ports = [
        (s.addrs().tcp.expect("tcp"), "binary TCP port"),
        (s.addrs().resp.expect("resp"), "Redis (RESP) port"),
    ];
    for (addr, port) in ports {
        let raw = answer(addr, b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n").await;
        let text = String::from_utf8(raw).expect("text");
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).expect("a body");
        assert!(
            body.starts_with(&format!("this is NanoDB's {port}, which does not speak HTTP/1.x;")),
            "{body}"
        );
        assert!(body.contains("the REST API is off on this server (--http-addr)"), "{body}");

        // A real HTTP client reads the same answer (no reset destroys it).
        let r = reqwest::get(format!("http://{addr}/v1/kv/a")).await.expect("an HTTP answer");
        assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
        assert!(r.text().await.expect("body").contains(port));
    }
    s.shutdown().await;
}

#[tokio::test]
async fn an_http2_client_on_either_port_gets_settings_then_goaway_saying_where_grpc_is() {
    let s = server().await;
    for addr in [s.addrs().tcp.expect("tcp"), s.addrs().resp.expect("resp")] {
        // The preface and an empty SETTINGS frame, as every HTTP/2 client (gRPC) opens.
        let raw = answer(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await;
        assert!(raw.len() > 18, "{raw:?}");
        assert_eq!(&raw[..9], &[0, 0, 0, 0x4, 0, 0, 0, 0, 0], "the server preface: SETTINGS");
        let len = u32::from_be_bytes([0, raw[9], raw[10], raw[11]]) as usize;
        assert_eq!(raw[12], 0x7, "then GOAWAY");
        assert_eq!(raw.len(), 18 + len);
        let debug = String::from_utf8_lossy(&raw[18 + 8..]);
        assert!(
            debug.contains("does not speak HTTP/2")
                && debug.contains("gRPC off on this server (--grpc-addr)"),
            "{debug}"
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn a_redis_client_on_the_tcp_port_gets_a_resp_error_naming_the_resp_port() {
    let s = server().await;
    let tcp = s.addrs().tcp.expect("tcp");
    let expected = "ERR this is NanoDB's binary TCP port, which does not speak RESP; the Redis protocol is on \
                    the --resp-addr port";
    // Each command is answered (clients send setup commands first and ignore their errors).
    let mut c = TcpStream::connect(tcp).await.expect("connect");
    c.write_all(b"*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n*1\r\n$4\r\nPING\r\n").await.expect("send");
    let mut lines = tokio::io::BufReader::new(c);
    for _ in 0..2 {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(5), lines.read_line(&mut line)).await;
        assert!(matches!(read, Ok(Ok(n)) if n > 0), "{read:?}");
        assert_eq!(line, format!("-{expected}\r\n"));
    }

    // The redis crate, which pipelines CLIENT SETINFO when it connects, reports it on PING.
    let client = redis::Client::open(format!("redis://{tcp}/")).expect("client");
    let result = async {
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut con).await
    }
    .await;
    let err = result.expect_err("PING on the TCP port");
    assert!(err.to_string().contains("binary TCP port"), "{err}");
    s.shutdown().await;
}

#[tokio::test]
async fn a_binary_protocol_client_on_the_resp_port_gets_an_error_frame_naming_the_tcp_port() {
    let s = server().await;
    let stream = TcpStream::connect(s.addrs().resp.expect("resp")).await.expect("connect");
    let mut framed = Framed::new(stream, ClientCodec::default());
    framed.send((0, Request::Hello { version: PROTOCOL_VERSION })).await.expect("send hello");
    let reply = tokio::time::timeout(Duration::from_secs(5), framed.next()).await.expect("answered in time");
    let Some(Ok((0, Response::Error(Error::Remote { code, message })))) = reply else { panic!("{reply:?}") };
    assert_eq!(code, ErrorCode::Malformed);
    assert_eq!(
        message,
        "malformed request: this is NanoDB's Redis (RESP) port, which does not speak NanoDB binary TCP; the \
         binary TCP protocol is on the --tcp-addr port"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_on_either_port_is_closed_at_once() {
    let s = server().await;
    for addr in [s.addrs().tcp.expect("tcp"), s.addrs().resp.expect("resp")] {
        assert_eq!(answer(addr, CLIENT_HELLO).await, b"", "nothing a TLS client could read");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn real_clients_of_each_port_are_untouched() {
    let s = server().await;
    // An inline RESP command that starts like an HTTP method is RESP.
    let mut c = TcpStream::connect(s.addrs().resp.expect("resp")).await.expect("connect");
    c.write_all(b"GET missing\r\nPING\r\n").await.expect("send");
    let mut buf = vec![0; 64];
    let mut got = Vec::new();
    while got.len() < b"$-1\r\n+PONG\r\n".len() {
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        assert!(n > 0, "closed after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"$-1\r\n+PONG\r\n");
    // A broken binary frame is still answered as the binary protocol (frame too short).
    let raw = answer(s.addrs().tcp.expect("tcp"), &[0, 0, 0, 1, 0]).await;
    assert!(raw.len() > 9 && raw[4] >= 0x80, "a binary error frame: {raw:?}");
    s.shutdown().await;
}

/// Starts the server binary with TCP and RESP on port 0 and `log_level`; returns it, both
/// addresses, and its stderr lines as they come.
fn spawn_binary(
    log_level: &str,
) -> (std::process::Child, SocketAddr, SocketAddr, std::sync::mpsc::Receiver<String>) {
    let mut child = Process::new(env!("CARGO_BIN_EXE_nanodb-server"))
        .args([
            "--tcp-addr",
            "127.0.0.1:0",
            "--resp-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "off",
            "--http-addr",
            "off",
        ])
        .args(["--persistence", "off", "--log-level", log_level])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nanodb-server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut tcp, mut resp) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tcp.is_none() || resp.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("the server reports its addresses");
        let addr =
            line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|a| a.parse().ok());
        if line.contains("binary TCP protocol listening") {
            tcp = addr;
        } else if line.contains("Redis protocol (RESP2) listening") {
            resp = addr;
        }
    }
    (child, tcp.expect("tcp"), resp.expect("resp"), rx)
}

/// SIGTERM, then every line the server wrote until it exited (within 30 s).
fn stop(mut child: std::process::Child, lines: std::sync::mpsc::Receiver<String>) -> Vec<String> {
    let status = Process::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill -TERM");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20)); // polling the child's exit
    }
    // The reader thread ends at EOF, closing the channel.
    lines.iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_protocol_connections_adds_no_line_to_the_default_log() {
    const N: usize = 40;
    let flood = |tcp: SocketAddr, resp: SocketAddr| async move {
        for _ in 0..N {
            answer(tcp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            answer(resp, CLIENT_HELLO).await;
        }
    };
    let (child, tcp, resp, lines) = spawn_binary("info");
    flood(tcp, resp).await;
    let lines = stop(child, lines);
    let about_connections: Vec<&String> =
        lines.iter().filter(|l| l.contains("tcp:") || l.contains("resp:")).collect();
    assert!(about_connections.is_empty(), "{about_connections:#?}");
    assert!(lines.len() < 10, "{lines:#?}");

    // At debug level each is one line saying what it was.
    let (child, tcp, resp, lines) = spawn_binary("info,nanodb_server=debug");
    flood(tcp, resp).await;
    let lines = stop(child, lines);
    let count = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
    assert_eq!(count("tcp: not the binary protocol; told the client where to go and closed"), N);
    assert_eq!(count("protocol=HTTP/1.x"), N);
    assert_eq!(count("resp: not RESP; told the client where to go and closed"), N);
    assert_eq!(count("protocol=TLS"), N);
}
