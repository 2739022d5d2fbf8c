//! Cluster mode: what the engine does differently when it is a Raft state machine.
//!
//! Every node applies the same log entries and must reach the same state, so in this mode:
//! - a write takes "now" from the entry ([`Engine::apply_at`]: the leader's clock at proposal),
//!   never from this node's clock;
//! - a read hides an expired key but does not remove it (only the leader's proposed expiry
//!   entries remove keys, through [`Engine::expire_keys_at`]);
//! - versions are drawn by every write path whether or not an observer is active, so that the
//!   counter (which CAS and `DeleteIf` compare against) is the same on every node; a snapshot
//!   carries it ([`Engine::version_counter`]).
//!
//! Single-node mode never turns this on and pays one relaxed load per write for it.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use nanodb_protocol::{Command, Error, Reply};

use super::{Change, Effect, EffectKind, Engine, LogPosition};

impl Engine {
    /// Turns cluster mode on, before the engine serves anything. There is no way back.
    pub fn set_replicated(&self) {
        self.replicated.store(true, Ordering::Relaxed);
    }

    /// Whether the engine is a cluster's state machine.
    pub fn is_replicated(&self) -> bool {
        self.replicated.load(Ordering::Relaxed)
    }

    /// Validates and applies `cmd` as of `now_ms` (the proposing leader's clock): the state
    /// machine's one entry point for keyspace commands. Only the state machine's apply task calls
    /// it, so the time it sets is the time of every write until its next call.
    pub fn apply_at(&self, cmd: Command, now_ms: u64) -> Result<Reply, Error> {
        self.apply_now.store(now_ms, Ordering::Relaxed);
        self.apply_command(cmd, &mut LogPosition::default())
    }

    /// [`Engine::apply_at`] for a put, typed: its outcome says whether it created the key.
    pub fn apply_put_at(
        &self,
        cmd: nanodb_protocol::cmd::Put,
        now_ms: u64,
    ) -> Result<nanodb_protocol::PutOutcome, Error> {
        self.apply_now.store(now_ms, Ordering::Relaxed);
        self.apply(cmd, &mut LogPosition::default())
    }

    /// Sets the time the next writes apply at (restoring a snapshot, expiring keys).
    pub fn set_apply_time(&self, now_ms: u64) {
        self.apply_now.store(now_ms, Ordering::Relaxed);
    }

    /// Up to `budget` keys whose deadline is at or before `now_ms`, oldest first, without
    /// removing anything: what the leader's sweeper proposes to delete.
    pub fn due_keys(&self, now_ms: u64, budget: usize) -> Vec<Bytes> {
        let mut due = Vec::new();
        for part in self.partitions.iter() {
            let index = part.expiry();
            for (deadline, key) in index.iter() {
                if *deadline > now_ms || due.len() >= budget {
                    break;
                }
                due.push(Bytes::copy_from_slice(key));
            }
            if due.len() >= budget {
                break;
            }
        }
        due
    }

    /// Removes each of `keys` that is expired as of `now_ms` (a committed expiry entry); returns
    /// how many were removed. A key rewritten since the proposal is no longer expired and stays.
    pub fn expire_keys_at(&self, keys: &[Bytes], now_ms: u64) -> usize {
        self.apply_now.store(now_ms, Ordering::Relaxed);
        let mut removed = 0;
        for key in keys {
            let before = self.stats.expired_keys.load(Ordering::Relaxed);
            // A missing or expired key is handed to `f` as `None`; `update` removes the expired
            // slot itself (and counts it).
            let _ = self.update(&mut LogPosition::default(), key.clone(), |_, _| Ok(((), Change::None)));
            removed += usize::from(self.stats.expired_keys.load(Ordering::Relaxed) > before);
        }
        removed
    }

    /// The version counter: the last version drawn. A snapshot carries it so that a node that
    /// installs one draws the same next versions as the others.
    pub fn version_counter(&self) -> u64 {
        self.versions.load(Ordering::Relaxed)
    }

    /// Sets the version counter (after a snapshot is installed).
    pub fn set_version_counter(&self, version: u64) {
        self.versions.store(version, Ordering::Relaxed);
    }

    /// An empty engine like this one (same hasher, so the same partition for every key; same
    /// limits; cluster mode) with no observers: a snapshot being installed is loaded into it,
    /// aside, while this one keeps serving, then [`Engine::swap_state`] puts it in place.
    pub fn sibling(&self) -> Engine {
        let mut aside = Engine::new(self.limits.clone());
        aside.hasher = self.hasher.clone();
        aside.set_replicated();
        aside
    }

