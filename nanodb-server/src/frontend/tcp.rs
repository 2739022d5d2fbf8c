//! The binary TCP frontend (`nanodb-protocol/PROTOCOL.md`).
//!
//! Per connection: a HELLO handshake within `handshake_timeout`, then frames applied in order and
//! answered in order, by a hand-written loop (as RESP's `resp::connection`): read what the socket
//! has into one buffer, run every whole frame in it ([`io::Frames`], cut as `nanodb-protocol`'s
//! codec cuts them, the length checked against the limit before anything is reserved), encode
//! each reply straight into one output buffer ([`io::Out`]; a GET's value or a PUT's outcome from
//! the typed result, with no `Response` built), and write the batch with one `write`. A batch
//! stops at [`MAX_BATCH`] replies or [`WRITE_BOUNDARY`] bytes, is written, and the frames still
//! buffered run next, before reading again. A frame whose body is bad gets an error frame and the connection goes on; a
//! broken stream (oversized or impossible length) gets an error frame and is closed, since it cannot
//! be resynchronised. A connection over `max_connections` gets a TOO_MANY_CONNECTIONS error frame
//! and is closed. A first frame that does not decode because the client speaks another protocol
//! (HTTP, HTTP/2, RESP, TLS; see [`super::sniff`]) is answered in that protocol where possible and
//! logged once at debug level; a framing error after the handshake, which a NanoDB client should
//! never make, is a warning.
//!
//! In a cluster, a batch's consecutive writes are submitted to the log together and awaited
//! together, and its reads share a read barrier ([`clustered`]).
//!
//! A connection that WATCHes or SUBSCRIBEs ([`watch`]) also waits on its change-feed queue: the
//! loop selects between frames and deliveries, and writes pushes in the same batches as replies.
//!
//! Connections run on the binary protocol's own event loops (`--tcp-threads`, default 1; see
//! [`super::event_loops`]), as RESP's do: each connection runs what it received, lets the loop's
//! other ready connections run theirs, and then writes, so a round's log records go out in one
//! `write(2)` and its replies together. `--tcp-threads 0` serves them on the shared runtime.
//!
//! With `--tls-cert`, the same connection code runs over the TLS stream ([`crate::tls::accept`]
//! in the connection's task, on its event loop, first). With `--idle-timeout`, a connection that sends nothing for
//! that long is closed, unless it watches or subscribes.

mod clustered;
mod io;
mod watch;

