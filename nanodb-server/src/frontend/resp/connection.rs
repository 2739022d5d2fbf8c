//! One RESP connection: read what the socket has, run every command it completes, answer them
//! all with one write. A protocol error is answered with `-ERR Protocol error: ...` and closes the
//! connection (the stream cannot be resynchronised), as in Redis; command errors do not.
//!
//! A `Connection` runs in one of two modes, and changes mode when a command enters or leaves
//! Redis's subscribed mode (the session holds a change-feed subscriber):
//!
//! - `run_plain`, request and reply: read, run every command the read completed, yield in turn so
//!   the loop's other ready connections run theirs, wait for durability once, write every reply
//!   with one `write`.
//! - `run_subscribed` also pushes what the feed delivers: it waits on socket reads, socket writes
//!   and the subscriber's queue at once, encodes a batch of waiting deliveries per wake-up, and
//!   writes replies and pushes from one buffer in the order they were produced (deliveries
//!   waiting when a command runs are encoded before its reply). A subscriber that falls behind
//!   (its queue lagged, or more than `--watch-queue-bytes` of output waiting for a client that
//!   does not read) is disconnected, as Redis disconnects a pub/sub client over its output buffer
//!   limit.
//!
//! Both run commands through `round`, so replies wait for durability the same way in either mode.
//! In a cluster, a round holds its consecutive plain writes and sends them to the cluster
//! together before their replies are written (see `commands::clustered`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::{debug, warn};

use super::commands::pubsub::{Lagged, drain, push};
use super::commands::{self, Flow, Session, clustered};
use super::parse::RespDecoder;
use super::{Clients, encode};
use crate::frontend::Context;
use crate::frontend::sniff::{self, Foreign};
use crate::stats::Protocol;
use crate::tls::Socket;

/// Initial read and write buffer capacity.
const BUFFER: usize = 16 * 1024;
/// Pending replies above which they are written before more commands run, so a client that
/// pipelines without reading cannot grow the buffer without bound.
const WRITE_BOUNDARY: usize = 64 * 1024;
/// A reply buffer grown past this (a large KEYS or LRANGE) is given back after the write.
const KEEP_WRITE_CAPACITY: usize = 1024 * 1024;
/// Most deliveries encoded per wake-up in subscribed mode, so reads and writes get their turn.
const PUSH_BATCH: usize = 1024;

/// How a connection ended, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client left or QUIT, broke the protocol, or the server shut down.
    Done,
    /// Another protocol's client, answered in its protocol where possible.
    Foreign(Foreign),
}

/// Serves one connection until the client leaves, QUITs, breaks the protocol, or shutdown.
pub async fn run<S: Socket>(
    mut stream: S,
    peer: SocketAddr,
    ctx: &Context,
    clients: &Clients,
) -> io::Result<End> {
    let _open = ctx.stats.connection(Protocol::Resp);
    let id = clients.add(peer);
    // The connection's state (its subscriber included) goes first, then its CLIENT LIST entry,
    // then the socket: a client that saw the socket close no longer finds it listed.
    let result = Connection::new(
        &mut stream,
        peer,
        ctx,
        Session::new(id, peer, clients, ctx.auth.new_caller(Protocol::Resp)),
    )
    .serve()
    .await;
    clients.remove(id);
    result
}

/// How this connection's part of a round (running the commands its read completed) ended. Not
/// `Batch`: that is a command of the model (`nanodb_protocol::cmd::Batch`), which RESP does not
/// serve (it batches by pipelining).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoundEnd {
    /// Every whole command ran; the rest of the buffer (if any) is incomplete.
    Ran,
    /// The reply buffer passed its boundary: write, then run the rest.
    Full,
    /// Write what is pending and close (QUIT or a protocol error).
    Close,
    /// The subscriber lagged: close.
    Lagged(u64),
}

/// What woke a subscribed connection.
enum Wake {
    Wrote(usize),
    Delivery(crate::feed::Delivery),
    Read(usize),
}

fn lagged(peer: SocketAddr, dropped: u64) {
    warn!(%peer, dropped, "resp: closing a subscriber that fell behind; deliveries were dropped");
}

