//! States (design.md §3.1) and their leases (§3.2): create, read, update under a lease,
//! delete, list; extend and give back a lease; re-arm a failed state.
//!
//! `PUT` decides between create and update by the lease: with a token (body
//! `lease.token` or header `Slct-Lease`) it is an update, without one a create, which
//! the engine refuses with 409 `exists` if the state is there. Reads are linearizable
//! (a read index round on the leader) unless `?stale=true`, and then come straight
//! from the local sled replica.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json as JsonOut;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{unexpected, ApiError, ApiResult};
use super::extract::{default_lease_ms, lease_ms, Json, Path, Query};
use super::AppState;
use crate::engine::history::What;
use crate::engine::types::{Listed, State as StateRecord, StateView};
use crate::engine::wire::{parse_token, StateBody};
use crate::engine::{list, load_state, validate, Op, Response as Reply, StoreError};

/// Header carrying a lease token, as an alternative to `lease.token` in the body.
pub const LEASE_HEADER: &str = "slct-lease";
/// The one id no state may take: `GET /state/poll` is the long-poll, so a state of that
/// name could never be read (README, "The API at a glance").
pub const RESERVED_ID: &str = "poll";
/// Most states in one page of `GET /states`.
pub const MAX_PAGE: usize = 1000;

/// `?stale=true` on reads.
#[derive(Debug, Default, Deserialize)]
pub struct ReadQuery {
    /// Answer from the local replica without a round to the leader.
    #[serde(default)]
    pub stale: bool,
}

/// Waits for a linearizable read unless the caller accepts a stale one.
pub async fn read_barrier(state: &AppState, stale: bool) -> ApiResult<()> {
    if !stale {
        state.node.linearizable_read().await?;
    }
    Ok(())
}

fn view(s: &StateRecord) -> StateView<'_> {
    s.view(true)
}

fn state_reply(reply: Reply, status: StatusCode) -> ApiResult<Response> {
    match reply {
        Reply::State(s) => Ok((status, JsonOut(view(&s))).into_response()),
        other => Err(unexpected(&other)),
    }
}

/// `GET /state/{id}`.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<ReadQuery>,
) -> ApiResult<Response> {
    read_barrier(&state, query.stale).await?;
    let (store, key) = (state.node.reader(), id.clone());
    match blocking(move || load_state(&store, &key)).await? {
        Some(s) => Ok(JsonOut(with_max_attempts(&state, &s)).into_response()),
        None => Err(ApiError::not_found(format!("no state {id:?}"))),
    }
}

/// A state's view and, with a callback, `max_attempts`: this node's
/// `--callback-max-attempts`, the attempt at which the callback gives up (so a reader
/// can tell how many are left without knowing the node's flags). Serialized straight
/// from the view, never through `serde_json::Value`, so `data` comes back as sent.
#[derive(Serialize)]
struct StateWithMaxAttempts<'a> {
    #[serde(flatten)]
    state: StateView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
}

fn with_max_attempts<'a>(state: &AppState, s: &'a StateRecord) -> StateWithMaxAttempts<'a> {
    let state_view = view(s);
    let max_attempts = state_view
        .callback
        .is_some()
        .then_some(state.config.callbacks.max_attempts);
    StateWithMaxAttempts {
        state: state_view,
        max_attempts,
    }
}

/// `PUT /state/{id}`: create (201) or update under a lease (200).
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<StateBody>,
) -> ApiResult<Response> {
    let header_token = headers
        .get(LEASE_HEADER)
        .map(|v| v.to_str().map_err(|_| ApiError::invalid("bad Slct-Lease")))
        .transpose()?
        .map(parse_token)
        .transpose()?;
    let token = body.token()?.or(header_token);
    let selects = body.selects()?;
    let callback = body.callback()?;
    if let Some(Some(callback)) = &callback {
        super::allow::check_callback(&state.config.callbacks.allow, &callback.url)?;
    }
    let priority = body.priority()?;
    let max_deliveries = body.max_deliveries()?;
    let retain_ms = body.retain_ms()?;
    let data = body.data;
    match token {
        Some(token) => {
            let op = Op::UpdateState {
                id,
                token,
                data,
                selects,
                callback,
                priority,
                max_deliveries,
                retain_ms,
            };
            state_reply(state.write_keyed(&headers, op).await?, StatusCode::OK)
        }
        None if id == RESERVED_ID => Err(reserved()),
        None => {
            let op = Op::CreateState {
                id,
                data: data.unwrap_or_default(),
                selects: selects.unwrap_or_default(),
                callback: callback.flatten(),
                priority: priority.unwrap_or(0),
                max_deliveries: max_deliveries.unwrap_or(state.config.max_deliveries),
                retain_ms: retain_ms.unwrap_or(state.config.retain_done_ms),
            };
            state_reply(state.write_keyed(&headers, op).await?, StatusCode::CREATED)
        }
    }
}

