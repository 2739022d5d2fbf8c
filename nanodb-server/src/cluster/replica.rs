//! A node that serves alone until told otherwise, `REPLICAOF`, `REPLICAOF NO ONE` and `WAIT`:
//! Redis's replication words over Raft membership.
//!
//! # Serving alone
//! A node started with `--node-id` and `--raft-addr` but no `--cluster-peers` serves alone: its
//! first write makes it a cluster of one (it mints a cluster id and initializes itself as the
//! only voter), and until then it answers reads from its (empty) state. It waits for that first
//! write rather than initializing at start so that such a node, started empty, can still be
//! added to a cluster over `POST /v1/cluster/members` (the leader's first call makes it that
//! cluster's learner); once it is a cluster of its own, joining another takes `REPLICAOF`, which
//! drops its data. Cluster mode from the start (rather than a single-node mode switched over)
//! keeps one write path through the process's life: the frontends' `Context` holds one cluster
//! node whose incarnation `REPLICAOF` replaces (see `instance`).
//!
//! # `REPLICAOF host port`
//! `host:port` is any cluster node's RESP address. This node asks it (`INFO replication`, which
//! names the node's Raft address and cluster id; after `AUTH` with `masteruser`/`masterauth` when
//! a password is set, see `upstream`), then asks its Raft port to `JOIN` this node:
//! the call is forwarded to the leader, which gives the node a fresh id (one more than every id
//! the cluster has used, removed ones included: never reused) and adds it as a learner. This
//! node then drops its data and its log, takes the id and the cluster id, and opens a new
//! incarnation, empty; the leader sends it a snapshot (or the log, when the leader still holds
//! all of it) and then the log. A node that is already a learner of another cluster leaves it
//! first; a voter of a cluster of several nodes is refused (take it out with a membership
//! change first: removing a voter changes the quorum).
//!
//! # `REPLICAOF NO ONE`
//! On a learner: the leader removes it (its id is retired, as any removed id), then it keeps
//! its data as a cluster of one: the engine's state is written as the new incarnation's base
//! snapshot before the old log is dropped, the node initializes itself alone, and a snapshot is
//! built and the first entries purged at once, so that a node joining it later receives the data
//! by snapshot.
//!
//! # `WAIT numreplicas timeout`
//! Counts the other members (followers and learners) whose matched index, as the leader knows
//! it, has reached the connection's last write; asked of the leader from any other node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::identity::{self, Stored};
use super::membership::{Change, ChangeError, Members};
use super::network::{self, CallError, kind};
use super::state_machine::StateMachine;
use super::types::{Member, NodeId};
use super::upstream::{self, Target};
use super::{Cluster, ClusterError};
use crate::persist::fsync_dir;

/// A `JOIN` call's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joining node's Raft address.
    pub raft_addr: String,
}

/// What a `JOIN` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    /// The joining node's new id.
    pub id: NodeId,
    /// The cluster's id.
    pub cluster_id: Option<String>,
    /// The membership after the change.
    pub members: Members,
}

impl Cluster {
    /// Whether this node serves alone, not yet initialized: no `--cluster-peers`, no cluster id,
    /// no membership.
    pub(super) fn ready_alone(&self) -> bool {
        self.config.peers.is_empty()
            && self.identity.cluster() == 0
            && self.raft().metrics().borrow().membership_config.membership().nodes().next().is_none()
    }

    /// Makes a node serving alone a cluster of one (its first write, or a `JOIN` asked of it).
    pub(super) async fn init_alone(&self) -> Result<(), ClusterError> {
        let _one = self.switching.lock().await;
        if !self.ready_alone() {
            return Ok(());
        }
        let me = BTreeMap::from([(self.node_id(), Member { raft_addr: self.advertised_raft_addr() })]);
        self.initialize(me).await
    }