/// How the binary protocol reaches `c`: its declared request kind (every command has one; the
/// wire round-trip test covers each).
pub fn reach(c: nanodb_protocol::CommandName) -> super::coverage::Reach {
    super::coverage::Reach::Kind(c.kind())
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use nanodb_protocol::wire::{self, PROTOCOL_VERSION};
use nanodb_protocol::{Error, FrameError, Reply, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use self::io::{Frames, Item, Out, Replies};
use self::watch::Feed;
use super::Context;
use super::event_loops::{self, EventLoops};
use super::sniff::{self, Foreign};
use crate::auth::{Caller, Need};
use crate::stats::Protocol;
use crate::tls::{Alpn, Tls};

/// Largest frame before a connection authenticates (when auth is on): an anonymous client must
/// not make the server buffer much.
pub const UNAUTHENTICATED_MAX_FRAME: usize = 64 * 1024;
/// Most requests applied before their replies are sent: bounds a batch's memory and latency when
/// a client keeps the socket full.
const MAX_BATCH: usize = 1024;
/// Buffered replies above which the connection writes before running more (bounds memory per
/// connection when a client pipelines without reading).
const WRITE_BOUNDARY: usize = 64 * 1024;
/// Most queued deliveries written per batch: replies to the next requests do not wait behind a
/// long backlog of pushes (the rest go out in the next turns of the loop).
const MAX_PUSHES: usize = 1024;

/// Accepts connections until shutdown and serves them on the event loops; with `tls`, each
/// connection's handshake runs in its own task before its HELLO. Returns once the connections
/// have drained.
pub async fn serve(listener: TcpListener, ctx: Context, tls: Option<Arc<Tls>>) {
    let loops = match EventLoops::start("tcp", ctx.config.tcp_threads, ctx.config.tcp_idle_poll) {
        Ok(loops) => loops,
        Err(e) => {
            tracing::error!(error = %e, "tcp: cannot start the event loops; the binary protocol is off");
            return;
        }
    };
    let max = ctx.config.max_connections;
    let conn_ctx = ctx.clone();
    let tls_serve = tls.clone();
    let serve_one = move |stream: TcpStream, peer| {
        let (ctx, tls) = (conn_ctx.clone(), tls_serve.clone());
        async move {
            let result = match tls {
                None => connection(stream, peer, &ctx).await,
                Some(tls) => {
                    let acceptor = tls.acceptor(Alpn::None);
                    match crate::tls::accept(acceptor, stream, peer, &ctx, "binary TCP port").await {
                        Some(stream) => connection(stream, peer, &ctx).await,
                        None => return,
                    }
                }
            };
            // One line per connection, and at debug level unless it is rare and worth attention:
            // a client pointed at the wrong port may open thousands of connections.
            match result {
                Ok(End::Done) => debug!(%peer, "tcp: connection closed"),
                Ok(End::Foreign(protocol)) => {
                    debug!(%peer, %protocol, "tcp: not the binary protocol; told the client where to go and closed")
                }
                Ok(End::Handshake(why)) => debug!(%peer, %why, "tcp: handshake failed; closed"),
                Err(FrameError::Io(e)) => {
                    debug!(%peer, error = %e, "tcp: connection closed on a socket error")
                }
                Err(e) => warn!(%peer, error = %e, "tcp: broken framing after the handshake; closed"),
            }
        }
    };
    let refuse_ctx = ctx.clone();
    let refuse = move |stream| refuse(stream, max, refuse_ctx.clone(), tls.clone());
    // `--tcp-threads 0`: connections run on the server's runtime, tracked by `ctx.tasks`.
    super::accept_loop(listener, ctx, "tcp", serve_one, refuse, loops.active()).await;
    loops.stop().await;
}

/// Tells a client over the connection limit why it is being closed (over TLS after the handshake,
/// on a TLS port).
async fn refuse(stream: TcpStream, max: usize, ctx: Context, tls: Option<Arc<Tls>>) {
    async fn tell<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, max: usize) {
        let mut frame = BytesMut::new();
        wire::encode_response(0, &Response::Error(Error::TooManyConnections { max }), &mut frame);
        let send = async {
            stream.write_all(&frame).await?;
            stream.flush().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), send).await;
    }
    match tls {
        None => tell(stream, max).await,
        Some(tls) => {
            let peer = stream.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            let acceptor = tls.acceptor(Alpn::None);
            if let Some(stream) = crate::tls::accept(acceptor, stream, peer, &ctx, "binary TCP port").await {
                tell(stream, max).await;
            }
        }
    }
}

/// How a connection ended, for its log line.
enum End {
    /// The client left, or the server shut down.
    Done,
    /// Another protocol's client, answered in its protocol where possible.
    Foreign(Foreign),
    /// No valid HELLO (refused with an error frame).
    Handshake(String),
}

/// One connection's socket and buffers.
struct Conn<'a, S> {
    stream: S,
    ctx: &'a Context,
    frames: Frames,
    out: Out,
    /// Where what the waiting replies' reads could see ends (`Context::read_fence`; 0: nothing
    /// read): they leave once that is durable too.
    fence: u64,
}

/// How a connection's part of a round (running the frames its reads completed) ended.
pub(super) enum RoundEnd {
    /// Every whole frame ran; the rest of the buffer (if any) is an incomplete frame.
    Ran,
    /// A bound was reached ([`MAX_BATCH`] replies, or [`WRITE_BOUNDARY`] bytes of them): write,
    /// then run the frames still buffered.
    Full,
    /// The stream broke: write the replies, then report the error and close.
    Broken(FrameError),
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Conn<'a, S> {
    /// Reads what the socket has; 0 at the end of the stream.
    async fn read(&mut self) -> std::io::Result<usize> {
        self.stream.read_buf(self.frames.read_buffer()).await
    }

    /// The first whole frame, reading until one arrives; `Ok(None)` if the client left without
    /// sending one. A stream error leaves the bytes read in the buffer for the sniffer.
    async fn first_frame(&mut self) -> Result<Option<Item>, FrameError> {
        loop {
            if let Some(item) = self.frames.next()? {
                return Ok(Some(item));
            }
            if self.read().await? == 0 {
                return if self.frames.has_partial() { Err(eof_in_frame()) } else { Ok(None) };
            }
        }
    }

