//! Driving load: workers (one per connection for tcp/resp, one per virtual user for grpc/http),
//! each with its own generator, histogram and counters, so the hot path shares nothing.
//!
//! Closed loop: a worker keeps its slots (`users × --pipeline`) full, refilling as replies come,
//! one write per batch; latency runs from the send. Open loop (`--rate`): each worker follows its
//! own schedule of intended send times (its share of the rate, phase-shifted against the other
//! workers); requests that could not be sent on time (slots full because the server is slow) go out
//! as soon as a slot frees, and their latency runs from the *intended* time, so a stall shows in
//! the tail instead of silently lowering the load (coordinated omission, as wrk2 corrects it).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{AnyConn, ClientError, Conn, Outcome};
use crate::workload::{Generator, Op, Workload};

/// Largest latency recorded: one hour, in µs (the issue asks for at least 60 s).
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// How long replies in flight at the end of a timed run may take before they count as lost.
pub const DRAIN: Duration = Duration::from_secs(10);

/// A latency histogram: 1 µs resolution, 3 significant digits, up to [`MAX_LATENCY_US`].
pub fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds that hdrhistogram accepts")
}

/// What one worker does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Requests in flight at most.
    pub slots: usize,
    /// Open loop: this worker's rate in ops/s.
    pub rate: Option<f64>,
    /// Offset of this worker's first intended send (open loop), spreading workers over an interval.
    pub phase: Duration,
    /// Counted requests to issue; `None` for a timed run.
    pub requests: Option<u64>,
}

/// The run's clock, shared by every worker.
#[derive(Debug, Clone)]
pub struct Clock {
    /// When load starts (warm-up included).
    pub start: Instant,
    /// Requests whose latency origin is before this are warm-up: not counted.
    pub measure_from: Instant,
    /// Stop issuing at this time (timed runs).
    pub end: Option<Instant>,
    /// Stop issuing (Ctrl-C).
    pub stop: CancellationToken,
    /// Give up on replies still in flight.
    pub abort: CancellationToken,
}

/// Live counters of one worker, read by the progress bar. One writer each, on its own cache
/// line, so workers never contend.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Live {
    /// Counted requests completed.
    pub done: AtomicU64,
    /// Counted requests failed.
    pub errors: AtomicU64,
    /// Warm-up requests completed (not counted).
    pub warm: AtomicU64,
}

/// What one worker measured.
#[derive(Debug)]
pub struct WorkerResult {
    /// Latency of every counted request, µs.
    pub hist: Histogram<u64>,
    /// Counted requests completed, errors included.
    pub requests: u64,
    /// Reads of missing keys.
    pub misses: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<String, u64>,
    /// When the last counted request completed.
    pub last: Option<Instant>,
}

impl WorkerResult {
    fn new() -> Self {
        Self { hist: new_histogram(), requests: 0, misses: 0, errors: BTreeMap::new(), last: None }
    }

    /// Total failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Folds another worker's result into this one.
    pub fn merge(&mut self, other: &WorkerResult) {
        // same bounds on both sides, so adding cannot fail; saturate rather than lose the rest
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.requests += other.requests;
        self.misses += other.misses;
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += n;
        }
        self.last = self.last.max(other.last);
    }
}

/// One request in flight: where its latency starts and whether it counts.
#[derive(Debug, Clone, Copy)]
struct Pending {
    origin: Instant,
    counted: bool,
}

struct Worker<'a, C> {
    conn: C,
    generator: Generator,
    value: Bytes,
    plan: Plan,
    clock: &'a Clock,
    live: &'a Live,
    result: WorkerResult,
    /// Warm-up requests completed.
    warm: u64,
    pending: VecDeque<Pending>,
    /// This worker's own handles on the run's tokens: waiting on a child token touches only its
    /// own waiter list, never one shared by every worker.
    stop: CancellationToken,
    abort: CancellationToken,
}

