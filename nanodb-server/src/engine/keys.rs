//! Key-level and multi-key operations: TYPE, FLUSH, RANDOMKEY, and the two writes that touch
//! several keys (MultiPut for MSET/MSETNX, Rename).
//!
//! # What is atomic about multi-key writes
//! MultiPut and Rename hold the engine's multi-key mutex for their whole run, so they are
//! serialised against each other: two MSETNX on overlapping keys never both apply, and a RENAME
//! never interleaves with an MSET. Each key is still written through [`Engine::update`] under its
//! own shard lock, and single-key commands do not take the mutex (it would serialise the whole
//! server), so a single-key reader may observe a MultiPut half-applied, and a single-key write
//! racing an MSETNX on the same key may land between its existence check and its writes (the
//! MSETNX then overwrites it, as if it had run just after). RENAME writes the destination before
//! it removes the source, so a concurrent reader can briefly see both keys (never neither), and a
//! crash between its two log records leaves both rather than losing the value. README and
//! PROTOCOL.md repeat this.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use nanodb_protocol::{Error, KeyType};

use super::value::{Slot, Value};
use super::{Change, Engine, LogPosition, PARTITIONS};

impl Engine {
    fn multi_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.multi.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The type of a live key, `None` when it does not exist.
    pub(crate) fn type_of(&self, key: &[u8]) -> Option<KeyType> {
        self.read(key, |slot| slot.value.key_type())
    }

    /// Writes every pair (clearing TTLs); with `only_if_none_exist`, nothing when any key exists.
    /// Stops at the first write the log refuses and returns its error (the pairs before it were
    /// applied, and are logged, but the command is not acknowledged).
    pub(crate) fn multi_put(
        &self,
        at: &mut LogPosition,
        pairs: Vec<(Bytes, Bytes)>,
        only_if_none_exist: bool,
    ) -> Result<bool, Error> {
        let _serial = self.multi_lock();
        if only_if_none_exist && pairs.iter().any(|(k, _)| self.read(k, |_| ()).is_some()) {
            return Ok(false);
        }
        for (key, value) in pairs {
            self.update(at, key, |_, _| {
                let new = Slot { value: Value::str(&value), version: self.next_version(), deadline: 0 };
                Ok(((), Change::put(new)))
            })?;
        }
        Ok(true)
    }

    /// Moves `from`'s value and deadline to `to`, replacing whatever `to` held.
    ///
    /// The destination is written before the source is removed, so the two log records can only
    /// be cut between in the safe order: a crash in between leaves both keys (the rename was not
    /// acknowledged), never neither. The source is removed only if nobody wrote it meanwhile (a
    /// concurrent write then counts as landing just after the rename).
    pub(crate) fn rename(&self, at: &mut LogPosition, from: Bytes, to: Bytes) -> Result<bool, Error> {
        let _serial = self.multi_lock();
        if from == to {
            return self.read(&from, |_| true).ok_or(Error::NotFound);
        }
        let (value, deadline, version) = self
            .read(&from, |slot| (slot.value.clone(), slot.deadline, slot.version))
            .ok_or(Error::NotFound)?;
        self.update(at, to, |_, _| {
            Ok(((), Change::put(Slot { value, version: self.next_version(), deadline })))
        })?;
        self.update(at, from, |slot, _| {
            Ok(match slot {
                Some(s) if s.version == version => ((), Change::Remove),
                _ => ((), Change::None),
            })
        })?;
        Ok(true)
    }

    /// Removes every key; how many live keys were removed. Stops at the first removal the log
    /// refuses and returns its error.
    pub(crate) fn flush(&self, at: &mut LogPosition) -> Result<usize, Error> {
        let mut removed = 0;
        for part in self.partitions.iter() {
            // Collect first: no guard may be held while `update` takes the write lock. Each key
            // goes through `update` so that the log and the watchers see every removal.
            let keys: Vec<Bytes> = part.read().iter().map(|e| Bytes::copy_from_slice(&e.key)).collect();
            for key in keys {
                let gone = self.update(at, key, |slot, _| {
                    Ok(if slot.is_some() { (true, Change::Remove) } else { (false, Change::None) })
                })?;
                removed += usize::from(gone);
            }
            // An emptied table keeps its buckets until told: give the memory back.
            part.write().shrink_to_fit(|k| self.hash(k));
        }
        Ok(removed)
    }

    /// A live key chosen at random (uniform over partitions, then over a partition's entries).
    pub(crate) fn random_key(&self) -> Option<Bytes> {
        let now = self.clock.now_ms();
        let seed =
            self.hasher.hash_one((now, self.versions.load(Ordering::Relaxed), std::thread::current().id()));
        let start = (seed as usize) % PARTITIONS;
        for i in 0..PARTITIONS {
            let table = self.partitions[(start + i) % PARTITIONS].read();
            let len = table.len();
            if len == 0 {
                continue;
            }
            let skip = ((seed >> 16) as usize) % len;
            let live = |e: &&super::Stored| !e.slot.is_expired(now);
            let found = table.iter().skip(skip).find(live).or_else(|| table.iter().find(live));
            if let Some(entry) = found {
                return Some(Bytes::copy_from_slice(&entry.key));
            }
        }
        None
    }
}
