//! Frontends: one adapter per wire protocol. Each decodes its format into a
//! [`nanodb_protocol::Command`], calls [`crate::engine::Engine::execute`], and encodes the
//! [`nanodb_protocol::Reply`]. Nothing else: rules, limits and types live in the engine and the
//! command model.

pub mod grpc;
pub mod tcp;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engine::Engine;
use crate::stats::Stats;

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
}