    /// Exchanges the whole keyspace (every partition's table and expiry index) and the version
    /// counter with `other`, a [`Engine::sibling`]: afterwards this engine holds what `other`
    /// held and `other` the old state. Every partition's table lock is held at once while the
    /// tables are exchanged (taken in partition order, the index under its table's lock as
    /// writers take them), and each exchange is a pointer swap: a read sees the old state or the
    /// new one, never a mix, and waits for 512 pointer swaps at most.
    pub fn swap_state(&self, other: &Engine) {
        // A sibling hashes as this engine does: its keys are in the partitions this one reads.
        debug_assert_eq!(self.hash(b"sibling"), other.hash(b"sibling"));
        if std::ptr::eq(self, other) {
            return;
        }
        let mut mine: Vec<_> = self.partitions.iter().map(|p| p.write()).collect();
        let mut theirs: Vec<_> = other.partitions.iter().map(|p| p.write()).collect();
        for (i, (a, b)) in mine.iter_mut().zip(theirs.iter_mut()).enumerate() {
            std::mem::swap(&mut **a, &mut **b);
            std::mem::swap(&mut *self.partitions[i].expiry(), &mut *other.partitions[i].expiry());
        }
        let versions = other.versions.swap(self.versions.load(Ordering::Relaxed), Ordering::Relaxed);
        self.versions.store(versions, Ordering::Relaxed);
        drop(theirs);
        drop(mine);
    }

    /// Tells the active observers how the state changed when `old` (a [`Engine::sibling`] that
    /// [`Engine::swap_state`] handed the previous state to) was replaced by this engine's: a
    /// whole-value effect for every key that is new or whose version differs (versions are the
    /// same on every node, so an equal version is an equal value) and a delete for every key
    /// gone, in key order, so a watcher sees the writes the snapshot stood for as if they had
    /// been applied one by one (their intermediate values excepted). Returns how many effects
    /// were sent; with no active observer nothing is compared. The caller holds the apply lock,
    /// so no write interleaves; the changed keys are copied once (the memory this costs).
    pub fn announce_replacement(&self, old: &Engine) -> usize {
        if !self.watched() {
            return 0;
        }
        // (key, whether it was removed), collected a partition at a time.
        let mut changed: Vec<(Bytes, bool)> = Vec::new();
        for (new, old) in self.partitions.iter().zip(old.partitions.iter()) {
            let (new, old) = (new.read(), old.read());
            for e in new.iter() {
                let before = old.get(self.hash(e.key()), e.key());
                if before.is_none_or(|b| b.version() != e.version()) {
                    changed.push((Bytes::copy_from_slice(e.key()), false));
                }
            }
            for e in old.iter() {
                if new.get(self.hash(e.key()), e.key()).is_none() {
                    changed.push((Bytes::copy_from_slice(e.key()), true));
                }
            }
        }
        changed.sort_unstable();
        let deleted_at = self.version_counter();
        for (key, removed) in &changed {
            let (hash, part) = self.locate(key);
            let table = part.read();
            let effect = match (removed, table.get(hash, key)) {
                (false, Some(e)) => Effect {
                    key,
                    version: e.version(),
                    kind: EffectKind::Set { value: e.value(), deadline: e.deadline() },
                },
                _ => Effect { key, version: deleted_at, kind: EffectKind::Delete },
            };
            for observer in self.observers.iter().filter(|o| o.is_active()) {
                observer.on_effect(key, &effect, 0);
            }
        }
        changed.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use nanodb_protocol::{Expiry, Limits, PutCondition, cmd};

    use super::*;
    use crate::engine::{Effect, EffectObserver};

    /// An observer that always listens: the node with a watcher.
    #[derive(Debug, Default)]
    struct Watching(AtomicUsize);

    impl EffectObserver for Watching {
        fn is_active(&self) -> bool {
            true
        }
        fn on_effect(&self, _: &[u8], _: &Effect<'_>, _: u64) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn on_expired(&self, _: &[u8], _: u64) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn replicated_engines_given_the_same_entries_agree() {
        let watched = Engine::with_observers(Limits::default(), vec![Arc::new(Watching::default())]);
        let quiet = Engine::new(Limits::default());
        let put = |key: &str, expiry| {
            Command::Put(cmd::Put { key: b(key), value: b("v"), expiry, condition: PutCondition::Always })
        };
        let mut replies = Vec::new();
        for e in [&watched, &quiet] {
            e.set_replicated();
            // Entry times are far in the past of this machine's clock: what decides is the entry's
            // time, never the local clock.
            let mut r = vec![
                e.apply_at(put("short", Expiry::At(1_000)), 500),
                e.apply_at(put("gone", Expiry::At(900)), 500),
                e.apply_at(Command::Incr(cmd::Incr { key: b("n"), delta: 2 }), 600),
                // Expired at this entry's time: the write sees no key and draws a version.
                e.apply_at(Command::Incr(cmd::Incr { key: b("gone"), delta: 1 }), 950),
            ];
            // A read hides a key whose deadline passed on this clock, without removing it.
            assert_eq!(e.get(b"short").expect("get"), None);
            assert_eq!(e.key_count(), 3, "the read removed nothing");
            assert_eq!(e.expire_keys_at(&[b("short"), b("n")], 1_500), 1, "only the expired key goes");
            r.push(e.apply_at(put("after", Expiry::Persist), 1_600));
            replies.push((r, e.version_counter(), e.key_count()));
        }
        assert_eq!(
            replies[0], replies[1],
            "the watched node and the quiet one agree on every reply and version"
        );
        let due = quiet.due_keys(u64::MAX, 10);
        assert!(due.is_empty(), "no deadline left: {due:?}");
    }
}