impl<C: Conn> Worker<'_, C> {
    fn complete(&mut self, outcome: Outcome, now: Instant) {
        let Some(p) = self.pending.pop_front() else { return };
        if !p.counted {
            self.warm += 1;
            return;
        }
        let us = now.saturating_duration_since(p.origin).as_micros();
        self.result.hist.saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
        self.result.requests += 1;
        self.result.last = Some(now);
        match outcome {
            Outcome::Ok => {}
            Outcome::Miss => self.result.misses += 1,
            Outcome::Error(kind) => *self.result.errors.entry(kind).or_default() += 1,
        }
    }

    /// Every counted request in flight is lost, under `kind`.
    fn lose_all(&mut self, kind: &str, now: Instant) {
        let lost = self.pending.drain(..).filter(|p| p.counted).count() as u64;
        if lost > 0 {
            *self.result.errors.entry(kind.to_string()).or_default() += lost;
            self.result.requests += lost;
            self.result.last = Some(now);
        }
    }

    fn publish(&self) {
        self.live.done.store(self.result.requests, Ordering::Relaxed);
        self.live.errors.store(self.result.error_count(), Ordering::Relaxed);
        self.live.warm.store(self.warm, Ordering::Relaxed);
    }

    async fn run(mut self) -> (C, WorkerResult) {
        let interval = self.plan.rate.map(|r| Duration::from_secs_f64(1.0 / r));
        let mut next_due = self.clock.start + self.plan.phase;
        let mut issued: u64 = 0;
        let mut issuing = true;
        loop {
            // 1. fill free slots: at once (closed loop) or when due (open loop)
            let now = Instant::now();
            if issuing && (self.stop.is_cancelled() || self.clock.end.is_some_and(|end| now >= end)) {
                issuing = false;
            }
            let mut pushed = false;
            while issuing && self.pending.len() < self.plan.slots {
                let origin = match interval {
                    None => now,
                    Some(iv) => {
                        if next_due > now {
                            break;
                        }
                        let t = next_due;
                        next_due += iv;
                        t
                    }
                };
                let counted = origin >= self.clock.measure_from;
                if counted {
                    if self.plan.requests.is_some_and(|n| issued >= n) {
                        issuing = false;
                        break;
                    }
                    issued += 1;
                }
                let op: Op = self.generator.next_request();
                self.conn.push(op, self.generator.key(), &self.value);
                self.pending.push_back(Pending { origin, counted });
                pushed = true;
            }
            if pushed && let Err(e) = self.conn.flush().await {
                self.lose_all(&e.kind(), Instant::now());
                break;
            }
            if self.pending.is_empty() {
                if !issuing {
                    break;
                }
                // open loop, nothing in flight: sleep until the next request is due
                let wake = self.clock.end.map_or(next_due, |end| next_due.min(end));
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    _ = self.stop.cancelled() => {}
                }
                continue;
            }
            // 2. wait for a reply (open loop: or for the next due time, if a slot is free)
            let wait_for_due = interval.is_some() && issuing && self.pending.len() < self.plan.slots;
            let got: Option<Result<Outcome, ClientError>> = match self.conn.try_recv() {
                Some(r) => Some(r),
                None if wait_for_due => tokio::select! {
                    r = self.conn.recv() => Some(r),
                    _ = tokio::time::sleep_until(next_due) => None,
                    _ = self.abort.cancelled() => {
                        self.lose_all("no reply before the run ended", Instant::now());
                        break;
                    }
                },
                None => tokio::select! {
                    r = self.conn.recv() => Some(r),
                    _ = self.abort.cancelled() => {
                        self.lose_all("no reply before the run ended", Instant::now());
                        break;
                    }
                },
            };
            let Some(first) = got else { continue };
            let now = Instant::now();
            match first {
                Ok(o) => self.complete(o, now),
                Err(e) => {
                    self.lose_all(&e.kind(), now);
                    break;
                }
            }
            // 3. everything else that came in the same read
            let mut failed = None;
            while !self.pending.is_empty() {
                match self.conn.try_recv() {
                    Some(Ok(o)) => self.complete(o, now),
                    Some(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    None => break,
                }
            }
            if let Some(e) = failed {
                self.lose_all(&e.kind(), now);
                break;
            }
            self.publish();
        }
        self.publish();
        (self.conn, self.result)
    }
}

/// Runs one worker on `conn` until its plan is done; returns the connection and what it measured.
pub async fn drive<C: Conn>(
    conn: C,
    generator: Generator,
    plan: Plan,
    clock: &Clock,
    live: &Live,
) -> (C, WorkerResult) {
    let value = generator.workload().value.clone();
    let slots = plan.slots;
    let w = Worker {
        conn,
        generator,
        value,
        plan,
        clock,
        live,
        result: WorkerResult::new(),
        warm: 0,
        pending: VecDeque::with_capacity(slots),
        stop: clock.stop.child_token(),
        abort: clock.abort.child_token(),
    };
    w.run().await
}

