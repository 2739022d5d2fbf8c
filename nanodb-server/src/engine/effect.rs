//! The stream of effects: what every applied write did, as data.
//!
//! Every write the engine applies yields one [`Effect`]: the key, its new version, and what changed
//! (a whole new value, a deletion, a TTL change, or a hash/list delta). Effects describe results,
//! not commands (an INCR is "the value is now 5"; a TTL is an absolute deadline), so replaying them
//! after a fuzzy snapshot converges: [`Engine::restore`] applies an effect only when it is newer
//! than what the key holds.
//!
//! An [`Effect`] borrows from the slot it describes (a list push points at the pushed elements
//! inside the list), so a sink that encodes it at once copies nothing else, and with no sink
//! installed nothing is built at all. The engine knows its consumers only through the two traits
//! defined here: one [`EffectLog`] (which may refuse a write and assigns positions) and any number
//! of [`EffectObserver`]s (the change feed; replication can be another), all fed the same record.

use std::collections::VecDeque;
use std::fmt::Debug;

use bytes::Bytes;
use nanodb_protocol::{Error, ListEnd};

use super::entry::Entry;
use super::value::{Slot, Value, ValueRef};
use super::{Change, Engine, LogPosition};

/// How a slot modified in place changed; returned by update closures with [`Change::Modified`].
#[derive(Debug, Clone)]
pub(crate) enum Delta {
    /// The whole value changed (e.g. INCR); the effect carries the new value.
    Value,
    /// Only the deadline changed.
    Ttl,
    /// One hash field was set; its value is read from the slot.
    HashSet(Bytes),
    /// One hash field was removed.
    HashDelete(Bytes),
    /// `count` values were pushed at `end` (they are now the `count` elements at that end).
    ListPush(ListEnd, usize),
    /// `count` values were popped from `end`.
    ListPop(ListEnd, usize),
}

/// One applied write, borrowed from the engine's state at the moment it was applied.
#[derive(Debug, Clone, Copy)]
pub struct Effect<'a> {
    /// The key written.
    pub key: &'a [u8],
    /// The key's version after the write (deletions get a fresh version too).
    pub version: u64,
    /// What changed.
    pub kind: EffectKind<'a>,
}

/// What an [`Effect`] changed.
#[derive(Debug, Clone, Copy)]
pub enum EffectKind<'a> {
    /// The key now holds `value` with `deadline` (absolute Unix ms, 0 = none).
    Set {
        /// The whole value.
        value: ValueRef<'a>,
        /// The deadline.
        deadline: u64,
    },
    /// The key was removed.
    Delete,
    /// The key's deadline is now `deadline` (0 = persisted).
    Expire {
        /// The deadline.
        deadline: u64,
    },
    /// A hash field was set.
    HashSet {
        /// The field.
        field: &'a [u8],
        /// Its new value.
        value: &'a [u8],
    },
    /// A hash field was removed (the hash still has other fields).
    HashDelete {
        /// The field.
        field: &'a [u8],
    },
    /// Values were pushed one after another at `end`: the `count` elements at that end of `list`.
    ListPush {
        /// Which end.
        end: ListEnd,
        /// The list after the push.
        list: &'a VecDeque<Bytes>,
        /// How many were pushed.
        count: usize,
    },
    /// `count` values were popped from `end` (the list still has others).
    ListPop {
        /// Which end.
        end: ListEnd,
        /// How many.
        count: usize,
    },
}

impl EffectKind<'_> {
    /// For a list push: calls `f` with each pushed value, in the order they were pushed.
    pub fn for_each_pushed(list: &VecDeque<Bytes>, end: ListEnd, count: usize, mut f: impl FnMut(&Bytes)) {
        match end {
            // Pushing a, b at the front leaves b, a: push order is the first `count`, reversed.
            ListEnd::Front => list.iter().take(count).rev().for_each(&mut f),
            ListEnd::Back => list.iter().skip(list.len().saturating_sub(count)).for_each(&mut f),
        }
    }
}

