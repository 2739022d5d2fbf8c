//! The change feed: one hub that fans the engine's effects out to key watchers, and pub/sub
//! messages out to channel subscribers, for every protocol.
//!
//! # How it fits
//! The hub is one of the engine's [`EffectObserver`]s (the engine knows it only through that
//! trait; `server.rs` builds the hub and hands it to the engine): it is told of every write the
//! engine applies (the same [`Effect`] the log records) and of every key whose deadline passed,
//! with the key's shard write lock held, so per key every subscriber sees events in the order
//! they were applied. Publishing does not go through the engine at all: [`Hub::publish`].
//! Frontends take a [`Subscriber`] from [`Hub::subscriber`], add [`Topic`]s to it, and read
//! [`Delivery`]s from it; dropping it unsubscribes everything.
//!
//! # Costs
//! - Nobody watching: writers load one atomic and skip the feed ([`Hub::is_active`]).
//! - Watchers on other exact keys only: a lookup in a counting filter of watched key hashes
//!   (`key_filter`); the registry is read only when the filter says the key may be watched.
//! - Prefix watchers: one registry read lock, one hash lookup per distinct watched-prefix length.
//! - Each delivery: one short lock of the subscriber's queue. A full queue drops, never waits; the
//!   subscriber is told how much it lost ([`Delivery::Lagged`]) and is expected to go away or
//!   resync. Memory is bounded by the queue bounds times the subscribers.

mod event;
mod notify;
mod queue;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use nanodb_protocol::Error;

pub use event::{Delivery, EventKind, KeyEvent, RedisEvent};
pub use notify::NotifyFlags;

use crate::engine::{Effect, EffectObserver};
use crate::glob::glob_match;
use queue::{Bounds, Pushed, Queue};

/// What holds events back until their writes may be acknowledged: the append-only log. Without
/// one (persistence off) events are delivered at once.
pub trait DurabilityGate: Send + Sync + Debug {
    /// Whether the record at `position` may be acknowledged now (a cheap check).
    fn is_durable(&self, position: u64) -> bool;
    /// Waits until it may be; an error means it never will be (the log failed).
    fn wait_durable(&self, position: u64) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + '_>>;
}

type Gate = Arc<dyn DurabilityGate>;

/// The hub's limits; see the `--watch-*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedLimits {
    /// Most deliveries a subscriber's queue holds before it is lagged.
    pub queue_len: usize,
    /// Most bytes (keys, values, payloads) a subscriber's queue holds before it is lagged.
    pub queue_bytes: usize,
    /// Most topics (keys, prefixes, channels, patterns) one subscriber may hold.
    pub max_topics: usize,
    /// Longest key, prefix, channel or pattern in a topic.
    pub max_topic_len: usize,
}

impl Default for FeedLimits {
    fn default() -> Self {
        Self { queue_len: 4096, queue_bytes: 16 << 20, max_topics: 10_000, max_topic_len: 1024 }
    }
}

/// What a subscriber listens to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Changes to one key.
    Key(Bytes),
    /// Changes to every key starting with these bytes (empty: every key).
    Prefix(Bytes),
    /// Messages published to one channel.
    Channel(Bytes),
    /// Messages published to every channel matching a Redis glob pattern.
    Pattern(Bytes),
}

impl Topic {
    fn bytes(&self) -> &Bytes {
        match self {
            Self::Key(b) | Self::Prefix(b) | Self::Channel(b) | Self::Pattern(b) => b,
        }
    }

    /// The same topic holding an exact-size copy of its bytes (a slice of a network buffer would
    /// pin the whole buffer for as long as the subscription lives).
    fn owned(&self) -> Self {
        let b = Bytes::copy_from_slice(self.bytes());
        match self {
            Self::Key(_) => Self::Key(b),
            Self::Prefix(_) => Self::Prefix(b),
            Self::Channel(_) => Self::Channel(b),
            Self::Pattern(_) => Self::Pattern(b),
        }
    }
}

/// Counters the hub keeps (for INFO, `/v1/stats` and `/metrics`).
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Subscribers alive now.
    pub subscribers: AtomicUsize,
    /// Deliveries queued (key events and messages).
    pub delivered: AtomicU64,
    /// Deliveries dropped because a queue was full.
    pub dropped: AtomicU64,
    /// Subscribers that overflowed and were signalled lagged.
    pub lagged: AtomicU64,
    /// PUBLISH calls (client messages and keyspace notifications).
    pub published: AtomicU64,
}

