//! Restoring a backup: `nanodb-server --restore-from PATH` seeds an empty data directory from one
//! snapshot file and exits; the server is then started on that directory as usual. What etcd's
//! `etcdutl snapshot restore` does (a fresh data dir, a new cluster identity), for NanoDB.
//!
//! # What a backup is
//! One snapshot file, `snapshot-N.snap`: the engine's format (`persist::snapshot`), every record
//! checksummed (crc32c) and a trailer counting them, so a torn copy has no trailer and a damaged
//! one fails a checksum. From a cluster node's `raft/snapshots/` it comes with `snapshot-N.meta`
//! (`u32 crc32c | JSON`: the engine's version counter and the last entry time); from a single
//! node's data directory it has none. Both are accepted: they share the format.
//!
//! # Steps
//! 1. Refuse a data directory that is not empty (`lost+found` aside): a restore never overwrites
//!    data.
//! 2. Verify the backup whole before writing anything: every record is loaded into a scratch
//!    engine (each checksum, the trailer's count), and the meta's checksum is checked when the
//!    meta is there. Keys already expired are dropped.
//! 3. Lock the data directory as a server does (`LOCK`), then write:
//!    - a single node (no `--raft-addr`): `snapshot-1.snap`, which recovery loads at start like
//!      any snapshot;
//!    - a cluster node (`--node-id N --raft-addr ...`, no `--cluster-peers`): the state as the
//!      base snapshot "before the first entry" (`raft/snapshots/snapshot-0.snap` and `.meta`, as
//!      `REPLICAOF NO ONE` keeps a node's data), then `raft/identity` with a fresh cluster id and
//!      "alone": the node starts as a new cluster of one holding exactly the backup's keys, takes
//!      a snapshot past them at once, and other nodes join it (`REPLICAOF`, `POST
//!      /v1/cluster/members`) and receive them by snapshot.
//!
//!    Every file is written to a temp file, fsynced and renamed, the identity last: a restore cut
//!    short leaves no node that looks restored (empty the directory and run it again).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::info;

use crate::cluster::identity::{self, Identity, Stored};
use crate::cluster::state_machine::{self, StateMachine};
use crate::config::Config;
use crate::engine::Engine;
use crate::persist::{DirLock, PersistError, fsync_dir, recovery, snapshot};

/// The sequence number a restored single node's snapshot takes (its log starts after it).
const SINGLE_NODE_SEQ: u64 = 1;

/// A directory a fresh file system puts in every new volume; not data.
const LOST_AND_FOUND: &str = "lost+found";

/// Why a restore refused or failed; each has its own exit status ([`RestoreError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Flags that cannot go together with `--restore-from` (exit 2).
    #[error("--restore-from: {0}")]
    Usage(String),
    /// The backup is torn or corrupt (exit 3); nothing was written.
    #[error(
        "the backup {} is damaged{}: {reason}. Nothing was written; copy the snapshot again (a newer one if \
         this one was replaced while it was copied)",
        path.display(),
        offset.map(|o| format!(" at offset {o}")).unwrap_or_default()
    )]
    Damaged {
        /// The snapshot or meta file.
        path: PathBuf,
        /// Where, when known.
        offset: Option<usize>,
        /// What was found.
        reason: String,
    },
    /// The data directory holds something (exit 4); nothing was written.
    #[error(
        "the data dir {} is not empty (it holds {found}); a restore never overwrites data: give an empty or new \
         --data-dir",
        dir.display()
    )]
    NotEmpty {
        /// The data directory.
        dir: PathBuf,
        /// A few of the names found.
        found: String,
    },
    /// A file could not be read or written (exit 1).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory could not be locked (exit 1).
    #[error(transparent)]
    Lock(#[from] crate::persist::LockError),
}

impl RestoreError {
    /// The process's exit status for this error: 2 usage, 3 a damaged backup, 4 a data dir not
    /// empty, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Damaged { .. } => 3,
            Self::NotEmpty { .. } => 4,
            Self::Io { .. } | Self::Lock(_) => 1,
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The backup.
    pub from: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Keys restored (those not yet expired).
    pub keys: usize,
    /// Records the backup held (keys, plus continuation chunks of large values).
    pub records: u64,
    /// The log index the backup was taken at, when it came from a cluster node.
    pub index: Option<u64>,
    /// As a cluster node: its id and the new cluster's id.
    pub cluster: Option<(u64, String)>,
}

impl fmt::Display for Restored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.index.map(|i| format!(" (log index {i})")).unwrap_or_default();
        write!(
            f,
            "restored {} keys from {}{at} into {}",
            self.keys,
            self.from.display(),
            self.data_dir.display()
        )?;
        match &self.cluster {
            Some((node, id)) => write!(
                f,
                " as node {node}, alone in a new cluster {id}. Start nanodb-server with the same flags without \
                 --restore-from, then add the other nodes (REPLICAOF, or POST /v1/cluster/members)"
            ),
            None => {
                write!(f, " as a single node. Start nanodb-server with the same flags without --restore-from")
            }
        }
    }
}

