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
#[derive(Debug, Default)]
pub(crate) struct Table {
    entries: HashTable<Entry>,
}

/// A key's place in a [`Table`], found for writing.
pub(crate) type Place<'a> = TableEntry<'a, Entry>;

impl Table {
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
        match self.entries.find_entry(table_hash(hash), |e| e.key() == key) {
            Ok(found) if pred(found.get()) => Some(found.remove().0),
            _ => None,
        }
    }

    /// Every entry, in table order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
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
