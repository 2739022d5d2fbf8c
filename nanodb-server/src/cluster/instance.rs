//! One incarnation of a node in a cluster: its id, its Raft instance over its log and state
//! machine, and the tasks that feed them (group commit, forwarding, the log's fsync). A node has
//! one at a time; `REPLICAOF` stops it and opens the next (see `replica`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use openraft::Raft;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::identity::Identity;
use super::log_store::LogStore;
use super::metrics::Counters;
use super::network::{NetworkFactory, Peers};
use super::read_index::{self, Waiter};
use super::state_machine::{Deliveries, Retired, StateMachine};
use super::types::{NodeId, TypeConfig};
use super::{Forwarded, MAX_QUEUED, Pending, forward_batches, group_commit};
use crate::engine::Engine;
use crate::feed::Hub;
use crate::persist::{FsyncPolicy, fsync_dir};

/// The Raft log's and the snapshots' directories inside `<data-dir>/raft/`.
const LOG: &str = "log";
pub(super) const SNAPSHOTS: &str = "snapshots";
/// Where a dropped incarnation's files go before they are deleted (at once, or at the next
/// start after a crash).
const DROPPED: &str = "dropped";

/// One incarnation.
pub(super) struct Instance {
    pub node_id: NodeId,
    pub raft: Raft<TypeConfig>,
    pub peers: Peers,
    /// The last index this node knows committed (from its log).
    pub committed: Arc<AtomicU64>,
    /// How many local subscribers each recent `PUBLISH` reached (PUBLISH's answer).
    pub deliveries: Arc<Deliveries>,
    /// Ids removed from the cluster (never reused, their Raft calls refused).
    pub retired: Arc<Retired>,
    pub sm: StateMachine,
    /// Writes for the leader's group commit.
    pub queue: tokio::sync::mpsc::Sender<Pending>,
    /// Writes a follower forwards to the leader, in batches.
    pub forwards: tokio::sync::mpsc::Sender<Forwarded>,
    /// Linearizable reads waiting for a read index, asked for in shared rounds.
    pub reads: tokio::sync::mpsc::Sender<Waiter>,
    /// Stops this incarnation's tasks.
    pub stop: CancellationToken,
}

/// What opening an incarnation needs (fixed for the process).
#[derive(Debug)]
pub(super) struct Opening {
    /// `<data-dir>/raft`.
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub max_record_len: usize,
    pub raft_config: Arc<openraft::Config>,
    pub max_entry: usize,
    pub request_timeout: Duration,
}

impl Opening {
    /// Opens the log and the state machine (loading the newest snapshot into `engine` when
    /// `load`), starts Raft as `node_id` and the incarnation's tasks.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        &self,
        node_id: NodeId,
        load: bool,
        engine: &Arc<Engine>,
        feed: &Arc<Hub>,
        identity: &Arc<Identity>,
        counters: &Arc<Counters>,
        shutdown: &CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Instance, String> {
        let stop = shutdown.child_token();
        let log = LogStore::open(&self.dir.join(LOG), self.fsync, self.max_record_len)
            .map_err(|e| e.to_string())?;
        let committed = log.committed_index();
        let sm = StateMachine::open_with(
            engine.clone(),
            feed.clone(),
            &self.dir.join(SNAPSHOTS),
            self.max_record_len,
            load,
        )?;
        let peers = Peers::new(node_id, identity.clone());
        if self.fsync == FsyncPolicy::EverySec {
            tasks.spawn(log.clone().run_fsync(stop.clone()));
        }
        let network = NetworkFactory { peers: peers.clone(), counters: counters.clone() };
        let raft = Raft::new(node_id, self.raft_config.clone(), network, log, sm.clone())
            .await
            .map_err(|e| e.to_string())?;
        let (queue, queued) = tokio::sync::mpsc::channel(MAX_QUEUED);
        tasks.spawn(group_commit(
            raft.clone(),
            engine.clone(),
            queued,
            self.max_entry,
            self.request_timeout,
            stop.clone(),
        ));
        let (forwards, to_forward) = tokio::sync::mpsc::channel(MAX_QUEUED);
        tasks.spawn(forward_batches(
            peers.clone(),
            to_forward,
            self.max_entry,
            self.request_timeout,
            stop.clone(),
        ));
        let (reads, waiting) = tokio::sync::mpsc::channel(read_index::MAX_WAITING);
        tasks.spawn(read_index::read_index_rounds(
            raft.clone(),
            peers.clone(),
            node_id,
            waiting,
            self.request_timeout,
            counters.clone(),
            stop.clone(),
        ));
        Ok(Instance {
            node_id,
            raft,
            peers,
            committed,
            deliveries: sm.deliveries(),
            retired: sm.retired(),
            sm,
            queue,
            forwards,
            reads,
            stop,
        })
    }

    /// The snapshots' directory.
    pub fn snapshots(&self) -> PathBuf {
        self.dir.join(SNAPSHOTS)
    }

    /// Moves the log and the snapshots aside (one rename each, then the directory fsynced), then
    /// deletes them: the next incarnation starts with neither.
    pub fn drop_files(&self) -> std::io::Result<()> {
        let dropped = self.dir.join(DROPPED);
        std::fs::create_dir_all(&dropped)?;
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        for name in [LOG, SNAPSHOTS] {
            let from = self.dir.join(name);
            if from.exists() {
                std::fs::rename(&from, dropped.join(format!("{name}-{stamp}")))?;
            }
        }
        fsync_dir(&self.dir)?;
        remove_dropped(&self.dir);
        Ok(())
    }
}

/// Deletes what [`Opening::drop_files`] moved aside (left there by a crash in between).
pub(super) fn remove_dropped(dir: &Path) {
    let dropped = dir.join(DROPPED);
    if dropped.exists()
        && let Err(e) = std::fs::remove_dir_all(&dropped)
    {
        warn!(dir = %dropped.display(), error = %e, "raft: could not delete a dropped log; delete it by hand");
    }
}
