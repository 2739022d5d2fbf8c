//! Where a partition's keys live: a hash table holding one pointer per key.
//!
//! The engine began on DashMap, which stores each `(key, value)` pair inline in its buckets. A hash
//! table is between 44% and 87% full (it doubles when it reaches 7/8), so every key pays for one to
//! two buckets: with an 88-byte `(Bytes, Slot)` pair that was ~180 bytes of table per key at 1M
//! keys, before the key and value themselves, and about twice Redis's memory per key. Here a
//! bucket holds one thin pointer to an [`Entry`] (header, key and value in one block: see
//! [`super::entry`]), so the table costs ~9-18 bytes per key and the rest is what the key holds.
//!
//! The concurrency design is DashMap's: each partition's table sits behind its own `RwLock`,
//! reads share it, writes hold it for one key's update, and no guard is ever held across an
//! `.await` (the engine never awaits). What changes is only what a bucket holds.
//!
//! Hashing: the engine hashes a key once (`Engine::hash`); its top bits choose the partition and
//! scans order keys by it. hashbrown takes its 7-bit tag from the top bits and its bucket index
//! from the bottom bits of the hash it is given, and inside one partition the top bits are all
//! the same, so the table is given the hash rotated by half ([`table_hash`]): tag and index then
//! come from bits the partition choice did not use.

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as TableEntry;

use super::entry::Entry;

/// The hash hashbrown sees for an engine hash: see the module docs.
pub(crate) fn table_hash(hash: u64) -> u64 {
    hash.rotate_left(32)
}

/// One partition's keys. Callers pass the engine hash of the key they look up (computed once per
/// command) and a function that recomputes it from a key, which the table calls when it grows.
///
/// It also keeps the partition's share of the dataset's memory (`--max-memory`): the sum of its
/// entries' [`Entry::footprint`]s, under the partition's lock like the entries themselves.
/// Removals through the table subtract on their own; whoever inserts or changes an entry through
/// a [`Place`] reports the difference with [`Table::charge`] (only `Engine::update` and a group's
/// commit do).
#[derive(Debug, Default)]
pub(crate) struct Table {
    entries: HashTable<Entry>,
    /// Sum of the entries' footprints.
    bytes: usize,
}

/// A key's place in a [`Table`], found for writing.
pub(crate) type Place<'a> = TableEntry<'a, Entry>;

impl Table {
    /// Readies this table, empty, for reuse (an emptied overlay's: see `group`): whether it
    /// holds no entry and at most `max_slots` slots (one that grew large is not kept). Its entry
    /// bytes are then zero, as they are once every removal was accounted for.
    pub fn reusable(&mut self, max_slots: usize) -> bool {
        if !self.entries.is_empty() || self.entries.capacity() > max_slots {
            return false;
        }
        self.bytes = 0;
        true
    }

    /// Number of keys (expired ones the sweeper has not reached included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry for `key`, if present.
    pub fn get(&self, hash: u64, key: &[u8]) -> Option<&Entry> {
        self.entries.find(table_hash(hash), |e| e.key() == key)
    }

