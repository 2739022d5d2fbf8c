//! Frontends: one adapter per wire protocol. Each decodes its format into a
//! [`nanodb_protocol::Command`], calls [`crate::engine::Engine::execute`], and encodes the
//! [`nanodb_protocol::Reply`]. Nothing else: rules, limits and types live in the engine and the
//! command model.

pub mod grpc;
pub mod http;
pub mod resp;
mod sniff;
pub mod tcp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nanodb_protocol::{Command, Error, Reply};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engine::Engine;
use crate::persist::AppendLog;
use crate::stats::{Protocol, Stats};

/// What every frontend gets: the engine, the configuration, the shutdown token and the tracker
/// its connection tasks register with so shutdown can wait for them.
#[derive(Debug, Clone)]
pub struct Context {
    /// The shared engine.
    pub engine: Arc<Engine>,
    /// The server's configuration.
    pub config: Arc<Config>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Connection tasks; the server waits for it to drain at shutdown.
    pub tasks: TaskTracker,
    /// Server-wide counters every frontend records into.
    pub stats: Arc<Stats>,
    /// The append-only log when persistence is on: replies to writes wait on it.
    pub log: Option<Arc<AppendLog>>,
}

impl Context {
    /// Runs one command for a request-at-a-time protocol: applies it, records it, and returns once
    /// its effect may be acknowledged under the fsync policy. A write whose log record cannot be
    /// made durable is answered with the log's error, never with success.
    pub async fn execute(&self, protocol: Protocol, cmd: Command) -> Result<Reply, Error> {
        let (result, position) = self.apply(protocol, cmd);
        self.durable(position).await?;
        result
    }

    /// Applies and records one command without waiting for durability; returns the log position to
    /// wait for (with [`Context::durable`]) before acknowledging it. Pipelining frontends apply a
    /// whole batch, then wait once for the largest position.
    pub fn apply(&self, protocol: Protocol, cmd: Command) -> (Result<Reply, Error>, u64) {
        let started = Instant::now();
        let op = cmd.name();
        let (result, position) = self.engine.execute_tracked(cmd);
        self.stats.record(protocol, op, result.is_ok(), started.elapsed());
        (result, position)
    }

    /// Waits until everything up to `position` may be acknowledged (no-op without persistence).
    /// Under `no` and `everysec`, a record not yet written first lets the other tasks on this
    /// worker append theirs, so one `write(2)` covers them all.
    pub async fn durable(&self, position: u64) -> Result<(), Error> {
        self.durable_sharing(position, true).await
    }

    /// [`Context::durable`], saying whether an unwritten record waits to share its `write(2)`
    /// (`share`) or is written at once: see [`AppendLog::wait_durable_batched`] for when each
    /// pays.
    pub async fn durable_sharing(&self, position: u64, share: bool) -> Result<(), Error> {
        match &self.log {
            Some(log) if position > 0 => log.wait_durable_batched(position, share).await,
            _ => Ok(()),
        }
    }
}

/// Accepts connections on `listener` until shutdown, for the frontends that own their sockets (the
/// binary TCP protocol and RESP): each connection runs `serve` in its own tracked task while it
/// holds one of `max_connections` slots; a connection beyond the limit runs `refuse` (which tells
/// the client why, in its protocol) instead. A failing accept (out of file descriptors) backs off
/// briefly instead of spinning. With `on`, connections run on the runtime it picks for each
/// (RESP's event loops) instead of the server's, tracked by its tracker, which the caller waits
/// for.
pub async fn accept_loop<S, SF, R, RF>(
    listener: TcpListener,
    ctx: Context,
    name: &'static str,
    serve: S,
    refuse: R,
    on: Option<(&TaskTracker, &(dyn Fn() -> tokio::runtime::Handle + Sync))>,
) where
    S: Fn(TcpStream, SocketAddr) -> SF,
    SF: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream) -> RF,
    RF: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(ctx.config.max_connections));
    loop {
        let accepted = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "{name}: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let connection = serve(stream, peer);
                let task = async move {
                    connection.await;
                    drop(permit);
                };
                match on {
                    Some((tracker, runtime)) => tracker.spawn_on(task, &runtime()),
                    None => ctx.tasks.spawn(task),
                };
            }
            Err(_) => {
                tracing::warn!(%peer, max = ctx.config.max_connections, "{name}: connection refused, at max_connections");
                ctx.tasks.spawn(refuse(stream));
            }
        }
    }
    tracing::debug!("{name}: listener stopped");
}
