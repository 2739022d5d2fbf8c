//! The protocol clients behind one interface, [`Conn`]: queue requests, flush them in one write,
//! and take the outcomes back in request order. Pipelining is native to tcp and resp (one write
//! carries a whole batch), multiplexing to grpc (HTTP/2 streams); http carries one at a time.
//!
//! Outcomes are classified here, once per protocol: a GET of a missing key is a [`Outcome::Miss`],
//! never an error; every failure gets an error *kind* so the report can count them.

use std::future::Future;

use bytes::Bytes;

use crate::cli::Protocol;
use crate::workload::Op;

pub mod etcd;
pub mod grpc;
pub mod http;
pub mod probe;
pub mod resp;
pub mod tcp;
/// TLS for every protocol: the client side shared with nanodb-cli.
pub use nanodb_protocol::tls_client as tls;

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// A read of a key that does not exist (not an error).
    Miss,
    /// The server answered with an error; the string is its kind (e.g. `resp WRONGTYPE`).
    Error(String),
}

/// A connection-level failure: the connection is unusable and every request in flight is lost.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed or was closed. (Not `#[from]`: that would make the I/O error the source
    /// too, and `{:#}` would print it twice.)
    #[error("connection lost: {0}")]
    Io(std::io::Error),
    /// The peer said something that is not the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl ClientError {
    /// The error kind under which lost requests are counted.
    pub fn kind(&self) -> String {
        match self {
            Self::Io(e) => format!("connection lost ({})", e.kind()),
            Self::Protocol(_) => "protocol error".to_string(),
        }
    }
}

/// One connection (or, for grpc, one user's handle on a shared connection).
pub trait Conn: Send + 'static {
    /// Queues a request; nothing is sent before [`Conn::flush`].
    fn push(&mut self, op: Op, key: &[u8], value: &Bytes);

    /// Sends everything queued.
    fn flush(&mut self) -> impl Future<Output = Result<(), ClientError>> + Send;

    /// The outcome of the oldest request in flight, waiting for it. Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Result<Outcome, ClientError>> + Send;

    /// The outcome of the oldest request in flight if it is already here, without waiting.
    fn try_recv(&mut self) -> Option<Result<Outcome, ClientError>>;
}

/// Opening connections of one protocol to one target.
#[derive(Debug, Clone)]
pub struct Connector {
    /// The protocol.
    pub protocol: Protocol,
    /// HOST:PORT.
    pub target: String,
    /// TLS (`--tls`), or plaintext.
    pub tls: Option<tls::TlsClient>,
    /// Who to authenticate as (`--user`, `--password`), or nobody.
    pub credentials: Option<Credentials>,
}

/// A user and password, sent once per connection (tcp, resp) or with every request (http, grpc;
/// the server remembers a Basic value that succeeded, so it checks the password once).
#[derive(Clone)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `Authorization` header value: `Basic base64(user:password)`.
    pub fn basic(&self) -> String {
        use base64::Engine as _;
        let pair = format!("{}:{}", self.user, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }
}

/// A connected client of any protocol; the runner is generic over [`Conn`] and this enum picks
/// the instantiation once per worker, not per request.
#[derive(Debug)]
pub enum AnyConn {
    /// Binary TCP.
    Tcp(tcp::TcpConn),
    /// gRPC.
    Grpc(grpc::GrpcConn),
    /// REST.
    Http(http::HttpConn),
    /// RESP2.
    Resp(resp::RespConn),
    /// etcd v3 gRPC.
    Etcd(etcd::EtcdConn),
}

/// Shared state for opening connections: gRPC (and etcd) channels are shared between users.
#[derive(Debug)]
pub struct Pool {
    connector: Connector,
    grpc: Vec<tonic::transport::Channel>,
}

