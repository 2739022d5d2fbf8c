//! The engine: one in-memory keyspace that every frontend shares.
//!
//! [`Engine::execute`] takes a protocol-neutral [`Command`], validates it against the configured
//! [`Limits`] (the one place limits are enforced), applies it and returns the [`Reply`]. It never
//! sees a socket and never awaits: frontends call it inline from their tasks.
//!
//! # Layout
//! The keyspace is split into [`PARTITIONS`] partitions by a hash of the key; each partition is a
//! hash table of boxed entries behind one `RwLock` (DashMap's design, one pointer per bucket: see
//! [`table`] for why) plus that partition's expiry index. Partitioning is what makes scans
//! resumable without `unsafe`: a scan page walks one partition in (hash, key) order, holding that
//! partition's read lock for a few thousand entries at most, and the cursor `(partition, hash,
//! key)` stays valid however the tables grow (see [`scan`]).
//!
//! # Invariants
//! - No partition guard is held across an `.await` (the engine has no `.await`, and its guards
//!   never leave it).
//! - A key's slot is created, modified and removed only inside [`Engine::update`], which also keeps
//!   the expiry index in step with the slot's deadline.
//! - Versions come from one engine-wide counter: every applied write gets a fresh one.
//! - Expired keys are invisible at once (every read checks the deadline), and are reclaimed by the
//!   read that finds them or by [`Engine::sweep_expired`], which only visits due keys.

mod clock;
mod commands;
pub mod effect;
// The engine's only unsafe code: one block per key behind a thin pointer, for memory (#21). The
// module states its layout and safety argument; nothing else may use `unsafe`.
#[allow(unsafe_code)]
mod entry;
mod expiry;
pub mod group;
mod hashes;
mod keys;
mod lists;
pub mod memory;
mod replicated;
pub mod scan;
mod strings;
mod table;
pub mod value;

use std::collections::BTreeSet;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use hashbrown::hash_table::Entry as Place;
use nanodb_protocol::{Command, Error, Limits, Reply};

pub use clock::Clock;
pub use commands::Apply;
pub use effect::{Effect, EffectKind, EffectLog, EffectObserver, OwnedEffect, OwnedEffectKind};
pub use entry::Entry;
pub use expiry::SweepReport;
pub use memory::{MemoryLimit, Policy};
pub use value::{Slot, Value, ValueRef};

use effect::Delta;
use table::Table;

/// How many partitions the keyspace is split into (a power of two): 512 locks, plenty for 2-64
/// cores, and a few thousand keys per partition per million keys.
pub const PARTITIONS: usize = 512;

/// One partition: its keys and the deadlines of those that expire. Aligned to two cache lines so
/// that writers of neighbouring partitions do not contend on one line for their locks.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Partition {
    table: RwLock<Table>,
    /// `(deadline, key)` for every slot with a deadline; exact (maintained on every TTL change).
    expiry: Mutex<BTreeSet<(u64, Box<[u8]>)>>,
    /// The highest version of any slot removed from this partition (deleted, expired, flushed),
    /// raised under the table's write lock. A missing key keeps no version, so this is how
    /// Redis's WATCH of a key that did not exist learns it was created and removed since (see
    /// `Group::unchanged_since`): one number per partition instead of a tombstone per key.
    removed: AtomicU64,
    /// The partition's memory ([`Table::footprint`]), published when a write guard is released
    /// (see [`memory`]): read without the lock by whoever sums the dataset's memory.
    used: AtomicU64,
}

// The memory word fits beside the locks: a partition is still two cache lines.
const _: () = assert!(std::mem::size_of::<Partition>() == 128);

/// A partition's table held for writing. Releasing it publishes the table's footprint in the
/// partition's `used` word, so every write path keeps the memory figure without knowing of it.
pub(crate) struct TableGuard<'a> {
    table: RwLockWriteGuard<'a, Table>,
    used: &'a AtomicU64,
}

impl Deref for TableGuard<'_> {
    type Target = Table;

    fn deref(&self) -> &Table {
        &self.table
    }
}

impl DerefMut for TableGuard<'_> {
    fn deref_mut(&mut self) -> &mut Table {
        &mut self.table
    }
}

