//! Starting servers for tests, and a small client for the binary TCP protocol built on the
//! protocol crate's codec.

use bytes::Bytes;
use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use nanodb_protocol::wire::PROTOCOL_VERSION;
use nanodb_protocol::{ClientCodec, Command, Error, Reply, Request, Response};
use nanodb_server::config::{Config, ListenAddr};
use nanodb_server::server::Server;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Loopback with an OS-chosen port.
/// `s` as `Bytes`: keys and values in the tests.
pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// An unconditional write of `v` to `k` without TTL: the command most tests start with.
pub fn put(k: &str, v: &str) -> Command {
    Command::Put(nanodb_protocol::cmd::Put {
        key: b(k),
        value: b(v),
        expiry: nanodb_protocol::Expiry::Persist,
        condition: nanodb_protocol::PutCondition::Always,
    })
}

pub fn any_port() -> ListenAddr {
    ListenAddr::On("127.0.0.1:0".into())
}

/// A config with every listener off; switch on what the test needs.
pub fn config() -> Config {
    Config::all_off()
}

/// A server with only the binary TCP protocol on.
pub async fn tcp_server() -> Server {
    start(Config { tcp_addr: any_port(), ..config() }).await
}

/// Starts a server; listeners are bound (and so ready) when this returns.
pub async fn start(config: Config) -> Server {
    Server::start(config).await.expect("server starts")
}

/// A binary-protocol client: a framed connection that has done its HELLO.
pub struct TcpClient {
    framed: Framed<TcpStream, ClientCodec>,
    next_id: u32,
    /// The server's frame limit, from HELLO.
    #[allow(dead_code)] // not every test binary build reads it; clippy -D warnings would fail
    pub max_frame_len: u32,
}

impl TcpClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut framed = Framed::new(stream, ClientCodec::default());
        framed.send((0, Request::Hello { version: PROTOCOL_VERSION })).await.expect("send hello");
        let (id, resp) = framed.next().await.expect("hello reply").expect("decodes");
        assert_eq!(id, 0);
        let Response::Hello { version, max_frame_len } = resp else { panic!("expected HELLO, got {resp:?}") };
        assert_eq!(version, PROTOCOL_VERSION);
        Self { framed, next_id: 1, max_frame_len }
    }

    /// Like [`TcpClient::connect`], but `None` instead of a panic when the server is gone before
    /// the handshake completes (for tests that kill the server at a random moment, which on a
    /// loaded machine can come before a client connected).
    #[allow(dead_code)] // used by the crash tests only
    pub async fn try_connect(addr: SocketAddr) -> Option<Self> {
        let stream = TcpStream::connect(addr).await.ok()?;
        let mut framed = Framed::new(stream, ClientCodec::default());
        framed.send((0, Request::Hello { version: PROTOCOL_VERSION })).await.ok()?;
        match framed.next().await?.ok()? {
            (0, Response::Hello { version, max_frame_len }) if version == PROTOCOL_VERSION => {
                Some(Self { framed, next_id: 1, max_frame_len })
            }
            other => panic!("expected HELLO, got {other:?}"),
        }
    }

    /// Sends one command and waits for its reply.
    pub async fn call(&mut self, cmd: Command) -> Result<Reply, Error> {
        let id = self.send(cmd).await;
        self.recv(id).await
    }

    /// Like [`TcpClient::call`], but `None` instead of a panic when the connection breaks (for
    /// tests that kill the server).
    pub async fn try_call(&mut self, cmd: Command) -> Option<Result<Reply, Error>> {
        let id = self.next_id;
        self.next_id += 1;
        self.framed.send((id, cmd)).await.ok()?;
        let (got, resp) = self.framed.next().await?.ok()?;
        assert_eq!(got, id);
        match resp {
            Response::Reply(r) => Some(Ok(r)),
            Response::Error(e) => Some(Err(e)),
            Response::Hello { .. } | Response::Push(_) => None,
        }
    }

    /// Sends without waiting; returns the request id.
    pub async fn send(&mut self, cmd: Command) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.framed.feed((id, cmd)).await.expect("send");
        id
    }

    pub async fn flush(&mut self) {
        SinkExt::<(u32, Command)>::flush(&mut self.framed).await.expect("flush");
    }

    /// Receives the next reply, which must carry `id`.
    pub async fn recv(&mut self, id: u32) -> Result<Reply, Error> {
        self.flush().await;
        let (got, resp) = self.framed.next().await.expect("a reply").expect("decodes");
        assert_eq!(got, id, "replies come back in request order");
        match resp {
            Response::Reply(r) => Ok(r),
            Response::Error(e) => Err(e),
            Response::Hello { .. } => panic!("unexpected HELLO"),
            Response::Push(p) => panic!("unexpected push {p:?}"),
        }
    }

    /// Sends any request (a subscription, say) without waiting; returns the request id.
    #[allow(dead_code)] // used by the watch tests only
    pub async fn send_request(&mut self, request: Request) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.framed.feed((id, request)).await.expect("send");
        id
    }

    /// Flushes, then receives the next frame whatever it is (a reply or a push), within 5 s;
    /// `None` when the server closed the connection.
    #[allow(dead_code)] // used by the watch tests only
    pub async fn next_frame(&mut self) -> Option<(u32, Response)> {
        self.flush().await;
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), self.framed.next())
            .await
            .expect("a frame within 5 s");
        next.map(|r| r.expect("decodes"))
    }
}
