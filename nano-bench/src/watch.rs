//! The change feed under load (issue #8's closing figures).
//!
//! - [`IdleWatchers`]: `--watchers N` idle gRPC `Watch` streams on keys the workload never writes,
//!   held open for a whole benchmark, so SET throughput can be compared with 0, 1 and 100 watchers
//!   on other keys. A stream that errors, ends or lags fails the run: a figure measured while the
//!   watchers were gone would say nothing about their cost.
//! - [`latency`]: `nano-bench watch-latency`. Writers (any protocol, open loop) put keys under one
//!   prefix with values holding a sequence number and the send time; one gRPC `Watch` on the
//!   prefix records receipt minus send in an HDR histogram. Writers and watcher share this
//!   process's clock, so no clock sync is involved. Every write must come back as exactly one
//!   event: a missing or duplicated event is an error.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures::stream::SelectAll;
use futures::{Stream, StreamExt};
use hdrhistogram::Histogram;
use nanodb_protocol::pb::kv_client::KvClient;
use nanodb_protocol::pb::{WatchEvent, WatchEventType, WatchRequest};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::{Protocol, WatchLatencyArgs};
use crate::client::{AnyConn, Conn, Connector, Outcome, Pool, grpc, probe};
use crate::report::{self, Summary};
use crate::runner::{self, new_histogram};
use crate::workload::Op;

/// Idle watcher `i` watches key `__watch_idle:<i>`.
pub const IDLE_KEY_PREFIX: &str = "__watch_idle:";

/// Watch streams per HTTP/2 connection: well under the usual 100–200 concurrent-stream limits,
/// so the watchers never compete with each other (or the workload) for stream slots.
const WATCHERS_PER_CHANNEL: usize = 50;

type WatchItem = (usize, Option<Result<WatchEvent, tonic::Status>>);
type TaggedStream = Pin<Box<dyn Stream<Item = WatchItem> + Send>>;

/// Idle `Watch` streams held open during a benchmark; see the module docs.
#[derive(Debug)]
pub struct IdleWatchers {
    count: usize,
    stop: CancellationToken,
    task: JoinHandle<Result<u64, String>>,
}

impl IdleWatchers {
    /// Opens `n` watch streams on `target`; each is registered on the server when this returns.
    pub async fn open(target: &str, n: usize) -> anyhow::Result<Self> {
        probe::check(Protocol::Grpc, target).await?;
        let mut channels = Vec::new();
        for _ in 0..n.div_ceil(WATCHERS_PER_CHANNEL) {
            channels.push(grpc::channel(target).await?);
        }
        let mut streams: SelectAll<TaggedStream> = SelectAll::new();
        for i in 0..n {
            let ch = channels.get(i / WATCHERS_PER_CHANNEL).context("a channel per 50 watchers")?;
            let req = WatchRequest {
                key: Bytes::from(format!("{IDLE_KEY_PREFIX}{i}")),
                prefix: false,
                include_values: false,
            };
            let events = KvClient::new(ch.clone())
                .watch(req)
                .await
                .map_err(|s| anyhow::anyhow!("opening watcher {i} on {target}: {}", status_text(&s)))?
                .into_inner();
            // a marker after the last item, so an ended stream is noticed (SelectAll drops it silently)
            let tagged =
                events.map(move |r| (i, Some(r))).chain(futures::stream::once(async move { (i, None) }));
            streams.push(Box::pin(tagged));
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_idle(streams, stop.clone()));
        Ok(Self { count: n, stop, task })
    }

    /// Closes the streams; fails if any of them errored, ended or lagged while open. Returns how
    /// many were open.
    pub async fn finish(mut self) -> anyhow::Result<usize> {
        self.stop.cancel();
        match (&mut self.task).await {
            Ok(Ok(_events)) => Ok(self.count),
            Ok(Err(why)) => anyhow::bail!("--watchers: {why}; the run's figures are not valid"),
            Err(e) => anyhow::bail!("--watchers: the watcher task failed: {e}"),
        }
    }
}