/// One connection's state, shared by its two modes. A mode's loop returns `Ok(None)` when a
/// command moved the connection to the other mode, `Ok(Some(end))` when the connection is over.
struct Connection<'a, S> {
    stream: &'a mut S,
    peer: SocketAddr,
    ctx: &'a Context,
    session: Session<'a>,
    decoder: RespDecoder,
    /// Bytes read whose commands have not run.
    rbuf: BytesMut,
    /// Replies (and, subscribed, pushes) not yet written.
    wbuf: BytesMut,
    /// How much of `wbuf` is written: subscribed mode writes it piecewise while it keeps filling.
    written: usize,
    /// Whether `rbuf` may hold whole commands that have not run.
    fresh: bool,
    /// Where what the round's reads could see ends (`Context::read_fence`; 0: nothing read).
    read_fence: u64,
    /// The command being run, reused from one command to the next.
    args: Vec<Bytes>,
    /// Shutdown, as a child token awaited through one pinned future for the connection's life:
    /// polling it per read touches only this connection's waiter, not the server-wide token's
    /// shared lock.
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<'a, S: Socket> Connection<'a, S> {
    fn new(stream: &'a mut S, peer: SocketAddr, ctx: &'a Context, session: Session<'a>) -> Self {
        let mut decoder = RespDecoder::new(ctx.config.resp_max_bulk_len, ctx.config.resp_max_args);
        decoder.unauthenticated(!session.caller.is_authenticated());
        Self {
            stream,
            peer,
            ctx,
            session,
            decoder,
            rbuf: BytesMut::with_capacity(BUFFER),
            wbuf: BytesMut::with_capacity(BUFFER),
            written: 0,
            fresh: false,
            read_fence: 0,
            args: Vec::new(),
            cancelled: Box::pin(ctx.shutdown.child_token().cancelled_owned()),
        }
    }

    /// Serves the connection in whichever mode its commands put it in.
    async fn serve(&mut self) -> io::Result<End> {
        if let Some(end) = self.first_read().await? {
            return Ok(end);
        }
        loop {
            if let Some(end) = self.run_plain().await? {
                return Ok(end);
            }
            if let Some(end) = self.run_subscribed().await? {
                return Ok(end);
            }
        }
    }

    /// Reads the connection's first bytes and tells another protocol's client where to go. Only
    /// the first read is checked: subscribed mode comes only after a command.
    async fn first_read(&mut self) -> io::Result<Option<End>> {
        if !self.read().await? {
            return Ok(Some(End::Done));
        }
        if let Some(foreign) = sniff::identify(&self.rbuf).filter(|f| *f != Foreign::Resp) {
            answer_foreign(self.stream, self.ctx, foreign).await;
            return Ok(Some(End::Foreign(foreign)));
        }
        Ok(None)
    }

    /// Request and reply. Each turn writes what the last round left with one `write`, reads
    /// unless whole commands are still waiting (a round that stopped at the write boundary), and
    /// runs a round.
    async fn run_plain(&mut self) -> io::Result<Option<End>> {
        loop {
            if self.written < self.wbuf.len() {
                self.stream.write_all(&self.wbuf[self.written..]).await?;
            }
            reset(&mut self.wbuf, &mut self.written);
            if !self.fresh && !self.read().await? {
                return Ok(Some(End::Done));
            }
            if let Some(end) = self.round().await? {
                return Ok(Some(end));
            }
            if self.session.sub.is_some() {
                return Ok(None);
            }
        }
    }

    /// Subscribed mode: waits on reads, partial writes and the subscriber's queue together, and
    /// runs a round once a read brought commands and the pending output is under the boundary.
    async fn run_subscribed(&mut self) -> io::Result<Option<End>> {
        // Output a subscriber may leave unread before it is disconnected.
        let out_limit = self.ctx.config.feed.queue_bytes.max(WRITE_BOUNDARY);
        loop {
            let Some(sub) = self.session.sub.as_ref() else {
                return Ok(None);
            };
            let pending = self.wbuf.len() - self.written;
            if pending > out_limit {
                warn!(peer = %self.peer, pending, limit = out_limit, "resp: closing a subscriber that does not read its messages");
                return Ok(Some(End::Done));
            }
            let reading = !self.fresh && pending <= WRITE_BOUNDARY;
            if reading {
                reserve_read(&mut self.rbuf);
            }
            let (mut rd, mut wr) = self.stream.halves();
            let wake = tokio::select! {
                biased;
                () = &mut self.cancelled => return Ok(Some(End::Done)),
                n = wr.write(&self.wbuf[self.written..]), if pending > 0 => Wake::Wrote(n?),
                d = sub.recv() => Wake::Delivery(d),
                n = rd.read_buf(&mut self.rbuf), if reading => Wake::Read(n?),
            };
            // The halves borrow the stream; a TLS stream's hold a lock's handles.
            drop((rd, wr));
            match wake {
                Wake::Wrote(0) => return Ok(Some(End::Done)),
                Wake::Read(0) => {
                    // The client is done sending; what it is owed still goes out (unless it
                    // stopped reading too, which shutdown or its closing ends).
                    self.write_rest().await?;
                    return Ok(Some(End::Done));
                }
                Wake::Wrote(n) => {
                    self.written += n;
                    if self.written == self.wbuf.len() {
                        reset(&mut self.wbuf, &mut self.written);
                    } else {
                        compact(&mut self.wbuf, &mut self.written);
                    }
                }
                Wake::Delivery(d) => {
                    if let Err(Lagged(dropped)) =
                        push(&mut self.wbuf, &d).and_then(|()| drain(sub, &mut self.wbuf, PUSH_BATCH))
                    {
                        lagged(self.peer, dropped);
                        return Ok(Some(End::Done));
                    }
                }
                Wake::Read(_) => self.fresh = true,
            }
            if self.fresh
                && self.wbuf.len() - self.written <= WRITE_BOUNDARY
                && let Some(end) = self.round().await?
            {
                return Ok(Some(end));
            }
        }
    }

    /// Waits for the client's next bytes; `false` when it left, the server is shutting down, or
    /// it sent nothing for `--idle-timeout`.
    async fn read(&mut self) -> io::Result<bool> {
        reserve_read(&mut self.rbuf);
        let n = match self.ctx.config.idle_timeout {
            None => tokio::select! {
                biased;
                () = &mut self.cancelled => return Ok(false),
                n = self.stream.read_buf(&mut self.rbuf) => n?,
            },
            // Redis's `timeout`: only request-reply mode reads here; subscribers are never idle.
            Some(idle) => tokio::select! {
                biased;
                () = &mut self.cancelled => return Ok(false),
                n = tokio::time::timeout(idle, self.stream.read_buf(&mut self.rbuf)) => match n {
                    Ok(n) => n?,
                    Err(_) => {
                        debug!(peer = %self.peer, ?idle, "resp: idle connection closed (--idle-timeout)");
                        return Ok(false);
                    }
                },
            },
        };
        self.fresh = n > 0;
        Ok(n > 0)
    }

    /// This connection's part of the loop's round: runs the commands `rbuf` completes (until the
    /// output passes the boundary), lets every other ready connection run theirs, and waits until
    /// the replies may be acknowledged; the caller writes them. `Some` when the connection ends
    /// here (QUIT and a protocol error after writing what is owed).
    async fn round(&mut self) -> io::Result<Option<End>> {
        let (end, ran) = self.run_commands(self.written + WRITE_BOUNDARY);
        self.fresh = end == RoundEnd::Full;
        if let RoundEnd::Lagged(dropped) = end {
            lagged(self.peer, dropped);
            return Ok(Some(End::Done));
        }
        if ran > 0 {
            crate::frontend::event_loops::idle_poll::note_work();
            // Let every other connection that is ready run its commands before any of them
            // writes: then the first to need the log writes every record of the round in one
            // `write(2)`, and replies leave together (Redis's event loop does the same).
            crate::frontend::event_loops::after_queued_tasks().await;
        }
        if !self.durable().await {
            return Ok(Some(End::Done));
        }
        if end == RoundEnd::Close {
            self.write_rest().await?;
            return Ok(Some(End::Done));
        }
        Ok(None)
    }

    /// Runs every whole command in `rbuf`, stopping once `wbuf` is longer than `limit`; how that
    /// ended and how many ran. In subscribed mode, deliveries already waiting are encoded before
    /// each reply, so a message published before a command ran reaches the client before that
    /// command's reply.
    ///
    /// In a cluster, consecutive plain writes are held and settled together (see
    /// `commands::clustered`); whatever is held is settled, and its replies written, before this
    /// returns.
    fn run_commands(&mut self, limit: usize) -> (RoundEnd, usize) {
        let clustered = self.ctx.cluster.is_some();
        if clustered {
            clustered::begin(&mut self.session);
        }
        let mut ran = 0;
        loop {
            match self.decoder.decode_into(&mut self.rbuf, &mut self.args) {
                Ok(true) => {
                    ran += 1;
                    if let Some(sub) = &self.session.sub
                        && let Err(Lagged(dropped)) = drain(sub, &mut self.wbuf, usize::MAX)
                    {
                        return (RoundEnd::Lagged(dropped), ran);
                    }
                    let flow = if clustered {
                        clustered::execute_clustered(self.ctx, &mut self.session, &self.args, &mut self.wbuf)
                    } else {
                        let wrote = self.session.log_position;
                        let flow = commands::execute(self.ctx, &mut self.session, &self.args, &mut self.wbuf);
                        if self.session.log_position == wrote {
                            // It wrote nothing: its reply may show others' writes (see
                            // `Context::read_fence`).
                            self.read_fence = self.ctx.read_fence();
                        }
                        flow
                    };
                    if flow == Flow::Close {
                        return (RoundEnd::Close, ran);
                    }
                    // AUTH, HELLO AUTH and RESET change what the next command may be.
                    let anonymous = !self.session.caller.is_authenticated();
                    if anonymous != self.decoder.is_unauthenticated() {
                        self.decoder.unauthenticated(anonymous);
                    }
                    if self.wbuf.len() > limit {
                        self.settle_held(clustered);
                        return (RoundEnd::Full, ran);
                    }
                }
                Ok(false) => {
                    self.settle_held(clustered);
                    return (RoundEnd::Ran, ran);
                }
                Err(e) => {
                    self.settle_held(clustered);
                    debug!(peer = %self.peer, error = %e, "resp: protocol error; closing");
                    encode::error(&mut self.wbuf, &format!("ERR {e}"));
                    return (RoundEnd::Close, ran);
                }
            }
        }
    }

    /// In a cluster, settles the writes held in this round and writes their replies.
    fn settle_held(&mut self, clustered: bool) {
        if clustered {
            clustered::settle(self.ctx, &mut self.session, &mut self.wbuf);
        }
    }

    /// Waits until every write behind the buffered replies may be acknowledged. The connection
    /// has already let the round's other connections append their records (it yields before
    /// this), so the first to find its record unwritten writes them all at once; sharing again
    /// would only wait a second round. `false` when the log failed: the replies must not be sent
    /// (they would acknowledge writes that are not durable), so the connection is closed and the
    /// client sees its requests as not acknowledged.
    async fn durable(&mut self) -> bool {
        let position = std::mem::take(&mut self.session.log_position);
        let fence = std::mem::take(&mut self.read_fence);
        match self.ctx.durable_sharing(position, fence, false).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "resp: closing: buffered replies include writes the log could not make durable");
                false
            }
        }
    }

    /// Writes what the client is still owed before the connection closes, unless shutdown comes
    /// first (a client that stopped reading must not hold the drain up).
    async fn write_rest(&mut self) -> io::Result<()> {
        tokio::select! {
            biased;
            () = &mut self.cancelled => {}
            r = self.stream.write_all(&self.wbuf[self.written..]) => r?,
        }
        Ok(())
    }
}

