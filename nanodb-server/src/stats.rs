//! Server-wide counters every frontend records into: operations and latency per protocol and
//! operation, open connections, uptime. gRPC `Admin/Stats`, REST `/v1/stats` and `/metrics`, and
//! RESP `INFO` all read from here, so they agree.
//!
//! Recording is lock-free on the hot path: a protocol's counters are fixed atomics, and each
//! (protocol, operation) histogram is found in a small DashMap keyed by the operation's static name.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// The protocols a request can arrive on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// gRPC (tonic).
    Grpc,
    /// REST (axum).
    Http,
    /// The binary TCP protocol.
    Tcp,
    /// Redis RESP2.
    Resp,
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 4] = [Self::Grpc, Self::Http, Self::Tcp, Self::Resp];

    /// The lowercase name used in stats and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
            Self::Tcp => "tcp",
            Self::Resp => "resp",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the latency buckets, in microseconds (Prometheus `le`), roughly x2.5 apart
/// from 10 µs to 10 s; a final implicit +Inf bucket catches the rest.
pub const LATENCY_BUCKETS_US: [u64; 13] =
    [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 100_000, 1_000_000, 10_000_000];

/// A fixed-bucket latency histogram with atomic counters.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = LATENCY_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Per-bucket counts (not cumulative), the last being +Inf.
    pub fn buckets(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of observations, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct ProtocolCounters {
    ops: AtomicU64,
    errors: AtomicU64,
    connections: AtomicI64,
    connections_total: AtomicU64,
}

/// The server's counters. Share as `Arc<Stats>`.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    protocols: [ProtocolCounters; 4],
    latency: DashMap<(Protocol, &'static str), Arc<Histogram>, ahash::RandomState>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            protocols: Default::default(),
            latency: DashMap::with_hasher(ahash::RandomState::new()),
        }
    }
}

impl Stats {
    /// Records one served operation: its protocol, name (e.g. [`nanodb_protocol::Command::name`]),
    /// whether it failed, and how long it took.
    pub fn record(&self, protocol: Protocol, op: &'static str, ok: bool, elapsed: Duration) {
        let c = &self.protocols[protocol.index()];
        c.ops.fetch_add(1, Ordering::Relaxed);
        if !ok {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        // Record under the shard's read guard (a few atomic adds, no await): cloning the Arc out
        // would add two contended atomic operations to every request.
        if let Some(h) = self.latency.get(&(protocol, op)) {
            h.record(elapsed);
            return;
        }
        let hist = self.latency.entry((protocol, op)).or_default().clone();
        hist.record(elapsed);
    }

    /// A connection opened; the returned guard counts it closed when dropped.
    pub fn connection(self: &Arc<Self>, protocol: Protocol) -> ConnectionGuard {
        let c = &self.protocols[protocol.index()];
        c.connections.fetch_add(1, Ordering::Relaxed);
        c.connections_total.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard { stats: self.clone(), protocol }
    }

    /// Operations served over `protocol`.
    pub fn ops(&self, protocol: Protocol) -> u64 {
        self.protocols[protocol.index()].ops.load(Ordering::Relaxed)
    }

    /// Operations over `protocol` that returned an error.
    pub fn errors(&self, protocol: Protocol) -> u64 {
        self.protocols[protocol.index()].errors.load(Ordering::Relaxed)
    }

    /// Connections open now over `protocol`.
    pub fn connections(&self, protocol: Protocol) -> i64 {
        self.protocols[protocol.index()].connections.load(Ordering::Relaxed)
    }

    /// Connections accepted over `protocol` since start.
    pub fn connections_total(&self, protocol: Protocol) -> u64 {
        self.protocols[protocol.index()].connections_total.load(Ordering::Relaxed)
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every (protocol, operation) histogram, sorted for stable output.
    pub fn latencies(&self) -> Vec<((Protocol, &'static str), Arc<Histogram>)> {
        let mut v: Vec<_> = self.latency.iter().map(|e| (*e.key(), e.value().clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Counts a connection closed when dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    stats: Arc<Stats>,
    protocol: Protocol,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.stats.protocols[self.protocol.index()].connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The process's resident memory in bytes (Linux `/proc/self/statm`), the server's memory figure;
/// `None` where it cannot be read.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_per_protocol_and_op() {
        let s = Arc::new(Stats::default());
        s.record(Protocol::Tcp, "get", true, Duration::from_micros(7));
        s.record(Protocol::Tcp, "get", false, Duration::from_micros(300));
        s.record(Protocol::Grpc, "put", true, Duration::from_secs(100));
        assert_eq!((s.ops(Protocol::Tcp), s.errors(Protocol::Tcp)), (2, 1));
        assert_eq!(s.ops(Protocol::Resp), 0);
        let lat = s.latencies();
        assert_eq!(lat.len(), 2);
        let ((p, op), h) = &lat[1];
        assert_eq!((*p, *op), (Protocol::Tcp, "get"));
        let b = h.buckets();
        assert_eq!((b[0], b[5], h.count(), h.sum_us()), (1, 1, 2, 307));
        assert_eq!(*lat[0].1.buckets().last().expect("inf"), 1, "100 s lands in +Inf");
        {
            let _c = s.connection(Protocol::Resp);
            assert_eq!(s.connections(Protocol::Resp), 1);
        }
        assert_eq!((s.connections(Protocol::Resp), s.connections_total(Protocol::Resp)), (0, 1));
    }
}
