//! Cluster and operations (design.md §3.5): membership, health and readiness.
//!
//! `GET /cluster`, `/healthz` and `/readyz` answer from this node (they describe it),
//! except `GET /cluster?leader=true`, the leader's view with replication progress;
//! membership changes go to the leader like every write, and only with the admin token
//! (see the auth table in [`super`]). A client's mistake on a membership route is a
//! 4xx: an unknown node is 404, a change that contradicts the cluster (removing a voter
//! as a learner, shrinking below three voters without `?force=true`, a change while
//! another is in progress) is 409, a malformed request 400. Only a cluster that cannot
//! commit the change answers 503.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json as JsonOut;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{Json, Path, Query};
use super::AppState;
use crate::node::{ClusterInfo, MembershipError, NodeId};

/// Query of `GET /cluster`.
#[derive(Debug, Deserialize)]
pub struct InfoQuery {
    /// Answer with the leader's view, which carries the replication progress of every
    /// member; a follower forwards the request (see [`super::forward::is_local`]).
    #[serde(default)]
    pub leader: bool,
}

/// `GET /cluster`: this node's view of the cluster, or with `?leader=true` the
/// leader's.
pub async fn info(
    State(state): State<AppState>,
    Query(q): Query<InfoQuery>,
) -> ApiResult<JsonOut<ClusterInfo>> {
    if q.leader && !state.node.is_leader() {
        return Err(crate::node::NodeError::NotLeader(state.node.leader()).into());
    }
    Ok(JsonOut(state.node.cluster_info()))
}

/// Body of `POST /cluster/learners`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnerBody {
    /// New node's id.
    pub id: NodeId,
    /// Its `host:port`, as the other nodes reach it.
    pub addr: String,
}

/// `POST /cluster/learners`: add a non-voting member → 200 with the cluster. Returns
/// once the change is committed; the learner catches up afterwards.
pub async fn add_learner(
    State(state): State<AppState>,
    Json(body): Json<LearnerBody>,
) -> ApiResult<JsonOut<ClusterInfo>> {
    check_addr(&body.addr)?;
    state
        .node
        .add_learner(body.id, body.addr)
        .await
        .map_err(membership_error)?;
    Ok(JsonOut(state.node.cluster_info()))
}

/// `DELETE /cluster/learners/{id}`: remove a learner → 200 with the cluster.
pub async fn remove_learner(
    State(state): State<AppState>,
    Path(id): Path<NodeId>,
) -> ApiResult<JsonOut<ClusterInfo>> {
    state
        .node
        .remove_learner(id)
        .await
        .map_err(membership_error)?;
    Ok(JsonOut(state.node.cluster_info()))
}

/// Body of `POST /cluster/membership`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipBody {
    /// The new set of voters.
    pub members: Vec<NodeId>,
}

/// Query of `POST /cluster/membership`.
#[derive(Debug, Deserialize)]
pub struct MembershipQuery {
    /// Allow a change that leaves fewer than three voters.
    #[serde(default)]
    pub force: bool,
}

/// `POST /cluster/membership`: change the voters → 200 with the cluster.
pub async fn change_membership(
    State(state): State<AppState>,
    Query(query): Query<MembershipQuery>,
    Json(body): Json<MembershipBody>,
) -> ApiResult<JsonOut<ClusterInfo>> {
    state
        .node
        .change_membership(body.members, query.force)
        .await
        .map_err(membership_error)?;
    Ok(JsonOut(state.node.cluster_info()))
}

/// A node's address must be `host:port` (a name, an IPv4 address, or `[IPv6]`) with a
/// port 1–65535: nothing else can be reached by the Raft client.
fn check_addr(addr: &str) -> ApiResult<()> {
    let invalid = || ApiError::invalid(format!("addr {addr:?} must be host:port"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(invalid)?;
    let port_ok =
        port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
    };
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(invalid())
    }
}

fn membership_error(e: MembershipError) -> ApiError {
    match e {
        MembershipError::Unknown(_) => ApiError::not_found(e.to_string()),
        MembershipError::Conflict(message) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", message)
        }
        MembershipError::Invalid(message) => ApiError::invalid(message),
        MembershipError::Node(e) => e.into(),
    }
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> JsonOut<Value> {
    JsonOut(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when this node knows a leader, has caught up, and is in touch
/// with a quorum (leader) or the leader (follower); else 503 (see
/// [`crate::node::Node::is_ready`]).
pub async fn readyz(State(state): State<AppState>) -> ApiResult<JsonOut<Value>> {
    if state.node.is_ready().await {
        Ok(JsonOut(json!({"status": "ready"})))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no leader is known, this node has not caught up, or it has not heard from \
             a quorum (leader) or from the leader (follower) within the election timeout",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        for ok in [
            "10.0.0.4:7001",
            "node-4.example.com:80",
            "[::1]:7001",
            "localhost:1",
        ] {
            assert!(check_addr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.4",
            "http://10.0.0.4:7001",
            "10.0.0.4:0",
            "10.0.0.4:70000",
            ":7001",
            "host:+80",
            "a b:80",
            "::1:7001",
            "[zz]:7001",
            "host/path:80",
            "evil.com:80/x",
        ] {
            assert!(check_addr(bad).is_err(), "{bad}");
        }
    }
}
