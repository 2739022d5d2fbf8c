//! The binary TCP frontend (`nanodb-protocol/PROTOCOL.md`).
//!
//! Per connection: a HELLO handshake within `handshake_timeout`, then frames decoded by
//! [`ServerCodec`], applied in order, and answered in order. Replies to everything already
//! received are written as one batch: the loop applies every frame it can decode without waiting
//! and flushes once. A frame whose body is bad gets an error frame and the connection goes on; a
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
mod watch;

/// How the binary protocol reaches `c`: its declared request kind (every command has one; the
/// wire round-trip test covers each).
pub fn reach(c: nanodb_protocol::CommandName) -> super::coverage::Reach {
    super::coverage::Reach::Kind(c.kind())
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use nanodb_protocol::wire::PROTOCOL_VERSION;
use nanodb_protocol::{Error, FrameError, Reply, Request, Response, ServerCodec};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Encoder, Framed};
use tracing::{debug, warn};

use self::watch::{Batch, Feed};
use super::Context;
use super::event_loops::{self, EventLoops};
use super::sniff::{self, Foreign};
use crate::auth::{Caller, Need};
use crate::stats::Protocol;
use crate::tls::{Alpn, Tls};

/// Largest frame before a connection authenticates (when auth is on): an anonymous client must
/// not make the server buffer much.
pub const UNAUTHENTICATED_MAX_FRAME: usize = 64 * 1024;
/// Read buffer capacity per connection; grows up to the frame limit only when a large frame comes.
const READ_BUFFER: usize = 16 * 1024;
/// Most requests applied before their replies are sent: bounds a batch's memory and latency when
/// a client keeps the socket full.
const MAX_BATCH: usize = 1024;
/// Buffered replies above which the codec writes before decoding more (bounds memory per
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
    async fn tell<S: AsyncRead + AsyncWrite + Unpin>(stream: S, max: usize) {
        let mut framed = Framed::new(stream, ServerCodec::default());
        let reply = (0, Response::Error(Error::TooManyConnections { max }));
        let _ = tokio::time::timeout(Duration::from_secs(1), framed.send(reply)).await;
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

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: SocketAddr,
    ctx: &Context,
) -> Result<End, FrameError> {
    let codec = ServerCodec::new(ctx.config.max_frame_len);
    let mut framed = Framed::with_capacity(stream, codec, READ_BUFFER);
    framed.set_backpressure_boundary(WRITE_BOUNDARY);
    let _open = ctx.stats.connection(Protocol::Tcp);
    debug!(%peer, "tcp: connection opened");

    // Handshake: the first frame must be a HELLO with a version this server speaks.
    let first = tokio::select! {
        () = ctx.shutdown.cancelled() => return Ok(End::Done),
        first = tokio::time::timeout(ctx.config.handshake_timeout, framed.next()) => first,
    };
    let (id, version) = match first {
        Err(_elapsed) => {
            framed.send((0, Response::Error(Error::Timeout))).await?;
            return Ok(End::Handshake("no HELLO within handshake_timeout".into()));
        }
        Ok(None) => return Ok(End::Done),
        Ok(Some(Err(e))) => {
            // The bytes that failed to decode are still buffered: whose are they?
            let foreign = sniff::identify(framed.read_buffer()).filter(|f| *f != Foreign::NanoTcp);
            if let Some(foreign) = foreign {
                let first = framed.read_buffer().to_vec();
                answer_foreign(framed.get_mut(), ctx, foreign, &first).await;
                return Ok(End::Foreign(foreign));
            }
            let why = e.to_string();
            let _ = fail_stream(&mut framed, e).await;
            return Ok(End::Handshake(why));
        }
        Ok(Some(Ok((id, Ok(Request::Hello { version }))))) => (id, version),
        Ok(Some(Ok((id, Err(e))))) => {
            let why = e.to_string();
            framed.send((id, Response::Error(e))).await?;
            return Ok(End::Handshake(why));
        }
        Ok(Some(Ok((id, Ok(Request::Command(_) | Request::Subscription(_) | Request::Auth { .. }))))) => {
            framed.send((id, Response::Error(Error::HandshakeRequired))).await?;
            return Ok(End::Handshake(Error::HandshakeRequired.to_string()));
        }
    };
    if version != PROTOCOL_VERSION {
        let e = Error::UnsupportedVersion { got: version, supported: PROTOCOL_VERSION };
        let why = e.to_string();
        framed.send((id, Response::Error(e))).await?;
        return Ok(End::Handshake(why));
    }
    let max_frame_len = u32::try_from(ctx.config.max_frame_len).unwrap_or(u32::MAX);
    framed.send((id, Response::Hello { version: PROTOCOL_VERSION, max_frame_len })).await?;
    let mut caller = ctx.auth.new_caller(Protocol::Tcp);
    if !caller.is_authenticated() {
        framed.codec_mut().set_max_frame_len(ctx.config.max_frame_len.min(UNAUTHENTICATED_MAX_FRAME));
    }

    let mut batch: Batch = Vec::with_capacity(64);
    // What this batch's reads could have seen ends here (see `Context::read_fence`).
    let mut fence = 0u64;
    let mut feed = Feed::new(ctx.feed.clone());
    // Shutdown, as a child token awaited through one pinned future for the connection's life:
    // polling it per turn touches only this connection's waiter, not the server-wide token's
    // shared lock (which every connection on every loop would take once per batch).
    let mut cancelled = std::pin::pin!(ctx.shutdown.child_token().cancelled_owned());
    loop {
        let next = tokio::select! {
            biased;
            () = &mut cancelled => break,
            next = framed.next() => next,
            () = idle(ctx, &feed) => {
                debug!(%peer, "tcp: idle connection closed (--idle-timeout)");
                break;
            }
            delivery = feed.recv() => {
                // Pushes only: write what is waiting (bounded) with one flush.
                batch.push(feed.push(&delivery));
                feed.drain(&mut batch, MAX_PUSHES);
                // A subscriber that stops reading must not hold up shutdown: its socket is
                // simply closed. (Meanwhile its queue fills and it is lagged, writers unaffected.)
                tokio::select! {
                    biased;
                    () = &mut cancelled => return Ok(End::Done),
                    sent = send_batch(ctx, &mut framed, &mut batch, 0) => sent?,
                }
                continue;
            }
        };
        let Some(mut item) = next else { break };
        let mut eof = false;
        if ctx.cluster.is_some() {
            event_loops::idle_poll::note_work();
            // A cluster's pipelined writes go to the log together (see `clustered`).
            match clustered::run_batch(ctx, &mut framed, &mut caller, peer, &mut feed, item, &mut batch).await
            {
                clustered::BatchEnd::Open => {}
                clustered::BatchEnd::Eof => eof = true,
                clustered::BatchEnd::Broken(e) => {
                    send_batch(ctx, &mut framed, &mut batch, 0).await?;
                    return fail_stream(&mut framed, e).await.map(|()| End::Done);
                }
            }
            feed.drain(&mut batch, MAX_PUSHES);
            send_batch(ctx, &mut framed, &mut batch, 0).await?;
            if eof {
                break;
            }
            continue;
        }
        // Apply everything already received (up to a bound), wait once for the log, reply at once.
        loop {
            match item {
                // The common case, run here without a future of its own.
                Ok((id, Ok(Request::Command(cmd)))) => {
                    let (result, position) = ctx.run_pipelined(&caller, cmd);
                    if position == 0 {
                        fence = ctx.read_fence();
                    }
                    batch.push((id, Response::from(result), position));
                }
                Ok((id, request)) => {
                    let was = caller.is_authenticated();
                    respond(ctx, &mut caller, peer, &mut feed, id, request, &mut batch).await;
                    fence = ctx.read_fence();
                    if !was && caller.is_authenticated() {
                        framed.codec_mut().set_max_frame_len(ctx.config.max_frame_len);
                    }
                }
                Err(e) => {
                    send_batch(ctx, &mut framed, &mut batch, std::mem::take(&mut fence)).await?;
                    return fail_stream(&mut framed, e).await.map(|()| End::Done);
                }
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            match framed.next().now_or_never() {
                Some(Some(more)) => item = more,
                Some(None) => {
                    eof = true;
                    break;
                }
                None => break,
            }
        }
        if !batch.is_empty() {
            event_loops::idle_poll::note_work();
            // Let every other connection that is ready run its requests before any of them
            // writes: the first to need the log then writes every record of the round in one
            // `write(2)`, and replies leave together (as RESP's connections do).
            event_loops::after_queued_tasks().await;
        }
        // Deliveries queued meanwhile (e.g. for this batch's own writes) follow its replies.
        feed.drain(&mut batch, MAX_PUSHES);
        send_batch(ctx, &mut framed, &mut batch, std::mem::take(&mut fence)).await?;
        if eof {
            break;
        }
    }
    framed.flush().await?;
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

/// Waits until every write in `batch` may be acknowledged, and what its reads could see (up to
/// `fence`) is durable, then writes all replies and flushes once. If the log failed, the writes
/// are answered with its error instead; reads keep theirs.
async fn send_batch<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Context,
    framed: &mut Framed<S, ServerCodec>,
    batch: &mut Vec<(u32, Response, u64)>,
    fence: u64,
) -> Result<(), FrameError> {
    let position = batch.iter().map(|(_, _, p)| *p).max().unwrap_or(0);
    // The round's other connections have appended their records already (see `connection`), so
    // whoever writes first writes them all: no further yield to share the write.
    let durable = ctx.durable_sharing(position, fence, false).await;
    // Encoded straight into the write buffer (the codec is `Copy`), not fed through the `Sink`
    // one reply at a time: each `feed` polls readiness and checks the boundary for nothing.
    let mut codec = *framed.codec();
    for (id, response, position) in batch.drain(..) {
        let response = match &durable {
            Err(e) if position > 0 => Response::Error(e.clone()),
            _ => response,
        };
        codec.encode((id, response), framed.write_buffer_mut())?;
        if framed.write_buffer().len() >= WRITE_BOUNDARY {
            // Bounds the buffer when a batch's replies are large (as the sink's boundary did).
            framed.flush().await?;
        }
    }
    framed.flush().await
}

/// Applies one request and appends its response, with the log position it must wait for. (In a
/// cluster, commands go through [`clustered`] instead.)
async fn respond(
    ctx: &Context,
    caller: &mut Caller,
    peer: SocketAddr,
    feed: &mut Feed,
    id: u32,
    request: Result<Request, Error>,
    out: &mut Batch,
) {
    match request {
        Ok(Request::Command(cmd)) => {
            let (result, position) = ctx.run_pipelined(caller, cmd);
            out.push((id, Response::from(result), position));
        }
        Ok(Request::Auth { user, password }) => {
            let result = authenticate(ctx, caller, peer, &user, &password.0).map(|()| Reply::Bool(true));
            out.push((id, Response::from(result), 0));
        }
        Ok(Request::Subscription(op)) => match ctx.authorize(caller, Need::of_subscription(&op)) {
            Ok(()) => feed.handle(ctx, id, op, out).await,
            Err(e) => out.push((id, Response::Error(e), 0)),
        },
        Ok(Request::Hello { .. }) => {
            out.push((id, Response::Error(Error::Malformed("HELLO may only be sent once".into())), 0));
        }
        Err(e) => out.push((id, Response::Error(e), 0)),
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

/// Reports a stream-level error to the peer (when it is a protocol error, not I/O) and closes.
async fn fail_stream<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S, ServerCodec>,
    e: FrameError,
) -> Result<(), FrameError> {
    if let Some(err) = e.to_error() {
        // Replies already fed go first; then the reason, with id 0 since the frame had none.
        let _ = tokio::time::timeout(Duration::from_secs(1), framed.send((0, Response::Error(err)))).await;
    }
    Err(e)
}
