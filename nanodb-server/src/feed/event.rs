//! What the hub delivers: key events (from the engine's effects), pub/sub messages, and the
//! signal that a subscriber fell behind.

use std::sync::Arc;

use bytes::Bytes;
use nanodb_protocol::ListEnd;

use crate::engine::{Effect, EffectKind, ValueRef};

/// The kind of a key event, as every protocol reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was written (value, TTL, hash field or list element): it exists after the event.
    Put,
    /// The key was removed by a client (DEL, FLUSH, an emptied hash or list, RENAME's source).
    Delete,
    /// The key was removed because its deadline passed.
    Expire,
}

impl EventKind {
    /// The lower-case name used in JSON and text protocols.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Delete => "delete",
            Self::Expire => "expire",
        }
    }
}

/// What a write did, finer than [`EventKind`]: Redis's keyspace-notification event names and the
/// notification class each belongs to. Derived from the effect (results, not commands), so an
/// INCR is reported as `set` and LSET/LTRIM, which replace the whole list, as `lset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RedisEvent {
    /// A string value was written.
    Set,
    /// A hash field was set (or a whole hash restored).
    HSet,
    /// A hash field was removed; the hash still has others.
    HDel,
    /// Values were pushed at the front of a list.
    LPush,
    /// Values were pushed at the back of a list.
    RPush,
    /// Values were popped from the front; the list still has others.
    LPop,
    /// Values were popped from the back; the list still has others.
    RPop,
    /// A whole list was replaced (LSET, LTRIM).
    LSet,
    /// The key was removed.
    Del,
    /// The key's deadline was set.
    Expire,
    /// The key's deadline was cleared.
    Persist,
    /// The key's deadline passed.
    Expired,
}

impl RedisEvent {
    /// Redis's event name (the payload of `__keyspace@0__:<key>`, the suffix of
    /// `__keyevent@0__:<event>`).
    pub fn redis_name(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::HSet => "hset",
            Self::HDel => "hdel",
            Self::LPush => "lpush",
            Self::RPush => "rpush",
            Self::LPop => "lpop",
            Self::RPop => "rpop",
            Self::LSet => "lset",
            Self::Del => "del",
            Self::Expire => "expire",
            Self::Persist => "persist",
            Self::Expired => "expired",
        }
    }

    /// The `notify-keyspace-events` class letter that switches this event on.
    pub fn class(self) -> char {
        match self {
            Self::Set => '$',
            Self::HSet | Self::HDel => 'h',
            Self::LPush | Self::RPush | Self::LPop | Self::RPop | Self::LSet => 'l',
            Self::Del | Self::Expire | Self::Persist => 'g',
            Self::Expired => 'x',
        }
    }
}

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    /// The key.
    pub key: Bytes,
    /// Put, delete or expire.
    pub kind: EventKind,
    /// The finer-grained operation.
    pub op: RedisEvent,
    /// The key's version after the change (deletions and expiries get a fresh one too).
    pub version: u64,
    /// The new value, for string writes, when some watcher asked for values.
    pub value: Option<Bytes>,
    /// The log position the write must reach before the event is delivered (0 when nothing was
    /// logged): a watcher never sees a write that a crash could still take back.
    pub position: u64,
}

/// One item in a subscriber's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A watched key changed. `with_value` says whether this subscriber asked for values (the
    /// shared event may carry one for another subscriber).
    Key {
        /// The event, shared by every subscriber it was delivered to.
        event: Arc<KeyEvent>,
        /// Whether this subscriber asked for values.
        with_value: bool,
    },
    /// A message published to a channel.
    Message {
        /// The channel it was published to.
        channel: Bytes,
        /// The message.
        payload: Bytes,
        /// The pattern that matched, for pattern subscriptions (RESP `pmessage`).
        pattern: Option<Bytes>,
    },
    /// The subscriber's queue overflowed: `dropped` deliveries were lost after the ones already
    /// received. This is the last delivery; the subscriber must be dropped (or cleared and
    /// subscribed again) and should re-read the state it watches.
    Lagged {
        /// How many deliveries were dropped.
        dropped: u64,
    },
}

impl Delivery {
    /// The log position this delivery waits for (0 for none).
    pub(super) fn position(&self) -> u64 {
        match self {
            Self::Key { event, .. } => event.position,
            _ => 0,
        }
    }

    /// The value to show this subscriber, when it asked for values and the event has one.
    pub fn value(&self) -> Option<&Bytes> {
        match self {
            Self::Key { event, with_value: true } => event.value.as_ref(),
            _ => None,
        }
    }

    /// Bytes this delivery holds, for the queue's byte budget.
    pub(super) fn footprint(&self) -> usize {
        const OVERHEAD: usize = 64;
        OVERHEAD
            + match self {
                Self::Key { event, .. } => event.key.len() + event.value.as_ref().map_or(0, Bytes::len),
                Self::Message { channel, payload, pattern } => {
                    channel.len() + payload.len() + pattern.as_ref().map_or(0, Bytes::len)
                }
                Self::Lagged { .. } => 0,
            }
    }
}

/// The kind and operation of an effect.
pub(super) fn classify(effect: &Effect<'_>) -> (EventKind, RedisEvent) {
    match effect.kind {
        EffectKind::Set { value, .. } => match value {
            ValueRef::Str(_) | ValueRef::Int(_) => (EventKind::Put, RedisEvent::Set),
            ValueRef::Hash(_) => (EventKind::Put, RedisEvent::HSet),
            ValueRef::List(_) => (EventKind::Put, RedisEvent::LSet),
        },
        EffectKind::Delete => (EventKind::Delete, RedisEvent::Del),
        EffectKind::Expire { deadline: 0 } => (EventKind::Put, RedisEvent::Persist),
        EffectKind::Expire { .. } => (EventKind::Put, RedisEvent::Expire),
        EffectKind::HashSet { .. } => (EventKind::Put, RedisEvent::HSet),
        EffectKind::HashDelete { .. } => (EventKind::Put, RedisEvent::HDel),
        EffectKind::ListPush { end: ListEnd::Front, .. } => (EventKind::Put, RedisEvent::LPush),
        EffectKind::ListPush { end: ListEnd::Back, .. } => (EventKind::Put, RedisEvent::RPush),
        EffectKind::ListPop { end: ListEnd::Front, .. } => (EventKind::Put, RedisEvent::LPop),
        EffectKind::ListPop { end: ListEnd::Back, .. } => (EventKind::Put, RedisEvent::RPop),
    }
}

/// The string value an effect wrote, if it wrote one.
pub(super) fn string_value(effect: &Effect<'_>) -> Option<Bytes> {
    match effect.kind {
        EffectKind::Set { value: ValueRef::Str(b), .. } => Some(Bytes::copy_from_slice(b)),
        EffectKind::Set { value: ValueRef::Int(i), .. } => Some(Bytes::from(i.to_string())),
        _ => None,
    }
}
