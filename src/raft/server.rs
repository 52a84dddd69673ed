//! The Raft network server: the `/raft/*` routes on the node's own HTTP port.
//!
//! Each handler hands the peer's request to the local Raft and returns the `Result` it
//! gave, serialized as is, for [`super::network`] to decode. Votes and appends arrive as
//! JSON; a snapshot chunk arrives as its raw bytes with the rest of the request in the
//! `Slct-Snapshot` header (see [`super::network`] for why), and a request without a
//! readable header gets 400. `/raft/status` tells a starting peer whether this node
//! already belongs to a cluster (for bootstrap). With a cluster secret configured, a
//! request without the matching `Slct-Cluster-Secret` header gets 401 before it reaches
//! Raft.
//!
//! The routes carry their own body limit, larger than the client API's: an append may
//! carry many batched commands and a snapshot request one chunk of the snapshot file.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use serde::{Deserialize, Serialize};

use super::network::{decode_snapshot_chunk, SNAPSHOT_HEADER};
use super::{Raft, TypeConfig, SECRET_HEADER};

/// Largest `/raft/*` request body.
const MAX_RAFT_BODY: usize = 256 << 20;

/// What `/raft/status` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// Whether this node has a log or a vote, i.e. belongs to a cluster already.
    pub initialized: bool,
}

#[derive(Clone)]
struct RaftState {
    raft: Raft,
    secret: Option<String>,
}

/// The `/raft/*` routes for `raft`, guarded by `secret` if set.
pub fn router(raft: Raft, secret: Option<String>) -> Router {
    let state = RaftState { raft, secret };
    Router::new()
        .route("/raft/vote", post(vote))
        .route("/raft/append", post(append))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/status", get(status))
        .layer(DefaultBodyLimit::max(MAX_RAFT_BODY))
        .route_layer(middleware::from_fn_with_state(state.clone(), check_secret))
        .with_state(state)
}

async fn check_secret(State(state): State<RaftState>, request: Request, next: Next) -> Response {
    if let Some(secret) = &state.secret {
        let given = request.headers().get(SECRET_HEADER).map(|v| v.as_bytes());
        if given != Some(secret.as_bytes()) {
            return (StatusCode::UNAUTHORIZED, "wrong or missing cluster secret").into_response();
        }
    }
    next.run(request).await
}

async fn vote(State(state): State<RaftState>, Json(rpc): Json<VoteRequest<u64>>) -> Response {
    Json(state.raft.vote(rpc).await).into_response()
}

async fn append(
    State(state): State<RaftState>,
    Json(rpc): Json<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    Json(state.raft.append_entries(rpc).await).into_response()
}

async fn snapshot(State(state): State<RaftState>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_snapshot_chunk(headers.get(SNAPSHOT_HEADER), body.into()) {
        Ok(rpc) => Json(state.raft.install_snapshot(rpc).await).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn status(State(state): State<RaftState>) -> Response {
    match state.raft.is_initialized().await {
        Ok(initialized) => Json(Status { initialized }).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
