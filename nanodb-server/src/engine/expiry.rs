//! Active expiry: reclaiming keys whose deadline passed without anyone reading them.
//!
//! Each partition keeps an exact index of `(deadline, key)` for its expiring keys (maintained by
//! [`Engine::update`]), so the sweeper visits only keys that are due, oldest first, instead of
//! sampling or scanning. Work per call is bounded by a budget; the driver (the server's sweeper
//! task) calls again at once while a call reports more due keys.

use std::sync::atomic::Ordering;

use super::{Engine, PARTITIONS};

/// What one [`Engine::sweep_expired`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Due index entries examined.
    pub examined: usize,
    /// Keys removed.
    pub removed: usize,
    /// Whether the budget ran out with due keys possibly left.
    pub more: bool,
}

impl Engine {
    /// Removes up to `budget` due keys, starting where the previous call stopped so that every
    /// partition gets its turn.
    pub fn sweep_expired(&self, budget: usize) -> SweepReport {
        let now = self.clock.now_ms();
        let start = self.sweep_from.load(Ordering::Relaxed);
        let mut report = SweepReport::default();
        let mut due = Vec::new();
        for i in 0..PARTITIONS {
            let idx = (start + i) % PARTITIONS;
            let part = &self.partitions[idx];
            {
                let mut index = part.expiry();
                while report.examined + due.len() < budget {
                    match index.first() {
                        Some((deadline, _)) if *deadline <= now => due.extend(index.pop_first()),
                        _ => break,
                    }
                }
            }
            // The index lock is released before the table is touched: writers take table then
            // index.
            let watched = self.watched();
            for (deadline, key) in due.drain(..) {
                report.examined += 1;
                let removed = part.write().remove_if(self.hash(&key), &key, |e| {
                    let due = e.deadline() == deadline && e.is_expired(now);
                    // Reported under the partition lock, in order with the key's writes.
                    if due && watched {
                        self.tell_expired(e.key());
                    }
                    if due {
                        // under the lock, as every removal's mark (see `Partition::removed`)
                        part.note_removed(e.version());
                    }
                    due
                });
                if removed.is_some() {
                    report.removed += 1;
                }
            }
            if report.examined >= budget {
                self.sweep_from.store(idx, Ordering::Relaxed);
                report.more = true;
                break;
            }
        }
        self.stats.expired_keys.fetch_add(report.removed as u64, Ordering::Relaxed);
        report
    }
}
