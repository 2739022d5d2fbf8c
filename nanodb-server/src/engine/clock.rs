//! The engine's clock: milliseconds since the Unix epoch, advanced by tokio's clock.
//!
//! Deadlines are absolute Unix milliseconds so that they mean the same thing after a restart (the
//! log stores them as they are) and for EXPIREAT-style commands. The progression comes from
//! `tokio::time::Instant`, so tests can `tokio::time::pause()` and `advance()` through TTLs without
//! sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Unix-millisecond time, monotonic for the life of the engine.
///
/// A group's overlay pins its clock to the time the group started ([`Clock::pin`]): every command
/// of a script or transaction then sees one "now" (as Redis 7 freezes time for a script and an
/// EXEC), and they read no clock at all, which was a few percent of a one-key EVAL.
#[derive(Debug)]
pub struct Clock {
    base_unix_ms: u64,
    base: Instant,
    /// The pinned time (Unix ms), or 0 when the clock runs.
    pinned: AtomicU64,
}

impl Clone for Clock {
    fn clone(&self) -> Self {
        Self {
            base_unix_ms: self.base_unix_ms,
            base: self.base,
            pinned: AtomicU64::new(self.pinned.load(Ordering::Relaxed)),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock reading the system time once, then advancing monotonically.
    pub fn new() -> Self {
        let base_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self { base_unix_ms, base: Instant::now(), pinned: AtomicU64::new(0) }
    }

    /// Now, in Unix milliseconds (the pinned time, while the clock is pinned).
    pub fn now_ms(&self) -> u64 {
        match self.pinned.load(Ordering::Relaxed) {
            0 => self.base_unix_ms + self.base.elapsed().as_millis() as u64,
            pinned => pinned,
        }
    }

    /// Stops the clock at `now_ms` (Unix ms) until the next pin; 0 lets it run again. Only a
    /// group's private overlay is pinned (see `engine::group`).
    pub(crate) fn pin(&self, now_ms: u64) {
        self.pinned.store(now_ms, Ordering::Relaxed);
    }
}
