//! The state machine: openraft's [`RaftStateMachine`] over the shared [`Engine`].
//!
//! Applying an entry runs its command with [`Engine::apply_at`] at the entry's time, so every node
//! decides INCR, CAS and every conditional write the same way; effects flow to the change feed as
//! on a single node (watchers and subscribers on every node see every committed write), and a
//! `PUBLISH` entry publishes on every node. There is no single-node append-only log: the Raft log
//! is the log.
//!
//! Snapshots are the engine's own snapshot files (`persist::snapshot`, expired keys kept: only a
//! committed expiry entry removes a key) in `<data-dir>/raft/snapshots/`, named by the last index
//! they hold, beside a `.meta` file (`u32 crc32c | JSON`: openraft's metadata, the engine's
//! version counter and the last entry time). Each is written to a temp file, fsynced, renamed, the
//! directory fsynced; then the older ones are deleted. A snapshot is exact: building one holds
//! the apply lock, so it is the state after exactly `last_log_id`.
//!
//! Installing a snapshot (a follower too far behind) keeps the node serving its old state until
//! the new one is whole: the file is loaded into an empty sibling engine, aside, and the two
//! keyspaces are swapped under every partition lock at once (`Engine::swap_state`), so a read
//! sees the old state or the new one, never a mix. Watchers and keyspace notifications on this
//! node are then told the difference, in key order: a whole-value event for every key new or
//! changed, a delete for every key gone (`Engine::announce_replacement`), as if the entries the
//! snapshot stands for had been applied here, their intermediate values excepted. Peak memory
//! is the old state, the new one, the snapshot file (read whole) and, while someone watches, a
//! copy of the changed keys. `PUBLISH` entries inside the snapshot's range were never applied
//! here, so this node's subscribers do not get those messages (pub/sub is at-most-once, as a
//! Redis replica's full resync loses them too).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nanodb_protocol::{Command, Error, Reply, TypedCommand};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::types::{Member, NodeId, Op, Response, SnapshotFile, TypeConfig};
use crate::engine::{Engine, value};
use crate::feed::Hub;
use crate::persist::{fsync_dir, recovery, snapshot, snapshot_path};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// What a snapshot's `.meta` file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredMeta {
    meta: SnapshotMeta<NodeId, Member>,
    versions: u64,
    last_now: u64,
    /// Node ids removed from the cluster as of this snapshot (see [`Retired`]); absent in
    /// snapshots written before it existed.
    #[serde(default)]
    retired: Vec<NodeId>,
}

#[derive(Debug, Default)]
struct State {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
    /// The largest entry time applied: a new leader whose clock is behind does not move time
    /// back.
    last_now: u64,
    current: Option<StoredMeta>,
}

/// The state machine; clones share it (the snapshot builder is a clone).
#[derive(Debug, Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    engine: Arc<Engine>,
    feed: Arc<Hub>,
    /// How many of this node's subscribers each recent `PUBLISH` reached (see [`Deliveries`]).
    deliveries: Arc<Deliveries>,
    /// The ids removed from the cluster (see [`Retired`]).
    retired: Arc<Retired>,
    dir: PathBuf,
    max_record_len: usize,
    /// The apply lock: held by every apply and by a snapshot while it is written.
    state: Mutex<State>,
}

fn meta_path(dir: &Path, index: u64) -> PathBuf {
    snapshot_path(dir, index).with_extension("meta")
}

fn sm_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

fn snap_err(e: impl ToString) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, AnyError::error(e.to_string())).into()
}

fn write_meta(dir: &Path, index: u64, meta: &StoredMeta) -> io::Result<()> {
    let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let mut bytes = crc32c::crc32c(&json).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    let path = meta_path(dir, index);
    let tmp = path.with_extension("meta.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    io::Write::write_all(&mut f, &bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    fsync_dir(dir)
}

fn read_meta(path: &Path) -> Result<StoredMeta, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < 4 || crc32c::crc32c(&bytes[4..]).to_le_bytes() != bytes[..4] {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(&bytes[4..]).map_err(|e| e.to_string())
}

/// What a snapshot's `.meta` tells a restore (see `crate::restore`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupMeta {
    /// The last log index the snapshot holds (`None` for a base snapshot).
    pub index: Option<u64>,
    /// The engine's version counter when it was taken.
    pub versions: u64,
    /// The largest entry time it had applied.
    pub last_now: u64,
}

