//! Key-level operations: TYPE, FLUSH, RANDOMKEY. The writes that touch several keys (MultiPut
//! for MSET/MSETNX, Rename) are atomic groups: see [`super::group`].

use std::sync::atomic::Ordering;

use bytes::Bytes;
use nanodb_protocol::{Error, KeyType};

use super::{Change, Engine, LogPosition};

impl Engine {
    /// The type of a live key, `None` when it does not exist.
    pub(crate) fn type_of(&self, key: &[u8]) -> Option<KeyType> {
        self.read(key, |slot| slot.value().key_type())
    }

    /// Removes every key; how many live keys were removed. Stops at the first removal the log
    /// refuses and returns its error.
    pub(crate) fn flush(&self, at: &mut LogPosition) -> Result<usize, Error> {
        let mut removed = 0;
        for part in self.partitions.iter() {
            // Collect first: no guard may be held while `update` takes the write lock. Each key
            // goes through `update` so that the log and the watchers see every removal.
            let keys: Vec<Bytes> = part.read().iter().map(|e| Bytes::copy_from_slice(e.key())).collect();
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
        let count = self.partitions.len();
        let start = (seed as usize) % count;
        for i in 0..count {
            let table = self.partitions[(start + i) % count].read();
            let len = table.len();
            if len == 0 {
                continue;
            }
            let skip = ((seed >> 16) as usize) % len;
            let live = |e: &&super::Entry| !e.is_expired(now);
            let found = table.iter().skip(skip).find(live).or_else(|| table.iter().find(live));
            if let Some(entry) = found {
                return Some(Bytes::copy_from_slice(entry.key()));
            }
        }
        None
    }
}
