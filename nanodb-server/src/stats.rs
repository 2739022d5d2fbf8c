//! Server-wide counters every frontend records into: operations and latency per protocol and
//! operation, open connections, uptime. gRPC `Admin/Stats`, REST `/v1/stats` and `/metrics`, and
//! RESP `INFO` all read from here, so they agree.
//!
//! Recording is striped: every thread records into its own stripe (chosen once per thread), each
//! on its own cache lines, and readers add the stripes up. With one shared set of counters, two
//! workers recording at once bounced the same cache lines between cores on every request:
//! switching recording off raised redis-benchmark SET -P 16 by 19% (`scripts/ab-resp.sh`), while
//! striped recording costs an uncontended lock and a few plain adds on lines the thread owns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

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

/// A fixed-bucket latency histogram.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Histogram {
    buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    count: u64,
    sum_us: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn record(&mut self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = LATENCY_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Adds `other`'s observations to this one.
    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// Per-bucket counts (not cumulative), the last being +Inf.
    pub fn buckets(&self) -> Vec<u64> {
        self.buckets.to_vec()
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of observations, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }
}

#[derive(Debug, Default)]
struct ProtocolCounters {
    ops: AtomicU64,
    errors: AtomicU64,
    /// Opened minus closed on this stripe; may be negative (a connection can close on another
    /// thread than the one that opened it), only the sum over stripes means anything.
    connections: AtomicI64,
    connections_total: AtomicU64,
}

/// How many stripes: more than the worker threads of any machine we expect, so that threads
/// rarely share one (sharing stays correct, only slower).
const STRIPES: usize = 32;

/// One thread's share of the counters. Aligned so that no two stripes share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    protocols: [ProtocolCounters; 4],
    latency: Mutex<HashMap<(Protocol, &'static str), Histogram, ahash::RandomState>>,
}

impl Stripe {
    fn latency(&self) -> MutexGuard<'_, HashMap<(Protocol, &'static str), Histogram, ahash::RandomState>> {
        // Counters are plain adds: a panic cannot leave one half written.
        self.latency.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes the `# HELP` and `# TYPE` lines of one Prometheus metric family (`/metrics`: the
/// server's, the cluster's and the RocksDB store's families all go through here). Writes to a
/// `String` cannot fail.
pub(crate) fn prometheus_family(out: &mut String, name: &str, kind: &str, help: &str) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The server's counters. Share as `Arc<Stats>`.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    stripes: Box<[Stripe]>,
}

impl Default for Stats {
    fn default() -> Self {
        Self { started: Instant::now(), stripes: (0..STRIPES).map(|_| Stripe::default()).collect() }
    }
}

impl Stats {
    /// Records one served operation: its protocol, name (e.g. [`nanodb_protocol::Command::name`]),
    /// whether it failed, and how long it took.
    pub fn record(&self, protocol: Protocol, op: &'static str, ok: bool, elapsed: Duration) {
        let stripe = self.stripe();
        let c = &stripe.protocols[protocol.index()];
        c.ops.fetch_add(1, Ordering::Relaxed);
        if !ok {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        stripe.latency().entry((protocol, op)).or_default().record(elapsed);
    }

    /// This thread's stripe.
    fn stripe(&self) -> &Stripe {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
        }
        &self.stripes[STRIPE.with(|i| *i)]
    }

    /// The sum of one counter over every stripe.
    fn sum<T: std::iter::Sum<T>>(&self, protocol: Protocol, f: impl Fn(&ProtocolCounters) -> T) -> T {
        self.stripes.iter().map(|s| f(&s.protocols[protocol.index()])).sum()
    }

    /// A connection opened; the returned guard counts it closed when dropped.
    pub fn connection(self: &Arc<Self>, protocol: Protocol) -> ConnectionGuard {
        let c = &self.stripe().protocols[protocol.index()];
        c.connections.fetch_add(1, Ordering::Relaxed);
        c.connections_total.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard { stats: self.clone(), protocol }
    }

    /// Operations served over `protocol`.
    pub fn ops(&self, protocol: Protocol) -> u64 {
        self.sum(protocol, |c| c.ops.load(Ordering::Relaxed))
    }

    /// Operations over `protocol` that returned an error.
    pub fn errors(&self, protocol: Protocol) -> u64 {
        self.sum(protocol, |c| c.errors.load(Ordering::Relaxed))
    }

    /// Connections open now over `protocol`.
    pub fn connections(&self, protocol: Protocol) -> i64 {
        self.sum(protocol, |c| c.connections.load(Ordering::Relaxed))
    }

    /// Connections accepted over `protocol` since start.
    pub fn connections_total(&self, protocol: Protocol) -> u64 {
        self.sum(protocol, |c| c.connections_total.load(Ordering::Relaxed))
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every (protocol, operation) histogram, summed over the stripes and sorted for stable
    /// output.
    pub fn latencies(&self) -> Vec<((Protocol, &'static str), Histogram)> {
        let mut all: HashMap<(Protocol, &'static str), Histogram, ahash::RandomState> = HashMap::default();
        for stripe in self.stripes.iter() {
            for (key, h) in stripe.latency().iter() {
                all.entry(*key).or_default().merge(h);
            }
        }
        let mut v: Vec<_> = all.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl Stats {
    /// One histogram per protocol with traffic, every operation's merged in (for the stats
    /// report; the per-operation ones stay for `/metrics`).
    pub fn latency_by_protocol(&self) -> Vec<(Protocol, Histogram)> {
        let mut out: Vec<(Protocol, Histogram)> = Vec::new();
        for ((p, _), h) in self.latencies() {
            match out.iter_mut().find(|(q, _)| *q == p) {
                Some((_, mine)) => mine.merge(&h),
                None => out.push((p, h)),
            }
        }
        out
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
        self.stats.stripe().protocols[self.protocol.index()].connections.fetch_sub(1, Ordering::Relaxed);
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

    /// Threads record into different stripes; readers see the sum, and a connection closed on
    /// another thread than the one that opened it still counts as closed.
    #[test]
    fn stripes_add_up_across_threads() {
        let s = Arc::new(Stats::default());
        let guards: Vec<ConnectionGuard> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let s = s.clone();
                    scope.spawn(move || {
                        for i in 0..1000 {
                            s.record(Protocol::Resp, "set", i % 10 != 0, Duration::from_micros(20));
                        }
                        s.connection(Protocol::Resp)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("recording thread")).collect()
        });
        assert_eq!((s.ops(Protocol::Resp), s.errors(Protocol::Resp)), (8000, 800));
        assert_eq!(s.connections(Protocol::Resp), 8);
        drop(guards); // on this thread, not the ones that opened them
        assert_eq!((s.connections(Protocol::Resp), s.connections_total(Protocol::Resp)), (0, 8));
        let lat = s.latencies();
        assert_eq!(lat.len(), 1);
        let (_, h) = &lat[0];
        assert_eq!((h.count(), h.sum_us(), h.buckets()[1]), (8000, 160_000, 8000));
    }
}
