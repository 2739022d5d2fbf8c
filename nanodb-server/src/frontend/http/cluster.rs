//! `GET /v1/cluster`: the cluster status (`cluster::status`) as JSON. With auth on it needs an
//! authenticated caller, as `/v1/stats` does. `POST /v1/cluster/members` and
//! `DELETE /v1/cluster/members/{id}`: membership changes (`cluster::membership`), admin only.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nanodb_protocol::ErrorCode;

use super::Call;
use super::error::{AppError, json_response};
use super::extract::{JsonBody, Seg};
use crate::cluster::membership::{Change, ChangeError};

/// This node's view of the cluster: `node_id`, `leader_id` (null while there is none), `term`,
/// `role`, `commit_index`, `applied_index` and `members` (`id`, `raft_addr`, `role`,
/// `matched_index`, and each member's `grpc_addr`, `http_addr`, `tcp_addr`, `resp_addr`). A single
/// node (no `--raft-addr`) answers 404 NOT_FOUND: it is not in cluster mode.
#[utoipa::path(get, path = "/v1/cluster", tag = "admin",
    responses((status = 200, description = "The cluster status"),
              (status = 401, description = "Missing or wrong credentials (auth on)", body = super::error::ErrorBody),
              (status = 404, description = "Not in cluster mode")))]
pub async fn status(s: Call) -> Response {
    if let Err(e) = s.authorize_any() {
        return e.into_response();
    }
    match &s.ctx.cluster {
        Some(cluster) => json_response(StatusCode::OK, &cluster.status().await),
        None => AppError::with_status(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "not in cluster mode: start the server with --node-id, --raft-addr and --cluster-peers",
        )
        .into_response(),
    }
}

/// `POST /v1/cluster/members`'s body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberJson {
    /// The node's id (>= 1; for a new learner, never used before in this cluster).
    pub id: u64,
    /// `learner` (the default) adds the node as a learner, which needs `raft_addr`; `voter`
    /// promotes a learner already in the cluster.
    #[serde(default)]
    pub role: Option<String>,
    /// `HOST:PORT` of the new learner's Raft port.
    #[serde(default)]
    pub raft_addr: Option<String>,
}

/// The membership after a change.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct MembersJson {
    /// Voters, ascending.
    pub voters: Vec<u64>,
    /// Learners, ascending.
    pub learners: Vec<u64>,
    /// Every id removed from the cluster (never reused), ascending.
    pub removed_ids: Vec<u64>,
}

/// Adds a learner (`{"id": 4, "raft_addr": "host:port"}`: it receives the log, or a snapshot
/// then the log, and does not vote) or promotes one to voter (`{"id": 4, "role": "voter"}`).
/// Any node takes it and forwards it to the leader; one change at a time. Admin only once users
/// exist.
#[utoipa::path(post, path = "/v1/cluster/members", tag = "admin",
    request_body = MemberJson,
    responses((status = 200, description = "The membership once the change committed", body = MembersJson),
              (status = 400, description = "A bad id, role or address", body = super::error::ErrorBody),
              (status = 401, description = "Missing or wrong credentials (auth on)", body = super::error::ErrorBody),
              (status = 403, description = "Not an admin", body = super::error::ErrorBody),
              (status = 404, description = "Not in cluster mode, or (promotion) not a learner", body = super::error::ErrorBody),
              (status = 409, description = "Another change is in progress, or the id is a member or was removed (ids are never reused)", body = super::error::ErrorBody),
              (status = 503, description = "No leader, or the change did not commit by the deadline; Retry-After", body = super::error::ErrorBody)))]
pub async fn add_member(s: Call, body: JsonBody<MemberJson>) -> Response {
    let JsonBody(m) = body;
    let change = match (m.role.as_deref().unwrap_or("learner"), m.raft_addr) {
        ("learner", Some(raft_addr)) => Change::AddLearner { id: m.id, raft_addr },
        ("learner", None) => {
            return AppError::invalid("a new learner needs raft_addr (HOST:PORT)").into_response();
        }
        ("voter", None) => Change::Promote { id: m.id },
        ("voter", Some(_)) => {
            return AppError::invalid(
                "a voter is promoted from a learner: add it as a learner (with raft_addr) first, then promote it",
            )
            .into_response();
        }
        (other, _) => {
            return AppError::invalid(format!("role {other:?}: expected learner or voter")).into_response();
        }
    };
    change_members(&s, change).await
}

/// Removes a voter or a learner; its id is never used again. Removing the leader makes it step
/// down once the change commits. Admin only once users exist.
#[utoipa::path(delete, path = "/v1/cluster/members/{id}", tag = "admin",
    params(("id" = u64, Path, description = "The node's id")),
    responses((status = 200, description = "The membership once the change committed", body = MembersJson),
              (status = 400, description = "Not a node id, or the last voter", body = super::error::ErrorBody),
              (status = 401, description = "Missing or wrong credentials (auth on)", body = super::error::ErrorBody),
              (status = 403, description = "Not an admin", body = super::error::ErrorBody),
              (status = 404, description = "Not in cluster mode, or not a member", body = super::error::ErrorBody),
              (status = 409, description = "Another change is in progress", body = super::error::ErrorBody),
              (status = 503, description = "No leader, or the change did not commit by the deadline; Retry-After", body = super::error::ErrorBody)))]
pub async fn remove_member(s: Call, Seg(id): Seg<4>) -> Response {
    let Some(id) = std::str::from_utf8(&id).ok().and_then(|t| t.parse::<u64>().ok()) else {
        return AppError::invalid("the node id is not an integer").into_response();
    };
    change_members(&s, Change::Remove { id }).await
}

async fn change_members(s: &Call, change: Change) -> Response {
    if let Err(e) = s.authorize_admin("cluster membership") {
        return e.into_response();
    }
    let Some(cluster) = &s.ctx.cluster else {
        return AppError::with_status(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "not in cluster mode: start the server with --node-id, --raft-addr and --cluster-peers",
        )
        .into_response();
    };
    match cluster.change_members(change).await {
        Ok(m) => json_response(
            StatusCode::OK,
            &MembersJson { voters: m.voters, learners: m.learners, removed_ids: m.removed_ids },
        ),
        Err(e) => {
            let message = e.to_string();
            let (status, code) = match e {
                ChangeError::Invalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument),
                ChangeError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
                ChangeError::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::ConditionFailed),
                ChangeError::Unavailable(_) | ChangeError::NotLeader(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable)
                }
            };
            AppError::with_status(status, code, message).into_response()
        }
    }
}