    /// The place of `key`: occupied (its entry) or vacant (where it would go).
    pub fn place(&mut self, hash: u64, key: &[u8], rehash: impl Fn(&[u8]) -> u64) -> Place<'_> {
        self.entries.entry(table_hash(hash), |e| e.key() == key, |e| table_hash(rehash(e.key())))
    }

    /// Removes `key` if `pred` says so; the removed entry.
    pub fn remove_if(&mut self, hash: u64, key: &[u8], pred: impl FnOnce(&Entry) -> bool) -> Option<Entry> {
        let gone = match self.entries.find_entry(table_hash(hash), |e| e.key() == key) {
            Ok(found) if pred(found.get()) => found.remove().0,
            _ => return None,
        };
        self.bytes = self.bytes.saturating_sub(gone.footprint());
        Some(gone)
    }

    /// Accounts for a change made through a [`Place`]: footprints `added` and `removed`.
    pub fn charge(&mut self, added: usize, removed: usize) {
        self.bytes = (self.bytes + added).saturating_sub(removed);
    }

    /// This partition's memory: its entries' footprints and the table's own allocation (buckets
    /// and control bytes).
    pub fn footprint(&self) -> usize {
        self.bytes + self.entries.allocation_size()
    }

    /// The footprint counted from scratch (tests check it equals the running sum).
    #[cfg(test)]
    pub fn recount(&self) -> usize {
        self.entries.iter().map(Entry::footprint).sum::<usize>() + self.entries.allocation_size()
    }

    /// An entry picked from `random`: the first occupied bucket at or after a random bucket
    /// (O(1) expected: the table is at least 7/16 full once it has grown). Not uniform (a key
    /// after a run of empty buckets is likelier), which eviction sampling does not mind.
    pub fn sample(&self, random: u64) -> Option<&Entry> {
        let buckets = self.entries.num_buckets();
        if self.entries.is_empty() || buckets == 0 {
            return None;
        }
        let start = (random % buckets as u64) as usize;
        (0..buckets).find_map(|i| self.entries.get_bucket((start + i) % buckets))
    }

    /// Every entry, in table order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Makes room for `additional` more keys without growing (recovery pre-sizes the tables from
    /// a snapshot's record count, so no table doubles its way there rehashing every key).
    pub fn reserve(&mut self, additional: usize, rehash: impl Fn(&[u8]) -> u64) {
        self.entries.reserve(additional, |e| table_hash(rehash(e.key())));
    }

    /// Gives memory back after mass removal (FLUSHDB): the table is resized to what it holds.
    pub fn shrink_to_fit(&mut self, rehash: impl Fn(&[u8]) -> u64) {
        self.entries.shrink_to_fit(|e| table_hash(rehash(e.key())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::value::{Slot, Value};

    fn entry(key: &[u8], version: u64) -> Entry {
        Entry::new(key, Slot { value: Value::Int(version as i64), version, deadline: 0 })
    }

    /// Keys whose engine hashes share their top bits (as all keys of one partition do) still
    /// spread over the table: lookups find each one, and growth rehashes correctly.
    #[test]
    fn keys_of_one_partition_insert_find_and_remove() {
        let hasher = ahash::RandomState::new();
        // Force the top 9 bits to one partition's value, as the engine's partition choice does.
        let hash = |k: &[u8]| (hasher.hash_one(k) & (u64::MAX >> 9)) | (0x1a5 << 55);
        let mut table = Table::default();
        for i in 0..10_000u64 {
            let key = format!("key:{i}");
            match table.place(hash(key.as_bytes()), key.as_bytes(), hash) {
                TableEntry::Vacant(v) => {
                    v.insert(entry(key.as_bytes(), i));
                }
                TableEntry::Occupied(_) => panic!("{key} inserted twice"),
            }
        }
        assert_eq!(table.len(), 10_000);
        for i in 0..10_000u64 {
            let key = format!("key:{i}");
            assert_eq!(table.get(hash(key.as_bytes()), key.as_bytes()).map(Entry::version), Some(i));
        }
        assert!(table.get(hash(b"missing"), b"missing").is_none());
        // remove_if keeps what the predicate refuses.
        assert!(table.remove_if(hash(b"key:7"), b"key:7", |e| e.version() == 8).is_none());
        assert!(table.remove_if(hash(b"key:7"), b"key:7", |e| e.version() == 7).is_some());
        assert!(table.get(hash(b"key:7"), b"key:7").is_none());
        assert_eq!(table.iter().count(), 9_999);
    }

    #[test]
    fn samples_find_entries_and_removals_give_back_their_bytes() {
        let hasher = ahash::RandomState::new();
        let hash = |k: &[u8]| hasher.hash_one(k);
        let mut table = Table::default();
        assert!(table.sample(7).is_none());
        for i in 0..100u64 {
            let key = i.to_be_bytes();
            if let TableEntry::Vacant(v) = table.place(hash(&key), &key, hash) {
                let added = v.insert(entry(&key, i)).get().footprint();
                table.charge(added, 0);
            }
        }
        let entries = table.footprint() - table.entries.allocation_size();
        assert_eq!(entries, 100 * entry(&[0; 8], 0).footprint());
        let mut seen = std::collections::HashSet::new();
        for r in 0..10_000u64 {
            seen.insert(table.sample(r.wrapping_mul(0x9e37_79b9_7f4a_7c15)).map(Entry::version));
        }
        assert!(seen.len() > 50 && !seen.contains(&None), "{} distinct samples", seen.len());
        for i in 0..100u64 {
            let key = i.to_be_bytes();
            table.remove_if(hash(&key), &key, |_| true);
        }
        assert_eq!(table.footprint(), table.entries.allocation_size());
    }

    #[test]
    fn shrinking_keeps_what_is_left() {
        let hasher = ahash::RandomState::new();
        let hash = |k: &[u8]| hasher.hash_one(k);
        let mut table = Table::default();
        for i in 0..1_000u64 {
            let key = i.to_be_bytes();
            if let TableEntry::Vacant(v) = table.place(hash(&key), &key, hash) {
                v.insert(entry(&key, i));
            }
        }
        for i in 1..1_000u64 {
            let key = i.to_be_bytes();
            table.remove_if(hash(&key), &key, |_| true);
        }
        table.shrink_to_fit(hash);
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(hash(&0u64.to_be_bytes()), &0u64.to_be_bytes()).map(Entry::version), Some(0));
    }
}