impl Drop for IdleWatchers {
    /// A run that fails early still closes its streams.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Reads every idle stream until `stop`; the first failure ends it with a reason. Events on the
/// idle keys are counted, not failures (someone else may write them).
async fn watch_idle(mut streams: SelectAll<TaggedStream>, stop: CancellationToken) -> Result<u64, String> {
    let mut events = 0u64;
    if streams.is_empty() {
        return Ok(0);
    }
    loop {
        let item = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(events),
            item = streams.next() => item,
        };
        match item {
            None => return Err("every watcher stream ended".into()),
            Some((i, None)) => return Err(format!("watcher {i}'s stream ended before the run did")),
            Some((i, Some(Err(s)))) => return Err(format!("watcher {i} failed: {}", status_text(&s))),
            Some((i, Some(Ok(e)))) if e.r#type() == WatchEventType::Lagged => {
                return Err(format!("watcher {i} lagged ({} events dropped)", e.dropped));
            }
            Some((_, Some(Ok(_)))) => events += 1,
        }
    }
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// What `watch-latency` counted, beside the latency histogram (the `events` record of `--json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Writes sent.
    pub written: u64,
    /// Writes the server acknowledged.
    pub acknowledged: u64,
    /// Distinct writes whose event arrived.
    pub received: u64,
    /// Events recorded in the histogram (received, warm-up excluded).
    pub recorded: u64,
    /// Writes sent whose event never arrived.
    pub missing: u64,
    /// Events that arrived more than once.
    pub duplicates: u64,
}

/// Bytes of a latency value that carry data: `<seq:020> <send ns:020>`; the rest is filler.
pub const STAMP_LEN: usize = 41;

/// Writes the value of write `seq` sent at `sent_ns`, `size` bytes long (at least [`STAMP_LEN`]).
pub fn stamp(seq: u64, sent_ns: u64, size: usize, dst: &mut Vec<u8>) {
    use std::io::Write as _;
    dst.clear();
    let _ = write!(dst, "{seq:020} {sent_ns:020}");
    dst.resize(size.max(STAMP_LEN), b'.');
}

/// The sequence number and send time in a value written by [`stamp`].
pub fn parse_stamp(v: &[u8]) -> Option<(u64, u64)> {
    let num = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
    if v.len() < STAMP_LEN || v[20] != b' ' {
        return None;
    }
    Some((num(&v[..20])?, num(&v[21..STAMP_LEN])?))
}

/// One writer's share of the load.
#[derive(Debug, Clone)]
struct WriterPlan {
    /// This writer's sequence numbers are `first + k * stride`.
    first: u64,
    stride: u64,
    /// Seconds between writes.
    interval: Duration,
    /// First write due at `base + phase`.
    phase: Duration,
    /// Stop writing at this time.
    end: Instant,
    /// Writes in flight at most (http: 1).
    max_in_flight: usize,
    keyspace: u64,
    prefix: String,
    value_size: usize,
}

/// What one writer did.
#[derive(Debug, Default)]
struct WriterResult {
    written: u64,
    acknowledged: u64,
    errors: BTreeMap<String, u64>,
}