impl Pool {
    /// Checks that the target speaks the protocol ([`probe::check`]), then opens the shared
    /// connections (grpc: `connections` HTTP/2 channels); fails with one clear message when the
    /// target refuses or speaks another protocol.
    pub async fn open(connector: Connector, connections: usize) -> anyhow::Result<Self> {
        let mut grpc = Vec::new();
        match connector.protocol {
            // not NanoDB: its own first call checks it (see etcd::channel); plaintext only
            Protocol::Etcd => {
                for _ in 0..connections {
                    grpc.push(etcd::channel(&connector.target).await?);
                }
            }
            _ => {
                // Over TLS the handshake is the check (the probe speaks plaintext).
                if connector.tls.is_none() {
                    probe::check(connector.protocol, &connector.target).await?;
                }
                if connector.protocol == Protocol::Grpc {
                    for _ in 0..connections {
                        grpc.push(match &connector.tls {
                            None => grpc::channel(&connector.target).await?,
                            Some(tls) => grpc::tls_channel(&connector.target, tls).await?,
                        });
                    }
                }
            }
        }
        Ok(Self { connector, grpc })
    }

    /// A connection for worker `i`: its own socket (tcp, resp, http) or a handle on shared
    /// channel `i % connections` (grpc).
    pub async fn connect(&self, i: usize) -> anyhow::Result<AnyConn> {
        let (t, tls) = (&self.connector.target, self.connector.tls.as_ref());
        let creds = self.connector.credentials.as_ref();
        Ok(match self.connector.protocol {
            Protocol::Tcp => AnyConn::Tcp(tcp::TcpConn::connect_as(t, tls, creds).await?),
            Protocol::Resp => AnyConn::Resp(resp::RespConn::connect_as(t, tls, creds).await?),
            Protocol::Http => AnyConn::Http(http::HttpConn::connect_as(t, tls, creds).await?),
            Protocol::Grpc | Protocol::Etcd => {
                let ch = self.grpc.get(i % self.grpc.len().max(1)).cloned();
                let ch = ch.ok_or_else(|| anyhow::anyhow!("no gRPC channel open"))?;
                match self.connector.protocol {
                    Protocol::Etcd => AnyConn::Etcd(etcd::EtcdConn::new(ch)),
                    _ => AnyConn::Grpc(grpc::GrpcConn::with_credentials(ch, creds)?),
                }
            }
        })
    }
}

/// The byte plumbing of a pipelined TCP connection, shared by the tcp and resp clients: requests
/// are encoded into one reusable write buffer and sent with one write per flush; replies gather in
/// a read buffer grown in fixed steps. Each client adds only its codec.
#[derive(Debug)]
pub(crate) struct Wire {
    stream: tls::Stream,
    /// Bytes received and not yet decoded.
    pub rbuf: bytes::BytesMut,
    /// Requests encoded and not yet sent.
    pub wbuf: bytes::BytesMut,
}

/// Read buffer growth step, and the initial size of both buffers.
const READ_CHUNK: usize = 64 * 1024;

impl Wire {
    /// Connects to `target` with TCP_NODELAY (and TLS with `tls`); errors name the protocol and
    /// target.
    pub async fn connect(protocol: &str, target: &str, tls: Option<&tls::TlsClient>) -> anyhow::Result<Self> {
        let stream = tls::Stream::connect(target, tls, tls::Alpn::None)
            .await
            .map_err(|e| connect_error(protocol, target, format!("{e:#}")))?;
        Ok(Self {
            stream,
            rbuf: bytes::BytesMut::with_capacity(READ_CHUNK),
            wbuf: bytes::BytesMut::with_capacity(READ_CHUNK),
        })
    }

    /// Sends everything encoded so far, in one write.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        use tokio::io::AsyncWriteExt;
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Reads whatever the peer sent next into `rbuf` (cancel-safe); the peer closing is an error.
    pub async fn fill(&mut self) -> Result<(), ClientError> {
        use tokio::io::AsyncReadExt;
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        if self.stream.read_buf(&mut self.rbuf).await? == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }
}

/// Turns a connect failure into the one line a user reads.
pub(crate) fn connect_error(protocol: &str, target: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("cannot connect to {target} ({protocol}): {e}")
}
