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
//!
//! Connections run on RESP's event loops (`--resp-threads`, see [`super::event_loops`]).
//! Connections over `max_connections` get `-ERR max number of clients reached` and are closed.
//! With `--tls-cert`, connections run over TLS (handshake in the connection's task, on its event
//! loop); `--idle-timeout` closes a connection idle in request-reply mode, never a subscriber.

pub mod commands;
pub mod connection;
pub mod encode;
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
use tracing::debug;

use super::Context;
use super::event_loops::EventLoops;
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
    let loops = match EventLoops::start("resp", ctx.config.resp_threads, ctx.config.resp_idle_poll) {
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
        async move {
            let result = match tls {
                None => connection::run(stream, peer, &ctx, &clients).await,
                Some(tls) => {
                    let acceptor = tls.acceptor(Alpn::None);
                    match crate::tls::accept(acceptor, stream, peer, &ctx, "Redis (RESP) port").await {
                        Some(stream) => connection::run(stream, peer, &ctx, &clients).await,
                        None => return,
                    }
                }
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
    let refuse_ctx = ctx.clone();
    let refuse = move |stream| refuse(stream, refuse_ctx.clone(), tls.clone());
    // `--resp-threads 0`: connections run on the server's runtime, tracked by `ctx.tasks`.
    super::accept_loop(listener, ctx, "resp", serve_one, refuse, loops.active()).await;
    loops.stop().await;
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
