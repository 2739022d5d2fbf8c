//! `GET /v1/cluster`: the cluster status (`cluster::status`) as JSON. With auth on it needs an
//! authenticated caller, as `/v1/stats` does.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nanodb_protocol::ErrorCode;

use super::Call;
use super::error::{AppError, json_response};

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
