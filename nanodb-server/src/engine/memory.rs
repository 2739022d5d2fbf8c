//! The dataset's memory and what happens past `--max-memory` (#20): Redis's `maxmemory`,
//! `maxmemory-policy` and `-OOM`.
//!
//! # Accounting
//! Each partition's table keeps the sum of its entries' footprints (block size class, what a
//! hash or list owns, the expiry index's share: [`Entry::footprint`](super::Entry::footprint)) under the partition's own
//! lock, and publishes that plus its table's allocation in the partition's `used` word whenever a
//! write guard is released. No engine-wide counter is written by writes (threads writing to
//! different partitions never share a line for it); [`Engine::used_memory`] sums the 512 words
//! when asked. The write path's check ([`Engine::make_room`]) reads a sum up to a millisecond old
//! while the dataset is more than a sixteenth under the limit, and sums afresh on every check
//! closer to it (where, under an evicting policy, a write evicts anyway and the sum costs less
//! than the eviction's sampling): the limit holds to about one command per concurrent writer, as
//! Redis's holds to whatever the command being run allocates.
//!
//! This is the dataset's memory, not the process's (connections, buffers, the log's queue and
//! the allocator's free pages are not in it); INFO shows it as `used_memory` and the process's
//! resident size as `used_memory_rss`.
//!
//! # Eviction
//! Before a command that may grow memory ([`nanodb_protocol::Command::may_grow`]) runs, the
//! command path calls [`Engine::make_room`]: while the dataset is over the limit, it deletes keys
//! chosen by the policy, through [`Engine::update`] like any delete (logged, so a restart does
//! not bring them back; watchers see a delete). The work per command is bounded (at most
//! [`EVICT_PER_COMMAND`] keys); if nothing could be evicted (`noeviction`, or a `volatile-*`
//! policy with no key having a TTL), the command is refused with [`Error::OutOfMemory`]. Reads,
//! deletes and shrinking commands are never refused.
//!
//! - `allkeys-lru` / `volatile-lru`: Redis's approximation. A command's first round samples
//!   [`POOL`] keys (random partition, random bucket: `Table::sample`), later rounds [`SAMPLES`]
//!   more, into a pool of the [`POOL`] idlest seen in this command by their access clock
//!   ([`Entry::idle`](super::Entry::idle)); each round evicts the idlest.
//! - `volatile-ttl`: the nearest deadline, exactly: the pool holds the head of every partition's
//!   deadline-ordered expiry index (taken once per command), and a partition's next head joins
//!   it when its head is evicted.
//! - `allkeys-random` / `volatile-random`: any sampled key.
//!
//! In a cluster the state machine must be the same function of the log on every node, and an
//! eviction is a local decision: policies other than `noeviction` are refused there (at start and
//! by CONFIG SET); `noeviction` refuses writes on the node that received them.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nanodb_protocol::Error;

use super::{Change, Engine, LogPosition, PARTITIONS};

/// Keys sampled per eviction round (Redis's `maxmemory-samples` default).
const SAMPLES: usize = 5;
/// Candidates kept between rounds of one command (Redis's eviction pool size).
const POOL: usize = 16;
/// The most keys one command evicts before it runs anyway (Redis bounds its loop by time).
pub const EVICT_PER_COMMAND: usize = 64;
/// The time one command spends evicting at most.
const EVICT_TIME: Duration = Duration::from_millis(2);

/// What to do when a write would go past `--max-memory`: Redis's `maxmemory-policy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Policy {
    /// Refuse commands that may grow memory (`-OOM`).
    #[default]
    NoEviction = 0,
    /// Evict the least recently used key (approximated by sampling).
    AllKeysLru = 1,
    /// Evict a random key.
    AllKeysRandom = 2,
    /// Evict the least recently used key among those with a TTL.
    VolatileLru = 3,
    /// Evict the key with the nearest deadline.
    VolatileTtl = 4,
    /// Evict a random key among those with a TTL.
    VolatileRandom = 5,
}