/// Nanoseconds since `base`.
fn since(base: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

/// Open-loop writes on one connection until `plan.end` (or `stop`), then waits for the replies
/// still in flight (at most [`runner::DRAIN`]).
async fn write_loop<C: Conn>(
    mut conn: C,
    plan: WriterPlan,
    base: Instant,
    stop: CancellationToken,
) -> WriterResult {
    let mut r = WriterResult::default();
    let (mut key, mut value) = (String::new(), Vec::new());
    let mut next_due = base + plan.phase;
    let mut k = 0u64;
    let mut in_flight = 0usize;
    let give_up = plan.end + runner::DRAIN;
    loop {
        let now = Instant::now();
        let issuing = now < plan.end && !stop.is_cancelled();
        if !issuing && in_flight == 0 {
            break;
        }
        let mut pushed = false;
        while issuing && next_due <= now && in_flight < plan.max_in_flight {
            let seq = plan.first + k * plan.stride;
            k += 1;
            next_due += plan.interval;
            key.clear();
            let _ = write!(key, "{}{:012}", plan.prefix, seq % plan.keyspace);
            // the send time is taken as late as possible: the write goes out in the flush below
            stamp(seq, since(base, Instant::now()), plan.value_size, &mut value);
            conn.push(Op::Set, key.as_bytes(), &Bytes::copy_from_slice(&value));
            in_flight += 1;
            r.written += 1;
            pushed = true;
        }
        if pushed && let Err(e) = conn.flush().await {
            *r.errors.entry(e.kind()).or_default() += in_flight as u64;
            break;
        }
        let can_issue = issuing && in_flight < plan.max_in_flight;
        tokio::select! {
            got = conn.recv(), if in_flight > 0 => {
                in_flight -= 1;
                match got {
                    Ok(Outcome::Ok | Outcome::Miss) => r.acknowledged += 1,
                    Ok(Outcome::Error(kind)) => *r.errors.entry(kind).or_default() += 1,
                    Err(e) => {
                        *r.errors.entry(e.kind()).or_default() += in_flight as u64 + 1;
                        break;
                    }
                }
            }
            () = tokio::time::sleep_until(next_due.min(plan.end)), if can_issue => {}
            () = stop.cancelled(), if issuing => {}
            () = tokio::time::sleep_until(give_up) => {
                *r.errors.entry("no reply before the run ended".into()).or_default() += in_flight as u64;
                break;
            }
        }
    }
    r
}

async fn write_any(conn: AnyConn, plan: WriterPlan, base: Instant, stop: CancellationToken) -> WriterResult {
    match conn {
        AnyConn::Tcp(c) => write_loop(c, plan, base, stop).await,
        AnyConn::Resp(c) => write_loop(c, plan, base, stop).await,
        AnyConn::Grpc(c) => write_loop(c, plan, base, stop).await,
        AnyConn::Http(c) => write_loop(c, plan, base, stop).await,
        AnyConn::Etcd(c) => write_loop(c, plan, base, stop).await,
    }
}

/// The watcher's side of `watch-latency`.
struct Receipts {
    base: Instant,
    /// Events of writes sent before this (ns since base) are checked but not recorded.
    record_from_ns: u64,
    hist: Histogram<u64>,
    seen: HashSet<u64>,
    duplicates: u64,
    unexpected: u64,
}

impl Receipts {
    /// Takes one item of the watch stream; `Err` is why the stream is over.
    fn take(&mut self, item: Option<Result<WatchEvent, tonic::Status>>) -> Result<(), String> {
        let now = Instant::now();
        let e = match item {
            None => return Err("watch stream ended".into()),
            Some(Err(s)) => return Err(format!("watch failed ({:?})", s.code())),
            Some(Ok(e)) => e,
        };
        if e.r#type() == WatchEventType::Lagged {
            return Err(format!("watch lagged ({} events dropped)", e.dropped));
        }
        let stamp =
            (e.r#type() == WatchEventType::Put && e.has_value).then(|| parse_stamp(&e.value)).flatten();
        let Some((seq, sent_ns)) = stamp else {
            self.unexpected += 1;
            return Ok(());
        };
        if !self.seen.insert(seq) {
            self.duplicates += 1;
            return Ok(());
        }
        if sent_ns >= self.record_from_ns {
            let us = since(self.base, now).saturating_sub(sent_ns) / 1000;
            self.hist.saturating_record(us.max(1));
        }
        Ok(())
    }
}

/// Runs `nano-bench watch-latency`; see the module docs. Errors in the summary: missing,
/// duplicated and unexpected events, failed writes, and the watch stream failing.
pub async fn latency(args: &WatchLatencyArgs) -> anyhow::Result<(Summary, Histogram<u64>)> {
    args.validate().map_err(anyhow::Error::msg)?;
    probe::check(Protocol::Grpc, &args.target).await?;
    let watch_channel = grpc::channel(&args.target).await?;
    let req = WatchRequest { key: Bytes::from(args.key_prefix.clone()), prefix: true, include_values: true };
    // registered on the server once the response headers are here: every later write is seen
    let mut events = KvClient::new(watch_channel)
        .watch(req)
        .await
        .map_err(|s| anyhow::anyhow!("opening the watch on {}: {}", args.target, status_text(&s)))?
        .into_inner();

    let writers = args.concurrency;
    let connections = if args.write_protocol == Protocol::Grpc { 1 } else { writers };
    let connector = Connector {
        protocol: args.write_protocol,
        target: args.write_target(),
        tls: None,
        credentials: None,
    };
    let pool = Pool::open(connector, connections).await?;
    let conns = futures::future::try_join_all((0..writers).map(|i| pool.connect(i))).await?;

    let base = Instant::now();
    let end = base + args.warmup + args.duration;
    let per_writer = args.rate / writers as f64;
    let max_in_flight = if args.write_protocol == Protocol::Http { 1 } else { 64 };
    let stop = CancellationToken::new();
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let plan = WriterPlan {
                first: i as u64,
                stride: writers as u64,
                interval: Duration::from_secs_f64(1.0 / per_writer),
                phase: Duration::from_secs_f64(i as f64 / args.rate),
                end,
                max_in_flight,
                keyspace: args.keyspace,
                prefix: args.key_prefix.clone(),
                value_size: args.value_size,
            };
            tokio::spawn(write_any(conn, plan, base, stop.clone()))
        })
        .collect();
    let mut writing = Box::pin(futures::future::join_all(handles));

    let mut receipts = Receipts {
        base,
        record_from_ns: since(base, base + args.warmup),
        hist: new_histogram(),
        seen: HashSet::new(),
        duplicates: 0,
        unexpected: 0,
    };
    let mut written: Option<Vec<WriterResult>> = None;
    let mut expected = u64::MAX;
    let mut watch_failure: Option<String> = None;
    let mut drain_until: Option<Instant> = None;
    loop {
        if receipts.seen.len() as u64 >= expected || (watch_failure.is_some() && written.is_some()) {
            break;
        }
        tokio::select! {
            item = events.next(), if watch_failure.is_none() => {
                if let Err(why) = receipts.take(item) {
                    watch_failure = Some(why);
                    stop.cancel();
                }
            }
            done = &mut writing, if written.is_none() => {
                let done = done
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()
                    .context("writer task")?;
                expected = done.iter().map(|w| w.written).sum();
                written = Some(done);
                drain_until = Some(Instant::now() + args.drain);
            }
            () = tokio::time::sleep_until(drain_until.unwrap_or(end)), if drain_until.is_some() => break,
        }
    }
    let written = written.unwrap_or_default();

    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for w in &written {
        for (k, n) in &w.errors {
            *errors.entry(format!("write: {k}")).or_default() += n;
        }
    }
    let counts = EventCounts {
        written: written.iter().map(|w| w.written).sum(),
        acknowledged: written.iter().map(|w| w.acknowledged).sum(),
        received: receipts.seen.len() as u64,
        recorded: receipts.hist.len(),
        missing: expected.saturating_sub(receipts.seen.len() as u64),
        duplicates: receipts.duplicates,
    };
    for (kind, n) in [
        ("missing event", counts.missing),
        ("duplicate event", counts.duplicates),
        ("unexpected event", receipts.unexpected),
    ] {
        if n > 0 {
            errors.insert(kind.to_string(), n);
        }
    }
    if let Some(why) = watch_failure {
        errors.insert(why, 1);
    }
    let duration_s = args.duration.as_secs_f64();
    let hist = receipts.hist;
    let summary = Summary {
        label: args
            .label
            .clone()
            .unwrap_or_else(|| format!("watch-latency {} write -> grpc watch", args.write_protocol.name())),
        protocol: args.write_protocol.name().to_string(),
        target: args.write_target(),
        workload: "watch-latency".to_string(),
        requests: counts.recorded,
        errors: errors.values().sum(),
        errors_by_kind: errors,
        misses: 0,
        duration_s,
        ops_per_sec: counts.recorded as f64 / duration_s,
        latency_us: report::latency(&hist),
        concurrency: writers,
        connections,
        pipeline: max_in_flight,
        rate: Some(args.rate),
        keyspace: args.keyspace,
        value_size: args.value_size.max(STAMP_LEN),
        key_dist: "round-robin".to_string(),
        spectrum: report::spectrum(&hist),
        watchers: 1,
        events: Some(counts),
    };
    Ok((summary, hist))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_at_any_value_size() {
        let mut v = Vec::new();
        stamp(7, u64::MAX, 64, &mut v);
        assert_eq!(v.len(), 64);
        assert_eq!(parse_stamp(&v), Some((7, u64::MAX)));
        stamp(123, 456, 1, &mut v);
        assert_eq!((v.len(), parse_stamp(&v)), (STAMP_LEN, Some((123, 456))));
        assert_eq!(parse_stamp(b"abc"), None);
        assert_eq!(parse_stamp(&[b'x'; 64]), None);
    }
}
