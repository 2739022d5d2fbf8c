//! Membership at runtime: add a learner, promote a learner to voter, remove a node. Behind
//! `nanodb.v1.Cluster/{AddLearner,PromoteLearner,RemoveMember}` and `POST /v1/cluster/members`,
//! `DELETE /v1/cluster/members/{id}`.
//!
//! # Rules
//! - **On the leader.** Any node takes a change; a follower or learner forwards it to the leader
//!   over the Raft port ([`MEMBERS`]), as it forwards writes, and answers with the leader's
//!   answer.
//! - **One at a time.** The leader runs one change at a time (a second one is refused at once
//!   with [`ChangeError::Conflict`], not queued); openraft refuses a change while a joint
//!   configuration is uncommitted, reported the same way. A change that could not commit by the
//!   deadline (no quorum) answers [`ChangeError::Unavailable`] saying so; the status's
//!   `joint_voters` then shows the configuration openraft is still moving to.
//! - **Ids are never reused.** The operator picks each node's id (an integer >= 1), except for a
//!   node that joins with `REPLICAOF` ([`Change::Join`]): the leader gives it one more than every
//!   id the cluster has used (members, removed ids, `--cluster-peers`). The cluster
//!   records every id it has removed, in its replicated state (`state_machine::Retired`, kept in
//!   every snapshot), refuses to add one of them again and refuses their Raft calls: openraft's
//!   FAQ warns that a reused id can carry a vote or a log the cluster has forgotten and form a
//!   second quorum. A replacement node takes a new id.
//! - **Promotion** works on a learner only (add it as a learner first, let it catch up: the
//!   status shows its `matched_index`). Removing a voter removes it entirely (it is not kept as a
//!   learner); removing the leader makes it step down once the change commits.

use std::collections::BTreeSet;
use std::time::Instant;

use openraft::ChangeMembers;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::network::{self, CallError};
use super::types::{Member, NodeId};
use super::{Cluster, pause};

/// The Raft port's call kind for a membership change forwarded to the leader (JSON [`Change`]
/// in, JSON `Result<Members, ChangeError>` out). Numbered after `network::kind`'s.
pub const MEMBERS: u8 = 16;

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Add node `id`, reachable at `raft_addr`, as a learner: it receives the log (or a snapshot
    /// then the log) and does not vote.
    AddLearner {
        /// Its id, never used before in this cluster.
        id: NodeId,
        /// `HOST:PORT` of its Raft port.
        raft_addr: String,
    },
    /// Make learner `id` a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Remove node `id` (voter or learner); its id is never used again.
    Remove {
        /// The node.
        id: NodeId,
    },
    /// Add the node at `raft_addr` as a learner with a fresh id, one more than every id this
    /// cluster has used, removed ones included (`REPLICAOF`). A node already a learner at that
    /// address gets its id again (a retried join).
    Join {
        /// `HOST:PORT` of its Raft port.
        raft_addr: String,
    },
}

/// The membership after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// Voters, ascending.
    pub voters: Vec<NodeId>,
    /// Learners, ascending.
    pub learners: Vec<NodeId>,
    /// Every id removed from the cluster (never reused), ascending.
    pub removed_ids: Vec<NodeId>,
    /// The id a [`Change::Join`] gave the joining node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_id: Option<NodeId>,
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChangeError {
    /// The change does not make sense for this membership (bad id or address, not a learner).
    #[error("{0}")]
    Invalid(String),
    /// No such member.
    #[error("{0}")]
    NotFound(String),
    /// Another change is in progress, or the id is taken or was removed.
    #[error("{0}")]
    Conflict(String),
    /// No leader, or the change did not commit by the deadline: retry (check the status first).
    #[error("{0}")]
    Unavailable(String),
    /// Asked of a node that is not the leader (forwarding looks for the leader again).
    #[error("node {0} is not the leader")]
    NotLeader(NodeId),
}

/// The leader's guard: one change at a time. Held by the task running the change, which
/// outlives the request's deadline: openraft's change runs in two steps (the joint configuration,
/// then the uniform one), and dropping it between them would leave the cluster joint.
#[derive(Debug, Default)]
pub struct Serializer {
    changing: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Cluster {
    /// Runs `change` on the leader (forwarded there from any other node), one at a time.
    pub async fn change_members(&self, change: Change) -> Result<Members, ChangeError> {
        if self.ready_alone() {
            // A node serving alone, asked to grow: it becomes a cluster of one first.
            self.init_alone().await.map_err(|e| ChangeError::Unavailable(e.to_string()))?;
        }
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let attempt = match self.leader() {
                Some((id, _)) if id == self.node_id() => self.change_as_leader(change.clone()).await,
                Some((_, Some(addr))) => self.forward_change(&addr, &change, deadline).await,
                _ => Err(ChangeError::NotLeader(self.node_id())),
            };
            match attempt {
                Err(ChangeError::NotLeader(_)) if Instant::now() < deadline => pause(deadline).await,
                Err(ChangeError::NotLeader(_)) => {
                    return Err(ChangeError::Unavailable(super::NO_LEADER.into()));
                }
                other => return other,
            }
        }
    }