impl std::fmt::Debug for TableGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableGuard").field("keys", &self.table.len()).finish()
    }
}

impl Drop for TableGuard<'_> {
    fn drop(&mut self) {
        // Still under the lock: the guard's fields drop after this.
        self.used.store(self.table.footprint() as u64, Ordering::Relaxed);
    }
}

impl Partition {
    /// Shared access to the table. A panic while a guard was held cannot leave a slot half
    /// written (every change is a single assignment), so a poisoned lock is used as it is.
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> TableGuard<'_> {
        TableGuard { table: self.table.write().unwrap_or_else(PoisonError::into_inner), used: &self.used }
    }

    fn expiry(&self) -> MutexGuard<'_, BTreeSet<(u64, Box<[u8]>)>> {
        self.expiry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that a slot of `version` left the table (called with its write lock held).
    fn note_removed(&self, version: u64) {
        self.removed.fetch_max(version, Ordering::Relaxed);
    }
}

/// What an update closure did to the slot it was given.
pub(crate) enum Change {
    /// Nothing was written.
    None,
    /// The slot given was modified in place (its version must already be bumped), as `Delta` says.
    Modified(Delta),
    /// A new slot replaces whatever was there; logged and reported as `Delta` (a whole value with
    /// [`Change::put`], or the push that created a list).
    Put(Slot, Delta),
    /// The key is removed.
    Remove,
}

impl Change {
    /// A new slot, logged and reported as its whole value.
    pub(crate) fn put(slot: Slot) -> Self {
        Self::Put(slot, Delta::Value)
    }
}

/// Counters the engine keeps about itself.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Keys removed because their deadline passed (lazily or by the sweeper).
    pub expired_keys: AtomicU64,
}

/// The keyspace. Share it as `Arc<Engine>`.
#[derive(Debug)]
pub struct Engine {
    partitions: Box<[Partition]>,
    hasher: ahash::RandomState,
    /// The version counter; an overlay ([`group`]) shares its engine's, so that versions drawn
    /// inside a group are engine-wide unique like any other.
    versions: Arc<AtomicU64>,
    /// `hash >> partition_shift` is a key's partition (64 - log2 of the partition count).
    partition_shift: u32,
    clock: Clock,
    limits: Limits,
    /// Where the sweeper starts next, so every partition gets its turn under a budget.
    sweep_from: AtomicUsize,
    stats: EngineStats,
    /// Where effects are logged, once attached; none means no effect is built for a log.
    log: OnceLock<Arc<dyn EffectLog>>,
    /// Who is told of every write and expiry (the change feed, ...); effects are built for them
    /// only while one is active.
    observers: Box<[Arc<dyn EffectObserver>]>,
    /// Cluster mode (see [`replicated`]): writes take their time from `apply_now`, reads hide
    /// expired keys without removing them, and every write path draws versions the same way on
    /// every node. Off (one relaxed load per write) on a single node.
    replicated: std::sync::atomic::AtomicBool,
    /// The leader's clock carried by the entry being applied (cluster mode only).
    apply_now: AtomicU64,
    /// `--max-memory` and its policy, and the eviction counters (see [`memory`]).
    memory: MemoryLimit,
    /// Emptied overlays of finished groups, for the next ones (see [`group::SpareOverlays`]).
    spare_overlays: Arc<group::SpareOverlays>,
}

/// The log position that the acknowledgement of some writes must wait for: the largest position
/// any of them was logged at (0 when nothing was logged). Write paths raise it; the caller waits
/// for it once (`Context::run`), so it travels as data, never through thread-local state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition(pub u64);

impl LogPosition {
    /// Raises the mark to `position` if that is later.
    pub fn raise(&mut self, position: u64) {
        self.0 = self.0.max(position);
    }
}

impl Engine {
    /// An empty engine enforcing `limits`, with no observers.
    pub fn new(limits: Limits) -> Self {
        Self::with_observers(limits, Vec::new())
    }

