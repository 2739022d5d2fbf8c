//! Loading the store into the engine at start (slice 1 keeps every key in memory).
//!
//! One scan of `meta`: strings and integers come whole from their entry, a hash's fields and a
//! list's elements from one iterator over `data` bounded to that key's `len|key|subver` range.
//! Expired keys are skipped and deleted. A second scan of `data`, one seek per hash or list, drops
//! elements no meta entry owns any more (their key was deleted by the compaction filter, or
//! recreated under a new subver): the compaction filter cannot see `meta` from `data`.

use std::collections::VecDeque;

use bytes::Bytes;
use rocksdb::{ColumnFamily, DB, Direction, IteratorMode, ReadOptions, WriteBatch};

use super::codec::{self, Kind};
use crate::engine::value::FieldMap;
use crate::engine::{Engine, OwnedEffect, OwnedEffectKind, Value};

/// Effects restored per `Engine::restore_batch` call.
const RESTORE_BATCH: usize = 1024;

/// What a load found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Loaded {
    /// Keys restored into the engine.
    pub keys: u64,
    /// Expired keys deleted instead.
    pub expired: u64,
    /// Hashes and lists whose leftover elements were deleted.
    pub orphans: u64,
}

/// Restores every live key of `db` into `engine` (whose clock says what has expired).
pub(crate) fn load(
    db: &DB,
    meta: &ColumnFamily,
    data: &ColumnFamily,
    engine: &Engine,
) -> Result<Loaded, rocksdb::Error> {
    let now = engine.clock().now_ms();
    let mut loaded = Loaded::default();
    let mut cleanup = WriteBatch::default();
    let mut batch = Vec::with_capacity(RESTORE_BATCH);
    if let Ok(Some(estimate)) = db.property_int_value_cf(meta, "rocksdb.estimate-num-keys") {
        engine.reserve(usize::try_from(estimate).unwrap_or(0));
    }
    for item in db.iterator_cf(meta, IteratorMode::Start) {
        let (key, raw) = item?;
        let Some(m) = codec::decode_meta(&raw) else {
            tracing::warn!(key = %String::from_utf8_lossy(&key), "RocksDB store: skipping a malformed meta entry");
            continue;
        };
        if m.deadline != 0 && m.deadline <= now {
            if let Some(subver) = m.kind.subver() {
                let (from, to) = codec::data_range(&key, subver);
                cleanup.delete_range_cf(data, from, to);
            }
            cleanup.delete_cf(meta, &key);
            loaded.expired += 1;
            continue;
        }
        let value = match m.kind {
            Kind::Str => Value::Str(Bytes::copy_from_slice(codec::body(&raw))),
            Kind::Int => {
                let body: [u8; 8] = codec::body(&raw).try_into().unwrap_or_default();
                Value::Int(i64::from_le_bytes(body))
            }
            Kind::Hash { subver } => {
                let mut map = FieldMap::default();
                for_each_element(db, data, &key, subver, |field, value| {
                    map.insert(Bytes::copy_from_slice(field), Bytes::copy_from_slice(value));
                })?;
                Value::Hash(Box::new(map))
            }
            Kind::List { subver, .. } => {
                let mut list = VecDeque::new();
                for_each_element(db, data, &key, subver, |_, value| {
                    list.push_back(Bytes::copy_from_slice(value))
                })?;
                Value::List(Box::new(list))
            }
        };
        let key = Bytes::copy_from_slice(&key);
        let kind = OwnedEffectKind::Set { value, deadline: m.deadline };
        batch.push((OwnedEffect { key, version: m.version, kind }, false));
        loaded.keys += 1;
        if batch.len() >= RESTORE_BATCH {
            engine.restore_batch(&mut batch);
        }
    }
    engine.restore_batch(&mut batch);
    loaded.orphans = drop_orphans(db, meta, data, &mut cleanup)?;
    if !cleanup.is_empty() {
        db.write(cleanup)?;
    }
    Ok(loaded)
}

/// Calls `f(rest, value)` for every `data` entry of the hash or list `key`@`subver`, in order.
fn for_each_element(
    db: &DB,
    data: &ColumnFamily,
    key: &[u8],
    subver: u64,
    mut f: impl FnMut(&[u8], &[u8]),
) -> Result<(), rocksdb::Error> {
    let (from, to) = codec::data_range(key, subver);
    let prefix_len = from.len();
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(to);
    for item in db.iterator_cf_opt(data, opts, IteratorMode::From(&from, Direction::Forward)) {
        let (k, v) = item?;
        f(k.get(prefix_len..).unwrap_or_default(), &v);
    }
    Ok(())
}

/// Adds to `cleanup` a range deletion for every `len|key|subver` group of `data` whose key's meta
/// entry is missing or names another subver; returns how many.
fn drop_orphans(
    db: &DB,
    meta: &ColumnFamily,
    data: &ColumnFamily,
    cleanup: &mut WriteBatch,
) -> Result<u64, rocksdb::Error> {
    let mut orphans = 0;
    let mut it = db.raw_iterator_cf(data);
    it.seek_to_first();
    while let Some(k) = it.key() {
        let Some((key, subver, _)) = codec::split_data_key(k) else {
            // Not one of ours: step over it.
            it.next();
            continue;
        };
        let owned = db
            .get_cf(meta, key)?
            .and_then(|raw| codec::decode_meta(&raw))
            .is_some_and(|m| m.kind.subver() == Some(subver));
        let (from, to) = codec::data_range(key, subver);
        if !owned {
            cleanup.delete_range_cf(data, &from, &to);
            orphans += 1;
        }
        it.seek(&to);
    }
    it.status()?;
    Ok(orphans)
}
