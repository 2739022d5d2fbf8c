//! One connection to the binary TCP port through `nanodb-protocol`'s [`ClientCodec`]: HELLO,
//! AUTH, then requests answered in order, with pushes (WATCH/SUBSCRIBE) told apart by kind.
//!
//! Failures are sorted by what the user can do about them ([`Failure`]): the server said no
//! (exit 1), the command line was wrong (exit 2), the server could not be reached or went away
//! (exit 3).

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use nanodb_protocol::wire::Password;
use nanodb_protocol::{ClientCodec, Command, Error, Push, Reply, Request, Response, Subscription};
use tokio_util::codec::Framed;

use crate::args::Conn;
use nanodb_protocol::tls_client::{Alpn, Stream, TlsClient, target as host_port};

/// How long a connect (TCP, TLS and HELLO) may take before the server counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a command did not succeed, by exit code.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with an error (exit 1).
    Server(Error),
    /// The command line is wrong (exit 2).
    Usage(String),
    /// The server cannot be reached, or the connection broke (exit 3).
    Connect(String),
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Server(_) => 1,
            Self::Usage(_) => 2,
            Self::Connect(_) => 3,
        }
    }

    /// The message for stderr (or the REPL).
    pub fn message(&self) -> String {
        match self {
            Self::Server(e) => format!("(error) {} {}", e.code().as_str(), e),
            Self::Usage(m) => format!("(usage) {m}"),
            Self::Connect(m) => format!("(disconnected) {m}"),
        }
    }
}

/// An open, handshaken connection.
#[derive(Debug)]
pub struct Client {
    framed: Framed<Stream, ClientCodec>,
    next_id: u32,
    /// Where it is connected, for messages.
    pub target: String,
}

impl Client {
    /// Connects, handshakes and authenticates (when `--user`/`--password` are given).
    pub async fn connect(conn: &Conn) -> Result<Self, Failure> {
        let target = host_port(&conn.host, conn.port);
        let tls = match conn.tls_config() {
            Ok(t) => t,
            Err(e) => return Err(Failure::Usage(format!("{e:#}"))),
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::open(conn, &target, tls.as_ref())).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Connect(format!(
                "{target}: no answer within {}s (is it NanoDB's binary TCP port?)",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn open(conn: &Conn, target: &str, tls: Option<&TlsClient>) -> Result<Self, Failure> {
        let stream =
            Stream::connect(target, tls, Alpn::None).await.map_err(|e| Failure::Connect(e.to_string()))?;
        let mut client =
            Self { framed: Framed::new(stream, ClientCodec::default()), next_id: 1, target: target.into() };
        match client.call_request(Request::Hello { version: 1 }).await? {
            Response::Hello { max_frame_len, .. } => {
                client.framed = client.framed.map_codec(|_| ClientCodec::new(max_frame_len as usize));
            }
            Response::Error(e) => return Err(Failure::Connect(format!("{target}: handshake refused: {e}"))),
            other => {
                return Err(Failure::Connect(format!("{target}: unexpected handshake answer {other:?}")));
            }
        }
        if let Some(password) = conn.password.clone() {
            let user = conn.user.clone().unwrap_or_else(|| "default".into());
            let auth = Request::Auth { user: Bytes::from(user), password: Password(Bytes::from(password)) };
            match client.call_request(auth).await? {
                Response::Reply(_) => {}
                Response::Error(e) => return Err(Failure::Server(e)),
                other => return Err(Failure::Connect(format!("{target}: unexpected AUTH answer {other:?}"))),
            }
        } else if conn.user.is_some() {
            return Err(Failure::Usage("--user needs --password (or NANODB_PASSWORD)".into()));
        }
        Ok(client)
    }

    fn broken(&self, what: impl std::fmt::Display) -> Failure {
        Failure::Connect(format!("connection to {} lost: {what}", self.target))
    }

    /// Sends one request without waiting; its answer comes from [`Client::next_response`].
    pub async fn send(&mut self, request: Request) -> Result<(), Failure> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.framed.send((id, request)).await.map_err(|e| match e {
            nanodb_protocol::FrameError::TooLarge { len, max } => Failure::Usage(format!(
                "request of {len} bytes exceeds the server's frame limit of {max} bytes"
            )),
            nanodb_protocol::FrameError::Unencodable(e) => Failure::Usage(e.to_string()),
            other => self.broken(other),
        })
    }

    /// Queues a request in the write buffer (flushed by [`Client::flush`] or the next `send`).
    pub async fn feed(&mut self, request: Request) -> Result<(), Failure> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.framed.feed((id, request)).await.map_err(|e| self.broken(e))
    }

    /// Writes out what [`Client::feed`] queued.
    pub async fn flush(&mut self) -> Result<(), Failure> {
        SinkExt::<(u32, Request)>::flush(&mut self.framed).await.map_err(|e| self.broken(e))
    }

    /// The next frame from the server, reply or push.
    pub async fn next_response(&mut self) -> Result<Response, Failure> {
        match self.framed.next().await {
            Some(Ok((_, r))) => Ok(r),
            Some(Err(e)) => Err(self.broken(e)),
            None => Err(self.broken("the server closed the connection")),
        }
    }

    /// The next reply, skipping pushes.
    pub async fn next_reply(&mut self) -> Result<Response, Failure> {
        loop {
            match self.next_response().await? {
                Response::Push(_) => continue,
                r => return Ok(r),
            }
        }
    }

    async fn call_request(&mut self, request: Request) -> Result<Response, Failure> {
        self.send(request).await?;
        self.next_reply().await
    }

    /// Runs one command: its reply, or the server's error.
    pub async fn call(&mut self, cmd: Command) -> Result<Reply, Failure> {
        match self.call_request(Request::Command(cmd)).await? {
            Response::Reply(r) => Ok(r),
            Response::Error(e) => Err(Failure::Server(e)),
            other => Err(self.broken(format!("unexpected answer {other:?}"))),
        }
    }

    /// Changes what the connection is pushed; the topics held after it.
    pub async fn subscribe(&mut self, s: Subscription) -> Result<i64, Failure> {
        match self.call_request(Request::Subscription(s)).await? {
            Response::Reply(Reply::Int(n)) => Ok(n),
            Response::Error(e) => Err(Failure::Server(e)),
            other => Err(self.broken(format!("unexpected answer {other:?}"))),
        }
    }

    /// The next push (replies to nothing are not expected while only listening).
    pub async fn next_push(&mut self) -> Result<Push, Failure> {
        loop {
            match self.next_response().await? {
                Response::Push(p) => return Ok(p),
                Response::Error(e) => return Err(Failure::Server(e)),
                _ => continue,
            }
        }
    }
}