    /// An empty engine enforcing `limits` that tells `observers` of every write and expiry.
    pub fn with_observers(limits: Limits, observers: Vec<Arc<dyn EffectObserver>>) -> Self {
        // An entry records its key's length in 32 bits: longer keys are refused by validation.
        let limits = Limits { max_key_len: limits.max_key_len.min(entry::MAX_KEY_LEN), ..limits };
        let partitions = (0..PARTITIONS).map(|_| Partition::default()).collect();
        Self {
            partitions,
            hasher: ahash::RandomState::new(),
            versions: Arc::new(AtomicU64::new(0)),
            partition_shift: 64 - PARTITIONS.trailing_zeros(),
            clock: Clock::new(),
            limits,
            sweep_from: AtomicUsize::new(0),
            stats: EngineStats::default(),
            log: OnceLock::new(),
            observers: observers.into_boxed_slice(),
            replicated: std::sync::atomic::AtomicBool::new(false),
            apply_now: AtomicU64::new(0),
            memory: MemoryLimit::default(),
            spare_overlays: Arc::default(),
        }
    }

    /// Sends every later write's effect to `log`. Attached once, after recovery has restored the
    /// state (so restoring does not re-log what it reads).
    pub fn attach_log(&self, log: Arc<dyn EffectLog>) -> Result<(), Arc<dyn EffectLog>> {
        self.log.set(log)
    }

    /// Refuses writes the log cannot take (it failed, or the server is shutting down); `Ok` when
    /// there is no log. Checked before a write command is applied, so even a write that would
    /// change nothing is refused once the log has failed.
    pub fn check_writable(&self) -> Result<(), Error> {
        self.log.get().map_or(Ok(()), |log| log.check_writable())
    }

    /// The limits this engine enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The engine's clock (Unix ms).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The engine's counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Validates and applies one command for a caller that acknowledges nothing (tests); a frontend
    /// runs commands through `Context::run`, which waits for their log position.
    #[cfg(test)]
    pub fn execute(&self, cmd: Command) -> Result<Reply, Error> {
        self.apply_command(cmd, &mut LogPosition::default())
    }

    /// Validates and applies one typed keyspace command, raising `at` to the log position its
    /// writes reached (what its acknowledgement must wait for).
    pub fn apply<C: Apply>(&self, cmd: C, at: &mut LogPosition) -> Result<C::Output, Error> {
        cmd.validate(&self.limits)?;
        cmd.apply(self, at)
    }

    /// [`Engine::apply`] for a command whose type is known only at run time (the TCP wire,
    /// batches): the one place a dynamic command meets its typed implementation. Pub/sub and
    /// batches are not keyspace commands: `Context::run` routes them.
    pub fn apply_command(&self, cmd: Command, at: &mut LogPosition) -> Result<Reply, Error> {
        match cmd {
            Command::Ping(c) => self.apply(c, at).map(Reply::from),
            Command::Get(c) => self.apply(c, at).map(Reply::from),
            Command::Put(c) => self.apply(c, at).map(Reply::from),
            Command::GetSet(c) => self.apply(c, at).map(Reply::from),
            Command::Delete(c) => self.apply(c, at).map(Reply::from),
            Command::DeleteIf(c) => self.apply(c, at).map(Reply::from),
            Command::Exists(c) => self.apply(c, at).map(Reply::from),
            Command::Incr(c) => self.apply(c, at).map(Reply::from),
            Command::Expire(c) => self.apply(c, at).map(Reply::from),
            Command::Ttl(c) => self.apply(c, at).map(Reply::from),
            Command::Scan(c) => self.apply(c, at).map(Reply::from),
            Command::HashSet(c) => self.apply(c, at).map(Reply::from),
            Command::HashGet(c) => self.apply(c, at).map(Reply::from),
            Command::HashDelete(c) => self.apply(c, at).map(Reply::from),
            Command::HashGetAll(c) => self.apply(c, at).map(Reply::from),
            Command::ListPush(c) => self.apply(c, at).map(Reply::from),
            Command::ListPop(c) => self.apply(c, at).map(Reply::from),
            Command::ListRange(c) => self.apply(c, at).map(Reply::from),
            Command::KeyCount(c) => self.apply(c, at).map(Reply::from),
            Command::GetDel(c) => self.apply(c, at).map(Reply::from),
            Command::GetEx(c) => self.apply(c, at).map(Reply::from),
            Command::Append(c) => self.apply(c, at).map(Reply::from),
            Command::IncrFloat(c) => self.apply(c, at).map(Reply::from),
            Command::MultiPut(c) => self.apply(c, at).map(Reply::from),
            Command::Rename(c) => self.apply(c, at).map(Reply::from),
            Command::Type(c) => self.apply(c, at).map(Reply::from),
            Command::Flush(c) => self.apply(c, at).map(Reply::from),
            Command::RandomKey(c) => self.apply(c, at).map(Reply::from),
            Command::HashIncr(c) => self.apply(c, at).map(Reply::from),
            Command::HashSetIfAbsent(c) => self.apply(c, at).map(Reply::from),
            Command::HashLen(c) => self.apply(c, at).map(Reply::from),
            Command::ListLen(c) => self.apply(c, at).map(Reply::from),
            Command::ListSet(c) => self.apply(c, at).map(Reply::from),
            Command::ListTrim(c) => self.apply(c, at).map(Reply::from),
            Command::GetRange(c) => self.apply(c, at).map(Reply::from),
            Command::Txn(c) => self.apply(c, at).map(Reply::from),
            Command::Batch(_) | Command::Publish(_) | Command::Eval(_) => {
                cmd.validate(&self.limits)?;
                Err(Error::InvalidArgument(format!(
                    "{} is not a keyspace command: run it through the server's command path",
                    cmd.name()
                )))
            }
        }
    }