    async fn forward_change(
        &self,
        addr: &str,
        change: &Change,
        deadline: Instant,
    ) -> Result<Members, ChangeError> {
        let body = serde_json::to_vec(change).map_err(|e| ChangeError::Invalid(e.to_string()))?;
        let left = deadline.saturating_duration_since(Instant::now());
        match self.peers().get(addr).call(MEMBERS, &body, left).await {
            Ok(answer) => {
                serde_json::from_slice::<Result<Members, ChangeError>>(&answer).unwrap_or_else(|e| {
                    Err(ChangeError::Unavailable(format!("the leader's answer could not be read: {e}")))
                })
            }
            // The leader went away: look for the new one.
            Err(CallError::Unreachable(..) | CallError::Io(..)) => {
                Err(ChangeError::NotLeader(self.node_id()))
            }
            Err(CallError::Failed(why)) => Err(ChangeError::Unavailable(why)),
        }
    }

    /// The Raft port's side of [`MEMBERS`]: the change run here, as the leader.
    pub(super) async fn serve_change(&self, body: &[u8]) -> Result<bytes::BytesMut, String> {
        let change: Change = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let result = self.change_as_leader(change).await;
        let json = serde_json::to_vec(&result).map_err(|e| e.to_string())?;
        Ok(network::answer_frame(network::OK, &json))
    }

    /// The membership now, and the removed ids.
    pub fn members(&self) -> Members {
        let m = self.raft().metrics().borrow().membership_config.clone();
        let membership = m.membership();
        let mut voters: Vec<NodeId> = membership.voter_ids().collect();
        let mut learners: Vec<NodeId> = membership.learner_ids().collect();
        voters.sort_unstable();
        learners.sort_unstable();
        Members { voters, learners, removed_ids: self.retired().ids(), assigned_id: None }
    }

    /// The voter sets of a joint configuration (openraft between the old voters and the new),
    /// `None` when the configuration is uniform.
    pub fn joint_voters(&self) -> Option<Vec<Vec<NodeId>>> {
        let m = self.raft().metrics().borrow().membership_config.clone();
        let configs = m.membership().get_joint_config();
        (configs.len() > 1).then(|| configs.iter().map(|c| c.iter().copied().collect()).collect())
    }

    /// A node id this cluster never used: one more than every member's, every removed one's and
    /// every `--cluster-peers` one's (an id is never reused: see the module docs).
    fn fresh_id(&self, membership: &openraft::Membership<NodeId, Member>) -> NodeId {
        let used = membership
            .nodes()
            .map(|(id, _)| *id)
            .chain(self.retired().ids())
            .chain(self.config.peers.iter().map(|(id, _)| *id))
            .chain([self.node_id()]);
        used.max().unwrap_or(0) + 1
    }

    /// Whether `id` was removed from the cluster.
    pub fn is_retired(&self, id: NodeId) -> bool {
        self.retired().contains(id)
    }

