//! String operations and the key-level operations every type shares (delete, expire, ttl).

use bytes::Bytes;
use nanodb_protocol::command::parse_f64;
use nanodb_protocol::{Entry, Error, Expiry, PutCondition, PutOutcome};

use super::effect::Delta;
use super::value::{Slot, Value, ValueRef, parse_i64};
use super::{Change, Engine, LogPosition};

impl Engine {
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Entry>, Error> {
        let found = self.read(key, |slot| {
            let ttl_ms = if slot.deadline() == 0 { -1 } else { slot.ttl_ms(self.clock.now_ms()) };
            slot.value().as_string().map(|value| Entry { value, version: slot.version(), ttl_ms })
        });
        found.transpose()
    }

    /// Writes a string if `condition` holds, its TTL as `expiry` says; says whether it applied,
    /// the version now, and whether it created the key.
    pub(crate) fn put(
        &self,
        at: &mut LogPosition,
        key: Bytes,
        value: Bytes,
        expiry: Expiry,
        condition: PutCondition,
    ) -> Result<PutOutcome, Error> {
        self.update(at, key, |slot, now| {
            let current = slot.as_ref().map_or(0, |s| s.version());
            let created = slot.is_none();
            if !condition.holds(!created, current) {
                return Ok((PutOutcome { applied: false, version: current, created: false }, Change::None));
            }
            let deadline = deadline_for(expiry, slot.as_ref().map_or(0, |s| s.deadline()), now);
            let version = self.next_version();
            let outcome = PutOutcome { applied: true, version, created };
            if deadline != 0 && deadline <= now {
                // An absolute time already past: the write happens and expires at once.
                let change = if created { Change::None } else { Change::Remove };
                return Ok((outcome, change));
            }
            Ok((outcome, Change::put(Slot { value: Value::Str(value), version, deadline })))
        })
    }

    /// Redis's SET ... GET: a put that answers the value the key held before (whether or not the
    /// write applied). A key of another type is WRONGTYPE and nothing is written.
    pub(crate) fn get_set(
        &self,
        at: &mut LogPosition,
        key: Bytes,
        value: Bytes,
        expiry: Expiry,
        condition: PutCondition,
    ) -> Result<Option<Entry>, Error> {
        self.update(at, key, |slot, now| {
            let old = match &slot {
                Some(s) => {
                    Some(Entry { value: s.value().as_string()?, version: s.version(), ttl_ms: s.ttl_ms(now) })
                }
                None => None,
            };
            let current = slot.as_ref().map_or(0, |s| s.version());
            if !condition.holds(slot.is_some(), current) {
                return Ok((old, Change::None));
            }
            let deadline = deadline_for(expiry, slot.as_ref().map_or(0, |s| s.deadline()), now);
            let version = self.next_version();
            if deadline != 0 && deadline <= now {
                let change = if slot.is_some() { Change::Remove } else { Change::None };
                return Ok((old, change));
            }
            Ok((old, Change::put(Slot { value: Value::Str(value), version, deadline })))
        })
    }

    /// Reads a string key and removes it.
    pub(crate) fn get_del(&self, at: &mut LogPosition, key: Bytes) -> Result<Option<Entry>, Error> {
        self.update(at, key, |slot, now| {
            let Some(s) = slot else { return Ok((None, Change::None)) };
            let entry = Entry { value: s.value().as_string()?, version: s.version(), ttl_ms: s.ttl_ms(now) };
            Ok((Some(entry), Change::Remove))
        })
    }

    /// Reads a string key and changes its TTL.
    pub(crate) fn get_ex(
        &self,
        at: &mut LogPosition,
        key: Bytes,
        expiry: Expiry,
    ) -> Result<Option<Entry>, Error> {
        self.update(at, key, |slot, now| {
            let Some(s) = slot else { return Ok((None, Change::None)) };
            let value = s.value().as_string()?;
            let deadline = deadline_for(expiry, s.deadline(), now);
            if deadline == s.deadline() {
                return Ok((
                    Some(Entry { value, version: s.version(), ttl_ms: s.ttl_ms(now) }),
                    Change::None,
                ));
            }
            if deadline != 0 && deadline <= now {
                return Ok((Some(Entry { value, version: s.version(), ttl_ms: 0 }), Change::Remove));
            }
            s.set_deadline(deadline);
            s.set_version(self.next_version());
            Ok((
                Some(Entry { value, version: s.version(), ttl_ms: s.ttl_ms(now) }),
                Change::Modified(Delta::Ttl),
            ))
        })
    }

    /// Appends to a string; the new length. The result is bounded by `max_value_len`.
    pub(crate) fn append(&self, at: &mut LogPosition, key: Bytes, tail: &[u8]) -> Result<i64, Error> {
        let max = self.limits.max_value_len;
        self.update(at, key, |slot, _| {
            let Some(s) = slot else {
                let new = Slot { value: Value::str(tail), version: self.next_version(), deadline: 0 };
                return Ok((tail.len() as i64, Change::put(new)));
            };
            let head = s.value().as_string()?;
            let len = head.len() + tail.len();
            if len > max {
                return Err(Error::ValueTooLarge { len, max });
            }
            let mut joined = Vec::with_capacity(len);
            joined.extend_from_slice(&head);
            joined.extend_from_slice(tail);
            s.set_value(Value::Str(Bytes::from(joined)));
            s.set_version(self.next_version());
            Ok((len as i64, Change::Modified(Delta::Value)))
        })
    }

