//! `GET /state/poll`: the long-poll of design.md §3.2, a route of its own.
//!
//! A poll reads the leader's replica for pending states without a callback whose id
//! starts with `prefix` ([`engine::poll::candidates`]), and only if it finds one
//! proposes one Raft command, [`Op::LeasePending`], with `limit` fresh v4 tokens chosen
//! here: applying it leases the best states then (so concurrent polls in one batch get
//! different states instead of racing for the same one), and the poll returns them. A
//! poll that finds nothing writes nothing: it joins the pollers' queue in
//! [`super::hub`] and sleeps until a matching state turns pending — the hub wakes it
//! straight from the apply path — then looks again, until `wait` runs out and it
//! answers `[]`. If other polls took every state meanwhile, it looks again at once.
//!
//! The poller takes its place in the queue *before* its first look, so a state that
//! turns pending between the look and the sleep still wakes it. A poller also answers
//! `[]` early when this node stops leading (or shuts down): the client polls again and
//! reaches the new leader, rather than sleeping on a node that can no longer lease.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tokio::time::{timeout_at, Duration, Instant};
use uuid::Uuid;

use super::error::{unexpected, ApiError, ApiResult};
use super::extract::{default_lease_ms, lease_ms, Query};
use super::{wait, wait_secs, AppState};
use crate::engine::types::StateView;
use crate::engine::{self, validate, Op, Response as Reply};

/// Longest `wait` of a long-poll, in seconds.
pub const MAX_WAIT_SECS: u64 = 300;
/// Default `wait`.
pub const DEFAULT_WAIT_SECS: u64 = 30;
/// Most states one poll may lease.
pub const MAX_LIMIT: usize = 100;

/// Query of `GET /state/poll`.
#[derive(Debug, Deserialize)]
pub struct PollQuery {
    /// Only states whose id starts with this.
    #[serde(default)]
    pub prefix: String,
    /// Seconds to wait for a state (0 to 300, default 30).
    pub wait: Option<u64>,
    /// Most states to lease (1 to 100, default 1).
    pub limit: Option<usize>,
    /// Lease duration in ms (default 30000).
    pub lease_ms: Option<u64>,
    /// Only states with at least this priority (0 to 9, default 0).
    pub min_priority: Option<u8>,
}

/// `GET /state/poll`: its own route, which wins over `GET /state/{id}` (a literal
/// segment beats a parameter); the id `poll` is reserved at create.
pub async fn poll(
    State(state): State<AppState>,
    Query(q): Query<PollQuery>,
) -> ApiResult<Response> {
    let state = &state;
    let wait = wait_secs(q.wait, DEFAULT_WAIT_SECS, MAX_WAIT_SECS)?;
    let limit = match q.limit.unwrap_or(1) {
        l @ 1..=MAX_LIMIT => l,
        _ => return Err(ApiError::invalid(format!("limit must be 1 to {MAX_LIMIT}"))),
    };
    let lease_ms = lease_ms(q.lease_ms.unwrap_or_else(default_lease_ms), "lease_ms")?;
    let min_priority = q.min_priority.unwrap_or(0);
    validate::priority(min_priority)?;
    let deadline = Instant::now() + Duration::from_secs(wait);
    let _gauge = state.metrics.long_poller();
    let mut ticket = state.hub.poller(&q.prefix);
    let mut leading = state.node.leadership();
    loop {
        let found = candidates(state, &q.prefix, min_priority, 1).await?;
        if !found.is_empty() {
            let op = Op::LeasePending {
                prefix: q.prefix.clone(),
                min_priority,
                tokens: (0..limit).map(|_| Uuid::new_v4()).collect(),
                lease_ms,
            };
            let leased = match state.write(op).await? {
                Reply::States(states) => states,
                other => return Err(unexpected(&other)),
            };
            if leased.is_empty() {
                continue;
            }
            ticket.delivered(leased.iter().map(|s| s.id.as_str()));
            let views: Vec<StateView> = leased.iter().map(|s| s.view(true)).collect();
            return Ok(Json(views).into_response());
        }
        ticket.rearm();
        let woken = tokio::select! {
            woken = wait::waiting(timeout_at(deadline, ticket.woken())) => woken.is_ok(),
            _ = leading.wait_for(Option::is_none) => false,
        };
        if !woken {
            return Ok(Json(Vec::<StateView>::new()).into_response());
        }
    }
}

/// The states this poll should try to lease, read on the blocking pool (sled reads may
/// touch the disk).
async fn candidates(
    state: &AppState,
    prefix: &str,
    min_priority: u8,
    limit: usize,
) -> ApiResult<Vec<String>> {
    let (store, prefix) = (state.node.reader(), prefix.to_owned());
    tokio::task::spawn_blocking(move || {
        engine::poll::candidates(&store, &prefix, min_priority, limit)
    })
    .await
    .map_err(|e| ApiError::unavailable("internal", e.to_string()))?
    .map_err(ApiError::from)
}
