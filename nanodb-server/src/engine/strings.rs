//! String operations and the key-level operations every type shares (delete, expire, ttl).

use bytes::Bytes;
use nanodb_protocol::{Entry, Error, PutCondition, Reply};

use super::value::{Slot, Value, parse_i64};
use super::{Change, Engine};

impl Engine {
    pub(crate) fn get(&self, key: &[u8]) -> Result<Reply, Error> {
        let found = self.read(key, |slot| {
            let ttl_ms = if slot.deadline == 0 { -1 } else { slot.ttl_ms(self.clock.now_ms()) };
            slot.value.as_string().map(|value| Entry { value, version: slot.version, ttl_ms })
        });
        Ok(Reply::Value(found.transpose()?))
    }

    pub(crate) fn put(
        &self,
        key: Bytes,
        value: Bytes,
        ttl_ms: u64,
        condition: PutCondition,
    ) -> Result<Reply, Error> {
        self.update(key, |slot, now| {
            let current = slot.as_ref().map_or(0, |s| s.version);
            if !condition.holds(slot.is_some(), current) {
                return Ok((Reply::Put { applied: false, version: current }, Change::None));
            }
            let version = self.next_version();
            let deadline = if ttl_ms == 0 { 0 } else { now.saturating_add(ttl_ms) };
            let new = Slot { value: Value::Str(value), version, deadline };
            Ok((Reply::Put { applied: true, version }, Change::Put(new)))
        })
    }

    /// Removes a key of any type; whether it existed (and had not expired).
    pub(crate) fn delete(&self, key: Bytes) -> bool {
        self.update(key, |slot, _| {
            Ok(match slot {
                Some(_) => (true, Change::Remove),
                None => (false, Change::None),
            })
        })
        .unwrap_or(false)
    }

    /// Removes a key only if it is live with exactly `version`, in one step under the shard lock
    /// (a check then a delete from outside could remove a newer write).
    pub(crate) fn delete_if(&self, key: Bytes, version: u64) -> bool {
        self.update(key, |slot, _| {
            Ok(match slot {
                Some(s) if s.version == version => (true, Change::Remove),
                _ => (false, Change::None),
            })
        })
        .unwrap_or(false)
    }

    pub(crate) fn incr(&self, key: Bytes, delta: i64) -> Result<i64, Error> {
        self.update(key, |slot, _| {
            let Some(slot) = slot else {
                let new = Slot { value: Value::Int(delta), version: self.next_version(), deadline: 0 };
                return Ok((delta, Change::Put(new)));
            };
            let current = match &slot.value {
                Value::Int(i) => *i,
                Value::Str(b) => parse_i64(b)?,
                Value::Hash(_) | Value::List(_) => return Err(Error::WrongType),
            };
            let next = current.checked_add(delta).ok_or(Error::Overflow)?;
            // The TTL survives an increment, as in Redis.
            slot.value = Value::Int(next);
            slot.version = self.next_version();
            Ok((next, Change::Modified))
        })
    }

    /// Sets (`ttl_ms > 0`), fires (`0`) or clears (`< 0`) a TTL; whether anything applied.
    pub(crate) fn expire(&self, key: Bytes, ttl_ms: i64) -> bool {
        self.update(key, |slot, now| {
            let Some(slot) = slot else { return Ok((false, Change::None)) };
            Ok(match ttl_ms {
                0 => (true, Change::Remove),
                t if t < 0 => {
                    if slot.deadline == 0 {
                        (false, Change::None)
                    } else {
                        slot.deadline = 0;
                        slot.version = self.next_version();
                        (true, Change::Modified)
                    }
                }
                t => {
                    slot.deadline = now.saturating_add(t as u64);
                    slot.version = self.next_version();
                    (true, Change::Modified)
                }
            })
        })
        .unwrap_or(false)
    }

    /// Remaining TTL in ms; -2 when the key is missing, -1 when it has none.
    pub(crate) fn ttl(&self, key: &[u8]) -> i64 {
        self.read(key, |slot| if slot.deadline == 0 { -1 } else { slot.ttl_ms(self.clock.now_ms()) })
            .unwrap_or(-2)
    }
}