    /// Membership facts `REPLICAOF` decides on: (this node is a learner, other members).
    fn place(&self) -> (bool, usize) {
        let me = self.node_id();
        let m = self.raft().metrics().borrow().membership_config.clone();
        let membership = m.membership();
        let learner = membership.learner_ids().any(|id| id == me);
        let others = membership.nodes().filter(|(id, _)| **id != me).count();
        (learner, others)
    }

    /// `REPLICAOF host port`: joins the cluster of the node whose RESP address that is, as a
    /// learner with a fresh id, dropping this node's data. The RESP reply text, or the error's.
    pub async fn replicate(&self, host: &str, port: u16) -> Result<&'static str, String> {
        let Ok(_one) = self.switching.try_lock() else {
            return Err("ERR a REPLICAOF is already in progress on this node".into());
        };
        let (learner, others) = self.place();
        if !learner && others > 0 {
            return Err(format!(
                "ERR this node is a voter of a cluster of {} nodes; take it out first (DELETE \
                 /v1/cluster/members/{}) or REPLICAOF from an empty node",
                others + 1,
                self.node_id()
            ));
        }
        let deadline = Instant::now() + self.request_timeout;
        let target = upstream::ask_info(host, port, &self.upstream, deadline).await?;
        let ours = self.identity.get().cluster_id;
        if target.cluster_id.is_some() && target.cluster_id == ours {
            if learner {
                return Ok("OK Already connected to specified master");
            }
            return Err("ERR the target belongs to this node's own cluster".into());
        }
        if target.raft_addr == self.advertised_raft_addr() {
            return Err("ERR a node cannot replicate itself".into());
        }
        if learner {
            info!(node_id = self.node_id(), "REPLICAOF: leaving the current cluster first");
            self.leave_current().await?;
        }
        // From here until the new incarnation is open, the Raft port takes no call: the leader
        // starts replicating as soon as the change commits.
        self.joining.store(true, std::sync::atomic::Ordering::Release);
        let switched = self.switch_to(&target, host, port, deadline).await;
        self.joining.store(false, std::sync::atomic::Ordering::Release);
        switched
    }

    /// `REPLICAOF`'s second half: `JOIN`, then drop everything and open the new incarnation.
    async fn switch_to(
        &self,
        target: &Target,
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<&'static str, String> {
        let joined = self.ask_join(&target.raft_addr, deadline).await?;
        info!(
            node_id = joined.id,
            cluster_id = joined.cluster_id.as_deref().unwrap_or_default(),
            target = %format!("{host}:{port}"),
            "REPLICAOF: added as a learner; dropping this node's data and log to receive the cluster's"
        );
        let next = Stored { cluster_id: joined.cluster_id, node_id: joined.id, assigned: true, alone: false };
        self.reincarnate(next, false).await.map_err(|e| format!("ERR {e}"))?;
        Ok("OK")
    }

    /// `REPLICAOF NO ONE`: a learner leaves its cluster and keeps its data as a cluster of one.
    pub async fn leave(&self) -> Result<&'static str, String> {
        let Ok(_one) = self.switching.try_lock() else {
            return Err("ERR a REPLICAOF is already in progress on this node".into());
        };
        let (learner, others) = self.place();
        if !learner {
            if others == 0 {
                // Alone already: a master, as Redis answers.
                return Ok("OK");
            }
            return Err(format!(
                "ERR this node is a voter of a cluster of {} nodes, not a replica; take it out with DELETE \
                 /v1/cluster/members/{}",
                others + 1,
                self.node_id()
            ));
        }
        let me = self.node_id();
        self.leave_current().await?;
        let id = identity::mint().map_err(|e| format!("ERR {e}"))?;
        let next = Stored {
            cluster_id: Some(identity::to_hex(id)),
            node_id: self.config.node_id,
            assigned: false,
            alone: true,
        };
        info!(
            old_node_id = me,
            node_id = next.node_id,
            "REPLICAOF NO ONE: removed from the cluster; keeping the data as a cluster of one"
        );
        self.reincarnate(next, true).await.map_err(|e| format!("ERR {e}"))?;
        let node_id = self.node_id();
        self.initialize(BTreeMap::from([(node_id, Member { raft_addr: self.advertised_raft_addr() })]))
            .await
            .map_err(|e| format!("ERR {e}"))?;
        self.compact_base().await;
        Ok("OK")
    }

    /// Asks the leader to remove this learner; one the cluster removed already (it never heard,
    /// being cut off) is gone, as asked.
    async fn leave_current(&self) -> Result<(), String> {
        match self.change_members(Change::Remove { id: self.node_id() }).await {
            Ok(_) | Err(ChangeError::NotFound(_)) => Ok(()),
            Err(e) => Err(format!("ERR leaving the cluster: {e}")),
        }
    }

    /// After `REPLICAOF NO ONE`: snapshots the state past the new cluster's first entries and
    /// purges them, so that a node joining this one later gets the kept data by snapshot (the
    /// log alone does not hold it).
    pub(super) async fn compact_base(&self) {
        let raft = self.raft();
        let wait = Some(self.request_timeout);
        let led = raft.wait(wait).state(ServerState::Leader, "REPLICAOF NO ONE: leading alone").await;
        let applied = match led {
            Ok(m) => m.last_applied.map_or(0, |l| l.index),
            Err(e) => {
                warn!(error = %e, "REPLICAOF NO ONE: not leading yet; the kept data reaches joiners once a snapshot is taken");
                return;
            }
        };
        if let Err(e) = raft.trigger().snapshot().await {
            warn!(error = %e, "REPLICAOF NO ONE: snapshot not triggered");
            return;
        }
        let built = raft
            .wait(wait)
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied), "REPLICAOF NO ONE: base snapshot")
            .await;
        match built {
            Ok(_) => {
                if let Err(e) = raft.trigger().purge_log(applied).await {
                    warn!(error = %e, "REPLICAOF NO ONE: log not purged");
                }
            }
            Err(e) => warn!(error = %e, "REPLICAOF NO ONE: base snapshot not built in time"),
        }
    }

    /// Stops this incarnation and opens the next one as `next` says, dropping the log and the
    /// snapshots; the data is dropped too, or (`keep_data`) kept as the next one's base
    /// snapshot, written before anything is dropped.
    async fn reincarnate(&self, next: Stored, keep_data: bool) -> Result<(), String> {
        let old = self.now();
        let last_now = old.sm.last_now().await;
        old.stop.cancel();
        if let Err(e) = old.raft.shutdown().await {
            warn!(error = %e, "raft: the previous incarnation did not stop cleanly");
        }
        let opening = &self.opening;
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        if keep_data {
            let staged = opening.dir.join("snapshots.next");
            let _ = std::fs::remove_dir_all(&staged);
            let (engine, at) = (self.engine.clone(), staged.clone());
            tokio::task::spawn_blocking(move || StateMachine::seed(&engine, &at, last_now))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| io("writing the kept data's snapshot", e))?;
            self.identity.set(next.clone()).map_err(|e| io("storing the identity", e))?;
            opening.drop_files().map_err(|e| io("dropping the old log", e))?;
            std::fs::rename(&staged, opening.snapshots()).map_err(|e| io("placing the kept data", e))?;
            fsync_dir(&opening.dir).map_err(|e| io("fsync", e))?;
        } else {
            self.identity.set(next.clone()).map_err(|e| io("storing the identity", e))?;
            opening.drop_files().map_err(|e| io("dropping the old log", e))?;
            let engine = self.engine.clone();
            let told = tokio::task::spawn_blocking(move || {
                let empty = engine.sibling();
                engine.swap_state(&empty);
                // Watchers are told every key went.
                engine.announce_replacement(&empty)
            })
            .await
            .map_err(|e| e.to_string())?;
            info!(announced = told, "REPLICAOF: this node's data dropped");
        }
        let opened = opening
            .open(
                next.node_id,
                !keep_data,
                &self.engine,
                &self.feed,
                &self.identity,
                &self.counters,
                &self.shutdown,
                &self.tasks,
            )
            .await?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(opened);
        self.known_addrs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        Ok(())
    }

    /// Asks the node at `raft_addr` to add this one to its cluster.
    async fn ask_join(&self, raft_addr: &str, deadline: Instant) -> Result<Joined, String> {
        let body = serde_json::to_vec(&JoinRequest { raft_addr: self.advertised_raft_addr() })
            .map_err(|e| format!("ERR {e}"))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let peer = network::Peer::new(raft_addr.to_string(), self.node_id(), self.identity.clone());
        let answer = match peer.call(kind::JOIN, &body, left).await {
            Ok(answer) => answer,
            Err(CallError::Failed(why)) => return Err(format!("ERR the cluster refused: {why}")),
            Err(e) => return Err(format!("ERR cannot reach the cluster's Raft port {raft_addr}: {e}")),
        };
        match serde_json::from_slice::<Result<Joined, ChangeError>>(&answer) {
            Ok(Ok(joined)) if joined.id > 0 => Ok(joined),
            Ok(Ok(_)) => Err("ERR the cluster assigned no node id".into()),
            Ok(Err(ChangeError::Unavailable(m))) => Err(format!("TRYAGAIN {m}")),
            Ok(Err(e)) => Err(format!("ERR the cluster refused: {e}")),
            Err(e) => Err(format!("ERR the cluster's answer could not be read: {e}")),
        }
    }

    /// The Raft port's side of `JOIN`: adds the caller as a learner with a fresh id (through the
    /// leader). A node serving alone becomes a cluster of one first.
    pub(super) async fn serve_join(&self, body: &[u8]) -> Result<Result<Joined, ChangeError>, String> {
        let request: JoinRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        // A node serving alone becomes a cluster of one first (in `change_members`).
        let result = self.change_members(Change::Join { raft_addr: request.raft_addr }).await;
        Ok(result.map(|members| Joined {
            id: members.assigned_id.unwrap_or(0),
            cluster_id: self.cluster_id(),
            members,
        }))
    }

    /// How many other members hold the log up to `index`, as the leader knows (asked of it from
    /// other nodes); `None` without a reachable leader.
    async fn replicas_at(&self, index: u64, deadline: Instant) -> Option<usize> {
        match self.leader() {
            Some((id, _)) if id == self.node_id() => Some(self.matched_at(index)),
            Some((_, Some(addr))) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let answer =
                    self.peers().get(&addr).call(kind::MATCHED, &index.to_be_bytes(), left).await.ok()?;
                let n: [u8; 4] = answer[..].try_into().ok()?;
                Some(u32::from_be_bytes(n) as usize)
            }
            _ => None,
        }
    }

    /// On the leader: the other members whose matched index is at least `index`.
    pub(super) fn matched_at(&self, index: u64) -> usize {
        let me = self.node_id();
        let m = self.raft().metrics().borrow().clone();
        m.replication.as_ref().map_or(0, |r| {
            r.iter().filter(|(id, matched)| **id != me && matched.map_or(0, |l| l.index) >= index).count()
        })
    }

    /// `WAIT numreplicas timeout`: waits until `want` other members hold the log up to `index`
    /// (the connection's last write), or `timeout` (zero: the request deadline; never past it);
    /// how many do.
    pub async fn wait_replicas(&self, index: u64, want: usize, timeout: Duration) -> usize {
        let timeout =
            if timeout.is_zero() { self.request_timeout } else { timeout.min(self.request_timeout) };
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            if let Some(n) = self.replicas_at(index, deadline).await {
                seen = n;
            }
            if seen >= want || Instant::now() >= deadline {
                return seen;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(10))).await;
        }
    }
}