    /// Adds a floating-point amount; the new value's text (kept as a string, TTL kept).
    pub(crate) fn incr_float(&self, at: &mut LogPosition, key: Bytes, delta: &[u8]) -> Result<Bytes, Error> {
        let delta = parse_f64(delta)?;
        self.update(at, key, |slot, _| {
            let current = match slot.as_ref().map(|s| s.value()) {
                None => 0.0,
                Some(ValueRef::Int(i)) => i as f64,
                Some(ValueRef::Str(b)) => parse_f64(b)?,
                Some(_) => return Err(Error::WrongType),
            };
            let next = current + delta;
            if !next.is_finite() {
                return Err(Error::InvalidArgument("increment would produce NaN or Infinity".into()));
            }
            let text = Bytes::from(format_float(next));
            let version = self.next_version();
            match slot {
                Some(s) => {
                    s.set_value(Value::Str(text.clone()));
                    s.set_version(version);
                    Ok((text, Change::Modified(Delta::Value)))
                }
                None => Ok((
                    text.clone(),
                    Change::put(Slot { value: Value::Str(text.clone()), version, deadline: 0 }),
                )),
            }
        })
    }

    /// Removes a key of any type; whether it existed (and had not expired).
    pub(crate) fn delete(&self, at: &mut LogPosition, key: Bytes) -> Result<bool, Error> {
        self.update(at, key, |slot, _| {
            Ok(match slot {
                Some(_) => (true, Change::Remove),
                None => (false, Change::None),
            })
        })
    }

    /// Removes a key only if it is live with exactly `version`, in one step under the shard lock
    /// (a check then a delete from outside could remove a newer write).
    pub(crate) fn delete_if(&self, at: &mut LogPosition, key: Bytes, version: u64) -> Result<bool, Error> {
        self.update(at, key, |slot, _| {
            Ok(match slot {
                Some(s) if s.version() == version => (true, Change::Remove),
                _ => (false, Change::None),
            })
        })
    }

    pub(crate) fn incr(&self, at: &mut LogPosition, key: Bytes, delta: i64) -> Result<i64, Error> {
        self.update(at, key, |slot, _| {
            let Some(slot) = slot else {
                let new = Slot { value: Value::Int(delta), version: self.next_version(), deadline: 0 };
                return Ok((delta, Change::put(new)));
            };
            let current = match slot.value() {
                ValueRef::Int(i) => i,
                ValueRef::Str(b) => parse_i64(b)?,
                ValueRef::Hash(_) | ValueRef::List(_) => return Err(Error::WrongType),
            };
            let next = current.checked_add(delta).ok_or(Error::Overflow)?;
            // The TTL survives an increment, as in Redis.
            slot.set_value(Value::Int(next));
            slot.set_version(self.next_version());
            Ok((next, Change::Modified(Delta::Value)))
        })
    }

    /// Clears (`Persist`) or sets (`In`, `At`) a key's TTL; a deadline already past removes the
    /// key. Whether anything applied (false when missing, or persisting a key without TTL).
    pub(crate) fn expire(&self, at: &mut LogPosition, key: Bytes, expiry: Expiry) -> Result<bool, Error> {
        self.update(at, key, |slot, now| {
            let Some(slot) = slot else { return Ok((false, Change::None)) };
            let deadline = deadline_for(expiry, slot.deadline(), now);
            if matches!(expiry, Expiry::At(_) | Expiry::In(_)) && deadline <= now {
                // A deadline already past (EXPIRE 0, EXPIREAT in the past) removes the key.
                return Ok((true, Change::Remove));
            }
            if expiry == Expiry::Persist && slot.deadline() == 0 {
                return Ok((false, Change::None));
            }
            slot.set_deadline(deadline);
            slot.set_version(self.next_version());
            Ok((true, Change::Modified(Delta::Ttl)))
        })
    }

    /// Bytes `start..=end` of a string, clamped as Redis's GETRANGE does (negatives count from the
    /// end; an end past the string stops at its last byte); empty when missing or out of range.
    pub(crate) fn get_range(&self, key: &[u8], start: i64, end: i64) -> Result<Bytes, Error> {
        let Some(value) = self.read(key, |slot| slot.value().as_string()).transpose()? else {
            return Ok(Bytes::new());
        };
        let len = value.len() as i64;
        if (start < 0 && end < 0 && start > end) || len == 0 {
            return Ok(Bytes::new());
        }
        let start = if start < 0 { (len + start).max(0) } else { start };
        let end = if end < 0 { (len + end).max(0) } else { end.min(len - 1) };
        if start > end {
            return Ok(Bytes::new());
        }
        Ok(value.slice(start as usize..=end as usize))
    }

    /// Remaining TTL in ms; -2 when the key is missing, -1 when it has none.
    pub(crate) fn ttl(&self, key: &[u8]) -> i64 {
        self.read(key, |slot| if slot.deadline() == 0 { -1 } else { slot.ttl_ms(self.clock.now_ms()) })
            .unwrap_or(-2)
    }
}

/// The deadline a write with `expiry` leaves, given the key's `current` deadline (0 for none).
pub(crate) fn deadline_for(expiry: Expiry, current: u64, now: u64) -> u64 {
    match expiry {
        Expiry::Persist => 0,
        Expiry::Keep => current,
        Expiry::In(ms) => now.saturating_add(ms),
        Expiry::At(at) => at,
    }
}

/// Formats a float the way Redis's INCRBYFLOAT does: plain decimal, no exponent, no trailing
/// zeros ("10.5", "3", "5000").
pub(crate) fn format_float(f: f64) -> String {
    let s = format!("{f}");
    if s.contains('e') || s.contains('E') {
        format!("{f:.17}").trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}
