//! The engine: one in-memory keyspace that every frontend shares.
//!
//! [`Engine::execute`] takes a protocol-neutral [`Command`], validates it against the configured
//! [`Limits`] (the one place limits are enforced), applies it and returns the [`Reply`]. It never
//! sees a socket and never awaits: frontends call it inline from their tasks.
//!
//! # Layout
//! The keyspace is split into [`PARTITIONS`] partitions by a hash of the key; each partition is a
//! DashMap (itself sharded into RwLocks) plus that partition's expiry index. Partitioning is what
//! makes scans resumable without `unsafe`: a scan page walks one partition in (hash, key) order,
//! holding one DashMap shard lock at a time for a few thousand entries at most, and the cursor
//! `(partition, hash, key)` stays valid however the maps grow (see [`scan`]).
//!
//! # Invariants
//! - No DashMap guard is held across an `.await` (the engine has no `.await`; clippy.toml enforces
//!   it for callers too).
//! - A key's slot is created, modified and removed only inside [`Engine::update`], which also keeps
//!   the expiry index in step with the slot's deadline.
//! - Versions come from one engine-wide counter: every applied write gets a fresh one.
//! - Expired keys are invisible at once (every read checks the deadline), and are reclaimed by the
//!   read that finds them or by [`Engine::sweep_expired`], which only visits due keys.

mod clock;
mod expiry;
mod hashes;
mod lists;
pub mod scan;
mod strings;
pub mod value;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use nanodb_protocol::{Command, Error, Limits, Reply};

pub use clock::Clock;
pub use value::{Slot, Value};

/// How many partitions the keyspace is split into (a power of two).
pub const PARTITIONS: usize = 128;
/// DashMap shards per partition: 512 RwLocks in all, plenty for 2-64 cores.
const SHARDS_PER_PARTITION: usize = 4;

type Map = DashMap<Bytes, Slot, ahash::RandomState>;

/// One partition: its slots and the deadlines of those that expire.
#[derive(Debug)]
struct Partition {
    map: Map,
    /// `(deadline, key)` for every slot with a deadline; exact (maintained on every TTL change).
    expiry: Mutex<BTreeSet<(u64, Bytes)>>,
}

/// What an update closure did to the slot it was given.
pub(crate) enum Change {
    /// Nothing was written.
    None,
    /// The slot given was modified in place (its version must already be bumped).
    Modified,
    /// A new slot replaces whatever was there.
    Put(Slot),
    /// The key is removed.
    Remove,
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
    versions: AtomicU64,
    clock: Clock,
    limits: Limits,
    /// Where the sweeper starts next, so every partition gets its turn under a budget.
    sweep_from: AtomicUsize,
    stats: EngineStats,
}

impl Engine {
    /// An empty engine enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        let partitions = (0..PARTITIONS)
            .map(|_| Partition {
                map: Map::with_hasher_and_shard_amount(ahash::RandomState::new(), SHARDS_PER_PARTITION),
                expiry: Mutex::new(BTreeSet::new()),
            })
            .collect();
        Self {
            partitions,
            hasher: ahash::RandomState::new(),
            versions: AtomicU64::new(0),
            clock: Clock::new(),
            limits,
            sweep_from: AtomicUsize::new(0),
            stats: EngineStats::default(),
        }
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

    /// Validates and applies one command.
    pub fn execute(&self, cmd: Command) -> Result<Reply, Error> {
        cmd.validate(&self.limits)?;
        self.apply(cmd)
    }

    /// Applies a validated command.
    fn apply(&self, cmd: Command) -> Result<Reply, Error> {
        match cmd {
            Command::Ping => Ok(Reply::Pong),
            Command::KeyCount => Ok(Reply::Int(self.key_count() as i64)),
            Command::Get { key } => self.get(&key),
            Command::Put { key, value, ttl_ms, condition } => self.put(key, value, ttl_ms, condition),
            Command::Delete { key } => Ok(Reply::Bool(self.delete(key))),
            Command::DeleteIf { key, version } => Ok(Reply::Bool(self.delete_if(key, version))),
            Command::Exists { key } => Ok(Reply::Bool(self.read(&key, |_| ()).is_some())),
            Command::Incr { key, delta } => self.incr(key, delta).map(Reply::Int),
            Command::Expire { key, ttl_ms } => Ok(Reply::Bool(self.expire(key, ttl_ms))),
            Command::Ttl { key } => Ok(Reply::Int(self.ttl(&key))),
            Command::Scan { prefix, limit, cursor } => {
                let limit = self.limits.scan_page(limit)?;
                self.scan(&prefix, limit as usize, &cursor)
            }
            Command::Batch { ops } => Ok(Reply::Batch(ops.into_iter().map(|op| self.apply(op)).collect())),
            Command::HashSet { key, field, value } => self.hash_set(key, field, value).map(Reply::Bool),
            Command::HashGet { key, field } => self.hash_get(&key, &field).map(Reply::Bytes),
            Command::HashDelete { key, field } => self.hash_delete(key, &field).map(Reply::Bool),
            Command::HashGetAll { key } => self.hash_get_all(&key).map(Reply::Pairs),
            Command::ListPush { key, end, values } => self.list_push(key, end, values).map(Reply::Int),
            Command::ListPop { key, end, count } => self.list_pop(key, end, count).map(Reply::List),
            Command::ListRange { key, start, stop } => self.list_range(&key, start, stop).map(Reply::List),
        }
    }

