//! Channels over HTTP (design.md §3.3): make, inspect, close, list, and send and receive
//! with the three ways of waiting.
//!
//! A blocking send or receive (`?wait=N`, N > 0) is parked in the channel's queue as
//! an HTTP waiter with a fresh v4 id and a deadline N seconds ahead in log time (from
//! [`Node::log_now`](crate::node::Node::log_now): a leader whose clock is behind log
//! time must not park operations that are due at once). The
//! handler registers for the id's outcome with the [`super::hub`] *before* proposing,
//! so the outcome cannot slip by. The engine itself withdraws the operation at its
//! deadline (408). If the outcome does not arrive a little after that, the handler
//! proposes [`Op::Withdraw`]: success means the operation was still parked (408); "not
//! parked" means it completed meanwhile, and its outcome is awaited a moment longer.
//!
//! A caller that goes away (its connection closes, so axum drops the handler) takes
//! its operation with it: a guard proposes [`Op::Withdraw`] from its `Drop`, and
//! retries until it settles (a write that waited behind entries that could not commit
//! until `--write-timeout` was dropped unproposed, and the operation would have stayed
//! parked until its deadline). A value
//! that meets a parked receive is only *offered* to it ([`OpOutcome::Offered`]); the
//! handler, still running and so still connected, takes it with [`Op::Claim`]. A
//! receiver that hung up never claims, and its withdrawal — however late it enters the
//! log — puts the value back at the head of the channel, so a send answered "sent" to a
//! departed receiver is received by the next one. What remains at-most-once is the
//! answer itself: a caller that disconnects after its claim committed loses the value
//! (design.md §3.3).
//!
//! Parked operations are capped: [`validate::MAX_PARKED_PER_CHAN`] per channel (in the
//! engine, so every replica agrees) and [`MAX_PARKED_PER_NODE`] per node (here); beyond
//! either the caller gets 429 `too_many_waiters`.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json as JsonOut;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::{Duration, Instant};
use uuid::Uuid;

use super::error::unexpected;
use super::error::{ApiError, ApiResult};
use super::extract::{AnyJson, Path, Query};
use super::hub::OpWaiter;
use super::states::{blocking as read_blocking, page_limit, read_barrier, ReadQuery};
use super::{wait_secs, AppState};
use crate::engine::types::ChanView;
use crate::engine::{self, SendMode};
use crate::engine::{validate, Data, Error, Op, OpOutcome, ParkedOp, RecvMode, Response as Reply};

/// Longest `wait` of a channel operation, in seconds.
pub const MAX_WAIT_SECS: u64 = 300;
/// `wait` of a receive that gives none (a send without `wait` is detached instead).
pub const DEFAULT_RECV_WAIT_SECS: u64 = 30;
/// How long past its deadline a parked operation's outcome is awaited before the
/// handler withdraws it itself.
const GRACE: Duration = Duration::from_secs(2);
/// Most HTTP sends and receives parked through one node at once.
pub const MAX_PARKED_PER_NODE: usize = 10_000;

/// Body of `PUT /chan/{name}` (may be empty: unbuffered).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MakeBody {
    /// Buffer capacity (0: unbuffered).
    #[serde(default)]
    pub capacity: i64,
}

