//! Hash operations: a key holding a map of fields to values.

use bytes::Bytes;
use nanodb_protocol::Error;

use super::effect::Delta;
use super::value::{FieldMap, Slot, Value, owned};
use super::{Change, Engine};

impl Engine {
    /// Sets a field; whether the field is new.
    pub(crate) fn hash_set(&self, key: Bytes, field: Bytes, value: Bytes) -> Result<bool, Error> {
        let (field, value) = (owned(&field), owned(&value));
        self.update(key, |slot, _| match slot {
            None => {
                let mut map = FieldMap::default();
                map.insert(field, value);
                let new =
                    Slot { value: Value::Hash(Box::new(map)), version: self.next_version(), deadline: 0 };
                Ok((true, Change::Put(new)))
            }
            Some(slot) => {
                let Value::Hash(map) = &mut slot.value else { return Err(Error::WrongType) };
                let created = map.insert(field.clone(), value).is_none();
                slot.version = self.next_version();
                Ok((created, Change::Modified(Delta::HashSet(field))))
            }
        })
    }

    pub(crate) fn hash_get(&self, key: &[u8], field: &[u8]) -> Result<Option<Bytes>, Error> {
        self.read(key, |slot| match &slot.value {
            Value::Hash(map) => Ok(map.get(field).cloned()),
            _ => Err(Error::WrongType),
        })
        .transpose()
        .map(Option::flatten)
    }

    /// Removes a field (and the key, when it was the last); whether the field existed.
    pub(crate) fn hash_delete(&self, key: Bytes, field: &[u8]) -> Result<bool, Error> {
        self.update(key, |slot, _| {
            let Some(slot) = slot else { return Ok((false, Change::None)) };
            let Value::Hash(map) = &mut slot.value else { return Err(Error::WrongType) };
            let Some((field, _)) = map.remove_entry(field) else {
                return Ok((false, Change::None));
            };
            if map.is_empty() {
                return Ok((true, Change::Remove));
            }
            slot.version = self.next_version();
            Ok((true, Change::Modified(Delta::HashDelete(field))))
        })
    }

    pub(crate) fn hash_get_all(&self, key: &[u8]) -> Result<Vec<(Bytes, Bytes)>, Error> {
        self.read(key, |slot| match &slot.value {
            Value::Hash(map) => Ok(map.iter().map(|(f, v)| (f.clone(), v.clone())).collect()),
            _ => Err(Error::WrongType),
        })
        .unwrap_or(Ok(Vec::new()))
    }
}