    /// Number of keys, counting expired keys the sweeper has not reached yet.
    pub fn key_count(&self) -> usize {
        self.partitions.iter().map(|p| p.map.len()).sum()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn partition_index(hash: u64) -> usize {
        // The top bits pick the partition; DashMap's own hasher spreads keys over shards within it.
        (hash >> (64 - PARTITIONS.trailing_zeros())) as usize
    }

    fn partition(&self, key: &[u8]) -> &Partition {
        &self.partitions[Self::partition_index(self.hash(key))]
    }

    /// A fresh version for a write.
    fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Runs `f` on the key's live slot under a read lock; `None` when missing or expired (an
    /// expired slot found here is reclaimed).
    pub(crate) fn read<R>(&self, key: &[u8], f: impl FnOnce(&Slot) -> R) -> Option<R> {
        let part = self.partition(key);
        let expired_at = {
            let slot = part.map.get(key)?;
            if slot.deadline == 0 {
                return Some(f(&slot));
            }
            let now = self.clock.now_ms();
            if !slot.is_expired(now) {
                return Some(f(&slot));
            }
            now
        };
        // The guard is dropped: reclaim the expired slot under the write lock.
        self.reclaim(part, key, expired_at);
        None
    }

    /// Removes `key` if it is still expired at `now`.
    fn reclaim(&self, part: &Partition, key: &[u8], now: u64) {
        if let Some((k, slot)) = part.map.remove_if(key, |_, s| s.is_expired(now)) {
            self.unindex(part, slot.deadline, &k);
            self.stats.expired_keys.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The one write path. Runs `f` on the key's live slot (`None` when missing or expired) under
    /// the shard's write lock, then applies the [`Change`] it asks for and keeps the expiry index
    /// in step. `f`'s error leaves everything as it was.
    pub(crate) fn update<R>(
        &self,
        key: Bytes,
        f: impl FnOnce(Option<&mut Slot>, u64) -> Result<(R, Change), Error>,
    ) -> Result<R, Error> {
        let now = self.clock.now_ms();
        let part = self.partition(&key);
        match part.map.entry(key) {
            MapEntry::Occupied(mut o) => {
                let old_deadline = o.get().deadline;
                let expired = o.get().is_expired(now);
                let (r, change) = if expired { f(None, now)? } else { f(Some(o.get_mut()), now)? };
                match change {
                    Change::None | Change::Modified if expired => {
                        let (k, _) = o.remove_entry();
                        self.unindex(part, old_deadline, &k);
                        self.stats.expired_keys.fetch_add(1, Ordering::Relaxed);
                    }
                    Change::None => {}
                    Change::Modified => {
                        let new_deadline = o.get().deadline;
                        self.reindex(part, o.key(), old_deadline, new_deadline);
                    }
                    Change::Put(slot) => {
                        let new_deadline = slot.deadline;
                        *o.get_mut() = slot;
                        self.reindex(part, o.key(), old_deadline, new_deadline);
                    }
                    Change::Remove => {
                        let (k, _) = o.remove_entry();
                        self.unindex(part, old_deadline, &k);
                    }
                }
                Ok(r)
            }
            MapEntry::Vacant(v) => {
                let (r, change) = f(None, now)?;
                if let Change::Put(slot) = change {
                    if slot.deadline != 0 {
                        self.index(part, slot.deadline, v.key().clone());
                    }
                    v.insert(slot);
                }
                Ok(r)
            }
        }
    }

    fn index(&self, part: &Partition, deadline: u64, key: Bytes) {
        part.expiry.lock().unwrap_or_else(|p| p.into_inner()).insert((deadline, key));
    }

    fn unindex(&self, part: &Partition, deadline: u64, key: &Bytes) {
        if deadline != 0 {
            // BTreeSet<(u64, Bytes)> cannot be probed by (u64, &[u8]); the clone is a refcount bump.
            part.expiry.lock().unwrap_or_else(|p| p.into_inner()).remove(&(deadline, key.clone()));
        }
    }

    fn reindex(&self, part: &Partition, key: &Bytes, old: u64, new: u64) {
        if old != new {
            self.unindex(part, old, key);
            if new != 0 {
                self.index(part, new, key.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests;