/// `PUT /chan/{name}` → 201 created, 200 exists alike, 409 `exists` otherwise.
pub async fn make(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    validate::name("channel name", &name)?;
    let body: MakeBody = if body.iter().all(u8::is_ascii_whitespace) {
        MakeBody::default()
    } else {
        crate::json::parse_object(&body)?
    };
    let capacity = validate::capacity(body.capacity)?;
    match state
        .write_keyed(&headers, Op::MakeChan { name, capacity })
        .await?
    {
        Reply::Chan { chan, created } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, JsonOut(chan)).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

/// `GET /chan/{name}` → the channel's counts; 404 if it holds nothing.
pub async fn info(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ReadQuery>,
) -> ApiResult<JsonOut<ChanView>> {
    validate::name("channel name", &name)?;
    read_barrier(&state, q.stale).await?;
    let (store, key) = (state.node.reader(), name.clone());
    read_blocking(move || crate::engine::chan_view(&store, &key))
        .await?
        .map(JsonOut)
        .ok_or_else(|| ApiError::not_found(format!("no channel {name:?}")))
}

/// `POST /chan/{name}/close` → 200 `{"closed": true, "discarded": [{"data",
/// "sent_at"}...], "discarded_count"}`: the parked detached sends the close dropped
/// (the first 100, and how many in all); 409 `closed` if already closed.
pub async fn close(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<JsonOut<Value>> {
    match state.write_keyed(&headers, Op::CloseChan { name }).await? {
        Reply::Closed(discarded) => Ok(JsonOut(json!({
            "closed": true,
            "discarded": discarded.values,
            "discarded_count": discarded.count,
        }))),
        other => Err(unexpected(&other)),
    }
}

/// `?wait=` of send and receive.
#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    /// Seconds to block (0: do not block).
    pub wait: Option<u64>,
}

/// `POST /chan/{name}/send?wait=` with the value as the body.
pub async fn send(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<WaitQuery>,
    AnyJson(data): AnyJson<Data>,
) -> ApiResult<Response> {
    validate::name("channel name", &name)?;
    let wait = q
        .wait
        .map(|w| wait_secs(Some(w), 0, MAX_WAIT_SECS))
        .transpose()?;
    let mode = match wait {
        None => SendMode::Detached,
        Some(0) => SendMode::Try,
        Some(w) => {
            not_keyed(&headers)?;
            return blocking(&state, name, Some(data), w).await;
        }
    };
    let op = Op::Send {
        chan: name,
        data,
        mode,
    };
    match state.write_keyed(&headers, op).await? {
        Reply::Sent => Ok(sent(StatusCode::OK)),
        Reply::Parked => Ok(sent(StatusCode::ACCEPTED)),
        other => Err(unexpected(&other)),
    }
}

/// A blocking send or receive cannot be repeated with its first reply (its outcome
/// comes later, to the caller that waited): refuse a key rather than ignore it.
fn not_keyed(headers: &HeaderMap) -> ApiResult<()> {
    if headers.contains_key(super::IDEMPOTENCY_KEY) {
        return Err(ApiError::invalid(
            "Idempotency-Key is not taken with wait=N (a blocking send or receive): send \
             without wait (a durable detached send) or with wait=0 to make it idempotent",
        ));
    }
    Ok(())
}

fn sent(status: StatusCode) -> Response {
    let body = if status == StatusCode::OK {
        json!({"status": "sent"})
    } else {
        json!({"status": "parked"})
    };
    (status, JsonOut(body)).into_response()
}

/// `POST /chan/{name}/recv?wait=` → 200 `{"data", "ok"}`.
pub async fn recv(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Response> {
    validate::name("channel name", &name)?;
    let wait = wait_secs(q.wait, DEFAULT_RECV_WAIT_SECS, MAX_WAIT_SECS)?;
    if wait > 0 {
        not_keyed(&headers)?;
        return blocking(&state, name, None, wait).await;
    }
    let op = Op::Recv {
        chan: name,
        mode: RecvMode::Try,
    };
    match state.write_keyed(&headers, op).await? {
        Reply::Received { data, ok } => Ok(received(data, ok)),
        other => Err(unexpected(&other)),
    }
}

/// The body of a completed receive.
#[derive(Serialize)]
struct Received {
    data: Data,
    ok: bool,
}

fn received(data: Data, ok: bool) -> Response {
    JsonOut(Received { data, ok }).into_response()
}

/// A send (`data` is `Some`) or receive parked for up to `wait` seconds.
async fn blocking(
    state: &AppState,
    chan: String,
    data: Option<Data>,
    wait: u64,
) -> ApiResult<Response> {
    if state.hub.parked_ops() >= MAX_PARKED_PER_NODE {
        return Err(Error::TooManyWaiters(chan).into());
    }
    let parked = ParkedOp {
        id: Uuid::new_v4(),
        deadline: state.node.log_now() + wait * 1000,
    };
    let mut waiter = state.hub.op(parked.id);
    let id = parked.id;
    let mut guard = WithdrawOnDrop {
        state: Some(state.clone()),
        id,
    };
    let op = match data {
        Some(data) => Op::Send {
            chan,
            data,
            mode: SendMode::Park(parked),
        },
        None => Op::Recv {
            chan,
            mode: RecvMode::Park(parked),
        },
    };
    let reply = state.write(op).await;
    if !matches!(reply, Ok(Reply::Parked)) {
        guard.disarm();
    }
    match reply? {
        Reply::Sent => return Ok(sent(StatusCode::OK)),
        Reply::Received { data, ok } => return Ok(received(data, ok)),
        Reply::Parked => {}
        other => return Err(unexpected(&other)),
    }
    let deadline = Instant::now() + Duration::from_secs(wait) + GRACE;
    let mut outcome = match super::wait::waiting(waiter.wait_until(deadline)).await {
        Some(outcome) => outcome,
        None => withdraw(state, id, &mut waiter).await?,
    };
    if outcome == OpOutcome::Offered {
        outcome = claim(state, id).await?;
    }
    guard.disarm();
    outcome_response(outcome)
}

/// Takes the value offered to a parked receive. Like [`withdraw`], a failure is 503
/// `outcome_unknown`, never replayed on another leader: the claim may have committed.
/// An offer withdrawn first (the deadline passed) is 408, its value back in the channel.
async fn claim(state: &AppState, id: Uuid) -> ApiResult<OpOutcome> {
    match state.write(Op::Claim { id }).await {
        Ok(Reply::Received { data, ok }) => Ok(OpOutcome::Received { data, ok }),
        Ok(other) => Err(unexpected(&other)),
        Err(e) if e.code == "not_found" => Ok(OpOutcome::Expired),
        Err(e) => Err(ApiError::unavailable(
            "outcome_unknown",
            format!(
                "a value reached the receive, but taking it failed ({}): it may have been taken, or it is back in the channel",
                e.message
            ),
        )),
    }
}

/// Withdraws a parked operation if the handler is dropped before it has an outcome:
/// the caller hung up, and must not take or give a value it can no longer report.
struct WithdrawOnDrop {
    state: Option<AppState>,
    id: Uuid,
}

impl WithdrawOnDrop {
    /// The operation has its outcome (or was never parked): nothing to withdraw.
    fn disarm(&mut self) {
        self.state = None;
    }
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        tracing::debug!(id = %self.id, "HTTP caller went away; withdrawing its parked operation");
        tokio::spawn(withdraw_until_settled(state, self.id));
    }
}

/// Longest a withdrawal is retried, in real time: past any `wait` and its grace.
const WITHDRAW_RETRY_FOR: Duration = Duration::from_secs(MAX_WAIT_SECS + 60);

/// Proposes [`Op::Withdraw`] until it is settled: applied, or the operation no longer
/// parked (it completed, expired, or was withdrawn already — a withdrawal is
/// idempotent), or this node no longer leads (the operation belongs to a term that is
/// over, and the next term's first command withdraws it, design.md §3.3). A write that
/// timed out is proposed again at once — the timeout was the wait, and being queued
/// when commits resume puts the withdrawal in the first entry after the stall, before
/// values sent later can be received; any other failure is retried after a pause.
async fn withdraw_until_settled(state: AppState, id: Uuid) {
    let give_up = Instant::now() + WITHDRAW_RETRY_FOR;
    let mut pause = Duration::from_millis(50);
    loop {
        let code = match state.write(Op::Withdraw { id }).await {
            Ok(_) => return,
            Err(e) => e.code,
        };
        if matches!(
            code,
            "not_found" | "not_leader" | "no_leader" | "shutting_down"
        ) || Instant::now() + pause > give_up
        {
            return;
        }
        tracing::debug!(%id, code, "withdrawing a parked operation failed; retrying");
        if code != "outcome_unknown" {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// Withdraws a parked operation whose outcome did not come in time. The operation is
/// in the log already, so a failure here must not be replayed on another leader (that
/// would park the same value twice): it is 503 `outcome_unknown`, without the leader
/// marker the forwarding layer replays on.
async fn withdraw(state: &AppState, id: Uuid, waiter: &mut OpWaiter) -> ApiResult<OpOutcome> {
    let unknown = |why: &str| {
        ApiError::unavailable(
            "outcome_unknown",
            format!("the operation was parked, but {why}: it may still complete"),
        )
    };
    match state.write(Op::Withdraw { id }).await {
        Ok(_) => Ok(OpOutcome::Expired),
        Err(e) if e.code == "not_found" => waiter
            .wait_until(Instant::now() + GRACE)
            .await
            .ok_or_else(|| unknown("its outcome was not seen by this node")),
        Err(e) => {
            // The caller hears "unknown" now; the withdrawal goes on without it.
            tokio::spawn(withdraw_until_settled(state.clone(), id));
            Err(unknown(&format!(
                "it could not be withdrawn yet ({})",
                e.message
            )))
        }
    }
}

fn outcome_response(outcome: OpOutcome) -> ApiResult<Response> {
    match outcome {
        OpOutcome::Sent => Ok(sent(StatusCode::OK)),
        OpOutcome::Received { data, ok } => Ok(received(data, ok)),
        OpOutcome::Closed => Err(Error::Closed("the channel".into()).into()),
        OpOutcome::Expired | OpOutcome::Offered => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "no partner came within the wait, or the leader it was parked on stopped \
             leading; the operation was withdrawn",
        )),
    }
}

/// Query of `GET /chans`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only names starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<usize>,
    /// Cursor: the `next` of the previous page.
    pub after: Option<String>,
    /// Answer from the local replica.
    #[serde(default)]
    pub stale: bool,
}

/// `GET /chans` → `{"chans": [...], "next": cursor|null}`.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let limit = page_limit(q.limit)?;
    read_barrier(&state, q.stale).await?;
    let query = engine::list::ChansQuery {
        prefix: q.prefix,
        after: q.after,
        limit,
    };
    let store = state.node.reader();
    let body = read_blocking(move || engine::list::chans_page(&store, &query)).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