/// Restores `config.restore_from` into `config.data_dir` (see the module header).
pub fn run(config: &Config) -> Result<Restored, RestoreError> {
    let Some(from) = config.restore_from.clone() else {
        return Err(RestoreError::Usage("no backup given".into()));
    };
    check_flags(config)?;
    if !from.is_file() {
        let why = if from.is_dir() {
            "a directory: give the snapshot file (snapshot-N.snap) itself".to_string()
        } else {
            "no such file".to_string()
        };
        return Err(RestoreError::Io { path: from, source: std::io::Error::other(why) });
    }
    let dir = config.data_dir.clone();
    ensure_empty(&dir)?;

    // Verified whole before anything is written.
    let meta_path = state_machine::meta_path_of(&from);
    let meta = if meta_path.is_file() {
        let m = state_machine::read_backup_meta(&meta_path).map_err(|reason| RestoreError::Damaged {
            path: meta_path.clone(),
            offset: None,
            reason,
        })?;
        Some(m)
    } else {
        None
    };
    let engine = Arc::new(Engine::new(config.limits.clone()));
    let records = recovery::load_snapshot(&engine, &from, crate::server::max_record_len(config)).map_err(
        |e| match e {
            PersistError::Corrupt { path, offset, reason } => {
                RestoreError::Damaged { path, offset: Some(offset), reason }
            }
            PersistError::Io { path, source } => RestoreError::Io { path, source },
            PersistError::Lock(e) => RestoreError::Lock(e),
        },
    )?;
    while engine.sweep_expired(100_000).more {}
    if let Some(m) = &meta {
        // Deleted keys took versions too: the counter goes on from where the cluster was.
        engine.set_version_counter(engine.version_counter().max(m.versions));
    }
    let keys = engine.key_count();
    info!(from = %from.display(), records, keys, "backup verified");

    std::fs::create_dir_all(&dir).map_err(|source| RestoreError::Io { path: dir.clone(), source })?;
    let _lock = DirLock::acquire(&dir)?;
    // Another restore or a server may have written between the check and the lock.
    ensure_empty(&dir)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RestoreError::Io { path, source }
    };
    let cluster = match &config.cluster {
        None => {
            snapshot::write(&engine, &dir, SINGLE_NODE_SEQ).map_err(io(&dir))?;
            None
        }
        Some(c) => {
            let snapshots = crate::cluster::snapshots_dir(&dir);
            let last_now = meta.map_or_else(|| engine.clock().now_ms(), |m| m.last_now);
            StateMachine::seed(&engine, &snapshots, last_now).map_err(io(&snapshots))?;
            let raft = dir.join(crate::cluster::RAFT_DIR);
            let id =
                identity::to_hex(identity::mint().map_err(|e| RestoreError::Io {
                    path: raft.clone(),
                    source: std::io::Error::other(e),
                })?);
            let (ident, _) = Identity::open(&raft, c.node_id)
                .map_err(|e| RestoreError::Io { path: raft.clone(), source: std::io::Error::other(e) })?;
            let stored =
                Stored { cluster_id: Some(id.clone()), node_id: c.node_id, assigned: false, alone: true };
            ident.set(stored).map_err(io(&raft))?;
            Some((c.node_id, id))
        }
    };
    fsync_dir(&dir).map_err(io(&dir))?;
    let restored =
        Restored { from, data_dir: dir, keys, records, index: meta.and_then(|m| m.index), cluster };
    info!("{restored}");
    Ok(restored)
}

/// Flags a restore cannot honour.
fn check_flags(config: &Config) -> Result<(), RestoreError> {
    match &config.cluster {
        Some(c) if c.node_id == 0 => Err(RestoreError::Usage("--raft-addr needs --node-id N (an integer >= 1)".into())),
        Some(c) if !c.peers.is_empty() => Err(RestoreError::Usage(
            "a restored node starts as a new cluster of one: drop --cluster-peers, start it, then add the other nodes \
             (REPLICAOF, or POST /v1/cluster/members)"
                .into(),
        )),
        None if !config.persistence => Err(RestoreError::Usage(
            "--persistence off keeps nothing on disk, so there is nothing to restore into".into(),
        )),
        _ => Ok(()),
    }
}

/// Refuses a data directory that holds anything but `lost+found` and a `LOCK` file (which holds
/// no data: a stale one is left by any server that ran there, and the restore takes it itself).
/// A directory that does not exist is empty.
fn ensure_empty(dir: &Path) -> Result<(), RestoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(RestoreError::Io { path: dir.to_path_buf(), source }),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| RestoreError::Io { path: dir.to_path_buf(), source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != LOST_AND_FOUND && name != crate::persist::lock::LOCK_FILE {
            found.push(name);
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    let more = found.len().saturating_sub(3);
    let mut text = found.into_iter().take(3).collect::<Vec<_>>().join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    Err(RestoreError::NotEmpty { dir: dir.to_path_buf(), found: text })
}
