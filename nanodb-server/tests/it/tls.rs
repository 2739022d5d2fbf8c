//! TLS on every frontend with rcgen-made certificates: each protocol through a real client over
//! tokio-rustls, client certificates (required, optional, from another CA), certificate reload
//! without dropping connections (in-process and by SIGHUP to the binary), stalled handshakes,
//! plaintext and TLS clients on the wrong kind of port, bad files;
//! and the connection limits: `--idle-timeout` on every protocol, the HTTP header-read deadline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nanodb_protocol::pb::{self, kv_client::KvClient};
use nanodb_protocol::wire::PROTOCOL_VERSION;
use nanodb_protocol::{ClientCodec, Command, ErrorCode, Reply, Request, Response, cmd};
use nanodb_server::config::{ClientAuth, Config, TlsFiles};
use nanodb_server::server::Server;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;

use crate::harness::{any_port, b, config, start};

/// A CA, in a temporary directory with the files the tests write.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
        Self { dir: tempfile::tempdir().expect("tempdir"), ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    /// A certificate for `localhost` and 127.0.0.1 (or a client), signed by this CA: (cert PEM,
    /// key PEM).
    fn issue(&self, client: bool) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let names =
            if client { vec!["client".to_string()] } else { vec!["localhost".into(), "127.0.0.1".into()] };
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Server files named `name.crt` and `name.key`; `TlsFiles` without client verification.
    fn server_files(&self, name: &str) -> TlsFiles {
        let (cert, key) = self.issue(false);
        TlsFiles {
            cert: self.write(&format!("{name}.crt"), &cert),
            key: self.write(&format!("{name}.key"), &key),
            ca: None,
            auth_clients: ClientAuth::No,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.write("ca.crt", &self.ca.pem())
    }

    /// A client configuration trusting this CA, offering `alpn`, with `identity` as its
    /// certificate if any.
    fn client(&self, alpn: &[&[u8]], identity: Option<&(String, String)>) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("root");
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certs");
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
                builder.with_client_auth_cert(certs, key).expect("identity")
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

fn all_ports(tls: TlsFiles) -> Config {
    Config {
        tcp_addr: any_port(),
        resp_addr: any_port(),
        http_addr: any_port(),
        grpc_addr: any_port(),
        tls: Some(tls),
        ..config()
    }
}

async fn connect(tls: &TlsConnector, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tls.connect(ServerName::try_from("localhost").expect("name"), tcp).await
}

/// HELLO, then INCR `key`: the reply. Errors (a refused handshake, a closed connection) as text.
async fn tcp_incr<S: AsyncRead + AsyncWrite + Unpin>(stream: S, key: &str) -> Result<Reply, String> {
    let mut framed = Framed::new(stream, ClientCodec::default());
    framed.send((0, Request::Hello { version: PROTOCOL_VERSION })).await.map_err(|e| e.to_string())?;
    match framed.next().await {
        Some(Ok((_, Response::Hello { .. }))) => {}
        other => return Err(format!("no HELLO: {other:?}")),
    }
    framed.send((1, Command::Incr(cmd::Incr { key: b(key), delta: 1 }))).await.map_err(|e| e.to_string())?;
    match framed.next().await {
        Some(Ok((1, Response::Reply(r)))) => Ok(r),
        other => Err(format!("no reply: {other:?}")),
    }
}

/// Sends a RESP command and reads one line of answer (the whole of a simple reply).
async fn resp_line<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    command: &[u8],
) -> std::io::Result<String> {
    stream.write_all(command).await?;
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        out.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// One HTTP request over an HTTP/1.1 or HTTP/2 connection (by the negotiated ALPN): status, body.
async fn http_request(stream: TlsStream<TcpStream>, method: &str, path: &str, body: &str) -> (u16, String) {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .expect("request");
    let io = TokioIo::new(stream);
    let response = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.expect("h2");
        tokio::spawn(conn);
        send.send_request(request).await.expect("response")
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1");
        tokio::spawn(conn);
        send.send_request(request).await.expect("response")
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A gRPC client over tokio-rustls (ALPN h2).
async fn grpc_client(
    tls: TlsConnector,
    addr: SocketAddr,
) -> Result<KvClient<tonic::transport::Channel>, String> {
    let connector = tower::service_fn(move |_: http::Uri| {
        let tls = tls.clone();
        async move { connect(&tls, addr).await.map(TokioIo::new) }
    });
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(KvClient::new(channel))
}

#[tokio::test]
async fn every_protocol_speaks_tls_with_a_real_client() {
    let pki = Pki::new("NanoDB test CA");
    let server = start(all_ports(pki.server_files("server"))).await;
    let addrs = server.addrs();
    let plain = pki.client(&[], None);

    // Binary TCP: the codec over tokio-rustls.
    let stream = connect(&plain, addrs.tcp.expect("tcp")).await.expect("tls to tcp");
    assert_eq!(stream.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(tcp_incr(stream, "n").await, Ok(Reply::Int(1)));

    // TLS 1.2 is accepted too.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).expect("root");
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls12 = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("1.2")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let stream =
        connect(&TlsConnector::from(Arc::new(tls12)), addrs.tcp.expect("tcp")).await.expect("tls 1.2");
    assert_eq!(stream.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(tcp_incr(stream, "n").await, Ok(Reply::Int(2)));

    // RESP.
    let mut stream = connect(&plain, addrs.resp.expect("resp")).await.expect("tls to resp");
    assert_eq!(resp_line(&mut stream, b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n").await.expect("incr"), ":3\r\n");
    // Subscribed mode (reads and writes at once) over TLS too.
    assert_eq!(
        resp_line(&mut stream, b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n").await.expect("subscribe"),
        "*3\r\n"
    );
    let mut other = connect(&plain, addrs.resp.expect("resp")).await.expect("tls to resp");
    let mut confirmation = vec![0u8; "$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n".len()];
    stream.read_exact(&mut confirmation).await.expect("confirmation");
    assert_eq!(
        resp_line(&mut other, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$2\r\nhi\r\n").await.expect("publish"),
        ":1\r\n"
    );
    let mut message = vec![0u8; "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n".len()];
    stream.read_exact(&mut message).await.expect("message");
    assert_eq!(message, b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n");

    // REST over HTTP/1.1 and HTTP/2 (ALPN).
    let http = addrs.http.expect("http");
    let h1 = connect(&pki.client(&[b"http/1.1"], None), http).await.expect("tls to http");
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = http_request(h1, "PUT", "/v1/kv/k", "v").await;
    assert!((200..300).contains(&status), "{status} {body}");
    let h2 = connect(&pki.client(&[b"h2", b"http/1.1"], None), http).await.expect("tls to http");
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, body) = http_request(h2, "GET", "/v1/kv/k", "").await;
    assert_eq!((status, body.as_str()), (200, "v"));

    // gRPC (ALPN h2).
    let mut kv = grpc_client(pki.client(&[b"h2"], None), addrs.grpc.expect("grpc")).await.expect("grpc");
    let got = kv.get(pb::GetRequest { key: b("k") }).await.expect("get").into_inner();
    assert_eq!((got.found, got.value), (true, b("v")));
    server.shutdown().await;
}

#[tokio::test]
async fn client_certificates_are_required_optional_or_refused_from_another_ca() {
    let pki = Pki::new("NanoDB test CA");
    let stranger = Pki::new("Another CA");
    let mine = pki.issue(true);
    let theirs = stranger.issue(true);
    for auth in [ClientAuth::Yes, ClientAuth::Optional] {
        let files = TlsFiles { ca: Some(pki.ca_file()), auth_clients: auth, ..pki.server_files("server") };
        let server = start(Config { tcp_addr: any_port(), grpc_addr: any_port(), ..all_ports(files) }).await;
        let tcp = server.addrs().tcp.expect("tcp");

        // A certificate from the CA is served.
        let stream = connect(&pki.client(&[], Some(&mine)), tcp).await.expect("handshake");
        assert_eq!(tcp_incr(stream, "n").await, Ok(Reply::Int(1)), "{auth:?}");

        // One from another CA is refused (TLS 1.3: the client learns at its first read).
        let refused = match connect(&pki.client(&[], Some(&theirs)), tcp).await {
            Err(e) => e.to_string(),
            Ok(stream) => tcp_incr(stream, "n").await.expect_err("served with a stranger's certificate"),
        };
        assert!(!refused.is_empty(), "{auth:?}");

        // None at all: refused when required, served when optional.
        let anonymous = match connect(&pki.client(&[], None), tcp).await {
            Err(e) => Err(e.to_string()),
            Ok(stream) => tcp_incr(stream, "n").await,
        };
        match auth {
            ClientAuth::Yes => assert!(anonymous.is_err(), "served without a certificate: {anonymous:?}"),
            _ => assert_eq!(anonymous, Ok(Reply::Int(2))),
        }
        // gRPC the same way.
        let mut kv = grpc_client(pki.client(&[b"h2"], Some(&mine)), server.addrs().grpc.expect("grpc"))
            .await
            .expect("grpc");
        kv.get(pb::GetRequest { key: b("n") }).await.expect("get with a certificate");
        if let Ok(mut kv) =
            grpc_client(pki.client(&[b"h2"], Some(&theirs)), server.addrs().grpc.expect("grpc")).await
        {
            kv.get(pb::GetRequest { key: b("n") }).await.expect_err("a stranger's certificate");
        }
        // The server still serves everyone else.
        let stream = connect(&pki.client(&[], Some(&mine)), tcp).await.expect("handshake");
        assert!(tcp_incr(stream, "n").await.is_ok());
        server.shutdown().await;
    }
}

fn peer_certificate(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).expect("a certificate")
}

#[tokio::test]
async fn reloading_swaps_the_certificate_for_new_connections_and_keeps_open_ones() {
    let pki = Pki::new("NanoDB test CA");
    let files = pki.server_files("server");
    let server = start(all_ports(files.clone())).await;
    let client = pki.client(&[], None);
    let resp = server.addrs().resp.expect("resp");

    let mut before = connect(&client, resp).await.expect("before");
    let first = peer_certificate(&before);
    assert_eq!(resp_line(&mut before, b"PING\r\n").await.expect("ping"), "+PONG\r\n");

    // Rotate the files in place and reload (what SIGHUP does).
    let (cert, key) = pki.issue(false);
    std::fs::write(&files.cert, &cert).expect("rotate cert");
    std::fs::write(&files.key, &key).expect("rotate key");
    assert!(server.reload_tls().expect("reload"), "TLS is on");

    assert_eq!(resp_line(&mut before, b"PING\r\n").await.expect("the old connection"), "+PONG\r\n");
    // A fresh client each time: one that resumed its TLS session would see the old certificate.
    let after = connect(&pki.client(&[], None), resp).await.expect("after");
    let second = peer_certificate(&after);
    assert_ne!(first, second, "a new connection sees the new certificate");
    assert_eq!(second, CertificateDer::from_pem_slice(cert.as_bytes()).expect("pem").to_vec());

    // A bad rotation is refused with the reason, and the last good certificate stays.
    std::fs::write(&files.key, pki.issue(false).1).expect("a key of another certificate");
    let e = server.reload_tls().expect_err("mismatched key").to_string();
    assert!(e.contains(&files.key.display().to_string()) && e.contains("does not match"), "{e}");
    let again = connect(&pki.client(&[], None), resp).await.expect("still served");
    assert_eq!(peer_certificate(&again), second);
    assert_eq!(resp_line(&mut before, b"PING\r\n").await.expect("the old connection"), "+PONG\r\n");
    server.shutdown().await;
}

/// Sends `bytes` in plaintext and reads until the server closes (within 5 s).
async fn plaintext_answer(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("send");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept a plaintext client open on a TLS port");
    out
}

#[tokio::test]
async fn a_plaintext_client_on_a_tls_port_is_told_to_use_tls_and_nothing_runs() {
    let pki = Pki::new("NanoDB test CA");
    let server = start(all_ports(pki.server_files("server"))).await;
    let addrs = server.addrs();

    // A Redis client gets an error for each command (redis-cli sends setup commands first).
    let mut plain = TcpStream::connect(addrs.resp.expect("resp")).await.expect("connect");
    for _ in 0..2 {
        let text =
            resp_line(&mut plain, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n").await.expect("an answer");
        assert!(text.starts_with("-ERR this is NanoDB's Redis (RESP) port, which speaks TLS only"), "{text}");
    }

    let http = plaintext_answer(
        addrs.http.expect("http"),
        b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nv",
    )
    .await;
    let text = String::from_utf8_lossy(&http);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n") && text.contains("speaks TLS only"), "{text}");

    let grpc = plaintext_answer(addrs.grpc.expect("grpc"), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(String::from_utf8_lossy(&grpc).contains("speaks TLS only"), "a GOAWAY with the text");

    let mut framed =
        Framed::new(TcpStream::connect(addrs.tcp.expect("tcp")).await.expect("tcp"), ClientCodec::default());
    framed.send((0, Request::Hello { version: PROTOCOL_VERSION })).await.expect("hello");
    match framed.next().await {
        Some(Ok((0, Response::Error(e)))) => {
            assert_eq!(e.code(), ErrorCode::Malformed);
            assert!(e.to_string().contains("binary TCP port, which speaks TLS only"), "{e}");
        }
        other => panic!("expected an error frame, got {other:?}"),
    }

    // Nothing ran, and TLS clients are still served.
    let mut stream = connect(&pki.client(&[], None), addrs.resp.expect("resp")).await.expect("tls");
    assert_eq!(resp_line(&mut stream, b"EXISTS k\r\n").await.expect("exists"), ":0\r\n");
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_on_a_plaintext_port_fails_its_handshake_and_others_are_served() {
    let pki = Pki::new("NanoDB test CA");
    let server = start(Config { tcp_addr: any_port(), resp_addr: any_port(), ..config() }).await;
    for addr in [server.addrs().tcp.expect("tcp"), server.addrs().resp.expect("resp")] {
        let result =
            tokio::time::timeout(Duration::from_secs(5), connect(&pki.client(&[], None), addr)).await;
        assert!(matches!(result, Ok(Err(_))), "the handshake fails at once: {result:?}");
    }
    let plain = TcpStream::connect(server.addrs().tcp.expect("tcp")).await.expect("tcp");
    assert_eq!(tcp_incr(plain, "n").await, Ok(Reply::Int(1)));
    server.shutdown().await;
}

#[tokio::test]
async fn bad_tls_files_refuse_to_start_naming_the_file_and_the_reason() {
    let pki = Pki::new("NanoDB test CA");
    let good = pki.server_files("good");
    let (other_cert, _) = pki.issue(false);
    let cases: Vec<(TlsFiles, PathBuf, &str)> = vec![
        (TlsFiles { cert: pki.path("missing.crt"), ..good.clone() }, pki.path("missing.crt"), "No such file"),
        (
            TlsFiles { cert: pki.write("garbage.crt", "not a certificate\n"), ..good.clone() },
            pki.path("garbage.crt"),
            "no certificate",
        ),
        (TlsFiles { cert: good.key.clone(), ..good.clone() }, good.key.clone(), "no certificate"),
        (TlsFiles { key: good.cert.clone(), ..good.clone() }, good.cert.clone(), "no private key"),
        (
            TlsFiles { cert: pki.write("other.crt", &other_cert), ..good.clone() },
            good.key.clone(),
            "does not match",
        ),
        (
            TlsFiles {
                ca: Some(pki.write("ca-garbage.crt", "nope")),
                auth_clients: ClientAuth::Yes,
                ..good.clone()
            },
            pki.path("ca-garbage.crt"),
            "no certificate",
        ),
        (
            TlsFiles { ca: None, auth_clients: ClientAuth::Yes, ..good.clone() },
            PathBuf::from("yes"),
            "needs --tls-ca",
        ),
    ];
    for (files, path, reason) in cases {
        let e = Server::start(Config { tcp_addr: any_port(), tls: Some(files), ..config() })
            .await
            .map(drop)
            .expect_err("refused to start")
            .to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains(reason),
            "{e} (wanted {path:?}: {reason})"
        );
    }
}

/// Waits (at most 10 s) until the server closes `stream`: reads return end of file or an error.
async fn closed_by_server<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut sink = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was not closed");
}

#[tokio::test]
async fn idle_connections_are_closed_on_every_protocol_but_subscribers_stay() {
    let pki = Pki::new("NanoDB test CA");
    let idle = Duration::from_millis(500);
    let server = start(Config { idle_timeout: Some(idle), ..all_ports(pki.server_files("server")) }).await;
    let addrs = server.addrs();
    let client = pki.client(&[], None);

    let mut subscriber = connect(&client, addrs.resp.expect("resp")).await.expect("resp");
    resp_line(&mut subscriber, b"SUBSCRIBE ch\r\n").await.expect("subscribe");
    let mut confirmation = vec![0u8; "$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n".len()];
    subscriber.read_exact(&mut confirmation).await.expect("confirmation");

    // Binary TCP: after HELLO and one request, silence.
    let mut framed =
        Framed::new(connect(&client, addrs.tcp.expect("tcp")).await.expect("tcp"), ClientCodec::default());
    framed.send((0, Request::Hello { version: PROTOCOL_VERSION })).await.expect("hello");
    framed.next().await.expect("hello reply").expect("decodes");
    closed_by_server(framed.get_mut()).await;

    // RESP.
    let mut resp = connect(&client, addrs.resp.expect("resp")).await.expect("resp");
    assert_eq!(resp_line(&mut resp, b"PING\r\n").await.expect("ping"), "+PONG\r\n");
    closed_by_server(&mut resp).await;

    // REST keep-alive and gRPC (HTTP/2): the client's connection task ends when the server closes.
    for (addr, alpn) in [(addrs.http.expect("http"), &b"http/1.1"[..]), (addrs.grpc.expect("grpc"), b"h2")] {
        let stream = connect(&pki.client(&[alpn], None), addr).await.expect("tls");
        let io = TokioIo::new(stream);
        let conn: tokio::task::JoinHandle<()> = if alpn == b"h2" {
            let (_send, conn) =
                hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), io)
                    .await
                    .expect("h2");
            // The sender must outlive the wait, or the client closes first.
            tokio::spawn(async move {
                let _send = _send;
                let _ = conn.await;
            })
        } else {
            let (mut send, conn) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io).await.expect("h1");
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            let request = hyper::Request::get("/healthz")
                .header("host", "localhost")
                .body(Full::default())
                .expect("req");
            assert_eq!(send.send_request(request).await.expect("response").status(), 200);
            tokio::spawn(async move {
                let _send = send;
                let _ = driver.await;
            })
        };
        tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("closed for idleness")
            .expect("task");
    }

    // The subscriber outlived them all, and still gets messages.
    let mut publisher = connect(&client, addrs.resp.expect("resp")).await.expect("resp");
    assert_eq!(resp_line(&mut publisher, b"PUBLISH ch hi\r\n").await.expect("publish"), ":1\r\n");
    let mut message = vec![0u8; "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n".len()];
    subscriber.read_exact(&mut message).await.expect("a subscriber is never idle");
    server.shutdown().await;
}

#[tokio::test]
async fn a_slowloris_http_client_is_cut_after_the_header_timeout() {
    let server =
        start(Config { http_addr: any_port(), http_header_timeout: Duration::from_millis(500), ..config() })
            .await;
    let mut s = TcpStream::connect(server.addrs().http.expect("http")).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("half the headers");
    closed_by_server(&mut s).await;
    server.shutdown().await;
}

/// The server binary, on SIGHUP, reloads the rotated files (logging it), and on a bad rotation
/// logs why and keeps serving the previous certificate; SIGTERM still stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_of_the_running_binary() {
    use std::io::BufRead;
    use std::process::{Command as Process, Stdio};

    let pki = Pki::new("NanoDB test CA");
    let files = pki.server_files("server");
    let mut child = Process::new(env!("CARGO_BIN_EXE_nanodb-server"))
        .args(["--resp-addr", "127.0.0.1:0", "--tcp-addr", "off", "--grpc-addr", "off", "--http-addr", "off"])
        .args(["--persistence", "off", "--log-level", "info"])
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nanodb-server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |what: &str| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = lines.recv_timeout(left).unwrap_or_else(|_| panic!("no log line with {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    };
    let line = wait_for("Redis protocol (RESP2) listening");
    let addr: SocketAddr = line
        .split("addr=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .expect("an address");
    let hup = || {
        let status =
            Process::new("kill").args(["-HUP", &child.id().to_string()]).status().expect("kill -HUP");
        assert!(status.success());
    };

    let mut before = connect(&pki.client(&[], None), addr).await.expect("before");
    let first = peer_certificate(&before);
    let (cert, key) = pki.issue(false);
    std::fs::write(&files.cert, &cert).expect("rotate cert");
    std::fs::write(&files.key, &key).expect("rotate key");
    hup();
    wait_for("TLS certificate and key reloaded");
    let after = connect(&pki.client(&[], None), addr).await.expect("after");
    assert_ne!(peer_certificate(&after), first);
    assert_eq!(resp_line(&mut before, b"PING\r\n").await.expect("the old connection"), "+PONG\r\n");

    std::fs::write(&files.cert, "garbage").expect("bad rotation");
    hup();
    let line = wait_for("TLS reload failed");
    assert!(line.contains("no certificate found"), "{line}");
    let again = connect(&pki.client(&[], None), addr).await.expect("still served");
    assert_eq!(peer_certificate(&again), peer_certificate(&after));

    let status = Process::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill -TERM");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert!(exit.success(), "{exit:?}");
}

/// A client that stalls in its handshake holds up nobody: on every port a real client connected
/// after it is served at once, and the staller is closed after `handshake_timeout`.
#[tokio::test]
async fn a_stalled_handshake_blocks_no_one_and_is_closed_after_the_handshake_timeout() {
    let pki = Pki::new("NanoDB test CA");
    let server = start(Config {
        handshake_timeout: Duration::from_millis(500),
        ..all_ports(pki.server_files("server"))
    })
    .await;
    let a = server.addrs();
    for (addr, alpn) in [
        (a.tcp.expect("tcp"), &b""[..]),
        (a.resp.expect("resp"), b""),
        (a.http.expect("http"), b"http/1.1"),
        (a.grpc.expect("grpc"), b"h2"),
    ] {
        // Silent, and stalled inside its ClientHello.
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let mut stalled = TcpStream::connect(addr).await.expect("connect");
        stalled.write_all(&[0x16, 0x03, 0x01, 0x00, 0xF1, 0x01]).await.expect("half a hello");
        let alpn: Vec<&[u8]> = if alpn.is_empty() { vec![] } else { vec![alpn] };
        let served =
            tokio::time::timeout(Duration::from_secs(5), connect(&pki.client(&alpn, None), addr)).await;
        assert!(
            matches!(served, Ok(Ok(_))),
            "{addr}: a client behind the stalled ones was not served: {served:?}"
        );
        closed_by_server(&mut silent).await;
        closed_by_server(&mut stalled).await;
    }
    server.shutdown().await;
}

/// `--tls-replication`: `REPLICAOF` speaks TLS to a target whose RESP port requires it (and a
/// client certificate), trusting `--tls-ca`; without the flag it fails saying so and changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicaof_a_tls_target_needs_tls_replication_and_then_joins() {
    use nanodb_server::config::{ClusterConfig, ReadConsistency};
    let pki = Pki::new("replication CA");
    let ca = pki.ca_file();
    // Every node's certificate serves and, for REPLICAOF, authenticates as a client.
    let files = |name: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &pki.ca).expect("sign");
        TlsFiles {
            cert: pki.write(&format!("{name}.crt"), &cert.pem()),
            key: pki.write(&format!("{name}.key"), &key.serialize_pem()),
            ca: Some(ca.clone()),
            auth_clients: ClientAuth::Yes,
        }
    };
    let node = |name: &str, id: u64, dir: &tempfile::TempDir, tls_replication: bool| Config {
        resp_addr: any_port(),
        data_dir: dir.path().to_path_buf(),
        tls: Some(files(name)),
        tls_replication,
        cluster: Some(ClusterConfig {
            node_id: id,
            raft_addr: "127.0.0.1:0".into(),
            peers: Vec::new(),
            election_timeout: Duration::from_millis(1000),
            snapshot_every: 100_000,
            read_consistency: ReadConsistency::Linearizable,
        }),
        ..config()
    };
    let identity = pki.issue(true);
    let client = pki.client(&[], Some(&identity));
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();

    let target = start(node("target", 1, &dirs[0], false)).await;
    let target_resp = target.addrs().resp.expect("resp");
    let mut on_target = connect(&client, target_resp).await.expect("TLS to the target");
    let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
    assert_eq!(resp_line(&mut on_target, set).await.expect("SET"), "+OK\r\n");
    let replicaof = format!(
        "*3\r\n$9\r\nREPLICAOF\r\n$9\r\n127.0.0.1\r\n${}\r\n{}\r\n",
        target_resp.port().to_string().len(),
        target_resp.port()
    );

    // Without --tls-replication: refused, naming the flag; the node keeps its own data.
    let plain = start(node("plain", 7, &dirs[1], false)).await;
    let mut on_plain = connect(&client, plain.addrs().resp.expect("resp")).await.expect("TLS");
    assert_eq!(
        resp_line(&mut on_plain, b"*3\r\n$3\r\nSET\r\n$4\r\nmine\r\n$1\r\n1\r\n").await.expect("SET"),
        "+OK\r\n"
    );
    let e = resp_line(&mut on_plain, replicaof.as_bytes()).await.expect("REPLICAOF");
    assert!(e.starts_with("-ERR") && e.contains("requires TLS") && e.contains("--tls-replication"), "{e}");
    assert_eq!(plain.engine().key_count(), 1, "nothing changed");

    // With it: the node joins over TLS (presenting its certificate) and receives the data.
    let joiner = start(node("joiner", 9, &dirs[2], true)).await;
    let mut on_joiner = connect(&client, joiner.addrs().resp.expect("resp")).await.expect("TLS");
    assert_eq!(resp_line(&mut on_joiner, replicaof.as_bytes()).await.expect("REPLICAOF"), "+OK\r\n");
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while joiner.engine().key_count() != 1 {
        assert!(std::time::Instant::now() < until, "the replica never received the target's key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = joiner.cluster().expect("cluster").status().await;
    assert_eq!(s.role, "learner", "{s:?}");
    for server in [joiner, plain, target] {
        server.shutdown().await;
    }

    // The flag without a CA to trust the target, or without TLS at all, refuses to start.
    let mut no_ca = node("no-ca", 3, &dirs[1], true);
    if let Some(tls) = no_ca.tls.as_mut() {
        (tls.ca, tls.auth_clients) = (None, ClientAuth::No);
    }
    let e = Server::start(no_ca).await.expect_err("no CA").to_string();
    assert!(e.contains("--tls-replication") && e.contains("needs --tls-ca"), "{e}");
    let e = Server::start(Config { tls: None, ..node("no-tls", 3, &dirs[1], true) })
        .await
        .expect_err("no TLS")
        .to_string();
    assert!(e.contains("--tls-replication") && e.contains("needs --tls-cert"), "{e}");
}
