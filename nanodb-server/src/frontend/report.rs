//! The server's statistics as one `nanodb.v1.StatsResponse`: the single place that gathers the
//! counters (`stats.rs`), the engine's key count, the feed's queues, the log and the cluster for
//! gRPC `Admin/Stats`, which `nanodb-cli stats` and `nanodb-cli monitor` read.
//!
//! Everything cumulative stays cumulative (operations, errors, latency histograms since start):
//! a dashboard that polls once a second derives rates and windowed percentiles by subtracting two
//! answers, so the server keeps no window and no per-client state, and nothing here touches a
//! request's path: it only reads what the frontends already record.

use std::time::SystemTime;

use nanodb_protocol::pb;

use super::Context;
use crate::persist::snapshot_seq;
use crate::stats::{LATENCY_BUCKETS_US, Protocol, resident_memory_bytes};

/// The whole report.
pub async fn stats_report(ctx: &Context) -> pb::StatsResponse {
    let stats = &ctx.stats;
    let latencies = stats.latency_by_protocol();
    pb::StatsResponse {
        keys: ctx.engine.key_count() as u64,
        memory_bytes: resident_memory_bytes().unwrap_or(0),
        used_memory_bytes: ctx.engine.used_memory(),
        max_memory_bytes: ctx.engine.memory().max(),
        maxmemory_policy: ctx.engine.memory().policy().to_string(),
        evicted_keys: ctx.engine.memory().evicted(),
        protocols: Protocol::ALL
            .iter()
            .map(|&p| pb::ProtocolStats {
                protocol: p.as_str().into(),
                ops: stats.ops(p),
                errors: stats.errors(p),
                connections: stats.connections(p),
                latency_buckets: latencies
                    .iter()
                    .find(|(q, _)| *q == p)
                    .map(|(_, h)| h.buckets())
                    .unwrap_or_else(|| vec![0; LATENCY_BUCKETS_US.len() + 1]),
            })
            .collect(),
        uptime_s: stats.uptime().as_secs(),
        version: env!("CARGO_PKG_VERSION").into(),
        feed: Some(feed_stats(ctx)),
        latency_bounds_us: LATENCY_BUCKETS_US.to_vec(),
        log: ctx.log.as_ref().map(|log| pb::LogStats {
            fsync: log.policy().to_string(),
            bytes_since_snapshot: log.growth(),
            last_fsync_age_ms: log.since_last_fsync().map_or(-1, |d| d.as_millis() as i64),
            snapshot_age_ms: snapshot_age_ms(&ctx.config.data_dir),
        }),
        cluster: match &ctx.cluster {
            Some(cluster) => Some(cluster_stats(cluster).await),
            None => None,
        },
    }
}

fn feed_stats(ctx: &Context) -> pb::FeedStats {
    use std::sync::atomic::Ordering::Relaxed;
    let s = ctx.feed.stats();
    let (queued, fullest) = ctx.feed.queue_use();
    let limit = ctx.feed.limits().queue_len.max(1);
    pb::FeedStats {
        subscribers: s.subscribers.load(Relaxed) as u64,
        delivered: s.delivered.load(Relaxed),
        dropped: s.dropped.load(Relaxed),
        lagged: s.lagged.load(Relaxed),
        published: s.published.load(Relaxed),
        queued: queued as u64,
        fullest_queue_permille: (fullest.saturating_mul(1000) / limit).min(1000) as u32,
        queue_len_limit: limit as u64,
    }
}

/// Age of the newest `snapshot-*.snap` in the data directory, by its modification time; -1 when
/// there is none (or the directory cannot be read).
fn snapshot_age_ms(dir: &std::path::Path) -> i64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return -1 };
    let newest = entries
        .flatten()
        .filter(|e| e.file_name().to_str().and_then(snapshot_seq).is_some())
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .max();
    match newest.map(|t| SystemTime::now().duration_since(t)) {
        Some(Ok(age)) => age.as_millis() as i64,
        Some(Err(_)) => 0,
        None => -1,
    }
}

async fn cluster_stats(cluster: &crate::cluster::Cluster) -> pb::ClusterStats {
    let st = cluster.status().await;
    let leader = st.role == "leader";
    pb::ClusterStats {
        node_id: st.node_id,
        role: st.role.into(),
        term: st.term,
        leader_id: st.leader_id.unwrap_or(0),
        commit_index: st.commit_index,
        applied_index: st.applied_index,
        peers: st
            .members
            .iter()
            .map(|m| pb::PeerStats {
                id: m.id,
                role: m.role.into(),
                lag: match (leader, m.matched_index) {
                    (true, Some(i)) => st.commit_index.saturating_sub(i) as i64,
                    (true, None) => st.commit_index as i64,
                    _ => -1,
                },
            })
            .collect(),
    }
}