    async fn change_as_leader(&self, change: Change) -> Result<Members, ChangeError> {
        let Ok(one) = self.serializer.changing.clone().try_lock_owned() else {
            return Err(ChangeError::Conflict(
                "another membership change is in progress on the leader; retry once it has finished".into(),
            ));
        };
        let metrics = self.raft().metrics().borrow().clone();
        if metrics.current_leader != Some(self.node_id()) {
            return Err(ChangeError::NotLeader(self.node_id()));
        }
        let membership = metrics.membership_config.membership().clone();
        if membership.get_joint_config().len() > 1 {
            // Left by a change whose second step never ran (its leader lost office between the
            // two): finish it (an empty change takes a joint configuration to its new side).
            warn!(joint = ?self.joint_voters(), "raft: finishing a joint configuration left by an earlier change");
            let raft = self.raft();
            tokio::spawn(async move {
                let _one = one;
                if let Err(e) =
                    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::new()), false).await
                {
                    warn!(error = %e, "raft: could not finish the joint configuration");
                }
            });
            return Err(ChangeError::Conflict(
                "the cluster is in a joint configuration left by an earlier change; the leader is finishing it: \
                 retry once GET /v1/cluster shows no joint_voters"
                    .into(),
            ));
        }
        let is_voter = |id: NodeId| membership.voter_ids().any(|v| v == id);
        let is_member = |id: NodeId| membership.get_node(&id).is_some();
        let mut assigned = None;
        let changes: ChangeMembers<NodeId, Member> = match &change {
            Change::AddLearner { id, raft_addr } => {
                let id = *id;
                if id == 0 {
                    return Err(ChangeError::Invalid("a node id is an integer >= 1".into()));
                }
                if self.retired().contains(id) {
                    return Err(ChangeError::Conflict(format!(
                        "node id {id} was removed from this cluster and is never reused; give the node an id \
                         never used (removed so far: {:?})",
                        self.retired().ids()
                    )));
                }
                if is_member(id) {
                    return Err(ChangeError::Conflict(format!("node id {id} is already a member")));
                }
                check_addr(raft_addr)?;
                if let Some((other, _)) = membership.nodes().find(|(_, n)| n.raft_addr == *raft_addr) {
                    return Err(ChangeError::Conflict(format!(
                        "node {other} already has raft address {raft_addr}"
                    )));
                }
                self.check_not_of_another_cluster(raft_addr).await?;
                ChangeMembers::AddNodes([(id, Member { raft_addr: raft_addr.clone() })].into())
            }
            Change::Promote { id } => {
                if is_voter(*id) {
                    return Err(ChangeError::Conflict(format!("node {id} is already a voter")));
                }
                if !is_member(*id) {
                    return Err(ChangeError::NotFound(format!(
                        "node {id} is not a learner of this cluster; add it as a learner first"
                    )));
                }
                ChangeMembers::AddVoterIds(BTreeSet::from([*id]))
            }
            Change::Remove { id } if is_voter(*id) => ChangeMembers::RemoveVoters(BTreeSet::from([*id])),
            Change::Remove { id } if is_member(*id) => ChangeMembers::RemoveNodes(BTreeSet::from([*id])),
            Change::Remove { id } => {
                return Err(ChangeError::NotFound(format!("node {id} is not a member of this cluster")));
            }
            Change::Join { raft_addr } => {
                check_addr(raft_addr)?;
                if let Some((id, _)) = membership.nodes().find(|(_, n)| n.raft_addr == *raft_addr) {
                    if is_voter(*id) {
                        return Err(ChangeError::Conflict(format!(
                            "node {id}, a voter, already has raft address {raft_addr}"
                        )));
                    }
                    return Ok(Members { assigned_id: Some(*id), ..self.members() });
                }
                let id = self.fresh_id(&membership);
                assigned = Some(id);
                ChangeMembers::AddNodes([(id, Member { raft_addr: raft_addr.clone() })].into())
            }
        };
        info!(?change, "raft: membership change");
        let left = self.request_timeout;
        let raft = self.raft();
        let running = tokio::spawn(async move {
            let _one = one;
            raft.change_membership(changes, false).await
        });
        match tokio::time::timeout(left, running).await {
            Ok(Err(e)) => Err(ChangeError::Unavailable(format!("the change failed: {e}"))),
            Ok(Ok(Ok(_))) => Ok(Members { assigned_id: assigned, ..self.members() }),
            Ok(Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))))) => {
                Err(ChangeError::NotLeader(self.node_id()))
            }
            Ok(Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))))) => Err(match e {
                ChangeMembershipError::InProgress(e) => ChangeError::Conflict(format!(
                    "a membership change is in progress ({e}); retry once it has finished"
                )),
                ChangeMembershipError::EmptyMembership(e) => {
                    ChangeError::Invalid(format!("{e}: a cluster keeps at least one voter"))
                }
                ChangeMembershipError::LearnerNotFound(e) => ChangeError::NotFound(e.to_string()),
            }),
            Ok(Ok(Err(RaftError::Fatal(e)))) => {
                Err(ChangeError::Unavailable(format!("the node is stopping: {e}")))
            }
            Err(_) => {
                warn!(?change, "raft: membership change not committed by the deadline; it goes on");
                Err(ChangeError::Unavailable(format!(
                    "the change was proposed but not committed within {left:?} (is a quorum up?); it \
                     completes once a quorum is: GET /v1/cluster shows whether it took effect"
                )))
            }
        }
    }
}

