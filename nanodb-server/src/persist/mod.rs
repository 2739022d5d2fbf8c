//! Durability: the append-only log of effects, snapshots, and recovery. Only this module knows the
//! disk format.
//!
//! Data directory layout (a naming scheme, so a crash at any step leaves a recoverable set):
//! `snapshot-<K>.snap` is the state as of some moment during segment K; `log-<N>.aof` are log
//! segments. The state is the newest snapshot plus every segment numbered K or later. A snapshot
//! rotates the log to a new segment K, writes `snapshot-K.snap.tmp`, fsyncs, renames, fsyncs the
//! directory, and only then deletes older segments and snapshots. `LOCK` ([`lock`]) keeps a second
//! server off a directory in use.

pub mod durable;
pub mod lock;
pub mod log;
pub mod record;
pub mod recovery;
pub mod snapshot;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use durable::Durable;
pub use lock::{DirLock, LockError};
pub use log::AppendLog;
pub use recovery::Recovered;

use crate::engine::Engine;

/// When a write is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After its record is fsynced (group commit shares fsyncs between concurrent writers).
    Always,
    /// After its record is written to the file; fsynced within about a second.
    EverySec,
    /// After its record is written to the file; the OS decides when it reaches the disk.
    No,
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Ok(Self::Always),
            "everysec" => Ok(Self::EverySec),
            "no" => Ok(Self::No),
            _ => Err(format!("'{s}' is not one of always, everysec, no")),
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Always => "always",
            Self::EverySec => "everysec",
            Self::No => "no",
        })
    }
}

/// Why persistence could not start.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Damage that is not a torn tail.
    #[error(
        "{path} is corrupt at offset {offset}: {reason}. Refusing to start so nothing is silently lost; \
         restart with --repair to truncate the file there (a .broken copy is kept)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: usize,
        /// What was found.
        reason: String,
    },
    /// Another server holds the data directory, or its lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// `log-<seq>.aof` in `dir`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("log-{seq:020}.aof"))
}

/// `snapshot-<seq>.snap` in `dir`.
pub fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snapshot-{seq:020}.snap"))
}

fn parse_seq(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()
}

/// The sequence number of a log segment's file name (the inverse of [`segment_path`]).
pub fn segment_seq(name: &str) -> Option<u64> {
    parse_seq(name, "log-", ".aof")
}

/// The sequence number of a snapshot's file name (the inverse of [`snapshot_path`]).
pub fn snapshot_seq(name: &str) -> Option<u64> {
    parse_seq(name, "snapshot-", ".snap")
}

/// Fsyncs a directory, making renames and new files in it durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Settings for [`Persistence::open`].
#[derive(Debug, Clone)]
pub struct PersistConfig {
    /// The data directory.
    pub dir: PathBuf,
    /// The fsync policy.
    pub fsync: FsyncPolicy,
    /// Log growth (bytes) that triggers a snapshot and log compaction.
    pub snapshot_every: u64,
    /// Truncate corrupt segments instead of refusing to start.
    pub repair: bool,
    /// Largest record accepted when reading.
    pub max_record_len: usize,
}

/// A running persistence layer: the log attached to the engine, plus the snapshot scheduler.
#[derive(Debug)]
pub struct Persistence {
    log: Arc<AppendLog>,
    engine: Arc<Engine>,
    config: PersistConfig,
    next_seq: AtomicU64,
    snapshotting: std::sync::Mutex<()>,
    /// Held for as long as anything may write to the directory: released when the last handle on
    /// the persistence layer (the server's, the snapshot scheduler's) is gone.
    _lock: DirLock,
}