/// The engine tells the hub of every write and expiry, with the key's shard lock held.
impl EffectObserver for Hub {
    fn is_active(&self) -> bool {
        Hub::is_active(self)
    }

    fn on_effect(&self, key: &[u8], effect: &Effect<'_>, position: u64) {
        self.report_effect(key, effect, position);
    }

    fn on_expired(&self, key: &[u8], version: u64) {
        self.report_expired(key, version);
    }
}

/// One registration: which subscriber, and whether it wants values.
#[derive(Debug, Clone)]
struct Registration {
    id: u64,
    queue: Arc<Queue>,
    with_value: bool,
}

#[derive(Debug, Default)]
struct Registry {
    keys: HashMap<Bytes, Vec<Registration>, ahash::RandomState>,
    prefixes: HashMap<Bytes, Vec<Registration>, ahash::RandomState>,
    /// Distinct watched-prefix lengths, with how many prefixes have each: a key is matched by
    /// probing `prefixes` with its first `len` bytes for each.
    prefix_lens: BTreeMap<usize, usize>,
    channels: HashMap<Bytes, Vec<Registration>, ahash::RandomState>,
    patterns: HashMap<Bytes, Vec<Registration>, ahash::RandomState>,
}

impl Registry {
    fn map(&mut self, topic: &Topic) -> &mut HashMap<Bytes, Vec<Registration>, ahash::RandomState> {
        match topic {
            Topic::Key(_) => &mut self.keys,
            Topic::Prefix(_) => &mut self.prefixes,
            Topic::Channel(_) => &mut self.channels,
            Topic::Pattern(_) => &mut self.patterns,
        }
    }

    /// Adds or updates `entry` under `topic`; returns whether it was new.
    fn insert(&mut self, topic: &Topic, entry: Registration) -> bool {
        let list = self.map(topic).entry(topic.bytes().clone()).or_default();
        if let Some(e) = list.iter_mut().find(|e| e.id == entry.id) {
            e.with_value = entry.with_value;
            return false;
        }
        let first = list.is_empty();
        list.push(entry);
        if first && let Topic::Prefix(p) = topic {
            *self.prefix_lens.entry(p.len()).or_default() += 1;
        }
        true
    }

    /// Removes subscriber `id` from `topic`; returns whether it was there.
    fn remove(&mut self, topic: &Topic, id: u64) -> bool {
        let map = self.map(topic);
        let Some(list) = map.get_mut(topic.bytes().as_ref()) else { return false };
        let Some(i) = list.iter().position(|e| e.id == id) else { return false };
        list.swap_remove(i);
        if list.is_empty() {
            map.remove(topic.bytes().as_ref());
            if let Topic::Prefix(p) = topic
                && let Some(n) = self.prefix_lens.get_mut(&p.len())
            {
                *n -= 1;
                if *n == 0 {
                    self.prefix_lens.remove(&p.len());
                }
            }
        }
        true
    }
}

/// Slots of the exact-key filter (a power of two): with 100 watched keys, about 2% of other keys
/// share a slot with one and take the registry lock for nothing.
const FILTER_SLOTS: usize = 4096;

/// The hub. Owned by the engine ([`crate::engine::Engine::feed`]); share it as `Arc<Hub>`.
#[derive(Debug)]
pub struct Hub {
    registry: RwLock<Registry>,
    /// Key and prefix registrations; zero means writers skip key dispatch.
    key_topics: AtomicUsize,
    /// Prefix registrations: while there are none, a write whose key misses `key_filter` skips
    /// the registry entirely.
    prefix_topics: AtomicUsize,
    /// A counting filter of exact-key registrations by key hash. Writers check it before taking
    /// the registry's read lock, whose shared counter would otherwise bounce between cores on every
    /// write while anybody watches anything (measured: 8% of SET throughput at 1M SET/s with one
    /// watcher on another key).
    key_filter: Box<[AtomicU32]>,
    filter_hasher: ahash::RandomState,
    /// Channel and pattern registrations; zero means publishing (and keyspace notifications)
    /// reaches nobody and is skipped.
    channel_topics: AtomicUsize,
    /// Keyspace-notification bits that can publish (0 when the setting publishes nothing).
    notify: AtomicU32,
    /// The setting as given, for CONFIG GET.
    notify_shown: AtomicU32,
    limits: FeedLimits,
    next_id: AtomicU64,
    stats: FeedStats,
    /// The log, when persistence is on: key events wait for their record before delivery.
    gate: OnceLock<Gate>,
}