/// The `.meta` beside the snapshot file `snap` (`snapshot-N.snap` -> `snapshot-N.meta`).
pub fn meta_path_of(snap: &Path) -> PathBuf {
    snap.with_extension("meta")
}

/// Reads a snapshot's `.meta`, its checksum verified.
pub fn read_backup_meta(path: &Path) -> Result<BackupMeta, String> {
    let m = read_meta(path)?;
    Ok(BackupMeta { index: m.meta.last_log_id.map(|l| l.index), versions: m.versions, last_now: m.last_now })
}

/// Deletes every snapshot and meta file older than `index`, and leftover temp files.
fn remove_older(dir: &Path, index: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let seq = name
            .strip_prefix("snapshot-")
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse::<u64>().ok());
        if seq.is_some_and(|s| s < index) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl StateMachine {
    /// Opens the state machine in `dir`, loading the newest complete snapshot into `engine`
    /// (which must be empty and in cluster mode); openraft then re-applies the log after it.
    pub fn open(
        engine: Arc<Engine>,
        feed: Arc<Hub>,
        dir: &Path,
        max_record_len: usize,
    ) -> Result<Self, String> {
        Self::open_with(engine, feed, dir, max_record_len, true)
    }

    /// [`StateMachine::open`]; without `load`, the newest snapshot's metadata is taken but its
    /// keys are not loaded: `engine` already holds them (a node that keeps its data as it leaves
    /// a cluster wrote that snapshot from it, see [`StateMachine::seed`]).
    pub fn open_with(
        engine: Arc<Engine>,
        feed: Arc<Hub>,
        dir: &Path,
        max_record_len: usize,
        load: bool,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut newest: Option<(u64, StoredMeta)> = None;
        for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(index) = name.strip_prefix("snapshot-").and_then(|r| r.strip_suffix(".meta")) else {
                continue;
            };
            let Ok(index) = index.parse::<u64>() else { continue };
            if newest.as_ref().is_some_and(|(i, _)| *i >= index) || !snapshot_path(dir, index).exists() {
                continue;
            }
            match read_meta(&entry.path()) {
                Ok(meta) => newest = Some((index, meta)),
                Err(e) => {
                    warn!(file = %entry.path().display(), error = %e, "raft: skipping an unreadable snapshot meta")
                }
            }
        }
        let mut state = State::default();
        let retired = Arc::new(Retired::default());
        if let Some((index, meta)) = newest {
            if load {
                let path = snapshot_path(dir, index);
                let records =
                    recovery::load_snapshot(&engine, &path, max_record_len).map_err(|e| e.to_string())?;
                engine.set_version_counter(meta.versions);
                info!(
                    index,
                    records,
                    keys = engine.key_count(),
                    "raft: state machine loaded from its snapshot"
                );
            }
            state.applied = meta.meta.last_log_id;
            state.membership = meta.meta.last_membership.clone();
            state.last_now = meta.last_now;
            retired.replace(&meta.retired);
            state.current = Some(meta);
        }
        Ok(Self {
            shared: Arc::new(Shared {
                engine,
                feed,
                deliveries: Arc::new(Deliveries::default()),
                retired,
                dir: dir.to_path_buf(),
                max_record_len,
                state: Mutex::new(state),
            }),
        })
    }

    /// Applies one operation at `now`; `tally` numbers the entry's publishes.
    fn apply_op(&self, op: Op, now: u64, tally: &mut Tally) -> Response {
        match op {
            // A put says whether it created its key (REST's 201).
            Op::Command(Command::Put(c)) => match self.shared.engine.apply_put_at(c, now) {
                Ok(outcome) => Response {
                    created: outcome.created,
                    result: Ok(Reply::from(outcome)),
                    each: Vec::new(),
                    delivered: None,
                    index: 0,
                },
                Err(e) => {
                    Response { result: Err(e), created: false, each: Vec::new(), delivered: None, index: 0 }
                }
            },
            Op::Command(cmd) => {
                let first = tally.next;
                let result = self.apply_command(cmd, now, tally);
                // A command that published says where its counts are (see `Deliveries`).
                let delivered = (tally.next > first).then_some((tally.index, first));
                Response { result, created: false, each: Vec::new(), delivered, index: 0 }
            }
            Op::Commands(cmds) => Response {
                result: Ok(Reply::Pong),
                created: false,
                each: cmds.into_iter().map(|cmd| self.apply_op(Op::Command(cmd), now, tally)).collect(),
                delivered: None,
                index: 0,
            },
            Op::Expire(keys) => {
                self.shared.engine.expire_keys_at(&keys, now);
                Response {
                    result: Ok(Reply::Pong),
                    created: false,
                    each: Vec::new(),
                    delivered: None,
                    index: 0,
                }
            }
        }
    }

    /// `Context::route` for a committed command: publish to the feed, a batch one by one, the
    /// rest to the engine at the entry's time.
    fn apply_command(&self, cmd: Command, now: u64, tally: &mut Tally) -> Result<Reply, Error> {
        let engine = &self.shared.engine;
        match cmd {
            Command::Publish(c) => {
                c.validate(engine.limits())?;
                let n = self.shared.feed.publish(&value::owned(&c.channel), &value::owned(&c.message));
                self.shared.deliveries.record((tally.index, tally.next), n);
                tally.next += 1;
                Ok(Reply::Int(n as i64))
            }
            Command::Batch(c) => {
                c.validate(engine.limits())?;
                Ok(Reply::Batch(c.ops.into_iter().map(|op| self.apply_command(op, now, tally)).collect()))
            }
            cmd => engine.apply_at(cmd, now),
        }
    }

    /// Writes a snapshot of the state as of now (the caller holds the apply lock).
    async fn write_snapshot(&self, state: &mut State) -> StorageResult<StoredMeta> {
        let index = state.applied.map_or(0, |l| l.index);
        let engine = self.shared.engine.clone();
        let dir = self.shared.dir.clone();
        let versions = engine.version_counter();
        tokio::task::spawn_blocking(move || snapshot::write_keys(&engine, &dir, index, true))
            .await
            .map_err(snap_err)?
            .map_err(snap_err)?;
        let term = state.applied.map_or(0, |l| l.leader_id.term);
        let meta = StoredMeta {
            meta: SnapshotMeta {
                last_log_id: state.applied,
                last_membership: state.membership.clone(),
                snapshot_id: format!("{index}-{term}"),
            },
            versions,
            last_now: state.last_now,
            retired: self.shared.retired.ids(),
        };
        write_meta(&self.shared.dir, index, &meta).map_err(snap_err)?;
        remove_older(&self.shared.dir, index);
        state.current = Some(meta.clone());
        Ok(meta)
    }

    fn snapshot_of(&self, meta: StoredMeta) -> Snapshot<TypeConfig> {
        let index = meta.meta.last_log_id.map_or(0, |l| l.index);
        Snapshot {
            meta: meta.meta,
            snapshot: Box::new(SnapshotFile {
                path: snapshot_path(&self.shared.dir, index),
                versions: meta.versions,
                last_now: meta.last_now,
                retired: meta.retired,
            }),
        }
    }

    /// Writes `engine`'s state as a snapshot "before the first entry" (index 0, no log id, no
    /// membership) in `dir`: the base a node that leaves a cluster with its data builds its own
    /// cluster of one on. Opened with `load` = false, then openraft applies the new log after it.
    pub fn seed(engine: &Arc<Engine>, dir: &Path, last_now: u64) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        snapshot::write_keys(engine, dir, 0, true)?;
        let meta = StoredMeta {
            meta: SnapshotMeta {
                last_log_id: None,
                last_membership: StoredMembership::default(),
                snapshot_id: "0-0".into(),
            },
            versions: engine.version_counter(),
            last_now,
            retired: Vec::new(),
        };
        write_meta(dir, 0, &meta)
    }

    /// The largest entry time applied.
    pub async fn last_now(&self) -> u64 {
        self.shared.state.lock().await.last_now
    }

    /// This node's record of how many local subscribers each recent `PUBLISH` reached.
    pub fn deliveries(&self) -> Arc<Deliveries> {
        self.shared.deliveries.clone()
    }

    /// The ids removed from the cluster, as applied here.
    pub fn retired(&self) -> Arc<Retired> {
        self.shared.retired.clone()
    }

    /// Where a snapshot being received is written (then renamed by `install_snapshot`).
    pub fn incoming_path(&self, id: u64) -> PathBuf {
        self.shared.dir.join(format!("incoming-{id}.snap.tmp"))
    }
}