/// [`drive`] for any protocol, instantiated once per worker.
pub async fn drive_any(
    conn: AnyConn,
    generator: Generator,
    plan: Plan,
    clock: &Clock,
    live: &Live,
) -> WorkerResult {
    match conn {
        AnyConn::Tcp(c) => drive(c, generator, plan, clock, live).await.1,
        AnyConn::Resp(c) => drive(c, generator, plan, clock, live).await.1,
        AnyConn::Grpc(c) => drive(c, generator, plan, clock, live).await.1,
        AnyConn::Http(c) => drive(c, generator, plan, clock, live).await.1,
        AnyConn::Etcd(c) => drive(c, generator, plan, clock, live).await.1,
    }
}

/// Writes keys `range` with `depth` writes in flight, adding each batch of acknowledged writes to
/// `written` (for the progress bar); the first failure is returned.
pub async fn populate<C: Conn>(
    conn: &mut C,
    workload: &Workload,
    range: std::ops::Range<u64>,
    depth: usize,
    written: &AtomicU64,
) -> anyhow::Result<()> {
    let mut key = Vec::new();
    let mut next = range.start;
    let mut in_flight = 0usize;
    while next < range.end || in_flight > 0 {
        while next < range.end && in_flight < depth {
            workload.key_into(next, &mut key);
            conn.push(Op::Set, &key, &workload.value);
            next += 1;
            in_flight += 1;
        }
        conn.flush().await?;
        let outcome = conn.recv().await?;
        in_flight -= 1;
        if let Outcome::Error(kind) = outcome {
            anyhow::bail!("--populate: a write failed ({kind})");
        }
        let mut acked = 1;
        while in_flight > 0 {
            match conn.try_recv() {
                Some(r) => {
                    in_flight -= 1;
                    if let Outcome::Error(kind) = r? {
                        anyhow::bail!("--populate: a write failed ({kind})");
                    }
                    acked += 1;
                }
                None => break,
            }
        }
        written.fetch_add(acked, Ordering::Relaxed);
    }
    Ok(())
}

/// [`populate`] for any protocol.
pub async fn populate_any(
    conn: &mut AnyConn,
    workload: &Workload,
    range: std::ops::Range<u64>,
    depth: usize,
    written: &AtomicU64,
) -> anyhow::Result<()> {
    match conn {
        AnyConn::Tcp(c) => populate(c, workload, range, depth, written).await,
        AnyConn::Resp(c) => populate(c, workload, range, depth, written).await,
        AnyConn::Grpc(c) => populate(c, workload, range, depth, written).await,
        AnyConn::Http(c) => populate(c, workload, range, depth.min(1), written).await,
        AnyConn::Etcd(c) => populate(c, workload, range, depth, written).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(values: &[u64], errors: &[(&str, u64)]) -> WorkerResult {
        let mut r = WorkerResult::new();
        for &v in values {
            r.hist.record(v).expect("in range");
            r.requests += 1;
        }
        for (k, n) in errors {
            r.errors.insert((*k).to_string(), *n);
        }
        r
    }

    #[test]
    fn merged_histograms_equal_one_histogram_of_everything() {
        let a: Vec<u64> = (1..=1000).collect();
        let b: Vec<u64> = (1..=1000).map(|v| v * 1000).collect();
        let mut merged = result(&a, &[("resp ERR", 2)]);
        merged.merge(&result(&b, &[("resp ERR", 1), ("tcp Internal", 4)]));
        let all = result(&[a, b].concat(), &[]);
        assert_eq!(merged.requests, 2000);
        assert_eq!(merged.hist.len(), all.hist.len());
        for q in [0.0, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(merged.hist.value_at_quantile(q), all.hist.value_at_quantile(q), "q={q}");
        }
        assert_eq!(merged.hist.max(), all.hist.max());
        assert_eq!(merged.errors.get("resp ERR"), Some(&3));
        assert_eq!(merged.error_count(), 7);
    }

    #[test]
    fn histogram_covers_a_minute_at_microsecond_resolution() {
        let mut h = new_histogram();
        h.record(1).expect("1 µs");
        h.record(60_000_000).expect("60 s");
        assert_eq!(h.value_at_quantile(0.0), 1);
        let top = h.max();
        assert!((60_000_000..=60_060_000).contains(&top), "within 0.1%: {top}");
        // values beyond the range saturate instead of being dropped
        h.saturating_record(u64::MAX);
        assert_eq!(h.len(), 3);
    }
}
