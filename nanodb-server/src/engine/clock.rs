//! The engine's clock: milliseconds since the Unix epoch, advanced by tokio's clock.
//!
//! Deadlines are absolute Unix milliseconds so that they mean the same thing after a restart (the
//! log stores them as they are) and for EXPIREAT-style commands. The progression comes from
//! `tokio::time::Instant`, so tests can `tokio::time::pause()` and `advance()` through TTLs without
//! sleeping.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Unix-millisecond time, monotonic for the life of the engine.
#[derive(Debug, Clone)]
pub struct Clock {
    base_unix_ms: u64,
    base: Instant,
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
        Self { base_unix_ms, base: Instant::now() }
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.base_unix_ms + self.base.elapsed().as_millis() as u64
    }
}
