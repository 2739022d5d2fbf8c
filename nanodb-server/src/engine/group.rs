//! Atomic groups: several commands over several keys, applied all or nothing and in isolation.
//!
//! # The mechanism
//! [`Engine::lock_group`] takes the write locks of the partitions that hold the declared keys, in
//! ascending partition order (two groups therefore never deadlock), and copies those keys' live
//! slots into an *overlay*: a small private [`Engine`] that shares this engine's clock, limits
//! and version counter but has no log and no observers. Commands then run against the overlay
//! through the ordinary command paths ([`Group::run`]), so every keyed command works inside a
//! group unchanged, and nothing outside the group sees them. [`Group::commit`] compares each
//! declared key in the overlay with what was loaded and writes back the keys that changed: their
//! effects go to the log as **one** record ([`EffectLog::append_group`]; recovery applies all of
//! them or none, a torn record being cut like any torn tail) and to the observers together
//! ([`EffectObserver::on_group`]), all before any partition lock is released. Dropping a group
//! without committing discards the overlay: nothing was written, nothing was logged.
//!
//! Isolation follows from the locks: a single-key command takes its partition's lock, so it runs
//! wholly before the group locks that partition or wholly after the commit; a reader can never
//! observe a group in part. Multi-key reads that must be consistent (MGET, a transaction of gets)
//! run as groups themselves. In a cluster a group is one command, hence one Raft entry, applied
//! by every node through [`Engine::apply_at`] like any other.
//!
//! The group is granular to partitions (1/512 of the keyspace each), not keys: a command on an
//! undeclared key that shares a partition with a declared one waits for the group too.
//!
//! # Using it from a script runner (Lua, `EVAL`)
//! ```text
//! let group = engine.lock_group(declared_keys);   // blocks only those keys' partitions
//! let reply = group.run(command)?;                 // each redis.call; an undeclared key is an error
//! ...                                               // as many as the script makes
//! let at = group.commit()?;                        // or drop(group) on an error or a timeout:
//!                                                  // nothing is written
//! ctx.durable(at.0).await?;                        // acknowledge once the record is durable
//! ```
//! The locks are `std` write guards held by the calling thread: run the group on one thread
//! without awaiting in between (a long script belongs on `spawn_blocking`), bound it with the
//! runner's own deadline, and other clients wait only when they touch one of the held
//! partitions. The command path runs a group inside `Context::run` (the `Txn` command), so
//! authorization, the log-failure check and cluster replication apply as for any command.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use hashbrown::hash_table::Entry as Place;
use nanodb_protocol::txn::{check_group_op, op_keys};
use nanodb_protocol::{Command, Compare, CompareOp, CompareTarget, Error, Keys, Reply, TxnOutcome, cmd};

use super::commands::Apply;
use super::effect::{Effect, EffectKind};
use super::entry::Entry;

use super::value::Slot;
use super::{Change, Engine, EngineStats, LogPosition, Partition, TableGuard};

/// An overlay has this many partitions (a power of two): it holds a handful of keys.
const OVERLAY_PARTITIONS: usize = 2;
/// Largest table (in slots) an emptied overlay may keep to be reused ([`SpareOverlays`]): one that
/// grew for a group of many keys is freed rather than kept for the engine's life.
const MAX_SPARE_SLOTS: usize = 64;
/// Emptied overlays an engine keeps, at most: about one per thread running groups at once.
const MAX_SPARE_OVERLAYS: usize = 8;

/// The emptied overlays of an engine's finished groups, for its next groups. Building an overlay
/// (its partitions are one aligned allocation) and dropping it was a tenth of a one-key EVAL's
/// instructions; a group that ends with its overlay empty (every committed group) hands it back
/// here instead ([`GroupState`]'s `Drop`). An overlay that still holds anything (a group dropped
/// without commit, an aborted script) is never kept: it is dropped, so nothing a group left
/// behind can reach the next one. Owned by the engine (and shared with its groups' states, which
/// must not borrow it), not by a thread: state stays where the engine's owner can see it.
pub(super) type SpareOverlays = Mutex<Vec<Arc<Engine>>>;

/// Several commands over declared keys, applied atomically on [`Group::commit`]; see the module
/// documentation.
#[derive(Debug)]
pub struct Group<'e> {
    engine: &'e Engine,
    /// The write guards of the partitions holding the declared keys, by ascending index.
    held: Vec<(usize, TableGuard<'e>)>,
    /// "Now" when the group started ([`Engine::write_now`]): its overlay's pinned time, and the
    /// access tick of the keys it writes.
    now: u64,
    /// What the group's commands run against, shared with whoever runs them ([`Group::state`]).
    state: Arc<GroupState>,
}

/// What a group's commands run against: its declared keys, its overlay and (in a cluster) its
/// record. Kept apart from the [`Group`], which holds the partitions' locks and so borrows the
/// engine, because it is owned: a script's `redis.call`, a callback made once per Lua state,
/// reaches it from a per-run slot that must not borrow anything (see `crate::scripting`).
#[derive(Debug)]
pub struct GroupState {
    /// The declared keys, sorted and deduplicated, each with the version it had when the group
    /// loaded it (0: missing or expired).
    keys: Vec<(Bytes, u64)>,
    /// Where the group's commands run (shared so that a frontend can run commands against it
    /// through its ordinary paths, as RESP's EXEC does: see [`Group::overlay`]).
    overlay: Arc<Engine>,
    /// In a cluster, what the group's commands touched and wrote, to become a transaction for
    /// the log (see [`Group::record`]); `None` on a single node, which pays nothing for it.
    record: Option<Mutex<Record>>,
    /// Where the overlay goes back when the state is dropped with it emptied (its engine's).
    spares: Arc<SpareOverlays>,
}