/// Tells another protocol's client, in its protocol, that this is the RESP port and where its
/// protocol is served: an HTTP 400 or an HTTP/2 GOAWAY saying so, an error frame for a NanoDB
/// binary-protocol client. A TLS client is just closed (it could only be sent an alert).
async fn answer_foreign<S: Socket>(stream: &mut S, ctx: &Context, foreign: Foreign) {
    let text = sniff::redirect(&ctx.config, "Redis (RESP) port", foreign);
    let answer = match foreign {
        Foreign::Http1 => sniff::http1_response(&text),
        Foreign::Http2 => sniff::http2_goaway(&text),
        Foreign::NanoTcp => sniff::tcp_error_frame(text),
        Foreign::Tls | Foreign::Resp => Vec::new(), // Resp: ours, never passed here
    };
    sniff::answer_and_close(stream, &answer).await;
}

/// Keeps room in the read buffer for a read.
fn reserve_read(rbuf: &mut BytesMut) {
    if rbuf.capacity() - rbuf.len() < BUFFER / 4 {
        rbuf.reserve(BUFFER);
    }
}

/// Drops the written front of a buffer that keeps filling (a subscriber never quite caught up)
/// once it is most of the buffer, so the buffer is bounded by what is pending, not by everything
/// ever pushed. Each byte is moved at most about once.
fn compact(wbuf: &mut BytesMut, written: &mut usize) {
    if *written >= BUFFER && *written * 2 >= wbuf.len() {
        let pending = wbuf.len() - *written;
        wbuf.copy_within(*written.., 0);
        wbuf.truncate(pending);
        *written = 0;
    }
}

/// Empties the write buffer after everything in it was written, giving back a grown one.
fn reset(wbuf: &mut BytesMut, written: &mut usize) {
    wbuf.clear();
    *written = 0;
    if wbuf.capacity() > KEEP_WRITE_CAPACITY {
        *wbuf = BytesMut::with_capacity(BUFFER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacting_keeps_the_pending_bytes_and_bounds_the_buffer() {
        let mut wbuf = BytesMut::new();
        for round in 0..1000u32 {
            wbuf.extend_from_slice(&[(round % 251) as u8; 1000]);
            // The socket takes all but the last 10 bytes each time.
            let mut written = wbuf.len() - 10;
            compact(&mut wbuf, &mut written);
            assert_eq!(&wbuf[written..], &[(round % 251) as u8; 10][..]);
        }
        assert!(wbuf.len() <= 2 * BUFFER, "{} bytes kept", wbuf.len());
        // Below the threshold nothing moves.
        let (mut small, mut w) = (BytesMut::from(&b"abcdef"[..]), 3);
        compact(&mut small, &mut w);
        assert_eq!((&small[..], w), (&b"abcdef"[..], 3));
    }
}