    /// Changes the frame limit, for the frames read and the replies written.
    fn set_max_frame_len(&mut self, max: usize) {
        self.frames.set_max_frame_len(max);
        self.out.set_limit(max);
    }

    /// Waits until every write behind the waiting replies may be acknowledged (the round's other
    /// connections have appended their records already, so whoever writes first writes them
    /// all: no further yield to share the write), and what their reads could see is durable,
    /// then writes them all at once. If the log failed, the writes are answered with its error
    /// instead; reads keep theirs.
    async fn send(&mut self) -> Result<(), FrameError> {
        if self.out.len() == 0 {
            return Ok(());
        }
        let fence = std::mem::take(&mut self.fence);
        if let Err(e) = self.ctx.durable_sharing(self.out.position(), fence, false).await {
            self.out.fail_writes(&e);
        }
        self.stream.write_all(self.out.bytes()).await?;
        // A no-op on a plain socket; a TLS stream may hold the last record until flushed.
        self.stream.flush().await?;
        self.out.clear();
        Ok(())
    }

    /// Sends one response now (the handshake's).
    async fn send_one(&mut self, id: u32, response: Response) -> Result<(), FrameError> {
        self.out.response(id, &response, 0);
        self.send().await
    }

    /// Reports a stream-level error to the peer (when it is a protocol error, not I/O), after the
    /// replies already owed, and closes.
    async fn fail_stream(&mut self, e: FrameError) -> Result<(), FrameError> {
        if let Some(err) = e.to_error() {
            // The reason, with id 0 since the frame had none.
            self.out.response(0, &Response::Error(err), 0);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.send()).await;
        Err(e)
    }

    /// After a command ran: one that wrote nothing (`position` 0) may have seen others' writes,
    /// so the batch's replies wait for the read fence too (see `Context::read_fence`).
    fn saw(&mut self, position: u64) {
        self.fence = self.fence.max(self.ctx.fence_after(position));
    }

    /// Runs every whole frame in the read buffer (up to the batch bounds), encoding each reply
    /// into the output as it goes. GETs and PUTs, the commonest requests, are decoded and
    /// answered as typed commands, without a `Request` or `Response` around them.
    async fn run(&mut self, caller: &mut Caller, peer: SocketAddr, feed: &mut Feed) -> RoundEnd {
        let ctx = self.ctx;
        loop {
            if self.out.frames() >= MAX_BATCH || self.out.len() >= WRITE_BOUNDARY {
                return RoundEnd::Full;
            }
            let (kind, id, body) = match self.frames.next_raw() {
                Ok(Some(frame)) => frame,
                Ok(None) => return RoundEnd::Ran,
                Err(e) => return RoundEnd::Broken(e),
            };
            match kind {
                wire::kind::GET => match wire::decode_get(body) {
                    Ok(get) => {
                        let (result, position) = ctx.run_pipelined(caller, get);
                        self.saw(position);
                        self.out.value(id, result, position);
                    }
                    Err(e) => self.out.response(id, &Response::Error(e), 0),
                },
                wire::kind::PUT => match wire::decode_put(body) {
                    Ok(put) => {
                        let (result, position) = ctx.run_pipelined(caller, put);
                        self.saw(position);
                        self.out.put(id, result, position);
                    }
                    Err(e) => self.out.response(id, &Response::Error(e), 0),
                },
                kind => match wire::decode_request(kind, body) {
                    Ok(Request::Command(cmd)) => {
                        let (result, position) = ctx.run_pipelined(caller, cmd);
                        self.saw(position);
                        self.out.result(id, result, position);
                    }
                    request => {
                        let was = caller.is_authenticated();
                        respond(ctx, caller, peer, feed, id, request, &mut self.out).await;
                        self.saw(0);
                        if !was && caller.is_authenticated() {
                            self.set_max_frame_len(ctx.config.max_frame_len);
                        }
                    }
                },
            }
        }
    }
}