/// What a recording group's commands did: the keys they named (read or written) and the writes
/// that succeeded, in order.
#[derive(Debug, Default)]
struct Record {
    touched: Vec<Bytes>,
    writes: Vec<Command>,
}

/// What a group does to one key at commit.
enum Fate {
    /// Written: the overlay's entry moves into the engine as it is (no unpacking and repacking
    /// of its value).
    Put(Entry),
    /// Removed, at this (fresh) version.
    Remove(u64),
}

impl Engine {
    /// Locks the partitions of `keys` and loads those keys into a fresh overlay: the start of an
    /// atomic group. Every command the group runs must touch only these keys.
    pub fn lock_group(&self, keys: &[Bytes]) -> Group<'_> {
        // One allocation for the declared keys, which then receive their loaded versions.
        let mut keys: Vec<(Bytes, u64)> = keys.iter().map(|k| (k.clone(), 0)).collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        keys.dedup_by(|a, b| a.0 == b.0);
        let held: Vec<_> = match &keys[..] {
            // A script or transaction over one key (the common case) locks one partition.
            [(key, _)] => {
                let i = self.partition_index(self.hash(key));
                vec![(i, self.partitions[i].write())]
            }
            _ => {
                let mut parts: Vec<usize> =
                    keys.iter().map(|(k, _)| self.partition_index(self.hash(k))).collect();
                parts.sort_unstable();
                parts.dedup();
                parts.into_iter().map(|i| (i, self.partitions[i].write())).collect()
            }
        };
        let overlay = self.spare_overlay().unwrap_or_else(|| Arc::new(self.overlay()));
        let now = self.write_now();
        // The group's commands all see the time it started (a cluster's overlay already uses
        // the entry's time): one clock read per group, not one per command and one at commit.
        overlay.clock.pin(if self.is_replicated() { 0 } else { now });
        for (key, version) in &mut keys {
            let hash = self.hash(key);
            let table = &held[held_index(&held, self.partition_index(hash))].1;
            if let Some(e) = table.get(hash, key)
                && !e.is_expired(now)
            {
                overlay.load(key, e.to_slot());
                *version = e.version();
            }
        }
        let spares = self.spare_overlays.clone();
        Group { engine: self, held, now, state: Arc::new(GroupState { keys, overlay, record: None, spares }) }
    }

    /// The version of `key` (0 when it is missing or expired): every write, deletion and expiry
    /// of a key changes it.
    pub fn version_of(&self, key: &[u8]) -> u64 {
        self.read(key, |slot| slot.version()).unwrap_or(0)
    }

    /// What Redis's WATCH remembers of `key`: its version (0 when missing or expired) and the
    /// version counter at that moment (every version drawn later is greater), read together
    /// under the key's partition lock. [`Group::unchanged_since`] compares them at EXEC.
    pub fn watch_point(&self, key: &[u8]) -> (u64, u64) {
        let (hash, part) = self.locate(key);
        let table = part.read();
        let now = self.write_now();
        let version = match table.get(hash, key) {
            Some(e) if !e.is_expired(now) => e.version(),
            _ => 0,
        };
        (version, self.versions.load(Ordering::Relaxed))
    }

    /// "Now" for a write: the entry's time in a cluster, this node's clock otherwise.
    pub(crate) fn write_now(&self) -> u64 {
        if self.is_replicated() { self.apply_now.load(Ordering::Relaxed) } else { self.clock.now_ms() }
    }

    /// An empty overlay of this engine: same clock, limits, hasher, mode and version counter; no
    /// log, no observers.
    fn overlay(&self) -> Engine {
        Engine {
            partitions: (0..OVERLAY_PARTITIONS).map(|_| Partition::default()).collect(),
            hasher: self.hasher.clone(),
            versions: self.versions.clone(),
            partition_shift: 64 - OVERLAY_PARTITIONS.trailing_zeros(),
            clock: self.clock.clone(),
            limits: self.limits.clone(),
            sweep_from: AtomicUsize::new(0),
            stats: EngineStats::default(),
            log: OnceLock::new(),
            observers: Box::new([]),
            replicated: AtomicBool::new(self.is_replicated()),
            apply_now: AtomicU64::new(self.apply_now.load(Ordering::Relaxed)),
            // No limit: an overlay's memory is its engine's to check, before the group runs.
            memory: super::MemoryLimit::default(),
            // An overlay runs no groups of its own.
            spare_overlays: Arc::default(),
        }
    }

    /// One of this engine's emptied overlays ([`SpareOverlays`]), its mode and apply time brought
    /// up to date. Nothing else holds it: only an overlay its state alone held was kept.
    fn spare_overlay(&self) -> Option<Arc<Engine>> {
        let spare = self.spare_overlays.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
        spare.replicated.store(self.is_replicated(), Ordering::Relaxed);
        spare.apply_now.store(self.apply_now.load(Ordering::Relaxed), Ordering::Relaxed);
        Some(spare)
    }

    /// Makes this overlay, whose tables are empty, as a fresh one ([`Engine::overlay`]) for the
    /// next group: no stale expiry entries (a commit takes entries out without unindexing them),
    /// no removal marks (a commit reads them), no counters. Whether it may be reused: only an
    /// overlay with nothing in its tables, and tables that did not grow large, is.
    ///
    /// Takes the overlay exclusively (`&mut`: its group's state held the only reference), so it
    /// reaches the tables and expiry sets without taking their locks: this ran on every group.
    fn reset_overlay(&mut self) -> bool {
        let parts = &mut self.partitions;
        if !parts.iter_mut().all(|part| {
            part.table.get_mut().unwrap_or_else(PoisonError::into_inner).reusable(MAX_SPARE_SLOTS)
        }) {
            return false;
        }
        for part in parts.iter_mut() {
            let expiry = part.expiry.get_mut().unwrap_or_else(PoisonError::into_inner);
            if !expiry.is_empty() {
                expiry.clear();
            }
            *part.removed.get_mut() = 0;
            *part.used.get_mut() = 0;
        }
        *self.sweep_from.get_mut() = 0;
        *self.stats.expired_keys.get_mut() = 0;
        true
    }

    /// Puts a copy of a loaded slot into this overlay.
    fn load(&self, key: &[u8], slot: Slot) {
        let (hash, part) = self.locate(key);
        let mut table = part.write();
        if let Place::Vacant(v) = table.place(hash, key, |k| self.hash(k)) {
            let deadline = slot.deadline;
            let added = v.insert(Entry::new(key, slot)).get().footprint();
            table.charge(added, 0);
            if deadline != 0 {
                self.index(part, deadline, key);
            }
        }
    }

    /// Takes `key`'s entry out of this overlay, expired or not.
    fn take(&self, key: &[u8]) -> Option<Entry> {
        let (hash, part) = self.locate(key);
        part.write().remove_if(hash, key, |_| true)
    }
}

