//! List operations: a key holding a double-ended sequence of values.

use std::collections::VecDeque;

use bytes::Bytes;
use nanodb_protocol::{Error, ListEnd};

use super::effect::Delta;
use super::value::{Slot, Value, ValueRef, owned};
use super::{Change, Engine, LogPosition};

impl Engine {
    /// Pushes values one after another at `end`; the list's new length.
    pub(crate) fn list_push(
        &self,
        at: &mut LogPosition,
        key: Bytes,
        end: ListEnd,
        values: Vec<Bytes>,
    ) -> Result<i64, Error> {
        let values: Vec<Bytes> = values.iter().map(owned).collect();
        fn push(list: &mut VecDeque<Bytes>, end: ListEnd, values: Vec<Bytes>) {
            match end {
                ListEnd::Front => values.into_iter().for_each(|v| list.push_front(v)),
                ListEnd::Back => list.extend(values),
            }
        }
        self.update(at, key, |slot, _| match slot {
            None => {
                let mut list = VecDeque::with_capacity(values.len());
                push(&mut list, end, values);
                let len = list.len() as i64;
                let new =
                    Slot { value: Value::List(Box::new(list)), version: self.next_version(), deadline: 0 };
                // Logged and reported as the push it was (replay creates the list).
                Ok((len, Change::Put(new, Delta::ListPush(end, len as usize))))
            }
            Some(slot) => {
                let Some(Value::List(list)) = slot.value_mut() else { return Err(Error::WrongType) };
                let count = values.len();
                push(list, end, values);
                let len = list.len() as i64;
                slot.set_version(self.next_version());
                Ok((len, Change::Modified(Delta::ListPush(end, count))))
            }
        })
    }

    /// Pops up to `count` values (0 counts as 1) from `end`, removing the key when emptied.
    pub(crate) fn list_pop(
        &self,
        at: &mut LogPosition,
        key: Bytes,
        end: ListEnd,
        count: u32,
    ) -> Result<Vec<Bytes>, Error> {
        self.update(at, key, |slot, _| {
            let Some(slot) = slot else { return Ok((Vec::new(), Change::None)) };
            let Some(Value::List(list)) = slot.value_mut() else { return Err(Error::WrongType) };
            let n = (count.max(1) as usize).min(list.len());
            let popped: Vec<Bytes> = match end {
                ListEnd::Front => list.drain(..n).collect(),
                ListEnd::Back => (0..n).filter_map(|_| list.pop_back()).collect(),
            };
            if list.is_empty() {
                return Ok((popped, Change::Remove));
            }
            slot.set_version(self.next_version());
            let count = popped.len();
            Ok((popped, Change::Modified(Delta::ListPop(end, count))))
        })
    }

    /// Values from `start` to `stop` inclusive; negative indexes count from the end (Redis LRANGE).
    pub(crate) fn list_range(&self, key: &[u8], start: i64, stop: i64) -> Result<Vec<Bytes>, Error> {
        self.read(key, |slot| {
            let ValueRef::List(list) = slot.value() else { return Err(Error::WrongType) };
            let Some((from, to)) = resolve_range(list.len(), start, stop) else { return Ok(Vec::new()) };
            Ok(list.range(from..=to).cloned().collect())
        })
        .unwrap_or(Ok(Vec::new()))
    }
}

impl Engine {
    /// Length; 0 when missing.
    pub(crate) fn list_len(&self, key: &[u8]) -> Result<i64, Error> {
        self.read(key, |slot| match slot.value() {
            ValueRef::List(list) => Ok(list.len() as i64),
            _ => Err(Error::WrongType),
        })
        .unwrap_or(Ok(0))
    }

    /// Replaces the element at `index` (negative from the end).
    pub(crate) fn list_set(
        &self,
        at: &mut LogPosition,
        key: Bytes,
        index: i64,
        value: Bytes,
    ) -> Result<bool, Error> {
        self.update(at, key, |slot, _| {
            let Some(slot) = slot else { return Err(Error::NotFound) };
            let Some(Value::List(list)) = slot.value_mut() else { return Err(Error::WrongType) };
            let len = list.len() as i64;
            let i = if index < 0 { len + index } else { index };
            if i < 0 || i >= len {
                return Err(Error::InvalidArgument("index out of range".into()));
            }
            list[i as usize] = owned(&value);
            slot.set_version(self.next_version());
            // The log records the whole list: LSET is rare next to pushes and pops.
            Ok((true, Change::Modified(Delta::Value)))
        })
    }

    /// Keeps only `start..=stop`; an empty range removes the key.
    pub(crate) fn list_trim(
        &self,
        at: &mut LogPosition,
        key: Bytes,
        start: i64,
        stop: i64,
    ) -> Result<bool, Error> {
        self.update(at, key, |slot, _| {
            let Some(slot) = slot else { return Ok((true, Change::None)) };
            let Some(Value::List(list)) = slot.value_mut() else { return Err(Error::WrongType) };
            let Some((from, to)) = resolve_range(list.len(), start, stop) else {
                return Ok((true, Change::Remove));
            };
            if from == 0 && to + 1 == list.len() {
                return Ok((true, Change::None));
            }
            list.truncate(to + 1);
            list.drain(..from);
            slot.set_version(self.next_version());
            Ok((true, Change::Modified(Delta::Value)))
        })
    }
}

/// Resolves Redis-style inclusive indexes against a length; `None` when the range is empty.
pub(crate) fn resolve_range(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 { (len + start).max(0) } else { start };
    let stop = if stop < 0 { len + stop } else { stop.min(len - 1) };
    if start > stop || start >= len || stop < 0 {
        return None;
    }
    Some((start as usize, stop as usize))
}

#[cfg(test)]
mod tests {
    use super::resolve_range;

    #[test]
    fn ranges_follow_redis() {
        assert_eq!(resolve_range(5, 0, -1), Some((0, 4)));
        assert_eq!(resolve_range(5, -2, -1), Some((3, 4)));
        assert_eq!(resolve_range(5, 1, 100), Some((1, 4)));
        assert_eq!(resolve_range(5, -100, 1), Some((0, 1)));
        assert_eq!(resolve_range(5, 3, 2), None);
        assert_eq!(resolve_range(5, 5, 10), None);
        assert_eq!(resolve_range(5, 0, -6), None);
        assert_eq!(resolve_range(0, 0, -1), None);
    }
}