/// 400: a create of [`RESERVED_ID`].
fn reserved() -> ApiError {
    ApiError::invalid(format!(
        "{RESERVED_ID:?} is reserved (GET /state/{RESERVED_ID} is the long-poll): choose another state id"
    ))
}

/// `PUT /state/poll`: the long-poll's literal route takes this PUT (a literal segment
/// wins over `{id}`), which answers as a create of the reserved id does (percent-encoded
/// spellings such as `/state/%70oll` reach [`put`] and are refused there).
pub async fn put_reserved() -> ApiError {
    reserved()
}

/// `DELETE /state/{id}` → 204.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.write_keyed(&headers, Op::DeleteState { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /state/{id}/lease`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// The current lease token.
    pub token: String,
    /// New expiry is now plus this (default 30 s).
    #[serde(default = "default_lease_ms")]
    pub extend_ms: u64,
}

/// `POST /state/{id}/lease`: heartbeat → 200 `{"token", "expires_at"}`.
pub async fn extend_lease(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<ExtendBody>,
) -> ApiResult<Response> {
    let op = Op::ExtendLease {
        id,
        token: parse_token(&body.token)?,
        extend_ms: lease_ms(body.extend_ms, "extend_ms")?,
    };
    match state.write_keyed(&headers, op).await? {
        Reply::Lease(l) => {
            Ok(JsonOut(json!({"token": l.token, "expires_at": l.expires_at})).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

/// `?token=` of `DELETE /state/{id}/lease`.
#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    /// The current lease token.
    pub token: Option<String>,
}

/// `DELETE /state/{id}/lease?token=`: give the state back → 204.
pub async fn release_lease(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
) -> ApiResult<StatusCode> {
    let token = q
        .token
        .ok_or_else(|| ApiError::invalid("token is required"))?;
    let token = parse_token(&token)?;
    state
        .write_keyed(&headers, Op::ReleaseLease { id, token })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `DELETE /states`.
#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    /// Only ids starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Only states with this status, or `paused`.
    pub status: Option<String>,
}

/// States one command of `DELETE /states` deletes.
pub const DELETE_BATCH: u32 = 1000;
/// States one `DELETE /states` request deletes before it answers `"more": true`.
pub const DELETE_PER_REQUEST: u64 = 100_000;

/// `DELETE /states?prefix=&status=` → `{"deleted": n, "more": bool}`: deletes the
/// matching states in id order, in batches of up to [`DELETE_BATCH`] (one Raft command
/// each, which examines a bounded number of states), each batch starting where the
/// previous one stopped, until the prefix is walked to its end or
/// [`DELETE_PER_REQUEST`] states are deleted; `more` says the walk stopped before the
/// end (ask again). The walk ends whatever the other states are, so each request gets
/// further than the one before; states created behind it are left for the next request.
pub async fn delete_many(
    State(state): State<AppState>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<JsonOut<serde_json::Value>> {
    if q.prefix.is_empty() && q.status.is_none() {
        return Err(ApiError::invalid(
            "name the states to delete with prefix= or status= (or both); to delete every \
             state, delete each status in turn",
        ));
    }
    if let Some(s) = q.status.as_deref() {
        Listed::parse(s).ok_or_else(|| ApiError::invalid(format!("unknown status {s:?}")))?;
    }
    let (mut deleted, mut after) = (0, None);
    loop {
        let op = Op::DeleteStates {
            prefix: q.prefix.clone(),
            status: q.status.clone(),
            limit: DELETE_BATCH,
            after: after.take(),
        };
        match state.write(op).await? {
            Reply::Deleted { count, next } => {
                deleted += count;
                after = next;
            }
            other => return Err(unexpected(&other)),
        }
        if after.is_none() || deleted >= DELETE_PER_REQUEST {
            break;
        }
    }
    Ok(JsonOut(
        json!({"deleted": deleted, "more": after.is_some()}),
    ))
}

/// `POST /state/{id}/pause` → 200 with the state (idempotent).
pub async fn pause(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let op = Op::Pause { id };
    state_reply(state.write_keyed(&headers, op).await?, StatusCode::OK)
}

/// `POST /state/{id}/resume` → 200 with the state (idempotent).
pub async fn resume(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let op = Op::Resume { id };
    state_reply(state.write_keyed(&headers, op).await?, StatusCode::OK)
}

/// Query of `GET /state/{id}/history`.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    /// Most events (1 to 1000, default 100).
    pub limit: Option<usize>,
    /// Only events numbered below this (the `next` of the previous page).
    pub before: Option<u64>,
    /// Answer from the local replica.
    #[serde(default)]
    pub stale: bool,
}

/// `GET /state/{id}/history` → `{"events": [...], "next": number|null}`, newest first.
/// A callback attempt's `duration_ms` is shown only to the admin token: it tells a
/// closed port from a silent listener (README, "By callback").
pub async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<JsonOut<serde_json::Value>> {
    let limit = page_limit(q.limit)?;
    read_barrier(&state, q.stale).await?;
    let (store, key, before) = (state.node.reader(), id.clone(), q.before);
    let events = blocking(move || match load_state(&store, &key)? {
        Some(_) => crate::engine::history::read(&store, &key, before, limit + 1).map(Some),
        None => Ok(None),
    })
    .await?;
    let Some(mut events) = events else {
        return Err(ApiError::not_found(format!("no state {id:?}")));
    };
    let next = (events.len() > limit).then(|| events[limit - 1].seq);
    events.truncate(limit);
    if !super::has_admin_token(&state.config, &headers) {
        for event in &mut events {
            if let What::CallbackFailed { duration_ms, .. } = &mut event.what {
                *duration_ms = None;
            }
        }
    }
    Ok(JsonOut(json!({"events": events, "next": next})))
}

/// `POST /state/{id}/retry`: re-arm a failed state → 200 with the state.
pub async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let op = Op::RetryFailed { id };
    state_reply(state.write_keyed(&headers, op).await?, StatusCode::OK)
}

/// Query of `GET /states`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only ids starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Only states with this status, or `paused`.
    pub status: Option<String>,
    /// Only states with at least this priority.
    pub min_priority: Option<u8>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<usize>,
    /// Cursor: the `next` of the previous page (ids after this one).
    pub after: Option<String>,
    /// Include `data`.
    #[serde(default)]
    pub full: bool,
    /// Answer from the local replica.
    #[serde(default)]
    pub stale: bool,
}

/// A page size: 1 to [`MAX_PAGE`].
pub fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit.unwrap_or(100) {
        l @ 1..=MAX_PAGE => Ok(l),
        _ => Err(ApiError::invalid(format!("limit must be 1 to {MAX_PAGE}"))),
    }
}

/// `GET /states` → `{"states": [...], "next": cursor|null}`.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let limit = page_limit(q.limit)?;
    validate::priority(q.min_priority.unwrap_or(0))?;
    let status = q
        .status
        .as_deref()
        .map(|s| Listed::parse(s).ok_or_else(|| ApiError::invalid(format!("unknown status {s:?}"))))
        .transpose()?;
    read_barrier(&state, q.stale).await?;
    let query = list::StatesQuery {
        prefix: q.prefix,
        status,
        min_priority: q.min_priority.unwrap_or(0),
        after: q.after,
        limit,
        full: q.full,
    };
    let store = state.node.reader();
    let body = blocking(move || list::states_page(&store, &query)).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Runs a storage read on the blocking pool (reads may touch the disk).
pub async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| ApiError::unavailable("internal", e.to_string()))?
        .map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(page_limit(None), Ok(100));
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(1001)).is_err());
    }
}