/// Where partition `index` is in `held` (it is there: every declared key's partition is held).
fn held_index(held: &[(usize, TableGuard<'_>)], index: usize) -> usize {
    held.binary_search_by_key(&index, |(i, _)| *i).unwrap_or_else(|at| at.min(held.len() - 1))
}

/// Hands an overlay that ends empty to the engine's next group ([`SpareOverlays`]). Only an
/// overlay this state alone holds (not one an EXEC's context still reaches) and not a recording
/// one (its version counter is its own) is reused, and only when emptied cleanly.
impl Drop for GroupState {
    fn drop(&mut self) {
        if self.record.is_some() {
            return;
        }
        // Only while this state holds the overlay alone (no EXEC's context still reaches it).
        let Some(overlay) = Arc::get_mut(&mut self.overlay) else { return };
        if !overlay.reset_overlay() {
            return;
        }
        let mut spares = self.spares.lock().unwrap_or_else(PoisonError::into_inner);
        if spares.len() < MAX_SPARE_OVERLAYS {
            spares.push(self.overlay.clone());
        }
    }
}

impl GroupState {
    /// Whether `key` was declared.
    fn declared(&self, key: &[u8]) -> bool {
        self.keys.binary_search_by(|(k, _)| k.as_ref().cmp(key)).is_ok()
    }

    fn check_declared(&self, key: &[u8]) -> Result<(), Error> {
        if self.declared(key) {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "key '{}' was not declared by this transaction or script",
                String::from_utf8_lossy(key)
            )))
        }
    }

    /// Whether every key `cmd` names was declared (the keys [`op_keys`] lists).
    fn check_named(&self, cmd: &Command) -> Result<(), Error> {
        match cmd.keys() {
            Keys::One(k) => self.check_declared(k),
            Keys::Two(a, b) => self.check_declared(a).and_then(|()| self.check_declared(b)),
            Keys::Pairs(p) => p.iter().try_for_each(|(k, _)| self.check_declared(k)),
            Keys::Many(keys) => keys.iter().try_for_each(|k| self.check_declared(k)),
            Keys::None | Keys::Prefix(_) | Keys::All | Keys::Channel(_) | Keys::Batch(_) | Keys::Txn(_) => {
                Ok(())
            }
        }
    }

    /// Runs one command inside the group (validated first); its reply, or its error, which
    /// changes nothing. Only commands on declared keys may run.
    pub fn run(&self, cmd: Command) -> Result<Reply, Error> {
        if let Command::Txn(txn) = cmd {
            return self.run_txn(txn);
        }
        check_group_op(&cmd)?;
        let Some(record) = &self.record else {
            // Checked in place: nothing to keep, so no list of the keys is made.
            self.check_named(&cmd)?;
            return self.overlay.apply_command(cmd, &mut LogPosition::default());
        };
        let mut named = Vec::new();
        op_keys(&cmd, &mut named);
        named.iter().try_for_each(|k| self.check_declared(k))?;
        let write = cmd.is_write().then(|| cmd.clone());
        let result = self.overlay.apply_command(cmd, &mut LogPosition::default());
        let mut record = record.lock().unwrap_or_else(PoisonError::into_inner);
        // Even a command that failed read its keys (a WRONGTYPE depends on the key's type).
        record.touched.extend(named);
        if let (Some(write), Ok(_)) = (write, &result) {
            // A command that failed changed nothing: there is nothing to replay.
            record.writes.push(write);
        }
        result
    }

    /// A transaction inside the group (MGET reads its keys as one, from a script or an EXEC): its
    /// compares on the group's keys, then its branch, each operation as [`Group::run`] runs it
    /// (so a recording group records them one by one).
    fn run_txn(&self, txn: cmd::Txn) -> Result<Reply, Error> {
        nanodb_protocol::TypedCommand::validate(&txn, self.overlay.limits())?;
        let mut succeeded = true;
        for compare in &txn.compares {
            let holds = self.compare(compare)?;
            if let Some(record) = &self.record {
                record.lock().unwrap_or_else(PoisonError::into_inner).touched.push(compare.key.clone());
            }
            if !holds {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { txn.success } else { txn.failure };
        let results = ops.into_iter().map(|op| self.run(op)).collect();
        Ok(Reply::Txn(TxnOutcome { succeeded, results }))
    }

    /// Whether `compare` holds for its (declared) key as the group sees it now.
    pub fn compare(&self, compare: &Compare) -> Result<bool, Error> {
        self.check_declared(&compare.key)?;
        let (version, value) = self
            .overlay
            .read(&compare.key, |slot| (slot.version(), slot.value().as_string().ok()))
            .unwrap_or((0, None));
        Ok(match &compare.target {
            CompareTarget::Version(v) => compare.op.holds(&version, v),
            CompareTarget::Exists(e) => compare.op.holds(&(version != 0), e),
            CompareTarget::Value(target) => {
                value.is_some_and(|v| compare.op.holds(v.as_ref(), target.as_ref()))
            }
        })
    }
}

impl Group<'_> {
    /// What the group's commands run against, for a caller that runs them from somewhere it
    /// cannot borrow the group (a script's `redis.call`): [`GroupState::run`] as [`Group::run`].
    pub fn state(&self) -> &Arc<GroupState> {
        &self.state
    }

    fn check_declared(&self, key: &[u8]) -> Result<(), Error> {
        self.state.check_declared(key)
    }

    /// Runs one command inside the group (validated first); its reply, or its error, which
    /// changes nothing. Only commands on declared keys may run.
    pub fn run(&self, cmd: Command) -> Result<Reply, Error> {
        self.state.run(cmd)
    }

    /// Whether `compare` holds for its (declared) key as the group sees it now.
    pub fn compare(&self, compare: &Compare) -> Result<bool, Error> {
        self.state.compare(compare)
    }

    /// Makes the group record what its commands ([`Group::run`]) touch and write, for
    /// [`Group::into_txn`]: how a script runs in a cluster.
    ///
    /// The overlay then draws versions from a counter of its own: the group is never committed
    /// here, and a cluster's nodes must draw the same versions, so running it must not advance
    /// this node's counter. Call it before running anything.
    pub fn record(&mut self) -> Result<(), Error> {
        // The state and overlay are shared only once a caller asked for them (`Group::state`,
        // `Group::overlay`).
        let state = Arc::get_mut(&mut self.state).ok_or(Error::Internal)?;
        let overlay = Arc::get_mut(&mut state.overlay).ok_or(Error::Internal)?;
        let now = overlay.versions.load(Ordering::Relaxed);
        overlay.versions = Arc::new(AtomicU64::new(now));
        state.record = Some(Mutex::default());
        Ok(())
    }

    /// What a recording group did, as one transaction for a cluster's log, or `None` when it wrote
    /// nothing; the group itself is dropped, so nothing is written here. The compares pin every key
    /// its commands touched to the version (or absence: version 0) the group loaded, whatever its
    /// type; the success branch replays its successful writes, in order. Applied where those
    /// compares hold, the writes meet exactly the state they met here and so do exactly what they
    /// did here (commands are deterministic given the state and the entry's time), and the keys end
    /// as the group left them; where one does not hold, another write came in between and nothing
    /// is applied (the transaction's failure branch is empty): run the group again.
    pub fn into_txn(self) -> Result<Option<cmd::Txn>, Error> {
        // Not recording: a caller's fault, never a silent loss of the group's writes.
        let state = &self.state;
        let record = std::mem::take(
            &mut *state
                .record
                .as_ref()
                .ok_or(Error::Internal)?
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if record.writes.is_empty() {
            return Ok(None);
        }
        let mut touched = record.touched;
        touched.sort_unstable();
        touched.dedup();
        let compares = touched
            .into_iter()
            .filter_map(|key| {
                let at = state.keys.binary_search_by(|(k, _)| k.cmp(&key)).ok()?;
                let version = state.keys[at].1;
                Some(Compare { key, op: CompareOp::Equal, target: CompareTarget::Version(version) })
            })
            .collect();
        Ok(Some(cmd::Txn { compares, success: record.writes, failure: Vec::new() }))
    }

    /// The overlay the group's commands run against, for a frontend that runs them through its
    /// own command paths (RESP's EXEC runs its queued commands' handlers against a `Context`
    /// whose engine is this). Writes to keys the group did not declare make [`Group::commit`]
    /// refuse the whole group; reads of them find nothing. Prefer [`Group::run`], which refuses
    /// undeclared keys at once.
    pub fn overlay(&self) -> &Arc<Engine> {
        &self.state.overlay
    }

    /// Whether `key` (declared) exists as the group sees it now.
    pub fn exists(&self, key: &[u8]) -> Result<bool, Error> {
        self.check_declared(key)?;
        Ok(self.state.overlay.read(key, |_| ()).is_some())
    }

    /// Whether `key` (declared) is as Redis's WATCH saw it ([`Engine::watch_point`]: `version`,
    /// with the counter at `since`): a key that existed must still have that version (a write,
    /// a deletion or its expiry since changes it); a key that did not exist must still be
    /// missing, with no slot written since (created, and maybe expired, after the WATCH) and
    /// nothing removed from its partition since (created and deleted after the WATCH, as Redis
    /// 7 counts it). A key already expired at WATCH and reclaimed later is no change, as in
    /// Redis 7.0. The partition is the granularity of the last test: another key of the same
    /// partition (1/512 of the keyspace) removed since aborts the EXEC too, which a WATCH
    /// client retries; a change is never missed.
    pub fn unchanged_since(&self, key: &[u8], version: u64, since: u64) -> Result<bool, Error> {
        self.check_declared(key)?;
        let now = self.state.overlay.read(key, |slot| slot.version()).unwrap_or(0);
        if now != version {
            return Ok(false);
        }
        if version != 0 {
            return Ok(true);
        }
        let engine = self.engine;
        let hash = engine.hash(key);
        let index = engine.partition_index(hash);
        let table = &self.held[held_index(&self.held, index)].1;
        if table.get(hash, key).is_some_and(|e| e.version() > since) {
            return Ok(false);
        }
        Ok(engine.partitions[index].removed.load(Ordering::Relaxed) <= since)
    }

    /// Applies what the group changed, atomically; returns the log position the acknowledgement
    /// must wait for. A log that refuses the record (failed, shutting down, a record too large
    /// to recover) refuses the whole group: nothing is applied.
    pub fn commit(self) -> Result<LogPosition, Error> {
        let Group { engine, mut held, now, state } = self;
        let overlay = &state.overlay;
        let mut changes: Vec<(Bytes, Fate)> = Vec::new();
        for (key, loaded) in &state.keys {
            let (key, loaded) = (key.clone(), *loaded);
            match overlay.take(&key) {
                Some(entry) if entry.version() == loaded => {}
                Some(entry) => changes.push((key, Fate::Put(entry))),
                None if loaded == 0 => {
                    // Maybe created and removed inside the group: nothing to write, but a WATCH
                    // of the missing key must see it touched, as Redis does (its partition's
                    // removal mark, raised under the lock held).
                    let (_, in_overlay) = overlay.locate(&key);
                    let mark = in_overlay.removed.load(Ordering::Relaxed);
                    if mark > 0 {
                        engine.partitions[engine.partition_index(engine.hash(&key))].note_removed(mark);
                    }
                }
                None => changes.push((key, Fate::Remove(engine.next_version()))),
            }
        }
        if overlay.key_count() > 0 {
            // Only the declared keys' partitions are locked: a write elsewhere cannot be applied
            // atomically, so the group is refused whole.
            return Err(Error::InvalidArgument(
                "a transaction wrote a key it did not declare; nothing was applied".into(),
            ));
        }
        let mut at = LogPosition::default();
        if changes.is_empty() {
            return Ok(at);
        }
        let log = engine.log.get();
        let watched = engine.watched();
        if log.is_some() || watched {
            let effects: Vec<Effect<'_>> = changes
                .iter()
                .map(|(key, fate)| match fate {
                    Fate::Put(entry) => Effect {
                        key,
                        version: entry.version(),
                        kind: EffectKind::Set { value: entry.value(), deadline: entry.deadline() },
                    },
                    Fate::Remove(version) => Effect { key, version: *version, kind: EffectKind::Delete },
                })
                .collect();
            let position = match log {
                Some(log) => log.append_group(&effects)?,
                None => 0,
            };
            at.raise(position);
            if watched {
                for observer in engine.observers.iter().filter(|o| o.is_active()) {
                    observer.on_group(&effects, position);
                }
            }
        }
        let tick = Engine::access_tick(now);
        for (key, fate) in changes {
            let hash = engine.hash(&key);
            let index = engine.partition_index(hash);
            let part = &engine.partitions[index];
            let slot_in = held_index(&held, index);
            let table = &mut held[slot_in].1;
            match fate {
                Fate::Put(new) => {
                    new.touch(tick);
                    let added = new.footprint();
                    let removed = match table.place(hash, &key, |k| engine.hash(k)) {
                        Place::Occupied(mut o) => {
                            let entry = o.get_mut();
                            let (old, before) = (entry.deadline(), entry.footprint());
                            *entry = new;
                            engine.reindex(part, entry.key(), old, entry.deadline());
                            before
                        }
                        Place::Vacant(v) => {
                            let deadline = new.deadline();
                            let entry = v.insert(new).into_mut();
                            if deadline != 0 {
                                engine.index(part, deadline, entry.key());
                            }
                            0
                        }
                    };
                    table.charge(added, removed);
                }
                Fate::Remove(_) => {
                    if let Some(gone) = table.remove_if(hash, &key, |_| true) {
                        part.note_removed(gone.version());
                        engine.unindex(part, gone.deadline(), gone.key());
                    }
                }
            }
        }
        drop(held);
        Ok(at)
    }

    /// Writes `value` to `key` (declared) as a plain string without TTL (MSET's write).
    fn put_plain(&self, key: Bytes, value: &[u8]) -> Result<(), Error> {
        self.check_declared(&key)?;
        let overlay = &self.state.overlay;
        overlay.update(&mut LogPosition::default(), key, |_, _| {
            let slot = Slot { value: super::Value::str(value), version: overlay.next_version(), deadline: 0 };
            Ok(((), Change::put(slot)))
        })
    }
}

impl Engine {
    /// Writes every pair (clearing TTLs) as one group; with `only_if_none_exist`, nothing when any
    /// key exists. All the pairs are logged as one record and seen together.
    pub(crate) fn multi_put(
        &self,
        at: &mut LogPosition,
        pairs: Vec<(Bytes, Bytes)>,
        only_if_none_exist: bool,
    ) -> Result<bool, Error> {
        self.check_writable()?;
        let group = self.lock_group(&pairs.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>());
        if only_if_none_exist {
            for (key, _) in &pairs {
                if group.exists(key)? {
                    return Ok(false);
                }
            }
        }
        for (key, value) in pairs {
            group.put_plain(key, &value)?;
        }
        at.raise(group.commit()?.0);
        Ok(true)
    }

    /// Moves `from`'s value and deadline to `to`, replacing whatever `to` held, as one group: the
    /// destination's write and the source's removal are one log record, seen together.
    pub(crate) fn rename(&self, at: &mut LogPosition, from: Bytes, to: Bytes) -> Result<bool, Error> {
        self.check_writable()?;
        let group = self.lock_group(&[from.clone(), to.clone()]);
        if !group.exists(&from)? {
            return Err(Error::NotFound);
        }
        if from == to {
            return Ok(true);
        }
        let overlay = &group.state.overlay;
        let (value, deadline) =
            overlay.read(&from, |s| (s.value().to_value(), s.deadline())).ok_or(Error::NotFound)?;
        let mut none = LogPosition::default();
        overlay.update(&mut none, to, |_, _| {
            Ok(((), Change::put(Slot { value, version: overlay.next_version(), deadline })))
        })?;
        overlay.update(&mut none, from, |_, _| Ok(((), Change::Remove)))?;
        at.raise(group.commit()?.0);
        Ok(true)
    }
}

/// A transaction is one group: its compares, then the branch they select, then one commit.
impl Apply for cmd::Txn {
    fn apply(self, engine: &Engine, at: &mut LogPosition) -> Result<TxnOutcome, Error> {
        if self.writes() {
            // As for a single write: refused while the log cannot take it, even if it would
            // change nothing.
            engine.check_writable()?;
        }
        let group = engine.lock_group(&self.declared_keys());
        let mut succeeded = true;
        for compare in &self.compares {
            if !group.compare(compare)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { self.success } else { self.failure };
        let results = ops.into_iter().map(|op| group.run(op)).collect();
        at.raise(group.commit()?.0);
        Ok(TxnOutcome { succeeded, results })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    use nanodb_protocol::{Expiry, Limits, PutCondition};

    use super::*;
    use crate::engine::EffectObserver;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(key: &str, value: &str) -> Command {
        Command::Put(cmd::Put {
            key: b(key),
            value: b(value),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        })
    }

    fn get(key: &str) -> Command {
        Command::Get(cmd::Get { key: b(key) })
    }

    fn value(reply: &Result<Reply, Error>) -> Option<Bytes> {
        match reply {
            Ok(Reply::Value(Some(e))) => Some(e.value.clone()),
            _ => None,
        }
    }

    /// Records what the observers are told, in order, and how (one group or single effects).
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<(String, Vec<Bytes>)>>);

    impl EffectObserver for Recorder {
        fn is_active(&self) -> bool {
            true
        }
        fn on_effect(&self, key: &[u8], _: &Effect<'_>, _: u64) {
            self.0.lock().expect("recorder").push(("one".into(), vec![Bytes::copy_from_slice(key)]));
        }
        fn on_expired(&self, _: &[u8], _: u64) {}
        fn on_group(&self, effects: &[Effect<'_>], _: u64) {
            let keys = effects.iter().map(|e| Bytes::copy_from_slice(e.key)).collect();
            self.0.lock().expect("recorder").push(("group".into(), keys));
        }
    }

    #[test]
    fn a_txn_runs_the_branch_its_compares_select() {
        let engine = Engine::new(Limits::default());
        engine.execute(put("a", "1")).expect("put");
        let version = engine.version_of(b"a");
        let txn = |target| {
            Command::Txn(cmd::Txn {
                compares: vec![Compare { key: b("a"), op: CompareOp::Equal, target }],
                success: vec![put("b", "yes"), get("a")],
                failure: vec![put("b", "no")],
            })
        };
        let Ok(Reply::Txn(t)) = engine.execute(txn(CompareTarget::Version(version))) else { panic!() };
        assert!(t.succeeded);
        assert_eq!(value(&t.results[1]), Some(b("1")));
        assert_eq!(engine.get(b"b").expect("get").map(|e| e.value), Some(b("yes")));
        let Ok(Reply::Txn(t)) = engine.execute(txn(CompareTarget::Version(version + 100))) else { panic!() };
        assert!(!t.succeeded);
        assert_eq!(engine.get(b"b").expect("get").map(|e| e.value), Some(b("no")));
        let Ok(Reply::Txn(t)) = engine.execute(txn(CompareTarget::Value(b("1")))) else { panic!() };
        assert!(t.succeeded, "value compare");
        let Ok(Reply::Txn(t)) = engine.execute(txn(CompareTarget::Exists(false))) else { panic!() };
        assert!(!t.succeeded, "existence compare");
    }

    #[test]
    fn a_runtime_error_fails_only_its_operation() {
        let engine = Engine::new(Limits::default());
        engine.execute(put("s", "text")).expect("put");
        let txn = Command::Txn(cmd::Txn {
            compares: vec![],
            success: vec![
                Command::Incr(cmd::Incr { key: b("n"), delta: 2 }),
                Command::Incr(cmd::Incr { key: b("s"), delta: 1 }),
                Command::Incr(cmd::Incr { key: b("n"), delta: 3 }),
            ],
            failure: vec![],
        });
        let Ok(Reply::Txn(t)) = engine.execute(txn) else { panic!() };
        assert_eq!(t.results, vec![Ok(Reply::Int(2)), Err(Error::NotAnInteger), Ok(Reply::Int(5))]);
        assert_eq!(engine.get(b"n").expect("get").map(|e| e.value), Some(b("5")));
    }

    #[test]
    fn a_group_refuses_undeclared_keys_and_keyspace_wide_commands() {
        let engine = Engine::new(Limits::default());
        let group = engine.lock_group(&[b("a")]);
        assert!(matches!(group.run(put("b", "x")), Err(Error::InvalidArgument(_))));
        assert!(matches!(group.run(Command::KeyCount(cmd::KeyCount {})), Err(Error::InvalidArgument(_))));
        group.run(put("a", "x")).expect("declared");
        drop(group);
        assert_eq!(engine.key_count(), 0, "a group dropped without commit wrote nothing");
    }

    #[test]
    fn observers_get_a_group_at_once_and_mset_rename_are_groups() {
        let recorder = Arc::new(Recorder::default());
        let engine = Engine::with_observers(Limits::default(), vec![recorder.clone()]);
        let pairs = vec![(b("x"), b("1")), (b("y"), b("2"))];
        engine.execute(Command::MultiPut(cmd::MultiPut { pairs, only_if_none_exist: false })).expect("mset");
        engine.execute(Command::Rename(cmd::Rename { from: b("x"), to: b("z") })).expect("rename");
        let seen = recorder.0.lock().expect("recorder").clone();
        assert_eq!(
            seen,
            vec![("group".to_string(), vec![b("x"), b("y")]), ("group".to_string(), vec![b("x"), b("z")]),]
        );
        assert_eq!(engine.get(b"x").expect("get"), None);
        assert_eq!(engine.get(b"z").expect("get").map(|e| e.value), Some(b("1")));
        // MSETNX with one key present writes nothing.
        let pairs = vec![(b("new"), b("1")), (b("y"), b("2"))];
        let r = engine.execute(Command::MultiPut(cmd::MultiPut { pairs, only_if_none_exist: true }));
        assert_eq!(r, Ok(Reply::Bool(false)));
        assert_eq!(engine.get(b"new").expect("get"), None);
    }

    /// What WATCH remembers of a missing key ([`Engine::watch_point`]) sees the key created and
    /// removed since, by a delete, inside a group, or by FLUSH; a removal in another partition,
    /// or a delete of the key while it stays missing, is no change.
    #[test]
    fn a_watched_missing_key_sees_its_creation_and_removal() {
        let engine = Engine::new(Limits::default());
        let unchanged = |key: &str, (version, since): (u64, u64)| {
            engine.lock_group(&[b(key)]).unchanged_since(key.as_bytes(), version, since).expect("declared")
        };
        let del = |key: &str| engine.execute(Command::Delete(cmd::Delete { key: b(key) })).expect("del");
        let part = |key: &str| engine.partition_index(engine.hash(key.as_bytes()));
        let elsewhere =
            (0..).map(|i| format!("other{i}")).find(|k| part(k) != part("ghost")).expect("another partition");

        let seen = engine.watch_point(b"ghost");
        assert_eq!(seen.0, 0);
        engine.execute(put(&elsewhere, "1")).expect("put");
        del(&elsewhere);
        del("ghost");
        assert!(unchanged("ghost", seen), "only another partition changed, and a missing key was deleted");
        engine.execute(put("ghost", "1")).expect("put");
        assert!(!unchanged("ghost", seen), "created");
        del("ghost");
        assert!(!unchanged("ghost", seen), "created and deleted");

        let seen = engine.watch_point(b"ghost");
        let txn = cmd::Txn {
            compares: vec![],
            success: vec![put("ghost", "1"), Command::Delete(cmd::Delete { key: b("ghost") })],
            failure: vec![],
        };
        engine.execute(Command::Txn(txn)).expect("txn");
        assert_eq!(engine.version_of(b"ghost"), 0);
        assert!(!unchanged("ghost", seen), "created and deleted inside one group");

        engine.execute(put("ghost", "1")).expect("put");
        let seen = engine.watch_point(b"ghost");
        assert_ne!(seen.0, 0);
        engine.execute(Command::Flush(cmd::Flush {})).expect("flush");
        assert!(!unchanged("ghost", seen), "flushed");
        let seen = engine.watch_point(b"ghost");
        assert!(unchanged("ghost", seen));
    }

    /// A group that ends with its overlay empty hands it to the engine's next group; whatever
    /// a group left in it (an expiry entry, a removal mark, a key it wrote and
    /// did not commit) never reaches the next group, and another engine never gets it.
    #[test]
    fn a_reused_overlay_carries_nothing_into_the_next_group() {
        let engine = Engine::new(Limits::default());
        let clean = |g: &Group<'_>| {
            let o = g.overlay();
            o.key_count() == 0
                && o.expiring_count() == 0
                && o.partitions.iter().all(|p| p.removed.load(Ordering::Relaxed) == 0)
        };
        let with_ttl = Command::Put(cmd::Put {
            key: b("t"),
            value: b("1"),
            expiry: Expiry::In(100_000),
            condition: PutCondition::Always,
        });

        // A committed group: its TTL key's expiry entry and a created-and-deleted key's removal
        // mark stay in the overlay after the commit took the keys out.
        let g = engine.lock_group(&[b("t"), b("ghost")]);
        g.run(with_ttl).expect("put with a TTL");
        g.run(put("ghost", "1")).expect("put");
        g.run(Command::Delete(cmd::Delete { key: b("ghost") })).expect("delete");
        let first = Arc::as_ptr(g.overlay());
        g.commit().expect("commit");
        assert!(engine.version_of(b"t") != 0);
        let g = engine.lock_group(&[b("other")]);
        assert_eq!(Arc::as_ptr(g.overlay()), first, "the committed group's overlay is reused");
        assert!(clean(&g), "no expiry entry, removal mark or key is left from the last group");
        g.commit().expect("commit");

        // A group whose commit is refused (it wrote a key it did not declare) keeps its overlay's
        // contents: that overlay is not reused, and the next group finds nothing of it.
        let g = engine.lock_group(&[b("k")]);
        g.overlay().execute(put("undeclared", "leak")).expect("overlay put");
        assert!(g.commit().is_err());
        let g = engine.lock_group(&[b("undeclared")]);
        assert!(clean(&g));
        assert_eq!(value(&g.run(get("undeclared"))), None);
        g.run(put("undeclared", "x")).expect("put");
        // Dropped without commit: nothing written, and the overlay holding the write not reused.
        drop(g);
        let g = engine.lock_group(&[b("undeclared")]);
        assert!(clean(&g));
        assert_eq!(value(&g.run(get("undeclared"))), None);
        g.commit().expect("commit");

        // Another engine builds its own overlay.
        let other = Engine::new(Limits::default());
        let g = other.lock_group(&[b("t")]);
        assert!(Arc::ptr_eq(&g.overlay().versions, &other.versions));
        assert_eq!(value(&g.run(get("t"))), None, "the other engine's keys only");
    }

    /// A group's commands all see the time it started (its overlay's clock is pinned, as Redis 7
    /// freezes time for a script or an EXEC): a key it gave a TTL does not expire inside it, and
    /// expires on time outside it; the engine's own clock runs on, and a reused overlay is
    /// pinned afresh to its next group's start.
    #[tokio::test(start_paused = true)]
    async fn a_group_sees_the_time_it_started() {
        use std::time::Duration;
        let engine = Engine::new(Limits::default());
        let with_ttl = |key: &str| {
            Command::Put(cmd::Put {
                key: b(key),
                value: b("1"),
                expiry: Expiry::In(100),
                condition: PutCondition::Always,
            })
        };
        let started = engine.clock().now_ms();
        let g = engine.lock_group(&[b("t")]);
        assert_eq!(g.overlay().clock.now_ms(), started);
        g.run(with_ttl("t")).expect("put with a TTL");
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(g.overlay().clock.now_ms(), started, "pinned while the group runs");
        assert_eq!(value(&g.run(get("t"))), Some(b("1")), "not expired inside the group");
        assert!(engine.clock().now_ms() >= started + 250, "the engine's clock runs on");
        g.commit().expect("commit");
        // Committed with the deadline set at the group's start: already past outside it.
        assert_eq!(engine.get(b"t").expect("get"), None);

        let g = engine.lock_group(&[b("u")]);
        assert_eq!(g.overlay().clock.now_ms(), engine.clock().now_ms(), "a reused overlay is pinned anew");
        g.run(with_ttl("u")).expect("put with a TTL");
        g.commit().expect("commit");
        assert_eq!(engine.get(b"u").expect("get").map(|e| e.value), Some(b("1")));
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(engine.get(b"u").expect("get"), None, "expires on time");
    }

    /// A recording group (a script in a cluster) writes nothing and draws no version here; what it
    /// did becomes a transaction pinning the keys it touched and replaying its successful writes,
    /// which does the same to another engine in the same state.
    #[test]
    fn a_recording_group_becomes_a_transaction_that_replays_it() {
        let engine = Engine::new(Limits::default());
        engine.execute(put("a", "1")).expect("put");
        engine.execute(put("s", "text")).expect("put");
        let replica = Engine::new(Limits::default());
        replica.execute(put("a", "1")).expect("put");
        replica.execute(put("s", "text")).expect("put");
        let (a, s, drawn) =
            (engine.version_of(b"a"), engine.version_of(b"s"), engine.versions.load(Ordering::Relaxed));
        let mut group = engine.lock_group(&[b("a"), b("b"), b("s"), b("unused")]);
        group.record().expect("record");
        assert_eq!(value(&group.run(get("a"))), Some(b("1")));
        group.run(put("b", "x")).expect("put");
        assert_eq!(group.run(Command::Incr(cmd::Incr { key: b("s"), delta: 1 })), Err(Error::NotAnInteger));
        group.run(Command::Incr(cmd::Incr { key: b("b"), delta: 1 })).expect_err("not an integer");
        group.run(put("b", "2")).expect("put");
        // MGET's read of several keys is a transaction of gets: it runs inside the group.
        let mget =
            Command::Txn(cmd::Txn { compares: vec![], success: vec![get("a"), get("b")], failure: vec![] });
        let Ok(Reply::Txn(read)) = group.run(mget) else { panic!("mget in a group") };
        assert_eq!(read.results.iter().map(value).collect::<Vec<_>>(), vec![Some(b("1")), Some(b("2"))]);
        let txn = group.into_txn().expect("recording").expect("it wrote");
        let pinned: Vec<(Bytes, CompareTarget)> =
            txn.compares.iter().map(|c| (c.key.clone(), c.target.clone())).collect();
        assert_eq!(
            pinned,
            vec![
                (b("a"), CompareTarget::Version(a)),
                (b("b"), CompareTarget::Version(0)),
                (b("s"), CompareTarget::Version(s))
            ],
            "every key it named, at the version it saw (0: absent); not the key it never named"
        );
        assert_eq!(txn.success, vec![put("b", "x"), put("b", "2")], "its successful writes, in order");
        assert_eq!(engine.get(b"b").expect("get"), None, "nothing written here");
        assert_eq!(engine.versions.load(Ordering::Relaxed), drawn, "no version drawn here");
        let Ok(Reply::Txn(t)) = replica.execute(Command::Txn(txn.clone())) else { panic!() };
        assert!(t.succeeded);
        assert_eq!(replica.get(b"b").expect("get").map(|e| e.value), Some(b("2")));
        // Once a pinned key changed, the transaction applies nothing.
        replica.execute(put("a", "changed")).expect("put");
        replica.execute(Command::Delete(cmd::Delete { key: b("b") })).expect("delete");
        let Ok(Reply::Txn(t)) = replica.execute(Command::Txn(txn)) else { panic!() };
        assert!(!t.succeeded);
        assert_eq!(replica.get(b"b").expect("get"), None);
        // A group that only read proposes nothing.
        let mut group = engine.lock_group(&[b("a")]);
        group.record().expect("record");
        group.run(get("a")).expect("get");
        assert_eq!(group.into_txn(), Ok(None));
        // A group that was not recording cannot lose its writes silently.
        assert_eq!(engine.lock_group(&[b("a")]).into_txn(), Err(Error::Internal));
    }

    /// Writers replace ten keys with one tag per group while readers read all ten in a group:
    /// every read sees one tag, never a mix.
    #[test]
    fn readers_never_see_part_of_a_group() {
        let engine = Arc::new(Engine::new(Limits::default()));
        let keys: Vec<String> = (0..10).map(|i| format!("{{t}}:{i}")).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (engine, keys, stop) = (engine.clone(), keys.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let tag = format!("w{w}-{n}");
                        let pairs = keys.iter().map(|k| (b(k), b(&tag))).collect();
                        engine
                            .execute(Command::MultiPut(cmd::MultiPut { pairs, only_if_none_exist: false }))
                            .expect("mset");
                    }
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        let mut reads = 0;
        while std::time::Instant::now() < deadline || reads < 200 {
            let txn = cmd::Txn {
                compares: vec![],
                success: keys.iter().map(|k| get(k)).collect(),
                failure: vec![],
            };
            let Ok(Reply::Txn(t)) = engine.execute(Command::Txn(txn)) else { panic!() };
            let tags: Vec<Option<Bytes>> = t.results.iter().map(value).collect();
            assert!(tags.iter().all(|t| *t == tags[0]), "a partial group was seen: {tags:?}");
            reads += 1;
        }
        stop.store(true, Ordering::Relaxed);
        writers.into_iter().for_each(|w| w.join().expect("writer"));
    }
}
