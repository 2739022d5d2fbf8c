//! One RESP connection: read what the socket has, run every command it completes, answer them
//! all with one write. A protocol error is answered with `-ERR Protocol error: ...` and closes the
//! connection (the stream cannot be resynchronised), as in Redis; command errors do not.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::commands::{self, Flow, Session};
use super::parse::RespDecoder;
use super::{Clients, encode};
use crate::frontend::Context;
use crate::stats::Protocol;

/// Initial read and write buffer capacity.
const BUFFER: usize = 16 * 1024;
/// Pending replies above which they are written before more commands run, so a client that
/// pipelines without reading cannot grow the buffer without bound.
const WRITE_BOUNDARY: usize = 64 * 1024;
/// A reply buffer grown past this (a large KEYS or LRANGE) is given back after the write.
const KEEP_WRITE_CAPACITY: usize = 1024 * 1024;

/// Serves one connection until the client leaves, QUITs, breaks the protocol, or shutdown.
pub async fn run(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    clients: &Clients,
) -> std::io::Result<()> {
    let _open = ctx.stats.connection(Protocol::Resp);
    let id = clients.add(peer);
    let result = serve(&mut stream, peer, ctx, clients, id).await;
    clients.remove(id);
    result
}

/// Waits until every write behind the buffered replies may be acknowledged. `false` when the log
/// failed: the replies must not be sent (they would acknowledge writes that are not durable), so
/// the connection is closed and the client sees its requests as not acknowledged.
async fn durable(ctx: &Context, session: &mut Session<'_>, peer: SocketAddr) -> bool {
    let position = std::mem::take(&mut session.log_position);
    match ctx.durable(position).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "resp: closing: buffered replies include writes the log could not make durable");
            false
        }
    }
}

async fn serve(
    stream: &mut TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    clients: &Clients,
    id: u64,
) -> std::io::Result<()> {
    let mut decoder = RespDecoder::new(ctx.config.resp_max_bulk_len, ctx.config.resp_max_args);
    let mut rbuf = BytesMut::with_capacity(BUFFER);
    let mut wbuf = BytesMut::with_capacity(BUFFER);
    let mut session = Session::new(id, peer, clients);
    let mut args = Vec::new();
    // A child token, awaited through one pinned future for the connection's life: polling it per
    // read touches only this connection's waiter, not the server-wide token's shared lock.
    let token = ctx.shutdown.child_token();
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    loop {
        if rbuf.capacity() - rbuf.len() < BUFFER / 4 {
            rbuf.reserve(BUFFER);
        }
        let n = tokio::select! {
            biased;
            () = &mut cancelled => return Ok(()),
            n = stream.read_buf(&mut rbuf) => n?,
        };
        if n == 0 {
            return Ok(());
        }
        loop {
            match decoder.decode_into(&mut rbuf, &mut args) {
                Ok(true) => {
                    if commands::execute(ctx, &mut session, &args, &mut wbuf) == Flow::Close {
                        if durable(ctx, &mut session, peer).await {
                            stream.write_all(&wbuf).await?;
                        }
                        return Ok(());
                    }
                    if wbuf.len() > WRITE_BOUNDARY {
                        if !durable(ctx, &mut session, peer).await {
                            return Ok(());
                        }
                        stream.write_all(&wbuf).await?;
                        wbuf.clear();
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    debug!(%peer, error = %e, "resp: protocol error; closing");
                    encode::error(&mut wbuf, &format!("ERR {e}"));
                    if durable(ctx, &mut session, peer).await {
                        stream.write_all(&wbuf).await?;
                    }
                    return Ok(());
                }
            }
        }
        if !wbuf.is_empty() {
            if !durable(ctx, &mut session, peer).await {
                return Ok(());
            }
            stream.write_all(&wbuf).await?;
            wbuf.clear();
            if wbuf.capacity() > KEEP_WRITE_CAPACITY {
                wbuf = BytesMut::with_capacity(BUFFER);
            }
        }
    }
}