/// Numbers the publishes of the entry being applied: `(index, next)` names the next one.
struct Tally {
    index: u64,
    next: u32,
}

/// How many of this node's subscribers each recently applied `PUBLISH` reached, by `(entry
/// index, the publish's number within the entry)`: what the node that took a `PUBLISH` answers
/// (Redis Cluster's answer: the receiving node's own count), read once this node has applied the
/// entry, whichever node proposed it. The leader's answer names the entry and number
/// ([`Response::delivered`]); every node applies the same entries in the same order, so the
/// numbers agree. Bounded to the last [`Deliveries::KEPT`] publishes.
#[derive(Debug, Default)]
pub struct Deliveries {
    counts: std::sync::Mutex<std::collections::BTreeMap<(u64, u32), usize>>,
}

impl Deliveries {
    /// Publishes remembered; a waiting node reads its count right after applying the entry, so
    /// only this many publishes applied in between could push it out.
    pub const KEPT: usize = 65_536;

    fn record(&self, at: (u64, u32), n: usize) {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.insert(at, n);
        while counts.len() > Self::KEPT {
            counts.pop_first();
        }
    }

    /// This node's count for the publish at `at`, once its entry is applied here. `None` when
    /// this node never applied it (it installed a snapshot past it: the message reached nobody
    /// here) or forgot it.
    pub fn count(&self, at: (u64, u32)) -> Option<usize> {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&at).copied()
    }

    /// `reply` (the leader's answer to `cmd`, whose publishes are numbered from `at`) with each
    /// publish's count replaced by this node's, in the order the state machine numbered them.
    pub fn localize(&self, cmd: &Command, reply: Reply, at: (u64, u32)) -> Reply {
        let mut next = at.1;
        self.localize_from(cmd, reply, at.0, &mut next)
    }

    fn localize_from(&self, cmd: &Command, reply: Reply, index: u64, next: &mut u32) -> Reply {
        match (cmd, reply) {
            (Command::Publish(_), Reply::Int(_)) => {
                let n = self.count((index, *next)).unwrap_or(0);
                *next += 1;
                Reply::Int(n as i64)
            }
            (Command::Batch(b), Reply::Batch(replies)) => Reply::Batch(
                b.ops
                    .iter()
                    .zip(replies)
                    .map(|(op, r)| r.map(|r| self.localize_from(op, r, index, next)))
                    .collect(),
            ),
            (_, reply) => reply,
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let mut state = self.shared.state.lock().await;
        let meta = self.write_snapshot(&mut state).await?;
        Ok(self.snapshot_of(meta))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>)> {
        let state = self.shared.state.lock().await;
        Ok((state.applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = self.shared.state.lock().await;
        let mut out = Vec::new();
        for entry in entries {
            state.applied = Some(entry.log_id);
            let pong = Response {
                result: Ok(Reply::Pong),
                created: false,
                each: Vec::new(),
                delivered: None,
                index: 0,
            };
            let response = match entry.payload {
                EntryPayload::Blank => pong,
                EntryPayload::Normal(req) => {
                    let now = req.now_ms.max(state.last_now);
                    state.last_now = now;
                    self.apply_op(req.op, now, &mut Tally { index: entry.log_id.index, next: 0 })
                }
                EntryPayload::Membership(m) => {
                    // Every node applies the same membership entries in the same order, so every
                    // node retires the same ids.
                    let gone: Vec<NodeId> = state
                        .membership
                        .membership()
                        .nodes()
                        .map(|(id, _)| *id)
                        .filter(|id| m.get_node(id).is_none())
                        .collect();
                    if !gone.is_empty() {
                        info!(ids = ?gone, "raft: nodes removed from the cluster; their ids are never reused");
                        self.shared.retired.add(&gone);
                    }
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                    pong
                }
            };
            out.push(with_index(response, entry.log_id.index));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<SnapshotFile>> {
        let id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Box::new(SnapshotFile {
            path: self.incoming_path(id),
            versions: 0,
            last_now: 0,
            retired: Vec::new(),
        }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<SnapshotFile>,
    ) -> StorageResult<()> {
        let mut state = self.shared.state.lock().await;
        let dir = self.shared.dir.clone();
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let target = snapshot_path(&dir, index);
        let source = snapshot.path.clone();
        // A snapshot received over the network was written into this directory: rename it; one
        // from elsewhere (the storage test suite hands one state machine's file to another) is
        // copied.
        let same_dir = source.parent() == Some(dir.as_path());
        if source != target {
            let move_in = move || -> io::Result<()> {
                if same_dir {
                    std::fs::File::open(&source)?.sync_all()?;
                    std::fs::rename(&source, &target)?;
                } else {
                    let tmp = target.with_extension("snap.tmp");
                    std::fs::copy(&source, &tmp)?;
                    std::fs::File::open(&tmp)?.sync_all()?;
                    std::fs::rename(&tmp, &target)?;
                }
                fsync_dir(target.parent().unwrap_or(Path::new(".")))
            };
            tokio::task::spawn_blocking(move_in).await.map_err(snap_err)?.map_err(snap_err)?;
        }
        let stored = StoredMeta {
            meta: meta.clone(),
            versions: snapshot.versions,
            last_now: snapshot.last_now,
            retired: snapshot.retired.clone(),
        };
        write_meta(&dir, index, &stored).map_err(snap_err)?;
        // Loaded aside, then swapped in at once (see the module docs): a read never sees a
        // partly loaded state, and a snapshot that fails to load changes nothing.
        let engine = self.shared.engine.clone();
        let path = snapshot_path(&dir, index);
        let max = self.shared.max_record_len;
        let versions = snapshot.versions;
        let (records, announced) = tokio::task::spawn_blocking(move || {
            let aside = engine.sibling();
            let records = recovery::load_snapshot(&aside, &path, max)?;
            aside.set_version_counter(versions);
            engine.swap_state(&aside);
            // `aside` now holds the state replaced: watchers are told the difference, then it
            // is freed here, off the runtime.
            let announced = engine.announce_replacement(&aside);
            Ok::<_, crate::persist::PersistError>((records, announced))
        })
        .await
        .map_err(sm_err)?
        .map_err(sm_err)?;
        info!(index, announced, "raft: snapshot swapped in; watchers told of every key it changed");
        info!(index, records, keys = self.shared.engine.key_count(), "raft: snapshot installed");
        state.applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        state.last_now = snapshot.last_now;
        self.shared.retired.replace(&snapshot.retired);
        state.current = Some(stored);
        remove_older(&dir, index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let state = self.shared.state.lock().await;
        Ok(state.current.clone().map(|m| self.snapshot_of(m)))
    }
}

/// `r` (and a group's answers) marked with the index of the entry that applied them.
fn with_index(mut r: Response, index: u64) -> Response {
    r.index = index;
    r.each = r.each.into_iter().map(|e| with_index(e, index)).collect();
    r
}

/// The node ids removed from the cluster, part of the replicated state: decided when a
/// membership entry is applied (an id in the previous membership and not in the new one), kept in
/// every snapshot and sent with it. openraft's FAQ: a removed id that came back could hold a vote
/// or log the cluster has forgotten and help form a second quorum, so an id is never reused and
/// a removed node's Raft calls are refused.
#[derive(Debug, Default)]
pub struct Retired {
    ids: std::sync::Mutex<std::collections::BTreeSet<NodeId>>,
}

impl Retired {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<NodeId>> {
        self.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, ids: &[NodeId]) {
        self.lock().extend(ids.iter().copied());
    }

    fn replace(&self, ids: &[NodeId]) {
        *self.lock() = ids.iter().copied().collect();
    }

    /// Whether `id` was removed from the cluster.
    pub fn contains(&self, id: NodeId) -> bool {
        self.lock().contains(&id)
    }

    /// Every removed id, ascending.
    pub fn ids(&self) -> Vec<NodeId> {
        self.lock().iter().copied().collect()
    }
}

/// Bytes of a snapshot file sent per chunk on the Raft port.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::testing::{StoreBuilder, Suite};

    use super::*;
    use crate::cluster::log_store::LogStore;
    use crate::persist::FsyncPolicy;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachine)> {
            let dir = tempfile::tempdir().map_err(sm_err)?;
            let log =
                LogStore::open(&dir.path().join("log"), FsyncPolicy::Always, 1 << 20).map_err(sm_err)?;
            let feed = Arc::new(Hub::new(Default::default()));
            let engine = Arc::new(Engine::with_observers(Default::default(), vec![feed.clone()]));
            engine.set_replicated();
            let sm =
                StateMachine::open(engine, feed, &dir.path().join("snapshots"), 1 << 20).map_err(sm_err)?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).expect("openraft's storage suite passes");
    }
}
