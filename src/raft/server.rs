//! The Raft network server: the `/raft/*` routes on the node's own HTTP port.
//!
//! Each handler hands the peer's request to the local Raft and returns the `Result` it
//! gave, in the binary [`codec`], for [`super::network`] to decode. Votes and appends
//! arrive in the codec; a snapshot chunk arrives as its raw bytes with the rest of the
//! request in the `Slct-Snapshot` header (see [`super::network`] for why); a body that
//! does not decode gets 400. `/raft/status` tells a starting peer whether this node
//! already belongs to a cluster (for bootstrap).
//!
//! Every request is authenticated first ([`super::auth`]): its MAC, over headers only,
//! is checked for this node before the body is read (else 401); then the body is read
//! (up to [`MAX_RAFT_BODY`], 413 beyond, refused before reading when its
//! `Content-Length` says so) and checked against the digest the MAC covered (else
//! 400), before Raft sees it. A path under `/raft/` that is not a route here is 404
//! without its body being read.
//!
//! Every answer of a node whose disk is below its free-space reserve carries
//! [`DISK_LOW_HEADER`], for the leader to refuse client writes meanwhile (see
//! [`super::network`]).
//!
//! The routes carry their own body limit, larger than the client API's: an append may
//! carry many batched commands and a snapshot request one chunk of the snapshot file.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft_legacy::network_v1::ChunkedSnapshotReceiver;
use serde::{Deserialize, Serialize};

use super::auth::{ClusterKey, AUTH_HEADER, DIGEST_HEADER};
use super::network::{decode_snapshot_chunk, DISK_LOW_HEADER, SNAPSHOT_HEADER};
use super::{Raft, TypeConfig};
use crate::codec;
use crate::storage::space::DiskWatch;

/// Largest `/raft/*` request body: [`super::MAX_APPEND_BYTES`] and some framing.
pub const MAX_RAFT_BODY: usize = super::MAX_APPEND_BYTES + (1 << 20);

/// What `/raft/status` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// Whether this node has a log or a vote, i.e. belongs to a cluster already.
    pub initialized: bool,
}

#[derive(Clone)]
struct RaftState {
    raft: Raft,
    key: ClusterKey,
    me: u64,
}

/// The `/raft/*` routes of node `me`, authenticated with `key`, each answer saying
/// whether `disk` is low on space.
pub fn router(raft: Raft, key: ClusterKey, me: u64, disk: DiskWatch) -> Router {
    let state = RaftState { raft, key, me };
    Router::new()
        .route("/raft/vote", post(vote))
        .route("/raft/append", post(append))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/status", get(status))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route_layer(middleware::map_response(move |mut response: Response| {
            let low = disk.is_low();
            async move {
                if low {
                    let one = header::HeaderValue::from_static("1");
                    response.headers_mut().insert(DISK_LOW_HEADER, one);
                }
                response
            }
        }))
        .with_state(state)
}

/// Checks the request's MAC from its headers, then reads the body and checks its
/// digest, before anything else sees it.
async fn authenticate(State(state): State<RaftState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let route = parts.uri.path().rsplit('/').next().unwrap_or_default();
    let header = |name| parts.headers.get(name).map_or(&[][..], |v| v.as_bytes());
    let (snapshot, digest) = (header(SNAPSHOT_HEADER), header(DIGEST_HEADER));
    let given = parts.headers.get(AUTH_HEADER).map(|v| v.as_bytes());
    if !state
        .key
        .verify(state.me, route, &[snapshot, digest], given)
    {
        return (StatusCode::UNAUTHORIZED, "missing or wrong Slct-Raft-Auth").into_response();
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_RAFT_BODY) {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_RAFT_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    };
    let intact = if digest.is_empty() {
        bytes.is_empty()
    } else {
        super::auth::digest(&bytes).as_bytes() == digest
    };
    if !intact {
        return bad_request("the body does not match Slct-Raft-Digest");
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A Raft result in the codec.
fn encoded<T: Serialize>(result: &T) -> Response {
    match codec::encode(result) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

fn bad_request(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, e.to_string()).into_response()
}

async fn vote(State(state): State<RaftState>, body: Bytes) -> Response {
    match codec::decode::<VoteRequest<TypeConfig>>(&body) {
        Ok(rpc) => encoded(&state.raft.vote(rpc).await),
        Err(e) => bad_request(e),
    }
}

async fn append(State(state): State<RaftState>, body: Bytes) -> Response {
    match codec::decode::<AppendEntriesRequest<TypeConfig>>(&body) {
        Ok(rpc) => encoded(&state.raft.append_entries(rpc).await),
        Err(e) => bad_request(e),
    }
}

async fn snapshot(State(state): State<RaftState>, headers: HeaderMap, body: Bytes) -> Response {
    match decode_snapshot_chunk(headers.get(SNAPSHOT_HEADER), body.into()) {
        Ok(rpc) => encoded(&state.raft.install_snapshot(rpc).await),
        Err(e) => bad_request(e),
    }
}

async fn status(State(state): State<RaftState>) -> Response {
    match state.raft.is_initialized().await {
        Ok(initialized) => Json(Status { initialized }).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