impl Hub {
    /// An empty hub.
    pub fn new(limits: FeedLimits) -> Self {
        Self {
            registry: RwLock::default(),
            key_topics: AtomicUsize::new(0),
            prefix_topics: AtomicUsize::new(0),
            key_filter: (0..FILTER_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            filter_hasher: ahash::RandomState::new(),
            channel_topics: AtomicUsize::new(0),
            notify: AtomicU32::new(0),
            notify_shown: AtomicU32::new(0),
            limits,
            next_id: AtomicU64::new(1),
            stats: FeedStats::default(),
            gate: OnceLock::new(),
        }
    }

    /// Deliveries waiting in subscribers' queues now, summed, and the fullest queue's length:
    /// walked under the registry's read lock when stats are asked for (about once a second by a
    /// dashboard), so writers and subscribers keep no shared gauge on their paths.
    pub fn queue_use(&self) -> (usize, usize) {
        let registry = self.read();
        let mut seen = std::collections::HashSet::<u64>::new();
        let (mut total, mut fullest) = (0, 0);
        let maps = [&registry.keys, &registry.prefixes, &registry.channels, &registry.patterns];
        for entry in maps.into_iter().flat_map(|m| m.values()).flatten() {
            if seen.insert(entry.id) {
                let len = entry.queue.len();
                total += len;
                fullest = fullest.max(len);
            }
        }
        (total, fullest)
    }

    /// Holds key events back until `gate` says their writes may be acknowledged. Set once, when
    /// persistence opens the log.
    pub fn set_gate(&self, gate: Arc<dyn DurabilityGate>) {
        let _ = self.gate.set(gate);
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The hub's limits.
    pub fn limits(&self) -> &FeedLimits {
        &self.limits
    }

    /// The hub's counters.
    pub fn stats(&self) -> &FeedStats {
        &self.stats
    }

    /// A new subscriber with no topics.
    pub fn subscriber(self: &Arc<Self>) -> Subscriber {
        self.stats.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscriber {
            hub: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            queue: Arc::new(Queue::new(Bounds {
                len: self.limits.queue_len,
                bytes: self.limits.queue_bytes,
            })),
            topics: HashMap::default(),
            channels: 0,
            patterns: 0,
        }
    }

    /// Whether a write must report to the hub: someone watches keys, or keyspace notifications
    /// are on and someone subscribes to channels. One or two atomic loads.
    pub fn is_active(&self) -> bool {
        self.key_topics.load(Ordering::Acquire) > 0
            || (self.channel_topics.load(Ordering::Acquire) > 0 && self.notify.load(Ordering::Relaxed) != 0)
    }

    /// The keyspace-notification setting.
    pub fn notify_flags(&self) -> NotifyFlags {
        NotifyFlags::from_bits(self.notify_shown.load(Ordering::Relaxed))
    }

    /// Changes the keyspace-notification setting (CONFIG SET notify-keyspace-events).
    pub fn set_notify_flags(&self, flags: NotifyFlags) {
        // The letters are kept for CONFIG GET even when they publish nothing.
        let bits = if flags.any() { flags.bits() } else { 0 };
        self.notify.store(bits, Ordering::Relaxed);
        self.notify_shown.store(flags.bits(), Ordering::Relaxed);
    }

    /// Publishes `payload` to `channel`; returns how many subscriptions it was delivered to
    /// (exact subscribers plus matching patterns, as Redis counts).
    pub fn publish(&self, channel: &Bytes, payload: &Bytes) -> usize {
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        if self.channel_topics.load(Ordering::Acquire) == 0 {
            return 0;
        }
        self.publish_locked(&self.read(), channel, payload)
    }

    fn publish_locked(&self, reg: &Registry, channel: &Bytes, payload: &Bytes) -> usize {
        let mut n = 0;
        if let Some(list) = reg.channels.get(channel.as_ref()) {
            for e in list {
                let d =
                    Delivery::Message { channel: channel.clone(), payload: payload.clone(), pattern: None };
                self.deliver(e, d);
                n += 1;
            }
        }
        for (pattern, list) in &reg.patterns {
            if glob_match(pattern, channel) {
                for e in list {
                    let d = Delivery::Message {
                        channel: channel.clone(),
                        payload: payload.clone(),
                        pattern: Some(pattern.clone()),
                    };
                    self.deliver(e, d);
                    n += 1;
                }
            }
        }
        n
    }

    fn filter_slot(&self, key: &[u8]) -> &AtomicU32 {
        &self.key_filter[self.filter_hasher.hash_one(key) as usize & (FILTER_SLOTS - 1)]
    }

    /// Counts one registration of `topic` in (`up`) or out, in every counter writers check.
    fn count(&self, topic: &Topic, up: bool) {
        fn step(c: &AtomicUsize, up: bool) {
            if up {
                c.fetch_add(1, Ordering::Release);
            } else {
                c.fetch_sub(1, Ordering::Release);
            }
        }
        match topic {
            Topic::Key(k) => {
                let slot = self.filter_slot(k);
                if up {
                    slot.fetch_add(1, Ordering::Release);
                } else {
                    slot.fetch_sub(1, Ordering::Release);
                }
                step(&self.key_topics, up);
            }
            Topic::Prefix(_) => {
                step(&self.prefix_topics, up);
                step(&self.key_topics, up);
            }
            Topic::Channel(_) | Topic::Pattern(_) => step(&self.channel_topics, up),
        }
    }

    fn deliver(&self, e: &Registration, d: Delivery) {
        match e.queue.push(d) {
            Pushed::Queued => self.stats.delivered.fetch_add(1, Ordering::Relaxed),
            Pushed::Overflowed => {
                self.stats.lagged.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed)
            }
            Pushed::Dropped => self.stats.dropped.fetch_add(1, Ordering::Relaxed),
            Pushed::Closed => 0,
        };
    }

    /// Channels with at least one subscriber, optionally only those matching a glob pattern
    /// (PUBSUB CHANNELS).
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let reg = self.read();
        reg.channels.keys().filter(|c| pattern.is_none_or(|p| glob_match(p, c))).cloned().collect()
    }

