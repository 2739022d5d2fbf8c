//! The `nanodb.v1.Cluster` service: the cluster status (`cluster::status`) as protobuf. With auth
//! on it needs an authenticated caller (the authentication layer resolves it; it is not open like
//! health), as `Admin/Stats` does.

use nanodb_protocol::pb::{self, cluster_server::Cluster};
use tonic::{Request, Response, Status};

use super::convert::status;
use super::service::caller;
use crate::auth::Need;
use crate::frontend::Context;

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
            return Err(Status::failed_precondition(
                "not in cluster mode: start the server with --node-id, --raft-addr and --cluster-peers",
            ));
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
        }))
    }
}