impl Persistence {
    /// Locks the data directory (refusing it if another server holds it), recovers `engine` from
    /// it, then attaches a new log segment as its log.
    pub fn open(engine: Arc<Engine>, config: PersistConfig) -> Result<Arc<Self>, PersistError> {
        // Before anything is read: a directory another server writes is never recovered from.
        let lock = DirLock::acquire(&config.dir)?;
        let recovered = recovery::recover(&engine, &config.dir, config.repair, config.max_record_len)?;
        let seq = recovered.next_seq;
        let log = AppendLog::open(&config.dir, seq, config.fsync, recovered.log_bytes)
            .map_err(|source| PersistError::Io { path: segment_path(&config.dir, seq), source })?;
        log.set_max_record_len(config.max_record_len);
        if engine.attach_log(log.clone()).is_err() {
            warn!("the engine already had an effect log; persistence not attached");
        }
        info!(dir = %config.dir.display(), fsync = %config.fsync, keys = recovered.keys, "persistence on");
        Ok(Arc::new(Self {
            log,
            engine,
            config,
            next_seq: AtomicU64::new(seq + 1),
            snapshotting: Default::default(),
            _lock: lock,
        }))
    }

    /// The log, for frontends waiting on durability.
    pub fn log(&self) -> &Arc<AppendLog> {
        &self.log
    }

    /// Takes a snapshot now: rotate the log, write the snapshot, delete what it replaced.
    pub fn snapshot(&self) -> std::io::Result<snapshot::SnapshotStats> {
        let _one_at_a_time = self.snapshotting.lock().unwrap_or_else(|p| p.into_inner());
        self.snapshot_locked()
    }

    /// [`Persistence::snapshot`], its caller holding `snapshotting`.
    fn snapshot_locked(&self) -> std::io::Result<snapshot::SnapshotStats> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.log.rotate(seq)?;
        let stats = snapshot::write(&self.engine, &self.config.dir, seq)?;
        // The snapshot is durable: older segments and snapshots are now redundant.
        for entry in std::fs::read_dir(&self.config.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let old = segment_seq(&name).or_else(|| snapshot_seq(&name)).is_some_and(|s| s < seq);
            if old {
                let _ = std::fs::remove_file(self.config.dir.join(&name));
            }
        }
        Ok(stats)
    }

    /// Snapshots whenever the log has grown by `snapshot_every`, until shutdown.
    pub async fn run_scheduler(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.log.failure().is_some() || self.log.growth() < self.config.snapshot_every {
                continue;
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.snapshot()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    error!(error = %e, "snapshot failed; the log keeps growing and it will be retried")
                }
                Err(e) => error!(error = %e, "snapshot task failed"),
            }
        }
    }

    /// At a clean shutdown: takes a snapshot if the log grew since the last one, so the next start
    /// loads the snapshot alone instead of replaying the log (the log is what makes a restart
    /// slow: every record is read, checked and applied, most of them overwritten later). Nothing
    /// is taken when the log failed (the engine may hold a write the log refused, which must not
    /// become durable) or has not grown. The snapshot is [`Persistence::snapshot`]'s: written to a
    /// temp file, fsynced and renamed before the log it replaces is deleted, so a crash or a
    /// `kill -9` during it loses nothing and the next start replays the log as usual. Returns the
    /// snapshot written, if any.
    pub fn snapshot_at_shutdown(&self) -> Option<snapshot::SnapshotStats> {
        // Checked under the lock: a scheduled snapshot that was running has left no growth.
        let _one_at_a_time = self.snapshotting.lock().unwrap_or_else(|p| p.into_inner());
        if self.log.failure().is_some() || self.log.growth() == 0 {
            return None;
        }
        match self.snapshot_locked() {
            Ok(stats) => {
                info!(keys = stats.keys, "snapshot at shutdown: the next start replays no log");
                Some(stats)
            }
            Err(e) => {
                warn!(error = %e, "snapshot at shutdown failed; the next start replays the log");
                None
            }
        }
    }

    /// Writes and fsyncs everything pending (shutdown).
    pub fn close(&self) {
        if let Err(e) = self.log.close() {
            error!(error = %e, "could not flush the log at shutdown");
        }
    }
}