impl Policy {
    /// Every policy, in Redis's documentation order.
    pub const ALL: [Policy; 6] = [
        Self::NoEviction,
        Self::AllKeysLru,
        Self::AllKeysRandom,
        Self::VolatileLru,
        Self::VolatileTtl,
        Self::VolatileRandom,
    ];

    /// Redis's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoEviction => "noeviction",
            Self::AllKeysLru => "allkeys-lru",
            Self::AllKeysRandom => "allkeys-random",
            Self::VolatileLru => "volatile-lru",
            Self::VolatileTtl => "volatile-ttl",
            Self::VolatileRandom => "volatile-random",
        }
    }

    /// Whether reads must keep the access clock (the LRU policies).
    pub fn tracks_access(self) -> bool {
        matches!(self, Self::AllKeysLru | Self::VolatileLru)
    }

    /// Whether only keys with a TTL may be evicted.
    fn volatile(self) -> bool {
        matches!(self, Self::VolatileLru | Self::VolatileTtl | Self::VolatileRandom)
    }

    fn from_u8(n: u8) -> Self {
        Self::ALL.get(usize::from(n)).copied().unwrap_or_default()
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown maxmemory policy '{s}' (one of {})", names.join(", "))
        })
    }
}

/// A memory size in Redis's `maxmemory` syntax (CONFIG SET): `k`/`m`/`g` are powers of 1000,
/// `kb`/`mb`/`gb` powers of 1024, as Redis reads them; the flag's forms (`512MiB`) also work.
pub fn parse_redis_memory(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit {
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        _ => return crate::config::parse_size(s),
    };
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a memory size"))?;
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

/// The limit, the policy and the counters; one per engine.
#[derive(Debug, Default)]
pub struct MemoryLimit {
    /// Bytes; 0 for no limit.
    max: AtomicU64,
    policy: AtomicU8,
    /// Whether reads keep the access clock (an LRU policy with a limit set).
    track_access: AtomicBool,
    /// Written by writers over the limit: on lines of their own, away from what every read loads.
    counters: Counters,
}

/// See [`MemoryLimit::counters`].
#[derive(Debug, Default)]
#[repr(align(128))]
struct Counters {
    /// Keys evicted since start (INFO's `evicted_keys`).
    evicted: AtomicU64,
    /// The last sum of the partitions' memory and the engine-clock ms it was taken at.
    cached_used: AtomicU64,
    cached_at: AtomicU64,
}

impl MemoryLimit {
    /// The limit in bytes; 0 when unlimited.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        Policy::from_u8(self.policy.load(Ordering::Relaxed))
    }

    /// Keys evicted since start.
    pub fn evicted(&self) -> u64 {
        self.counters.evicted.load(Ordering::Relaxed)
    }
}

/// One key the policy would evict, with its rank (higher goes first).
struct Candidate {
    rank: u64,
    key: Bytes,
    /// The partition whose expiry index it came from (`volatile-ttl`).
    partition: usize,
}

