//! Hash operations: a key holding a map of fields to values.

use bytes::Bytes;
use nanodb_protocol::Error;

use super::effect::Delta;
use super::value::{FieldMap, Slot, Value, ValueRef, owned, parse_i64};
use super::{Change, Engine, LogPosition};

impl Engine {
    /// A new hash holding one field, for the writes that create a hash.
    fn new_hash(&self, field: Bytes, value: Bytes) -> Slot {
        let mut map = FieldMap::default();
        map.insert(field, value);
        Slot { value: Value::Hash(Box::new(map)), version: self.next_version(), deadline: 0 }
    }

    /// Sets a field; whether the field is new.
    pub(crate) fn hash_set(
        &self,
        at: &mut LogPosition,
        key: Bytes,
        field: Bytes,
        value: Bytes,
    ) -> Result<bool, Error> {
        let (field, value) = (owned(&field), owned(&value));
        self.update(at, key, |slot, _| match slot {
            None => Ok((true, Change::put(self.new_hash(field, value)))),
            Some(slot) => {
                let Some(Value::Hash(map)) = slot.value_mut() else { return Err(Error::WrongType) };
                let created = map.insert(field.clone(), value).is_none();
                slot.set_version(self.next_version());
                Ok((created, Change::Modified(Delta::HashSet(field))))
            }
        })
    }

    pub(crate) fn hash_get(&self, key: &[u8], field: &[u8]) -> Result<Option<Bytes>, Error> {
        self.read(key, |slot| match slot.value() {
            ValueRef::Hash(map) => Ok(map.get(field).cloned()),
            _ => Err(Error::WrongType),
        })
        .transpose()
        .map(Option::flatten)
    }

    /// Removes a field (and the key, when it was the last); whether the field existed.
    pub(crate) fn hash_delete(&self, at: &mut LogPosition, key: Bytes, field: &[u8]) -> Result<bool, Error> {
        self.update(at, key, |slot, _| {
            let Some(slot) = slot else { return Ok((false, Change::None)) };
            let Some(Value::Hash(map)) = slot.value_mut() else { return Err(Error::WrongType) };
            let Some((field, _)) = map.remove_entry(field) else {
                return Ok((false, Change::None));
            };
            if map.is_empty() {
                return Ok((true, Change::Remove));
            }
            slot.set_version(self.next_version());
            Ok((true, Change::Modified(Delta::HashDelete(field))))
        })
    }

    pub(crate) fn hash_get_all(&self, key: &[u8]) -> Result<Vec<(Bytes, Bytes)>, Error> {
        self.read(key, |slot| match slot.value() {
            ValueRef::Hash(map) => Ok(map.iter().map(|(f, v)| (f.clone(), v.clone())).collect()),
            _ => Err(Error::WrongType),
        })
        .unwrap_or(Ok(Vec::new()))
    }

    /// Adds `delta` to an integer field (missing counts as 0); the new value.
    pub(crate) fn hash_incr(
        &self,
        at: &mut LogPosition,
        key: Bytes,
        field: Bytes,
        delta: i64,
    ) -> Result<i64, Error> {
        let field = owned(&field);
        self.update(at, key, |slot, _| match slot {
            None => Ok((delta, Change::put(self.new_hash(field, Bytes::from(delta.to_string()))))),
            Some(slot) => {
                let Some(Value::Hash(map)) = slot.value_mut() else { return Err(Error::WrongType) };
                let current = map.get(&field).map_or(Ok(0), |v| parse_i64(v))?;
                let next = current.checked_add(delta).ok_or(Error::Overflow)?;
                map.insert(field.clone(), Bytes::from(next.to_string()));
                slot.set_version(self.next_version());
                Ok((next, Change::Modified(Delta::HashSet(field))))
            }
        })
    }

    /// Sets a field only if it is absent; whether it was set.
    pub(crate) fn hash_set_if_absent(
        &self,
        at: &mut LogPosition,
        key: Bytes,
        field: Bytes,
        value: Bytes,
    ) -> Result<bool, Error> {
        let (field, value) = (owned(&field), owned(&value));
        self.update(at, key, |slot, _| match slot {
            None => Ok((true, Change::put(self.new_hash(field, value)))),
            Some(slot) => {
                let Some(Value::Hash(map)) = slot.value_mut() else { return Err(Error::WrongType) };
                if map.contains_key(&field) {
                    return Ok((false, Change::None));
                }
                map.insert(field.clone(), value);
                slot.set_version(self.next_version());
                Ok((true, Change::Modified(Delta::HashSet(field))))
            }
        })
    }

    /// Number of fields; 0 when missing.
    pub(crate) fn hash_len(&self, key: &[u8]) -> Result<i64, Error> {
        self.read(key, |slot| match slot.value() {
            ValueRef::Hash(map) => Ok(map.len() as i64),
            _ => Err(Error::WrongType),
        })
        .unwrap_or(Ok(0))
    }
}