    /// Subscribers of `channel`, not counting patterns (PUBSUB NUMSUB).
    pub fn subscriber_count(&self, channel: &[u8]) -> usize {
        self.read().channels.get(channel).map_or(0, Vec::len)
    }

    /// Distinct patterns subscribed to (PUBSUB NUMPAT).
    pub fn pattern_count(&self) -> usize {
        self.read().patterns.len()
    }

    /// Reports one applied write whose log record ends at `position` (0 when not logged); called
    /// by the engine with the key's shard lock held.
    fn report_effect(&self, key: &[u8], effect: &Effect<'_>, position: u64) {
        let (kind, op) = event::classify(effect);
        self.dispatch(key, kind, op, (effect.version, position), || event::string_value(effect));
    }

    /// Reports that `key` expired; called by the engine with the key's shard lock held.
    fn report_expired(&self, key: &[u8], version: u64) {
        self.dispatch(key, EventKind::Expire, RedisEvent::Expired, (version, 0), || None);
    }

    fn dispatch(
        &self,
        key: &[u8],
        kind: EventKind,
        op: RedisEvent,
        (version, position): (u64, u64),
        value: impl FnOnce() -> Option<Bytes>,
    ) {
        let keys = self.key_topics.load(Ordering::Acquire) > 0
            && (self.prefix_topics.load(Ordering::Acquire) > 0
                || self.filter_slot(key).load(Ordering::Acquire) > 0);
        let flags = NotifyFlags::from_bits(self.notify.load(Ordering::Relaxed));
        let notify = flags.any() && self.channel_topics.load(Ordering::Acquire) > 0;
        if !keys && !notify {
            return;
        }
        let reg = self.read();
        if keys {
            let mut matched: Vec<(u64, &Registration)> = Vec::new();
            if let Some(list) = reg.keys.get(key) {
                matched.extend(list.iter().map(|e| (e.id, e)));
            }
            for &len in reg.prefix_lens.keys() {
                if len > key.len() {
                    break;
                }
                if let Some(list) = reg.prefixes.get(&key[..len]) {
                    matched.extend(list.iter().map(|e| (e.id, e)));
                }
            }
            if !matched.is_empty() {
                // One delivery per subscriber however many of its topics matched. Grouped by id
                // in one pass: this runs under the key's shard lock, and a search per subscriber
                // would be quadratic in the watchers of a hot key.
                matched.sort_unstable_by_key(|(id, _)| *id);
                let value = if matched.iter().any(|(_, e)| e.with_value) { value() } else { None };
                let event = Arc::new(KeyEvent {
                    key: Bytes::copy_from_slice(key),
                    kind,
                    op,
                    version,
                    value,
                    position,
                });
                for group in matched.chunk_by(|a, b| a.0 == b.0) {
                    let wants = group.iter().any(|(_, e)| e.with_value);
                    if let Some((_, e)) = group.first() {
                        self.deliver(e, Delivery::Key { event: event.clone(), with_value: wants });
                    }
                }
            }
        }
        if notify {
            let (keyspace, keyevent) = flags.publishes(op.class());
            let name = op.redis_name().as_bytes();
            if keyspace {
                let channel = [b"__keyspace@0__:".as_slice(), key].concat();
                self.publish_locked(
                    &reg,
                    &Bytes::from(channel),
                    &Bytes::from_static(op.redis_name().as_bytes()),
                );
            }
            if keyevent {
                let channel = [b"__keyevent@0__:".as_slice(), name].concat();
                self.publish_locked(&reg, &Bytes::from(channel), &Bytes::copy_from_slice(key));
            }
        }
    }
}