/// An effect decoded from storage: the owned twin of [`Effect`], applied by [`Engine::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEffect {
    /// The key.
    pub key: Bytes,
    /// The version the key had after the write.
    pub version: u64,
    /// What changed.
    pub kind: OwnedEffectKind,
}

/// What an [`OwnedEffect`] changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedEffectKind {
    /// Replace the key's value and deadline.
    Set {
        /// The value.
        value: Value,
        /// The deadline (0 = none).
        deadline: u64,
    },
    /// Remove the key.
    Delete,
    /// Change the deadline.
    Expire {
        /// The deadline (0 = none).
        deadline: u64,
    },
    /// Set hash fields (one from the log; many in a snapshot chunk).
    HashSet {
        /// Field/value pairs.
        fields: Vec<(Bytes, Bytes)>,
    },
    /// Remove a hash field.
    HashDelete {
        /// The field.
        field: Bytes,
    },
    /// Push values one after another at `end`.
    ListPush {
        /// Which end.
        end: ListEnd,
        /// The values in push order.
        values: Vec<Bytes>,
    },
    /// Pop `count` values from `end`.
    ListPop {
        /// Which end.
        end: ListEnd,
        /// How many.
        count: usize,
    },
}

/// The log of effects (today the append-only log, `persist::AppendLog`). Called
/// with the key's shard write lock held, so per-key order is the order of application;
/// implementations must be quick (append to memory) and must not block on I/O.
pub trait EffectLog: Send + Sync + Debug {
    /// Whether writes may proceed; an error (the log failed, the server is shutting down) refuses
    /// the write before anything is applied.
    fn check_writable(&self) -> Result<(), Error>;
    /// Records one effect; returns the position a client acknowledgement must wait for.
    fn append(&self, effect: &Effect<'_>) -> u64;
    /// Records the effects of one atomic group as one record, which recovery applies whole or
    /// not at all; returns its position. May refuse (the log failed, or the record would be too
    /// large to recover), and then nothing of the group is applied.
    fn append_group(&self, effects: &[Effect<'_>]) -> Result<u64, Error>;
}

/// Something told of every applied write and every expiry (the change feed; later others), after
/// the log has given the write its position. Called with the key's shard write lock held, so each
/// observer sees a key's changes in the order they were applied. An observer never refuses a
/// write and must not block.
pub trait EffectObserver: Send + Sync + Debug {
    /// Whether this observer wants effects now. Checked before any effect is built, so an
    /// observer nobody listens to costs a write this call (one atomic load for the feed).
    fn is_active(&self) -> bool;
    /// One applied write whose log record ends at `position` (0 when nothing is logged).
    fn on_effect(&self, key: &[u8], effect: &Effect<'_>, position: u64);
    /// `key` reached its deadline and was removed (at `version`).
    fn on_expired(&self, key: &[u8], version: u64);
    /// The effects of one atomic group, all at `position`, told while every key of the group is
    /// still locked, so no other change to those keys comes between them.
    fn on_group(&self, effects: &[Effect<'_>], position: u64) {
        for effect in effects {
            self.on_effect(effect.key, effect, position);
        }
    }
}

impl Engine {
    /// Applies a stored effect if it is newer than the key's state (`version` greater than the
    /// key's), or, with `continuation`, if it continues the key's current version (a large value
    /// split over several snapshot records). Idempotent: applying a log twice changes nothing the
    /// second time. Returns whether it applied. The effect is not logged again (it comes from the
    /// log or a snapshot), so nothing can refuse it.
    pub fn restore(&self, effect: OwnedEffect, continuation: bool) -> bool {
        self.bump_versions_to(effect.version);
        self.restore_unversioned(effect, continuation)
    }

    /// [`Engine::restore`] for many effects (recovery's loaders): the version counter is raised
    /// once, to the largest version of the batch, before any is applied, instead of once per
    /// effect (an atomic on one cache line that parallel loaders would pass back and forth).
    pub fn restore_batch(&self, batch: &mut Vec<(OwnedEffect, bool)>) {
        if let Some(top) = batch.iter().map(|(e, _)| e.version).max() {
            self.bump_versions_to(top);
        }
        for (effect, continuation) in batch.drain(..) {
            self.restore_unversioned(effect, continuation);
        }
    }

    /// [`Engine::restore`] without raising the version counter (the caller has).
    fn restore_unversioned(&self, effect: OwnedEffect, continuation: bool) -> bool {
        let OwnedEffect { key, version, kind } = effect;
        let restored = self.update_logging_to(None, &mut LogPosition::default(), key, |slot, _| {
            let current = slot.as_ref().map_or(0, |s| s.version());
            let newer = version > current || (continuation && version == current && slot.is_some());
            if !newer {
                return Ok((false, Change::None));
            }
            Ok((true, restore_change(slot, version, kind)))
        });
        // The closure never fails and no log is asked, so there is no error to lose here.
        matches!(restored, Ok(true))
    }

    /// Keeps the version counter above every version restored.
    fn bump_versions_to(&self, version: u64) {
        self.versions.fetch_max(version, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The change that applying `kind` at `version` makes to `slot` (`None` when the key is missing).
fn restore_change(slot: Option<&mut Entry>, version: u64, kind: OwnedEffectKind) -> Change {
    match (slot, kind) {
        (_, OwnedEffectKind::Set { value, deadline }) => Change::put(Slot { value, version, deadline }),
        (Some(_), OwnedEffectKind::Delete) => Change::Remove,
        (None, OwnedEffectKind::Delete) => Change::None,
        (Some(slot), OwnedEffectKind::Expire { deadline }) => {
            slot.set_deadline(deadline);
            slot.set_version(version);
            Change::Modified(Delta::Ttl)
        }
        (None, OwnedEffectKind::Expire { .. }) => Change::None,
        (Some(slot), OwnedEffectKind::HashSet { fields }) if matches!(slot.value(), ValueRef::Hash(_)) => {
            if let Some(Value::Hash(map)) = slot.value_mut() {
                map.extend(fields);
            }
            slot.set_version(version);
            Change::Modified(Delta::Value)
        }
        (_, OwnedEffectKind::HashSet { fields }) => {
            let map = fields.into_iter().collect();
            Change::put(Slot { value: Value::Hash(Box::new(map)), version, deadline: 0 })
        }
        (Some(slot), OwnedEffectKind::HashDelete { field }) => match slot.value_mut() {
            Some(Value::Hash(map)) => {
                map.remove(&field);
                if map.is_empty() {
                    Change::Remove
                } else {
                    slot.set_version(version);
                    Change::Modified(Delta::Value)
                }
            }
            _ => Change::None,
        },
        (None, OwnedEffectKind::HashDelete { .. }) => Change::None,
        (Some(slot), OwnedEffectKind::ListPush { end, values })
            if matches!(slot.value(), ValueRef::List(_)) =>
        {
            if let Some(Value::List(list)) = slot.value_mut() {
                push_all(list, end, values);
            }
            slot.set_version(version);
            Change::Modified(Delta::Value)
        }
        (_, OwnedEffectKind::ListPush { end, values }) => {
            let mut list = VecDeque::with_capacity(values.len());
            push_all(&mut list, end, values);
            Change::put(Slot { value: Value::List(Box::new(list)), version, deadline: 0 })
        }
        (Some(slot), OwnedEffectKind::ListPop { end, count }) => match slot.value_mut() {
            Some(Value::List(list)) => {
                for _ in 0..count.min(list.len()) {
                    match end {
                        ListEnd::Front => list.pop_front(),
                        ListEnd::Back => list.pop_back(),
                    };
                }
                if list.is_empty() {
                    Change::Remove
                } else {
                    slot.set_version(version);
                    Change::Modified(Delta::Value)
                }
            }
            _ => Change::None,
        },
        (None, OwnedEffectKind::ListPop { .. }) => Change::None,
    }
}

fn push_all(list: &mut VecDeque<Bytes>, end: ListEnd, values: Vec<Bytes>) {
    match end {
        ListEnd::Front => values.into_iter().for_each(|v| list.push_front(v)),
        ListEnd::Back => list.extend(values),
    }
}