impl Cluster {
    /// A node that belongs to another cluster (its data dir holds that cluster's id) is not added:
    /// it would refuse every call of this one. Asked briefly; a node that cannot be asked yet
    /// (not started) is added, and the Raft port's check covers it once it is up.
    async fn check_not_of_another_cluster(&self, raft_addr: &str) -> Result<(), ChangeError> {
        let ours = self.identity.cluster();
        let ask = std::time::Duration::from_millis(500);
        let Ok(body) = self.peers().get(raft_addr).call(network::kind::INFO, &[], ask).await else {
            return Ok(());
        };
        let theirs = serde_json::from_slice::<super::NodeInfo>(&body)
            .ok()
            .and_then(|i| i.cluster_id)
            .and_then(|id| super::identity::from_hex(&id));
        match theirs {
            Some(theirs) if ours != 0 && theirs != ours => Err(ChangeError::Conflict(format!(
                "the node at {raft_addr} belongs to another cluster ({}; this one is {}): give it an empty \
                 --data-dir, or have it join with REPLICAOF, which drops its data",
                super::identity::to_hex(theirs),
                super::identity::to_hex(ours)
            ))),
            _ => Ok(()),
        }
    }
}

/// `--cluster-peers` names each node id and each Raft address once: a duplicate id would make
/// two processes one voter (and a split quorum possible), a duplicate address one process two.
pub fn check_peer_list(peers: &[(NodeId, String)]) -> Result<(), String> {
    let mut ids = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    for (id, addr) in peers {
        if !ids.insert(*id) {
            return Err(format!("--cluster-peers lists node id {id} twice; every node needs its own id"));
        }
        if !addrs.insert(addr.as_str()) {
            return Err(format!("--cluster-peers lists the raft address {addr} twice"));
        }
    }
    Ok(())
}

impl Cluster {
    /// A restarted node's membership comes from its log, not from `--cluster-peers`; when the two
    /// differ (the membership changed at runtime, or the flag is wrong) this says so, once, at
    /// start: the flag is then only used to accept calls from those ids.
    pub(super) fn warn_if_peers_disagree(&self) {
        if self.config.peers.is_empty() {
            return;
        }
        let m = self.raft().metrics().borrow().membership_config.clone();
        let membership = m.membership();
        if membership.nodes().next().is_none() {
            return;
        }
        let stored: BTreeSet<(NodeId, String)> = membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.raft_addr.clone())))
            .collect();
        let given: BTreeSet<(NodeId, String)> = self.config.peers.iter().cloned().collect();
        if stored != given {
            warn!(
                stored_voters = ?stored,
                cluster_peers = ?given,
                "raft: --cluster-peers disagrees with the membership in this node's data dir; the stored \
                 membership is used (it changes only through membership changes)"
            );
        }
    }
}

/// A Raft address: `HOST:PORT` with a port number.
fn check_addr(addr: &str) -> Result<(), ChangeError> {
    let bad = || ChangeError::Invalid(format!("raft_addr {addr:?} is not HOST:PORT"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_addresses_need_a_host_and_a_port() {
        assert!(check_addr("127.0.0.1:7000").is_ok());
        assert!(check_addr("node-4.example:7000").is_ok());
        for bad in ["", "7000", ":7000", "host:", "host:0", "host:99999", "host:x"] {
            assert!(check_addr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_peer_list_with_a_duplicate_id_or_address_is_refused() {
        let p = |v: &[(u64, &str)]| v.iter().map(|(i, a)| (*i, a.to_string())).collect::<Vec<_>>();
        assert!(check_peer_list(&p(&[(1, "a:1"), (2, "a:2"), (3, "a:3")])).is_ok());
        let e = check_peer_list(&p(&[(1, "a:1"), (2, "a:2"), (2, "a:3")])).expect_err("duplicate id");
        assert!(e.contains("node id 2 twice"), "{e}");
        assert!(check_peer_list(&p(&[(1, "a:1"), (2, "a:1")])).is_err(), "duplicate address");
    }

    #[test]
    fn changes_and_errors_round_trip_as_json() {
        let c = Change::AddLearner { id: 4, raft_addr: "h:1".into() };
        let json = serde_json::to_string(&c).expect("json");
        assert_eq!(serde_json::from_str::<Change>(&json).expect("back"), c);
        let e: Result<Members, ChangeError> = Err(ChangeError::Conflict("x".into()));
        let json = serde_json::to_vec(&e).expect("json");
        assert_eq!(serde_json::from_slice::<Result<Members, ChangeError>>(&json).expect("back"), e);
    }
}