/// The end of the stream inside a frame: the client broke the stream.
fn eof_in_frame() -> FrameError {
    FrameError::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "bytes remaining on stream"))
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    ctx: &Context,
) -> Result<End, FrameError> {
    let mut conn = Conn {
        stream,
        ctx,
        frames: Frames::new(ctx.config.max_frame_len),
        out: Out::new(ctx.config.max_frame_len),
        fence: 0,
    };
    let _open = ctx.stats.connection(Protocol::Tcp);
    debug!(%peer, "tcp: connection opened");

    // Handshake: the first frame must be a HELLO with a version this server speaks.
    let first = tokio::select! {
        () = ctx.shutdown.cancelled() => return Ok(End::Done),
        first = tokio::time::timeout(ctx.config.handshake_timeout, conn.first_frame()) => first,
    };
    let (id, version) = match first {
        Err(_elapsed) => {
            conn.send_one(0, Response::Error(Error::Timeout)).await?;
            return Ok(End::Handshake("no HELLO within handshake_timeout".into()));
        }
        Ok(Ok(None)) => return Ok(End::Done),
        Ok(Err(e)) => {
            // The bytes that failed to decode are still buffered: whose are they?
            let foreign = sniff::identify(conn.frames.buffered()).filter(|f| *f != Foreign::NanoTcp);
            if let Some(foreign) = foreign {
                let first = conn.frames.buffered().to_vec();
                answer_foreign(&mut conn.stream, ctx, foreign, &first).await;
                return Ok(End::Foreign(foreign));
            }
            let why = e.to_string();
            let _ = conn.fail_stream(e).await;
            return Ok(End::Handshake(why));
        }
        Ok(Ok(Some((id, Ok(Request::Hello { version }))))) => (id, version),
        Ok(Ok(Some((id, Err(e))))) => {
            let why = e.to_string();
            conn.send_one(id, Response::Error(e)).await?;
            return Ok(End::Handshake(why));
        }
        Ok(Ok(Some((id, Ok(Request::Command(_) | Request::Subscription(_) | Request::Auth { .. }))))) => {
            conn.send_one(id, Response::Error(Error::HandshakeRequired)).await?;
            return Ok(End::Handshake(Error::HandshakeRequired.to_string()));
        }
    };
    if version != PROTOCOL_VERSION {
        let e = Error::UnsupportedVersion { got: version, supported: PROTOCOL_VERSION };
        let why = e.to_string();
        conn.send_one(id, Response::Error(e)).await?;
        return Ok(End::Handshake(why));
    }
    let max_frame_len = u32::try_from(ctx.config.max_frame_len).unwrap_or(u32::MAX);
    conn.send_one(id, Response::Hello { version: PROTOCOL_VERSION, max_frame_len }).await?;
    let mut caller = ctx.auth.new_caller(Protocol::Tcp);
    if !caller.is_authenticated() {
        conn.set_max_frame_len(ctx.config.max_frame_len.min(UNAUTHENTICATED_MAX_FRAME));
    }

    let mut feed = Feed::new(ctx.feed.clone());
    // Shutdown, as a child token awaited through one pinned future for the connection's life:
    // polling it per turn touches only this connection's waiter, not the server-wide token's
    // shared lock (which every connection on every loop would take once per batch).
    let mut cancelled = std::pin::pin!(ctx.shutdown.child_token().cancelled_owned());
    // Whether the read buffer may hold whole frames that have not run: frames pipelined behind
    // the HELLO, or left by a round that stopped at a bound.
    let mut fresh = true;
    loop {
        if !fresh {
            let read = tokio::select! {
                biased;
                () = &mut cancelled => break,
                read = conn.read() => read?,
                () = idle(ctx, &feed) => {
                    debug!(%peer, "tcp: idle connection closed (--idle-timeout)");
                    break;
                }
                delivery = feed.recv() => {
                    // Pushes only: write what is waiting (bounded) with one write.
                    conn.out.reply(0, feed.push(&delivery), 0);
                    feed.drain(&mut conn.out, MAX_PUSHES);
                    // A subscriber that stops reading must not hold up shutdown: its socket is
                    // simply closed. (Meanwhile its queue fills and it is lagged, writers unaffected.)
                    tokio::select! {
                        biased;
                        () = &mut cancelled => return Ok(End::Done),
                        sent = conn.send() => sent?,
                    }
                    continue;
                }
            };
            if read == 0 {
                // The client is done sending, and is owed nothing (every round is written
                // before the next read).
                if conn.frames.has_partial() {
                    return Err(eof_in_frame());
                }
                break;
            }
        }
        let end = if ctx.cluster.is_some() {
            // A cluster's pipelined writes go to the log together (see `clustered`).
            clustered::run_batch(&mut conn, &mut caller, peer, &mut feed).await
        } else {
            conn.run(&mut caller, peer, &mut feed).await
        };
        fresh = matches!(end, RoundEnd::Full);
        if conn.out.frames() > 0 {
            event_loops::idle_poll::note_work();
            if ctx.cluster.is_none() {
                // Let every other connection that is ready run its requests before any of them
                // writes: the first to need the log then writes every record of the round in one
                // `write(2)`, and replies leave together (as RESP's connections do).
                event_loops::after_queued_tasks().await;
            }
        }
        // Deliveries queued meanwhile (e.g. for this batch's own writes) follow its replies.
        feed.drain(&mut conn.out, MAX_PUSHES);
        conn.send().await?;
        if let RoundEnd::Broken(e) = end {
            return conn.fail_stream(e).await.map(|()| End::Done);
        }
    }
    conn.send().await?;
    Ok(End::Done)
}

