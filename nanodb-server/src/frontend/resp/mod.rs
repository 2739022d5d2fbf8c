//! The Redis protocol (RESP2) frontend: a drop-in for Redis clients, GUIs and tools over the same
//! engine as every other protocol.
//!
//! - [`parse`]: the request decoder (arrays of bulk strings and inline commands), bounded by
//!   `--resp-max-bulk-len` and `--resp-max-args` before anything is allocated.
//! - [`encode`]: reply encoding into one buffer per read batch.
//! - [`commands`]: the command table and one module per family; each command translates into
//!   [`nanodb_protocol::Command`]s and encodes the replies in Redis's shapes.
//! - [`connection`]: one connection in its two modes: plain (read, run everything decodable, one
//!   write) and subscribed (replies and feed pushes in one ordered buffer).
//! - [`idle_poll`]: adaptive busy polling of each event loop between requests.
//!
//! Connections over `max_connections` get `-ERR max number of clients reached` and are closed.
//! With `--tls-cert`, connections run over TLS (handshake in the connection's task, on its event
//! loop); `--idle-timeout` closes a connection idle in request-reply mode, never a subscriber.

pub mod commands;
pub mod connection;
pub mod encode;
pub mod idle_poll;
pub mod parse;
mod reach;

pub use reach::reach;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::Context;
use crate::tls::{Alpn, Tls};

