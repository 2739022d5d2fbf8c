//! The cluster status: one report behind `GET /v1/cluster`, `nanodb.v1.Cluster/Status`, RESP
//! `ROLE` and `INFO replication`.

use std::time::Duration;

use openraft::ServerState;
use serde::Serialize;

use super::network::kind;
use super::{ClientAddrs, Cluster};

/// A member as the status lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// Its node id.
    pub id: u64,
    /// Its Raft port.
    pub raft_addr: String,
    /// `leader`, `follower`, `learner` or `candidate` (as far as this node knows).
    pub role: &'static str,
    /// The last index the leader knows it holds (only the leader knows; null elsewhere).
    pub matched_index: Option<u64>,
    /// Its gRPC address (null when off or unknown).
    pub grpc_addr: Option<String>,
    /// Its REST address.
    pub http_addr: Option<String>,
    /// Its binary TCP address.
    pub tcp_addr: Option<String>,
    /// Its RESP address.
    pub resp_addr: Option<String>,
}

/// What `GET /v1/cluster` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// This node's id.
    pub node_id: u64,
    /// The current leader, null while there is none.
    pub leader_id: Option<u64>,
    /// The current term.
    pub term: u64,
    /// This node's role: `leader`, `follower`, `learner` or `candidate`.
    pub role: &'static str,
    /// The last index this node knows committed.
    pub commit_index: u64,
    /// The last index this node applied.
    pub applied_index: u64,
    /// Every member, voters then learners, by id.
    pub members: Vec<MemberStatus>,
    /// While a membership change is between two configurations (openraft's joint consensus):
    /// the old voters and the new. Null when the configuration is uniform.
    pub joint_voters: Option<Vec<Vec<u64>>>,
    /// Every node id removed from the cluster: never reused.
    pub removed_ids: Vec<u64>,
}

pub(super) fn role_of(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Follower | ServerState::Shutdown => "follower",
    }
}

impl Cluster {
    /// This node's role now.
    pub fn role(&self) -> &'static str {
        role_of(self.raft().metrics().borrow().state)
    }

    /// The report. Other members' client addresses are asked of them once (briefly; unknown
    /// while a member is down) and remembered.
    pub async fn status(&self) -> Status {
        let m = self.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let mut members = Vec::new();
        for id in voters.iter().chain(learners.iter()).copied() {
            let raft_addr = membership.get_node(&id).map(|n| n.raft_addr.clone()).unwrap_or_default();
            let role = if id == self.node_id() {
                role_of(m.state)
            } else if Some(id) == m.current_leader {
                "leader"
            } else if learners.contains(&id) {
                "learner"
            } else {
                "follower"
            };
            let matched_index = match &m.replication {
                Some(r) => r
                    .get(&id)
                    .and_then(|l| l.map(|l| l.index))
                    .or_else(|| (id == self.node_id()).then_some(m.last_log_index).flatten()),
                None => None,
            };
            let addrs = self.addrs_of(id, &raft_addr).await;
            members.push(MemberStatus {
                id,
                raft_addr,
                role,
                matched_index,
                grpc_addr: addrs.grpc_addr,
                http_addr: addrs.http_addr,
                tcp_addr: addrs.tcp_addr,
                resp_addr: addrs.resp_addr,
            });
        }
        Status {
            node_id: self.node_id(),
            leader_id: m.current_leader,
            term: m.current_term,
            role: role_of(m.state),
            commit_index: self.now().committed.load(std::sync::atomic::Ordering::Relaxed),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            members,
            joint_voters: self.joint_voters(),
            removed_ids: self.retired().ids(),
        }
    }

    /// A member's client addresses: asked of it each time (briefly: a node restarted with other
    /// ports is reported as it is now), the last answer when it cannot be asked.
    async fn addrs_of(&self, id: u64, raft_addr: &str) -> ClientAddrs {
        if id == self.node_id() {
            return self.addrs.clone();
        }
        let peer = self.peers().get(raft_addr);
        let asked = tokio::time::timeout(ASK_TIMEOUT, peer.call(kind::INFO, &[], ASK_TIMEOUT)).await;
        let known = || {
            self.known_addrs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&id)
                .cloned()
                .unwrap_or_default()
        };
        match asked {
            Ok(Ok(body)) => match serde_json::from_slice::<ClientAddrs>(&body) {
                Ok(addrs) => {
                    self.known_addrs
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(id, addrs.clone());
                    addrs
                }
                Err(_) => known(),
            },
            _ => known(),
        }
    }
}

/// How long the status waits for a member's client addresses.
const ASK_TIMEOUT: Duration = Duration::from_millis(300);
