//! Effects to one `WriteBatch`: how each [`OwnedEffectKind`] changes the `meta` and `data`
//! families (docs/ROCKSDB.md, "Write path"). The rules mirror `Engine::restore` (`engine/effect.rs`)
//! so that loading the store gives back what the engine held: a hash or list delta on a key of
//! another type starts a new hash or list, a delete of a hash or list drops its elements with one
//! range deletion.
//!
//! Hash and list deltas need the key's meta entry (subver, head, tail): it comes from this batch's
//! overlay when an earlier effect of the same batch wrote it, else from RocksDB. The one thread
//! that builds a batch at a time is the store's only writer, so what it reads is current.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use nanodb_protocol::ListEnd;
use rocksdb::{ColumnFamily, DB, WriteBatch};

use super::codec::{self, Kind, LIST_MIDDLE};
use crate::engine::{OwnedEffect, OwnedEffectKind, Value};

/// One batch being built.
pub(crate) struct BatchBuilder<'a> {
    db: &'a DB,
    meta: &'a ColumnFamily,
    data: &'a ColumnFamily,
    /// Meta entries written by this batch so far (`None`: deleted), newer than RocksDB's.
    overlay: HashMap<Bytes, Option<Vec<u8>>>,
    batch: WriteBatch,
}

impl<'a> BatchBuilder<'a> {
    pub(crate) fn new(db: &'a DB, meta: &'a ColumnFamily, data: &'a ColumnFamily) -> Self {
        Self { db, meta, data, overlay: HashMap::new(), batch: WriteBatch::default() }
    }

    /// The batch, with every effect added.
    pub(crate) fn finish(self) -> WriteBatch {
        self.batch
    }

    /// The key's raw meta entry as of the effects added so far.
    fn raw_meta(&self, key: &Bytes) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        match self.overlay.get(key) {
            Some(raw) => Ok(raw.clone()),
            None => self.db.get_cf(self.meta, key),
        }
    }

    fn put_meta(&mut self, key: &Bytes, raw: Vec<u8>) {
        self.batch.put_cf(self.meta, key, &raw);
        self.overlay.insert(key.clone(), Some(raw));
    }

    /// Drops the elements of the hash or list `raw` describes (nothing for a string).
    fn drop_elements(&mut self, key: &[u8], raw: Option<&[u8]>) {
        if let Some(subver) = raw.and_then(codec::decode_meta).and_then(|m| m.kind.subver()) {
            let (from, to) = codec::data_range(key, subver);
            self.batch.delete_range_cf(self.data, from, to);
        }
    }

    /// Adds one effect.
    pub(crate) fn add(&mut self, effect: OwnedEffect) -> Result<(), rocksdb::Error> {
        let OwnedEffect { key, version, kind } = effect;
        let old = self.raw_meta(&key)?;
        let old_meta = old.as_deref().and_then(codec::decode_meta);
        match kind {
            OwnedEffectKind::Set { value, deadline } => {
                self.drop_elements(&key, old.as_deref());
                self.put_value(&key, version, deadline, value);
            }
            OwnedEffectKind::Delete => {
                self.drop_elements(&key, old.as_deref());
                self.batch.delete_cf(self.meta, &key);
                self.overlay.insert(key, None);
            }
            OwnedEffectKind::Expire { deadline } => {
                if let Some(mut raw) = old {
                    codec::patch(&mut raw, version, deadline);
                    self.put_meta(&key, raw);
                }
            }
            OwnedEffectKind::HashSet { fields } => {
                let (raw, subver) = match (old, old_meta) {
                    (Some(mut raw), Some(m @ codec::Meta { kind: Kind::Hash { subver }, .. })) => {
                        codec::patch(&mut raw, version, m.deadline);
                        (raw, subver)
                    }
                    (old, _) => {
                        self.drop_elements(&key, old.as_deref());
                        (codec::encode_container(version, 0, Kind::Hash { subver: version }), version)
                    }
                };
                for (field, value) in fields {
                    self.batch.put_cf(self.data, codec::field_key(&key, subver, &field), &value);
                }
                self.put_meta(&key, raw);
            }
            OwnedEffectKind::HashDelete { field } => {
                if let (Some(mut raw), Some(m @ codec::Meta { kind: Kind::Hash { subver }, .. })) =
                    (old, old_meta)
                {
                    self.batch.delete_cf(self.data, codec::field_key(&key, subver, &field));
                    codec::patch(&mut raw, version, m.deadline);
                    self.put_meta(&key, raw);
                }
            }
            OwnedEffectKind::ListPush { end, values } => {
                let (subver, mut head, mut tail, deadline) = match (old, old_meta) {
                    (_, Some(codec::Meta { kind: Kind::List { subver, head, tail }, deadline, .. })) => {
                        (subver, head, tail, deadline)
                    }
                    (old, _) => {
                        self.drop_elements(&key, old.as_deref());
                        (version, LIST_MIDDLE, LIST_MIDDLE, 0)
                    }
                };
                for value in values {
                    let index = match end {
                        ListEnd::Front => {
                            head -= 1;
                            head
                        }
                        ListEnd::Back => {
                            tail += 1;
                            tail - 1
                        }
                    };
                    self.batch.put_cf(self.data, codec::element_key(&key, subver, index), &value);
                }
                let raw = codec::encode_container(version, deadline, Kind::List { subver, head, tail });
                self.put_meta(&key, raw);
            }
            OwnedEffectKind::ListPop { end, count } => {
                if let Some(codec::Meta {
                    kind: Kind::List { subver, mut head, mut tail }, deadline, ..
                }) = old_meta
                {
                    let n = (count as u64).min(tail - head);
                    let (from, to) = match end {
                        ListEnd::Front => (head, head + n),
                        ListEnd::Back => (tail - n, tail),
                    };
                    self.batch.delete_range_cf(
                        self.data,
                        codec::element_key(&key, subver, from),
                        codec::element_key(&key, subver, to),
                    );
                    match end {
                        ListEnd::Front => head += n,
                        ListEnd::Back => tail -= n,
                    }
                    let raw = codec::encode_container(version, deadline, Kind::List { subver, head, tail });
                    self.put_meta(&key, raw);
                }
            }
        }
        Ok(())
    }

    /// Writes a whole value: its meta entry and, for a hash or list, its elements under a new
    /// subver (the write's version).
    fn put_value(&mut self, key: &Bytes, version: u64, deadline: u64, value: Value) {
        let raw = match value {
            Value::Str(b) => codec::encode_str(version, deadline, &b),
            Value::Int(i) => codec::encode_int(version, deadline, i),
            Value::Hash(map) => {
                for (field, value) in map.iter() {
                    self.batch.put_cf(self.data, codec::field_key(key, version, field), value);
                }
                codec::encode_container(version, deadline, Kind::Hash { subver: version })
            }
            Value::List(list) => {
                let tail = self.put_elements(key, version, &list);
                codec::encode_container(
                    version,
                    deadline,
                    Kind::List { subver: version, head: LIST_MIDDLE, tail },
                )
            }
        };
        self.put_meta(key, raw);
    }

    /// Writes a list's elements from [`LIST_MIDDLE`] on; returns the tail.
    fn put_elements(&mut self, key: &[u8], subver: u64, list: &VecDeque<Bytes>) -> u64 {
        let mut index = LIST_MIDDLE;
        for value in list {
            self.batch.put_cf(self.data, codec::element_key(key, subver, index), value);
            index += 1;
        }
        index
    }
}