/// Tells another protocol's client (whose bytes so far are `first`), in its protocol, that this
/// is the binary TCP port and where its protocol is served: an HTTP 400, an HTTP/2 GOAWAY, a RESP
/// error to each command. A TLS client could only be sent an alert it would report as a
/// handshake failure, so it is just closed.
async fn answer_foreign<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    ctx: &Context,
    foreign: Foreign,
    first: &[u8],
) {
    let text = sniff::redirect(&ctx.config, "binary TCP port", foreign);
    let answer = match foreign {
        Foreign::Http1 => sniff::http1_response(&text),
        Foreign::Http2 => sniff::http2_goaway(&text),
        Foreign::Resp => return sniff::answer_resp_commands(stream, first, &text, &ctx.shutdown).await,
        Foreign::Tls | Foreign::NanoTcp => Vec::new(), // NanoTcp: ours, never passed here
    };
    sniff::answer_and_close(stream, &answer).await;
}

/// Completes once the connection has been idle for `--idle-timeout` (never without one, nor while
/// it watches or subscribes: Redis does not time out subscribers either). Restarted by every turn
/// of the connection loop, i.e. by every request.
async fn idle(ctx: &Context, feed: &Feed) {
    match ctx.config.idle_timeout {
        Some(idle) if !feed.is_subscribed() => tokio::time::sleep(idle).await,
        _ => std::future::pending().await,
    }
}

/// Applies one request and appends its response, with the log position it must wait for. (In a
/// cluster, commands go through [`clustered`] instead.)
async fn respond<R: Replies>(
    ctx: &Context,
    caller: &mut Caller,
    peer: SocketAddr,
    feed: &mut Feed,
    id: u32,
    request: Result<Request, Error>,
    out: &mut R,
) {
    match request {
        Ok(Request::Command(cmd)) => {
            let (result, position) = ctx.run_pipelined(caller, cmd);
            out.reply(id, Response::from(result), position);
        }
        Ok(Request::Auth { user, password }) => {
            let result = authenticate(ctx, caller, peer, &user, &password.0).map(|()| Reply::Bool(true));
            out.reply(id, Response::from(result), 0);
        }
        Ok(Request::Subscription(op)) => match ctx.authorize(caller, Need::of_subscription(&op)) {
            Ok(()) => feed.handle(ctx, id, op, out).await,
            Err(e) => out.reply(id, Response::Error(e), 0),
        },
        Ok(Request::Hello { .. }) => {
            out.reply(id, Response::Error(Error::Malformed("HELLO may only be sent once".into())), 0);
        }
        Err(e) => out.reply(id, Response::Error(e), 0),
    }
}

/// AUTH: on success the connection runs as `user` from its next request; a failure is counted and
/// logged (never the password) and leaves the connection as it was.
fn authenticate(
    ctx: &Context,
    caller: &mut Caller,
    peer: SocketAddr,
    user: &[u8],
    password: &[u8],
) -> Result<(), Error> {
    let name = String::from_utf8_lossy(user);
    if !ctx.auth.enabled() {
        return if name == "default" { Ok(()) } else { Err(Error::WrongPass) };
    }
    match ctx.auth.authenticate(&name, password) {
        Ok(principal) => {
            *caller = Caller::user(Protocol::Tcp, principal);
            Ok(())
        }
        Err(e) => {
            ctx.auth.record_failure(Protocol::Tcp, &name, Some(peer));
            Err(e.into())
        }
    }
}
