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

use super::{Change, Engine, LogPosition, PARTITIONS};

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

    /// Removes every key without logging or versioning anything, before a snapshot replaces
    /// the state. Watchers are not told: the installed state is a new starting point.
    pub fn clear_all(&self) {
        for i in 0..PARTITIONS {
            let part = &self.partitions[i];
            let mut table = part.write();
            table.clear();
            table.shrink_to_fit(|k| self.hash(k));
            drop(table);
            part.expiry().clear();
        }
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
