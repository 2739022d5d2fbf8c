//! The Raft figures of `/metrics` (Prometheus text): term, role, leader, commit and applied
//! index, each peer's matched index and lag (on the leader, which alone knows them), elections
//! started and won, snapshots sent and installed.
//!
//! openraft's metrics are a snapshot of state (a `watch` channel), not counters: elections are
//! counted here by watching it ([`count_elections`]), snapshots where they are sent (the network)
//! and installed (the Raft port).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use super::Cluster;

/// Counters that outlive a node's incarnations (`REPLICAOF` keeps them).
#[derive(Debug, Default)]
pub struct Counters {
    elections_started: AtomicU64,
    elections_won: AtomicU64,
    snapshots_sent: AtomicU64,
    snapshots_installed: AtomicU64,
    read_index_rounds: AtomicU64,
    read_index_reads: AtomicU64,
}

impl Counters {
    /// A snapshot was sent to a peer and installed there.
    pub fn snapshot_sent(&self) {
        self.snapshots_sent.fetch_add(1, Relaxed);
    }

    /// A snapshot received from the leader was installed here.
    pub fn snapshot_installed(&self) {
        self.snapshots_installed.fetch_add(1, Relaxed);
    }

    /// One read-index round answered `reads` linearizable reads (see `read_index`).
    pub fn read_index_round(&self, reads: usize) {
        self.read_index_rounds.fetch_add(1, Relaxed);
        self.read_index_reads.fetch_add(reads as u64, Relaxed);
    }

    /// Elections this node started (became a candidate in a new term).
    pub fn elections_started(&self) -> u64 {
        self.elections_started.load(Relaxed)
    }

    /// Elections this node won.
    pub fn elections_won(&self) -> u64 {
        self.elections_won.load(Relaxed)
    }
}

/// Counts this node's elections from openraft's metrics: a term in which it was a candidate is
/// an election started, a term in which it led is one won (a term seen only as leader counts as
/// both: the `watch` channel may skip the short candidate state, as a one-voter cluster's).
pub async fn count_elections(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let (mut candidate_term, mut leader_term) = (0u64, 0u64);
    loop {
        let raft = cluster.raft();
        let mut rx = raft.metrics();
        loop {
            let (state, term) = {
                let m = rx.borrow_and_update();
                (m.state, m.current_term)
            };
            match state {
                ServerState::Candidate if term > candidate_term => {
                    candidate_term = term;
                    cluster.counters.elections_started.fetch_add(1, Relaxed);
                }
                ServerState::Leader if term > leader_term => {
                    if term > candidate_term {
                        candidate_term = term;
                        cluster.counters.elections_started.fetch_add(1, Relaxed);
                    }
                    leader_term = term;
                    cluster.counters.elections_won.fetch_add(1, Relaxed);
                }
                _ => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { break },
            }
        }
        // This incarnation stopped (shutdown, or `REPLICAOF` replaced it): watch the next one.
        // A new incarnation starts its terms over.
        (candidate_term, leader_term) = (0, 0);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
    }
}

use crate::stats::prometheus_family as family;

impl Cluster {
    /// Appends the Raft figures to a Prometheus text exposition.
    pub fn render_metrics(&self, out: &mut String) {
        let me = self.now();
        let m = me.raft.metrics().borrow().clone();
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            family(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        };
        gauge(out, "nanodb_raft_node_id", "This node's id in its cluster.", me.node_id);
        gauge(out, "nanodb_raft_term", "The current Raft term.", m.current_term);
        family(
            out,
            "nanodb_raft_role",
            "gauge",
            "1 for this node's role (leader, follower, learner, candidate).",
        );
        let role = super::status::role_of(m.state);
        for r in ["leader", "follower", "learner", "candidate"] {
            let _ = writeln!(out, "nanodb_raft_role{{role=\"{r}\"}} {}", u8::from(r == role));
        }
        gauge(
            out,
            "nanodb_raft_leader_id",
            "The current leader's id (0 while there is none).",
            m.current_leader.unwrap_or(0),
        );
        let commit = me.committed.load(Relaxed);
        gauge(out, "nanodb_raft_commit_index", "The last log index this node knows committed.", commit);
        gauge(
            out,
            "nanodb_raft_applied_index",
            "The last log index this node applied.",
            m.last_applied.map_or(0, |l| l.index),
        );
        gauge(
            out,
            "nanodb_raft_last_log_index",
            "The last index in this node's log.",
            m.last_log_index.unwrap_or(0),
        );
        if let Some(replication) = &m.replication {
            let last = m.last_log_index.unwrap_or(0);
            family(
                out,
                "nanodb_raft_peer_matched_index",
                "gauge",
                "On the leader: the last index each other member holds (its matched index).",
            );
            let peers: Vec<_> = replication.iter().filter(|(id, _)| **id != me.node_id).collect();
            for (id, matched) in &peers {
                let _ = writeln!(
                    out,
                    "nanodb_raft_peer_matched_index{{peer=\"{id}\"}} {}",
                    matched.map_or(0, |l| l.index)
                );
            }
            family(
                out,
                "nanodb_raft_peer_lag_entries",
                "gauge",
                "On the leader: entries each other member is behind the leader's log.",
            );
            for (id, matched) in &peers {
                let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
                let _ = writeln!(out, "nanodb_raft_peer_lag_entries{{peer=\"{id}\"}} {lag}");
            }
        }
        let c = &self.counters;
        for (name, help, n) in [
            (
                "nanodb_raft_elections_started_total",
                "Elections this node started (as a candidate).",
                c.elections_started(),
            ),
            ("nanodb_raft_elections_won_total", "Elections this node won.", c.elections_won()),
            (
                "nanodb_raft_snapshots_sent_total",
                "Snapshots this node sent to a lagging or new member (and it installed).",
                c.snapshots_sent.load(Relaxed),
            ),
            (
                "nanodb_raft_snapshots_installed_total",
                "Snapshots received from the leader and installed here.",
                c.snapshots_installed.load(Relaxed),
            ),
            (
                "nanodb_raft_read_index_rounds_total",
                "Read-index rounds this node ran for its linearizable reads (each shared by every read waiting).",
                c.read_index_rounds.load(Relaxed),
            ),
            (
                "nanodb_raft_read_index_reads_total",
                "Linearizable reads this node answered from a read-index round.",
                c.read_index_reads.load(Relaxed),
            ),
        ] {
            family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {n}");
        }
    }
}