    /// Calls `f` for every slot of one partition (0..[`PARTITIONS`]), under that partition's
    /// read lock: `f` must be quick (no I/O).
    pub fn visit_partition(&self, partition: usize, mut f: impl FnMut(&[u8], &Entry)) {
        for entry in self.partitions[partition].read().iter() {
            f(entry.key(), entry);
        }
    }

    /// Makes room for about `keys` more keys (recovery, from a snapshot's record count): each
    /// partition's table is allocated once at the size it will reach, instead of doubling up to
    /// it and rehashing every key it holds at each step. Keys spread evenly over the partitions
    /// by hash; an eighth more than the even share covers the spread (a partition that still
    /// fills up grows as usual).
    pub fn reserve(&self, keys: usize) {
        let share = keys / PARTITIONS;
        for part in self.partitions.iter() {
            part.write().reserve(share + share / 8 + 16, |k| self.hash(k));
        }
    }

    /// Which of `loaders` parallel loaders restores `key` (recovery): every key of a partition
    /// goes to the same loader, so loaders never wait for each other's partition locks, and a
    /// key's records stay in order on one loader.
    pub fn loader_of(&self, key: &[u8], loaders: usize) -> usize {
        self.partition_index(self.hash(key)) % loaders.max(1)
    }

    /// Number of keys, counting expired keys the sweeper has not reached yet.
    pub fn key_count(&self) -> usize {
        self.partitions.iter().map(|p| p.read().len()).sum()
    }

