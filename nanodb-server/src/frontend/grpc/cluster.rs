//! The `nanodb.v1.Cluster` service: the cluster status (`cluster::status`) as protobuf, and the
//! membership changes (`cluster::membership`). With auth on, the status needs an authenticated
//! caller (the authentication layer resolves it; it is not open like health), as `Admin/Stats`
//! does; a membership change needs the admin class.

use nanodb_protocol::pb::{self, cluster_server::Cluster};
use tonic::{Request, Response, Status};

use super::convert::status;
use super::service::caller;
use crate::auth::Need;
use crate::cluster::membership::{Change, ChangeError, Members};
use crate::frontend::Context;

const NOT_CLUSTERED: &str =
    "not in cluster mode: start the server with --node-id, --raft-addr and --cluster-peers";

impl ClusterService {
    /// Authorizes an admin caller, then runs `change` through the leader.
    async fn change<T>(
        &self,
        request: &Request<T>,
        change: Change,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.ctx
            .authorize(&caller(&self.ctx, request), Need::Admin("cluster membership"))
            .map_err(|e| status(&e))?;
        let Some(cluster) = &self.ctx.cluster else {
            return Err(Status::failed_precondition(NOT_CLUSTERED));
        };
        match cluster.change_members(change).await {
            Ok(Members { voters, learners, removed_ids, .. }) => {
                Ok(Response::new(pb::MembershipResponse { voters, learners, removed_ids }))
            }
            Err(e) => Err(change_status(e)),
        }
    }
}

/// A refused change as a gRPC status.
fn change_status(e: ChangeError) -> Status {
    let message = e.to_string();
    match e {
        ChangeError::Invalid(_) => Status::invalid_argument(message),
        ChangeError::NotFound(_) => Status::not_found(message),
        ChangeError::Conflict(_) => Status::failed_precondition(message),
        ChangeError::Unavailable(_) | ChangeError::NotLeader(_) => Status::unavailable(message),
    }
}

/// `nanodb.v1.Cluster`.
#[derive(Debug, Clone)]
pub struct ClusterService {
    ctx: Context,
}

impl ClusterService {
    /// The service over the context's cluster node (if any).
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.ctx.authorize(&caller(&self.ctx, &request), Need::Authenticated).map_err(|e| status(&e))?;
        let Some(cluster) = &self.ctx.cluster else {
            return Err(Status::failed_precondition(NOT_CLUSTERED));
        };
        let s = cluster.status().await;
        Ok(Response::new(pb::ClusterStatusResponse {
            node_id: s.node_id,
            leader_id: s.leader_id,
            term: s.term,
            role: s.role.into(),
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            members: s
                .members
                .into_iter()
                .map(|m| pb::ClusterMember {
                    id: m.id,
                    raft_addr: m.raft_addr,
                    role: m.role.into(),
                    matched_index: m.matched_index,
                    grpc_addr: m.grpc_addr,
                    http_addr: m.http_addr,
                    tcp_addr: m.tcp_addr,
                    resp_addr: m.resp_addr,
                })
                .collect(),
            joint_voters: s
                .joint_voters
                .unwrap_or_default()
                .into_iter()
                .map(|ids| pb::VoterSet { ids })
                .collect(),
            removed_ids: s.removed_ids,
        }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let r = request.get_ref();
        let change = Change::AddLearner { id: r.id, raft_addr: r.raft_addr.clone() };
        self.change(&request, change).await
    }

    async fn promote_learner(
        &self,
        request: Request<pb::PromoteLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let change = Change::Promote { id: request.get_ref().id };
        self.change(&request, change).await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let change = Change::Remove { id: request.get_ref().id };
        self.change(&request, change).await
    }
}
