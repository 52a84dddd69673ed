//! Cluster and operations (DESIGN §3.5): membership, health and readiness.
//!
//! `GET /cluster`, `/healthz` and `/readyz` answer from this node (they describe it);
//! membership changes go to the leader like every write.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as JsonOut;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::Json;
use super::AppState;
use crate::engine::validate;
use crate::node::{ClusterInfo, NodeId};

/// `GET /cluster`: this node's view of the cluster.
pub async fn info(State(state): State<AppState>) -> JsonOut<ClusterInfo> {
    JsonOut(state.node.cluster_info())
}

/// Body of `POST /cluster/learners`.
#[derive(Debug, Deserialize)]
pub struct LearnerBody {
    /// New node's id.
    pub id: NodeId,
    /// Its `host:port`.
    pub addr: String,
}

/// `POST /cluster/learners`: add a non-voting member → 200 with the cluster.
pub async fn add_learner(
    State(state): State<AppState>,
    Json(body): Json<LearnerBody>,
) -> ApiResult<JsonOut<ClusterInfo>> {
    validate::name("addr", &body.addr)?;
    state.node.add_learner(body.id, body.addr).await?;
    Ok(JsonOut(state.node.cluster_info()))
}

/// Body of `POST /cluster/membership`.
#[derive(Debug, Deserialize)]
pub struct MembershipBody {
    /// The new set of voters.
    pub members: Vec<NodeId>,
}

/// `POST /cluster/membership`: change the voters → 200 with the cluster.
pub async fn change_membership(
    State(state): State<AppState>,
    Json(body): Json<MembershipBody>,
) -> ApiResult<JsonOut<ClusterInfo>> {
    if body.members.is_empty() {
        return Err(ApiError::invalid("members must name at least one node"));
    }
    state.node.change_membership(body.members).await?;
    Ok(JsonOut(state.node.cluster_info()))
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> JsonOut<Value> {
    JsonOut(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when a leader is known and this node has caught up; else 503.
pub async fn readyz(State(state): State<AppState>) -> ApiResult<JsonOut<Value>> {
    if state.node.is_ready() {
        Ok(JsonOut(json!({"status": "ready"})))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no leader is known or this node has not caught up",
        ))
    }
}
