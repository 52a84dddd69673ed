//! The API's one error type, [`ApiError`], and its wire shape
//! `{"error": {"code", "message"}}`.
//!
//! Every failure a handler can meet — an engine [`Error`], a [`NodeError`] from the Raft
//! seam, a storage failure on a read, a rejected extractor — becomes an `ApiError`, so
//! every error body looks the same. The only 5xx the API ever answers are 503 (with
//! `Retry-After`) — anything that is not the client's fault is a transient unavailability
//! from the client's point of view (no leader, shutting down, storage trouble) — and
//! 507 `disk_full`: a write refused, before it was proposed, because a voter's disk is
//! low on space ([`NodeError::DiskFull`]); it waits on an operator making room, not on
//! time, so it has no `Retry-After`.
//!
//! A follower that finds out mid-request that it is not the leader answers with
//! [`NotLeader`] in the response's extensions; the forwarding layer sees it and replays
//! the request on the leader (see [`super::forward`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::{Error, Response as Reply, StoreError};
use crate::node::{NodeError, NodeId};

/// Seconds a client is told to wait before retrying a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

/// An error answered to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// snake_case code of the error body.
    pub code: &'static str,
    /// Human sentence.
    pub message: String,
    /// The leader to replay the request on, when this node found it is not the leader.
    pub leader: Option<(NodeId, String)>,
}

/// Marks a response as "this node is not the leader; the leader is here".
#[derive(Clone, Debug)]
pub struct NotLeader(pub NodeId, pub String);

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            leader: None,
        }
    }

    /// 400 `invalid`: a malformed request or an invalid field.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 with a code: the client should retry later.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

/// An engine reply of the wrong kind: a bug, reported as a transient failure.
pub fn unexpected(reply: &Reply) -> ApiError {
    tracing::error!(?reply, "unexpected engine reply");
    ApiError::unavailable("internal", "unexpected reply from the state machine")
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::NotLeader(Some((id, addr))) => ApiError {
                leader: Some((id, addr)),
                ..ApiError::unavailable("not_leader", "this node is not the leader")
            },
            NodeError::NotLeader(None) | NodeError::NoLeader => {
                ApiError::unavailable("no_leader", "no leader is known; retry shortly")
            }
            NodeError::ShuttingDown => {
                ApiError::unavailable("shutting_down", "the node is shutting down")
            }
            NodeError::Timeout(after) => ApiError::unavailable(
                "outcome_unknown",
                format!(
                    "the write was not confirmed within {after:?} (no quorum?): it may or may \
                     not have been applied; read the state before retrying"
                ),
            ),
            NodeError::Discarded => ApiError::unavailable(
                "outcome_unknown",
                "the write's log entry was discarded when this node adopted another leader's \
                 log: it may or may not have been applied; read the state before retrying",
            ),
            NodeError::NoQuorum => ApiError::unavailable(
                "no_quorum",
                "the leader could not confirm with a quorum that it still leads; retry shortly",
            ),
            NodeError::Fatal(message) => ApiError::unavailable("unavailable", message),
            NodeError::DiskFull(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|id| format!("node {id}")).collect();
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "disk_full",
                    format!(
                        "the disk of {} is low on space (below its reserve): writes are \
                         refused until room is made there, this one before it was proposed; \
                         reads go on",
                        nodes.join(", ")
                    ),
                )
            }
            e @ NodeError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
        }
    }
}

impl From<crate::json::Refusal> for ApiError {
    fn from(e: crate::json::Refusal) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::unavailable("storage", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let Some((id, addr)) = self.leader {
            response.extensions_mut().insert(NotLeader(id, addr));
        }
        response
    }
}

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: ApiError) -> (StatusCode, serde_json::Value, Option<String>) {
        let r = e.into_response();
        let status = r.status();
        let retry = r
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap(), retry)
    }

    #[tokio::test]
    async fn engine_errors_keep_their_code_and_status() {
        let (status, json, retry) = body(Error::LeaseLost.into()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(json["error"]["code"], "lease_lost");
        assert!(json["error"]["message"].as_str().unwrap().contains("lease"));
        assert_eq!(retry, None);
        let (status, json, _) = body(Error::InvalidUpdate("x".into()).into()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(json["error"]["code"], "invalid_update");
    }

    #[tokio::test]
    async fn node_errors_are_503_with_retry_after() {
        for e in [
            NodeError::NoLeader,
            NodeError::NotLeader(None),
            NodeError::ShuttingDown,
            NodeError::Timeout(std::time::Duration::from_secs(10)),
            NodeError::Discarded,
            NodeError::NoQuorum,
            NodeError::Fatal("disk".into()),
        ] {
            let (status, json, retry) = body(e.into()).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(json["error"]["code"].is_string());
            assert_eq!(retry.as_deref(), Some("1"));
        }
    }

    #[tokio::test]
    async fn a_low_disk_is_507_disk_full_naming_the_nodes() {
        let (status, json, retry) = body(NodeError::DiskFull(vec![1, 3]).into()).await;
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(json["error"]["code"], "disk_full");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains("node 1, node 3"), "{message}");
        assert_eq!(retry, None);
    }

    #[test]
    fn not_leader_marks_the_response_with_the_leader() {
        let e: ApiError = NodeError::NotLeader(Some((2, "127.0.0.1:7002".into()))).into();
        let r = e.into_response();
        let marker = r.extensions().get::<NotLeader>().unwrap();
        assert_eq!((marker.0, marker.1.as_str()), (2, "127.0.0.1:7002"));
    }
}