/// One subscriber: a bounded queue and the topics feeding it. Dropping it removes every topic.
#[derive(Debug)]
pub struct Subscriber {
    hub: Arc<Hub>,
    id: u64,
    queue: Arc<Queue>,
    topics: HashMap<Topic, bool, ahash::RandomState>,
    /// Channel and pattern topics held: Redis confirmations carry these counts, once per name,
    /// so they are kept rather than counted.
    channels: usize,
    patterns: usize,
}

impl Subscriber {
    /// Adds `topic` (or changes whether it delivers values); returns whether it is new. Refused
    /// when its bytes are longer than the topic limit, when a key is empty, or when the subscriber
    /// already holds the most topics allowed.
    pub fn add(&mut self, topic: Topic, with_value: bool) -> Result<bool, Error> {
        let limits = self.hub.limits;
        let len = topic.bytes().len();
        if len > limits.max_topic_len {
            return Err(Error::KeyTooLarge {
                what: "watched key or channel",
                len,
                max: limits.max_topic_len,
            });
        }
        if matches!(&topic, Topic::Key(k) if k.is_empty()) {
            return Err(Error::Empty { what: "key" });
        }
        if !self.topics.contains_key(&topic) && self.topics.len() >= limits.max_topics {
            return Err(Error::LimitExceeded {
                what: "subscriptions",
                len: self.topics.len() + 1,
                max: limits.max_topics,
                setting: "watch_max_topics",
            });
        }
        let topic = topic.owned();
        let entry = Registration { id: self.id, queue: self.queue.clone(), with_value };
        let new = self.hub.write().insert(&topic, entry);
        if new {
            self.hub.count(&topic, true);
        }
        if self.topics.insert(topic.clone(), with_value).is_none() {
            self.tally(&topic, true);
        }
        Ok(new)
    }

    /// Removes `topic`; returns whether it was held.
    pub fn remove(&mut self, topic: &Topic) -> bool {
        if self.topics.remove(topic).is_none() {
            return false;
        }
        self.tally(topic, false);
        if self.hub.write().remove(topic, self.id) {
            self.hub.count(topic, false);
        }
        true
    }

    fn unregister_all(&mut self) {
        if self.topics.is_empty() {
            return;
        }
        let mut reg = self.hub.write();
        for (topic, _) in self.topics.drain() {
            if reg.remove(&topic, self.id) {
                self.hub.count(&topic, false);
            }
        }
        (self.channels, self.patterns) = (0, 0);
    }

    /// The topics held.
    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.keys()
    }

    /// Topics of every kind held.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    /// Channels held.
    pub fn channel_count(&self) -> usize {
        self.channels
    }

    /// Patterns held.
    pub fn pattern_count(&self) -> usize {
        self.patterns
    }

    /// Keeps the channel and pattern counts in step with `topics`.
    fn tally(&mut self, topic: &Topic, up: bool) {
        let n = match topic {
            Topic::Channel(_) => &mut self.channels,
            Topic::Pattern(_) => &mut self.patterns,
            Topic::Key(_) | Topic::Prefix(_) => return,
        };
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
    }

    /// Whether no topic is held.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// The next delivery, waiting for one. After [`Delivery::Lagged`] nothing more arrives (until
    /// [`Subscriber::clear`]): stop reading there.
    ///
    /// With persistence on, a key event is held until its write may be acknowledged under the
    /// fsync policy, so a watcher never sees a write a crash could take back.
    pub async fn recv(&self) -> Delivery {
        self.queue.pop(self.hub.gate.get()).await
    }

    /// Deliveries waiting to be read.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The next delivery if one is waiting (to drain a batch before one write).
    /// Like [`Subscriber::recv`], a key event whose write is not yet durable is not returned.
    pub fn try_recv(&self) -> Option<Delivery> {
        self.queue.try_pop(self.hub.gate.get())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.unregister_all();
        self.hub.stats.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
