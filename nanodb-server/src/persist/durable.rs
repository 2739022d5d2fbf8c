//! What a frontend waits on before it acknowledges: the append-only log, or (`--storage rocksdb`)
//! the RocksDB store. Both give every applied write a position and keep the same rule (a write's
//! reply waits for its own position, a read's for everything appended before it ran); an enum
//! rather than a trait object, so the request path pays no allocation for an async call.

use std::sync::Arc;
use std::time::Duration;

use nanodb_protocol::Error;

use super::{AppendLog, FsyncPolicy};

/// The durable store behind the engine's effect log.
#[derive(Debug, Clone)]
pub enum Durable {
    /// The append-only log and snapshots (`persist`).
    Log(Arc<AppendLog>),
    /// RocksDB (`rocks`).
    #[cfg(feature = "rocksdb")]
    Rocks(Arc<crate::rocks::RocksStore>),
}

impl Durable {
    /// Where the appended effects end now: a read's fence ([`AppendLog::appended`]).
    pub fn appended(&self) -> u64 {
        match self {
            Self::Log(log) => log.appended(),
            #[cfg(feature = "rocksdb")]
            Self::Rocks(store) => store.appended(),
        }
    }

    /// Waits until a reply may leave ([`AppendLog::wait_visible`]).
    pub async fn wait_visible(&self, position: u64, fence: u64, share: bool) -> Result<(), Error> {
        match self {
            Self::Log(log) => log.wait_visible(position, fence, share).await,
            #[cfg(feature = "rocksdb")]
            Self::Rocks(store) => store.wait_visible(position, fence).await,
        }
    }

    /// The fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        match self {
            Self::Log(log) => log.policy(),
            #[cfg(feature = "rocksdb")]
            Self::Rocks(store) => store.policy(),
        }
    }

    /// Bytes of log since the last snapshot (0 for RocksDB, which compacts on its own).
    pub fn growth(&self) -> u64 {
        match self {
            Self::Log(log) => log.growth(),
            #[cfg(feature = "rocksdb")]
            Self::Rocks(_) => 0,
        }
    }

    /// Time since the last fsync, if any since start.
    pub fn since_last_fsync(&self) -> Option<Duration> {
        match self {
            Self::Log(log) => log.since_last_fsync(),
            #[cfg(feature = "rocksdb")]
            Self::Rocks(store) => store.since_last_fsync(),
        }
    }
}