    /// Number of keys with a deadline (INFO's `expires`).
    pub fn expiring_count(&self) -> usize {
        self.partitions.iter().map(|p| p.expiry().len()).sum()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn partition_index(&self, hash: u64) -> usize {
        // The top bits pick the partition; the table takes its bits elsewhere (see `table`).
        (hash >> self.partition_shift) as usize
    }

    /// The key's hash and its partition.
    fn locate(&self, key: &[u8]) -> (u64, &Partition) {
        let hash = self.hash(key);
        (hash, &self.partitions[self.partition_index(hash)])
    }

    /// A fresh version for a write.
    fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Runs `f` on the key's live slot under a read lock; `None` when missing or expired (an
    /// expired slot found here is reclaimed).
    pub(crate) fn read<R>(&self, key: &[u8], f: impl FnOnce(&Entry) -> R) -> Option<R> {
        let (hash, part) = self.locate(key);
        let expired_at = {
            let table = part.read();
            let slot = table.get(hash, key)?;
            if self.tracks_access() {
                // Only with an LRU policy: otherwise a read writes nothing shared.
                slot.touch(Self::access_tick(self.clock.now_ms()));
            }
            if slot.deadline() == 0 {
                return Some(f(slot));
            }
            let now = self.clock.now_ms();
            if !slot.is_expired(now) {
                return Some(f(slot));
            }
            if self.is_replicated() {
                // Only the leader's proposed deletes remove keys in a cluster: a local removal
                // would let this node's state part from the others'.
                return None;
            }
            now
        };
        // The guard is dropped: reclaim the expired slot under the write lock.
        self.reclaim(part, hash, key, expired_at);
        None
    }

    /// Removes `key` (of engine hash `hash`) if it is still expired at `now`.
    fn reclaim(&self, part: &Partition, hash: u64, key: &[u8], now: u64) {
        // The event is sent while the partition lock is held, so it is ordered with the key's
        // writes.
        let watched = self.watched();
        let removed = part.write().remove_if(hash, key, |e| {
            let expired = e.is_expired(now);
            if expired && watched {
                self.tell_expired(e.key());
            }
            if expired {
                // under the lock, so that no group finds the key gone and the mark not raised
                part.note_removed(e.version());
            }
            expired
        });
        if let Some(entry) = removed {
            self.unindex(part, entry.deadline(), entry.key());
            self.stats.expired_keys.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The one write path. Runs `f` on the key's live slot (`None` when missing or expired) under
    /// the shard's write lock, then applies the [`Change`] it asks for and keeps the expiry index
    /// in step. `f`'s error leaves everything as it was.
    /// `at` is raised to the log position of the effect, if one was logged.
    pub(crate) fn update<R>(
        &self,
        at: &mut LogPosition,
        key: Bytes,
        f: impl FnOnce(Option<&mut Entry>, u64) -> Result<(R, Change), Error>,
    ) -> Result<R, Error> {
        let log = self.log.get();
        if let Some(log) = log {
            log.check_writable()?;
        }
        self.update_logging_to(log, at, key, f)
    }

    /// [`Engine::update`] with the log to send the effect to (`None`: the effect is not logged,
    /// as when recovery restores what the log already holds).
    fn update_logging_to<R>(
        &self,
        log: Option<&Arc<dyn EffectLog>>,
        at: &mut LogPosition,
        key: Bytes,
        f: impl FnOnce(Option<&mut Entry>, u64) -> Result<(R, Change), Error>,
    ) -> Result<R, Error> {
        let watched = self.watched();
        let replicated = self.is_replicated();
        let now = if replicated { self.apply_now.load(Ordering::Relaxed) } else { self.clock.now_ms() };
        let (hash, part) = self.locate(&key);
        let tick = Self::access_tick(now);
        let mut table = part.write();
        // What the change adds to and removes from the partition's memory, charged once the
        // table's place is released.
        let (mut added, mut removed) = (0, 0);
        let r = match table.place(hash, &key, |k| self.hash(k)) {
            Place::Occupied(mut o) => {
                let entry: &mut Entry = o.get_mut();
                let old_deadline = entry.deadline();
                let expired = entry.is_expired(now);
                let before = entry.footprint();
                let (r, change) = if expired { f(None, now)? } else { f(Some(&mut *entry), now)? };
                // In a cluster the version is drawn whether or not anyone watches, so that
                // every node's counter stays the same.
                if expired && (watched || replicated) {
                    self.tell_expired(entry.key());
                }
                match change {
                    Change::None | Change::Modified(_) if expired => {
                        let (gone, _) = o.remove();
                        removed = before;
                        part.note_removed(gone.version());
                        self.unindex(part, old_deadline, gone.key());
                        self.stats.expired_keys.fetch_add(1, Ordering::Relaxed);
                    }
                    Change::None => {}
                    Change::Modified(delta) => {
                        (added, removed) = (entry.footprint(), before);
                        entry.touch(tick);
                        self.reindex(part, entry.key(), old_deadline, entry.deadline());
                        self.emit(at, log, watched, entry, &delta);
                    }
                    Change::Put(slot, delta) => {
                        entry.set_slot(slot);
                        (added, removed) = (entry.footprint(), before);
                        entry.touch(tick);
                        self.reindex(part, entry.key(), old_deadline, entry.deadline());
                        self.emit(at, log, watched, entry, &delta);
                    }
                    Change::Remove => {
                        let (gone, _) = o.remove();
                        removed = before;
                        part.note_removed(gone.version());
                        self.unindex(part, old_deadline, gone.key());
                        if log.is_some() || watched || replicated {
                            let effect = Effect {
                                key: gone.key(),
                                version: self.next_version(),
                                kind: EffectKind::Delete,
                            };
                            self.send(at, log, watched, gone.key(), &effect);
                        }
                    }
                }
                r
            }
            Place::Vacant(v) => {
                let (r, change) = f(None, now)?;
                let Change::Put(slot, delta) = change else { return Ok(r) };
                let entry = v.insert(Entry::new(&key, slot)).into_mut();
                added = entry.footprint();
                entry.touch(tick);
                if entry.deadline() != 0 {
                    self.index(part, entry.deadline(), entry.key());
                }
                self.emit(at, log, watched, entry, &delta);
                r
            }
        };
        table.charge(added, removed);
        Ok(r)
    }

    fn index(&self, part: &Partition, deadline: u64, key: &[u8]) {
        part.expiry().insert((deadline, Box::from(key)));
    }

    fn unindex(&self, part: &Partition, deadline: u64, key: &[u8]) {
        if deadline != 0 {
            // BTreeSet<(u64, Box<[u8]>)> cannot be probed by (u64, &[u8]): the probe is a copy.
            part.expiry().remove(&(deadline, Box::from(key)));
        }
    }

    fn reindex(&self, part: &Partition, key: &[u8], old: u64, new: u64) {
        if old != new {
            self.unindex(part, old, key);
            if new != 0 {
                self.index(part, new, key);
            }
        }
    }

    /// Builds the effect of `delta` on `entry` (already changed) and sends it to the log and the
    /// observers, if either wants it; with neither, nothing is built.
    fn emit(
        &self,
        at: &mut LogPosition,
        log: Option<&Arc<dyn EffectLog>>,
        watched: bool,
        entry: &Entry,
        delta: &Delta,
    ) {
        if log.is_none() && !watched {
            return;
        }
        let key = entry.key();
        let effect = Effect { key, version: entry.version(), kind: effect_kind(entry, delta) };
        self.send(at, log, watched, key, &effect);
    }

    /// Appends `effect` to the log (raising `at` to its position) and tells the active observers.
    fn send(
        &self,
        at: &mut LogPosition,
        log: Option<&Arc<dyn EffectLog>>,
        watched: bool,
        key: &[u8],
        effect: &Effect<'_>,
    ) {
        let position = log.map_or(0, |log| log.append(effect));
        at.raise(position);
        if watched {
            for observer in self.observers.iter().filter(|o| o.is_active()) {
                observer.on_effect(key, effect, position);
            }
        }
    }

    /// Whether any observer wants effects now: with none attached, nothing to check; with the
    /// feed alone, one atomic load while nobody watches.
    fn watched(&self) -> bool {
        self.observers.iter().any(|o| o.is_active())
    }

    /// Tells the active observers that `key` expired, at a fresh version. Called with the key's
    /// shard lock held.
    fn tell_expired(&self, key: &[u8]) {
        let version = self.next_version();
        for observer in self.observers.iter().filter(|o| o.is_active()) {
            observer.on_expired(key, version);
        }
    }
}

/// What `delta` did to `entry` (already changed), as an effect kind borrowing from the entry.
fn effect_kind<'a>(entry: &'a Entry, delta: &'a Delta) -> EffectKind<'a> {
    let set = || EffectKind::Set { value: entry.value(), deadline: entry.deadline() };
    match delta {
        Delta::Value => set(),
        Delta::Ttl => EffectKind::Expire { deadline: entry.deadline() },
        Delta::HashSet(field) => match entry.value() {
            ValueRef::Hash(map) => match map.get(field) {
                Some(value) => EffectKind::HashSet { field, value },
                None => set(),
            },
            _ => set(),
        },
        Delta::HashDelete(field) => EffectKind::HashDelete { field },
        Delta::ListPush(end, count) => match entry.value() {
            ValueRef::List(list) => EffectKind::ListPush { end: *end, list, count: *count },
            _ => set(),
        },
        Delta::ListPop(end, count) => EffectKind::ListPop { end: *end, count: *count },
    }
}

#[cfg(test)]
mod tests;