/// A small random sequence (splitmix64): sampling needs spread, not secrecy.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Engine {
    /// The memory limit, policy and eviction count.
    pub fn memory(&self) -> &MemoryLimit {
        &self.memory
    }

    /// Sets the limit (bytes, 0 for none) and policy. In cluster mode only `noeviction` is
    /// allowed (see the module docs); the error says why.
    pub fn set_memory_limit(&self, max: u64, policy: Policy) -> Result<(), String> {
        if policy != Policy::NoEviction && self.is_replicated() {
            return Err(format!(
                "maxmemory-policy {policy} is not available in cluster mode: an eviction is one node's \
                 decision and every node must apply the same log; use noeviction"
            ));
        }
        self.memory.policy.store(policy as u8, Ordering::Relaxed);
        self.memory.max.store(max, Ordering::Relaxed);
        self.memory.track_access.store(max != 0 && policy.tracks_access(), Ordering::Relaxed);
        // The next check sums afresh.
        self.memory.counters.cached_at.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// The dataset's memory now: every partition's published footprint, summed.
    pub fn used_memory(&self) -> u64 {
        self.partitions.iter().map(|p| p.used.load(Ordering::Relaxed)).sum()
    }

    /// [`Engine::used_memory`] as of this millisecond (summed at most once per ms).
    fn used_memory_recent(&self) -> u64 {
        let now = self.clock.now_ms();
        if self.memory.counters.cached_at.load(Ordering::Relaxed) == now {
            return self.memory.counters.cached_used.load(Ordering::Relaxed);
        }
        self.refresh_used()
    }

    fn refresh_used(&self) -> u64 {
        let used = self.used_memory();
        self.memory.counters.cached_used.store(used, Ordering::Relaxed);
        self.memory.counters.cached_at.store(self.clock.now_ms(), Ordering::Relaxed);
        used
    }

    /// The access clock's tick for `now` (Unix ms): seconds, wrapping at 2^16.
    pub(crate) fn access_tick(now: u64) -> u16 {
        (now / 1000) as u16
    }

    /// Whether reads must keep the access clock: one load of a word written only by
    /// configuration, so a GET without an LRU policy writes nothing.
    pub(crate) fn tracks_access(&self) -> bool {
        self.memory.track_access.load(Ordering::Relaxed)
    }

    /// What the command path calls before a command that may grow memory: within the limit,
    /// nothing; over it, evicts keys by the policy (bounded work, see the module docs), raising
    /// `at` to the position its deletes were logged at; refuses with [`Error::OutOfMemory`] when
    /// nothing could be evicted. Must be called with no partition lock held.
    pub fn make_room(&self, at: &mut LogPosition) -> Result<(), Error> {
        let max = self.memory.max();
        // Comfortably under the limit (by a sixteenth), a sum up to a millisecond old is enough;
        // near or over it, every check sums afresh, so the limit holds to about one command.
        if max == 0 || self.used_memory_recent() < max - max / 16 {
            return Ok(());
        }
        let mut used = self.refresh_used();
        if used <= max {
            return Ok(());
        }
        let policy = self.memory.policy();
        if policy == Policy::NoEviction || self.is_replicated() {
            return Err(Error::OutOfMemory);
        }
        let started = Instant::now();
        let now = self.write_now();
        let mut random = Random(self.hasher.hash_one((now, self.versions.load(Ordering::Relaxed), started)));
        let mut pool: Vec<Candidate> = Vec::new();
        let mut pool_filled = false;
        let mut evicted = 0;
        let mut attempts = 0;
        while used > max && evicted < EVICT_PER_COMMAND && attempts < 4 * EVICT_PER_COMMAND {
            attempts += 1;
            if attempts > 1 && started.elapsed() > EVICT_TIME {
                break;
            }
            if policy == Policy::VolatileTtl {
                if !pool_filled {
                    self.deadline_heads(&mut pool);
                    pool_filled = true;
                }
            } else {
                self.sample_into(policy, now, &mut random, &mut pool);
            }
            // The best candidate is last.
            let Some(victim) = pool.pop() else { break };
            if let Some(freed) = self.evict(at, policy, victim.key)? {
                evicted += 1;
                used = used.saturating_sub(freed as u64);
            }
            if policy == Policy::VolatileTtl {
                self.deadline_head(victim.partition, &mut pool);
            }
        }
        self.memory.counters.evicted.fetch_add(evicted as u64, Ordering::Relaxed);
        let used = self.refresh_used();
        if evicted == 0 && used > max {
            return Err(Error::OutOfMemory);
        }
        Ok(())
    }

    /// Deletes `key` as an eviction: through the one write path, logged and observed like any
    /// delete. `None` when it is gone, expired, or (for a volatile policy) lost its TTL since it
    /// was sampled; otherwise the footprint freed.
    fn evict(&self, at: &mut LogPosition, policy: Policy, key: Bytes) -> Result<Option<usize>, Error> {
        self.update(at, key, |slot, _| {
            Ok(match slot {
                Some(e) if !policy.volatile() || e.deadline() != 0 => (Some(e.footprint()), Change::Remove),
                _ => (None, Change::None),
            })
        })
    }

    /// Adds [`SAMPLES`] sampled keys to `pool`, which keeps the [`POOL`] best sorted best last.
    fn sample_into(&self, policy: Policy, now: u64, random: &mut Random, pool: &mut Vec<Candidate>) {
        let tick = Self::access_tick(now);
        // A command's first round fills the pool; later rounds add a few.
        let samples = if pool.is_empty() { POOL } else { SAMPLES };
        for _ in 0..samples {
            let r = random.next();
            let Some((partition, key, rank)) = (if policy.volatile() {
                self.sample_volatile(r, random.next(), tick)
            } else {
                self.sample_any(r, random.next(), tick)
            }) else {
                continue;
            };
            let rank = if policy.tracks_access() { rank } else { 0 };
            if pool.iter().any(|c| c.key == key) {
                continue;
            }
            let at = pool.partition_point(|c| c.rank <= rank);
            pool.insert(at, Candidate { rank, key, partition });
            if pool.len() > POOL {
                pool.remove(0);
            }
        }
    }

    /// A key from the first non-empty partition at or after a random one: its partition, key and
    /// idle seconds.
    fn sample_any(&self, r: u64, bucket: u64, tick: u16) -> Option<(usize, Bytes, u64)> {
        (0..PARTITIONS).find_map(|i| {
            let partition = (r as usize + i) % PARTITIONS;
            let table = self.partitions[partition].read();
            let e = table.sample(bucket)?;
            Some((partition, Bytes::copy_from_slice(e.key()), u64::from(e.idle(tick))))
        })
    }

    /// A key with a deadline, from the first partition at or after a random one whose expiry
    /// index is not empty (one of its first 64, at random): its partition, key and idle seconds.
    fn sample_volatile(&self, r: u64, pick: u64, tick: u16) -> Option<(usize, Bytes, u64)> {
        (0..PARTITIONS).find_map(|i| {
            let partition = (r as usize + i) % PARTITIONS;
            let part = &self.partitions[partition];
            let key = {
                let index = part.expiry();
                let len = index.len().min(64);
                if len == 0 {
                    return None;
                }
                let (_, key) = index.iter().nth((pick % len as u64) as usize)?;
                Bytes::copy_from_slice(key)
            };
            let (hash, _) = self.locate(&key);
            let idle = part.read().get(hash, &key).map_or(0, |e| u64::from(e.idle(tick)));
            Some((partition, key, idle))
        })
    }

    /// Fills `pool` with the head (nearest deadline) of every partition's expiry index, nearest
    /// last.
    fn deadline_heads(&self, pool: &mut Vec<Candidate>) {
        for partition in 0..PARTITIONS {
            self.deadline_head(partition, pool);
        }
    }

    /// Adds partition `partition`'s nearest deadline to `pool` (sorted, nearest last).
    fn deadline_head(&self, partition: usize, pool: &mut Vec<Candidate>) {
        let head = self.partitions[partition].expiry().first().map(|(d, k)| (*d, Bytes::copy_from_slice(k)));
        if let Some((deadline, key)) = head {
            // Nearer deadlines rank higher.
            let rank = u64::MAX - deadline;
            if pool.iter().any(|c| c.key == key) {
                return;
            }
            let at = pool.partition_point(|c| c.rank <= rank);
            pool.insert(at, Candidate { rank, key, partition });
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use nanodb_protocol::{Command, Error, Expiry, Limits, ListEnd, PutCondition, cmd};

    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(key: &str, value: &str, ttl_ms: u64) -> Command {
        Command::Put(cmd::Put {
            key: b(key),
            value: b(value),
            expiry: Expiry::from_put_ttl_ms(ttl_ms),
            condition: PutCondition::Always,
        })
    }

    /// The running sums equal a recount from scratch, partition by partition.
    fn assert_accounted(e: &Engine) {
        let recounted: u64 = e.partitions.iter().map(|p| p.read().recount() as u64).sum();
        assert_eq!(e.used_memory(), recounted);
    }

    #[test]
    fn accounting_follows_every_write_path() {
        let e = Engine::new(Limits::default());
        assert_eq!(e.used_memory(), 0);
        let value = "v".repeat(64);
        for i in 0..200 {
            e.execute(put(&format!("key:{i:012}"), &value, if i % 3 == 0 { 60_000 } else { 0 }))
                .expect("succeeds");
        }
        assert_accounted(&e);
        let before = e.used_memory();
        assert!(before >= 200 * 96, "{before}");
        let cmds = [
            Command::Append(cmd::Append { key: b("key:000000000001"), value: b(&"x".repeat(500)) }),
            Command::Incr(cmd::Incr { key: b("n"), delta: 5 }),
            Command::HashSet(cmd::HashSet { key: b("h"), field: b("f"), value: b("1") }),
            Command::HashSet(cmd::HashSet { key: b("h"), field: b("g"), value: b("2") }),
            Command::ListPush(cmd::ListPush {
                key: b("l"),
                end: ListEnd::Front,
                values: vec![b("a"), b("b")],
            }),
            Command::Expire(cmd::Expire { key: b("key:000000000002"), expiry: Expiry::In(5_000) }),
            Command::Expire(cmd::Expire { key: b("key:000000000003"), expiry: Expiry::Persist }),
            Command::MultiPut(cmd::MultiPut {
                pairs: vec![(b("m1"), b("one")), (b("key:000000000004"), b("two"))],
                only_if_none_exist: false,
            }),
            Command::Rename(cmd::Rename { from: b("m1"), to: b("m2") }),
            Command::Delete(cmd::Delete { key: b("key:000000000005") }),
            put("s", &"y".repeat(MAX_BIG), 0),
        ];
        for c in cmds {
            e.execute(c).expect("succeeds");
            assert_accounted(&e);
        }
        e.execute(Command::Flush(cmd::Flush {})).expect("succeeds");
        assert_accounted(&e);
        // Emptied and shrunk: nothing left but what hashbrown keeps for an empty table (none).
        assert_eq!(e.used_memory(), 0);
    }

    /// A string longer than the packed limit is cheap to test at this size: it is not.
    const MAX_BIG: usize = 4096;

    #[test]
    fn noeviction_refuses_and_frees_nothing() {
        let e = Engine::new(Limits::default());
        for i in 0..100 {
            e.execute(put(&format!("k{i}"), "value", 0)).expect("succeeds");
        }
        let used = e.used_memory();
        e.set_memory_limit(used - 1, Policy::NoEviction).expect("succeeds");
        assert_eq!(e.make_room(&mut LogPosition::default()), Err(Error::OutOfMemory));
        assert_eq!(e.key_count(), 100);
        e.set_memory_limit(used, Policy::NoEviction).expect("succeeds");
        assert_eq!(e.make_room(&mut LogPosition::default()), Ok(()));
    }

    #[test]
    fn volatile_ttl_evicts_the_nearest_deadline_and_nothing_without_one() {
        let e = Engine::new(Limits::default());
        for i in 0..50 {
            e.execute(put(&format!("plain{i}"), "value", 0)).expect("succeeds");
            // Deadlines in an order unrelated to the keys' partitions.
            e.execute(put(&format!("ttl{i}"), "value", 100_000 + (i * 7 % 50) as u64 * 1000))
                .expect("succeeds");
        }
        let full = e.used_memory();
        e.set_memory_limit(full - 1, Policy::VolatileTtl).expect("succeeds");
        let mut gone = Vec::new();
        for round in 0..60 {
            let mut at = LogPosition::default();
            let made = e.make_room(&mut at);
            if round >= 50 {
                // Only keys without a TTL are left: nothing is evictable.
                assert_eq!(made, Err(Error::OutOfMemory));
                continue;
            }
            made.expect("succeeds");
            // Pretend the write that needed room added what was freed back.
            e.set_memory_limit(e.used_memory() - 1, Policy::VolatileTtl).expect("succeeds");
            let left: Vec<u64> = (0..50)
                .filter(|i| e.read(format!("ttl{i}").as_bytes(), |_| ()).is_none())
                .map(|i| (i * 7 % 50) as u64)
                .filter(|rank| !gone.contains(rank))
                .collect();
            assert_eq!(left.len(), 1, "one eviction per round: {left:?}");
            gone.push(left[0]);
        }
        assert_eq!(gone, (0..50).collect::<Vec<u64>>(), "nearest deadline first");
        assert_eq!((0..50).filter(|i| e.read(format!("plain{i}").as_bytes(), |_| ()).is_some()).count(), 50);
        assert_eq!(e.memory().evicted(), 50);
    }

    #[test]
    fn lru_keeps_what_was_read_since() {
        let e = Engine::new(Limits::default());
        e.set_memory_limit(u64::MAX, Policy::AllKeysLru).expect("succeeds");
        let now = e.clock().now_ms();
        for i in 0..2000 {
            e.execute(put(&format!("k{i}"), "value", 0)).expect("succeeds");
        }
        // Age every key by hand (a test cannot wait an hour), then read the hot tenth.
        let old = Engine::access_tick(now).wrapping_sub(3600);
        for p in e.partitions.iter() {
            for entry in p.read().iter() {
                entry.touch(old);
            }
        }
        for i in (0..2000).step_by(10) {
            assert!(e.read(format!("k{i}").as_bytes(), |_| ()).is_some());
        }
        let target = e.used_memory() * 7 / 10;
        e.set_memory_limit(target, Policy::AllKeysLru).expect("succeeds");
        while e.used_memory() > target {
            e.make_room(&mut LogPosition::default()).expect("succeeds");
        }
        let hot_left = (0..2000).step_by(10).filter(|i| e.read(format!("k{i}").as_bytes(), |_| ()).is_some());
        assert_eq!(hot_left.count(), 200, "no recently read key was evicted");
        assert!(e.memory().evicted() >= 500, "{}", e.memory().evicted());
    }

    /// The volatile policies other than `volatile-ttl` evict keys with a TTL and nothing else;
    /// the allkeys ones evict whatever they sample.
    #[test]
    fn volatile_policies_never_evict_a_key_without_ttl() {
        for policy in [Policy::VolatileLru, Policy::VolatileRandom, Policy::AllKeysRandom] {
            let e = Engine::new(Limits::default());
            for i in 0..300 {
                e.execute(put(&format!("plain{i}"), "value", 0)).expect("succeeds");
                e.execute(put(&format!("ttl{i}"), "value", 100_000)).expect("succeeds");
            }
            // The keys with a TTL are about half the memory (the rest is the others and the
            // tables): with the volatile policies all of them go and the limit is still not met.
            let tenths = if policy == Policy::AllKeysRandom { 7 } else { 3 };
            e.set_memory_limit(e.used_memory() * tenths / 10, policy).expect("succeeds");
            let mut refused = false;
            for _ in 0..1000 {
                if e.make_room(&mut LogPosition::default()).is_err() {
                    refused = true;
                    break;
                }
            }
            let plain = (0..300).filter(|i| e.read(format!("plain{i}").as_bytes(), |_| ()).is_some()).count();
            let ttl = (0..300).filter(|i| e.read(format!("ttl{i}").as_bytes(), |_| ()).is_some()).count();
            if policy == Policy::AllKeysRandom {
                assert!(!refused && plain < 300 && ttl < 300, "{policy}: {plain} plain, {ttl} ttl left");
            } else {
                assert!(refused, "{policy}");
                assert_eq!((plain, ttl), (300, 0), "{policy}");
            }
            assert!(e.used_memory() <= e.memory().max() || refused, "{policy}");
        }
    }

    #[test]
    fn policies_parse_by_their_redis_names_and_sizes_by_redis_units() {
        for p in Policy::ALL {
            assert_eq!(p.as_str().parse::<Policy>(), Ok(p));
        }
        assert!("lru".parse::<Policy>().is_err());
        assert_eq!(parse_redis_memory("100mb"), Ok(100 << 20));
        assert_eq!(parse_redis_memory("1g"), Ok(1_000_000_000));
        assert_eq!(parse_redis_memory("512MiB"), Ok(512 << 20));
        assert_eq!(parse_redis_memory("0"), Ok(0));
        assert!(parse_redis_memory("lots").is_err());
    }
}