/// What `CLIENT LIST` shows about a connection.
#[derive(Debug, Clone)]
pub struct ClientEntry {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The name set by `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// When the connection was accepted.
    pub since: Instant,
    /// Channels subscribed to.
    pub sub: usize,
    /// Patterns subscribed to.
    pub psub: usize,
}

/// The open RESP connections, for `CLIENT LIST` and `INFO clients`; touched on connect,
/// disconnect, `CLIENT SETNAME` and (un)subscribing only, never per data command.
#[derive(Debug, Default)]
pub struct Clients {
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, ClientEntry>>,
}

impl Clients {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ClientEntry>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection; its id.
    pub fn add(&self, addr: SocketAddr) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(id, ClientEntry { addr, name: None, since: Instant::now(), sub: 0, psub: 0 });
        id
    }

    /// Forgets a connection.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Records a connection's name.
    pub fn set_name(&self, id: u64, name: Option<Bytes>) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.name = name;
        }
    }

    /// Records how many channels and patterns a connection holds.
    pub fn set_subscriptions(&self, id: u64, sub: usize, psub: usize) {
        if let Some(e) = self.lock().get_mut(&id) {
            (e.sub, e.psub) = (sub, psub);
        }
    }

    /// Every open connection, by id.
    pub fn snapshot(&self) -> Vec<(u64, ClientEntry)> {
        self.lock().iter().map(|(id, e)| (*id, e.clone())).collect()
    }
}

/// Accepts connections until shutdown.
/// With `tls`, each connection's handshake runs in its own task on its event loop, and the
/// connection is served over the TLS stream (the same code, monomorphised: the plaintext path
/// pays nothing for it).
pub async fn serve(listener: TcpListener, ctx: Context, tls: Option<Arc<Tls>>) {
    let loops = match EventLoops::start(ctx.config.resp_threads, ctx.config.resp_idle_poll) {
        Ok(loops) => loops,
        Err(e) => {
            tracing::error!(error = %e, "resp: cannot start the event loop; RESP is off");
            return;
        }
    };
    let clients = Arc::new(Clients::default());
    let conn_ctx = ctx.clone();
    let tls_serve = tls.clone();
    let serve_one = move |stream: TcpStream, peer| {
        let (ctx, clients, tls) = (conn_ctx.clone(), clients.clone(), tls_serve.clone());
        // Registered with the server runtime's reactor by accept; moved to the event loop's
        // reactor when the connection first runs there (with no loops, back to the same one).
        let stream = stream.into_std();
        async move {
            let result = match (stream.and_then(TcpStream::from_std), tls) {
                (Ok(stream), None) => connection::run(stream, peer, &ctx, &clients).await,
                (Ok(stream), Some(tls)) => {
                    let acceptor = tls.acceptor(Alpn::None);
                    match crate::tls::accept(acceptor, stream, peer, &ctx, "Redis (RESP) port").await {
                        Some(stream) => connection::run(stream, peer, &ctx, &clients).await,
                        None => return,
                    }
                }
                (Err(e), _) => Err(e),
            };
            // One line per connection, at debug level: a client pointed at the wrong port may
            // open thousands of connections, and a reset by the peer is no news.
            match result {
                Ok(connection::End::Done) => debug!(%peer, "resp: connection closed"),
                Ok(connection::End::Foreign(protocol)) => {
                    debug!(%peer, %protocol, "resp: not RESP; told the client where to go and closed")
                }
                Err(e) => debug!(%peer, error = %e, "resp: connection closed on a socket error"),
            }
        }
    };
    let connections = TaskTracker::new();
    let next = || loops.next();
    // `--resp-threads 0`: connections run on the server's runtime, tracked by `ctx.tasks`.
    let on = (!loops.runtimes.is_empty()).then_some((&connections, &next as &(dyn Fn() -> _ + Sync)));
    let refuse_ctx = ctx.clone();
    let refuse = move |stream| refuse(stream, refuse_ctx.clone(), tls.clone());
    super::accept_loop(listener, ctx, "resp", serve_one, refuse, on).await;
    // The loops must outlive their connections, which drain after the listener stops.
    connections.close();
    connections.wait().await;
    loops.stop();
}

/// RESP's event loops: single-threaded runtimes of their own, each serving its share of the
/// connections, as Redis serves every client from one event loop.
///
/// Why not the server's multi-threaded runtime: with one request in flight per connection
/// (redis-benchmark `-P 1`), its workers wake each other to steal every few requests, and
/// replies leave a few at a time, so the client wakes up for every few replies. One loop runs
/// every connection that is ready, lets each finish its batch (yielding once before it writes:
/// see `connection.rs`), so that log records are written once per round and replies leave
/// together, as Redis does in its `beforeSleep`. Each loop polls for a moment before it sleeps
/// (see [`idle_poll`]).
struct EventLoops {
    runtimes: Vec<tokio::runtime::Runtime>,
    next: AtomicU64,
}

impl EventLoops {
    /// `n` loops, each polling for at most `idle_poll` after its latest batch (0: never).
    fn start(n: usize, idle_poll: Duration) -> std::io::Result<Self> {
        let runtimes = (0..n)
            .map(|i| {
                // Sockets and timers only: no signal driver, whose orphan-process check would
                // run on every turn of the loop.
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("nanodb-resp-{i}"))
                    .enable_io()
                    .enable_time()
                    .build()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        if !idle_poll.is_zero() {
            for rt in &runtimes {
                rt.spawn(idle_poll::run(idle_poll));
            }
        }
        Ok(Self { runtimes, next: AtomicU64::new(0) })
    }

    /// The loop the next connection goes to (round robin).
    fn next(&self) -> tokio::runtime::Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.runtimes.len();
        self.runtimes[i].handle().clone()
    }

    /// Ends the loops once their connections are done.
    fn stop(self) {
        drop(self);
    }
}

/// Dropping a runtime blocks until its blocking pool is done, which panics when the drop happens
/// inside a runtime: so do not. Besides [`EventLoops::stop`], the loops are dropped here when the
/// server's runtime shuts down while `serve` still runs (no [`crate::server::Server::shutdown`],
/// as in a test that panicked, or one whose grace period ran out): the runtime drops `serve` on
/// one of its own threads.
impl Drop for EventLoops {
    fn drop(&mut self) {
        for rt in self.runtimes.drain(..) {
            rt.shutdown_background();
        }
    }
}

/// Tells a client over the connection limit why it is closed, as Redis does (over TLS after the
/// handshake, on a TLS port).
async fn refuse(mut stream: TcpStream, ctx: Context, tls: Option<Arc<Tls>>) {
    const TOO_MANY: &[u8] = b"-ERR max number of clients reached\r\n";
    let peer = stream.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    match tls {
        None => {
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(TOO_MANY)).await;
        }
        Some(tls) => {
            let acceptor = tls.acceptor(Alpn::None);
            if let Some(mut stream) =
                crate::tls::accept(acceptor, stream, peer, &ctx, "Redis (RESP) port").await
            {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(TOO_MANY)).await;
            }
        }
    }
}
