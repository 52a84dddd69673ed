//! Resuming states by callback (DESIGN §3.4): the leader leases each pending state that
//! has a callback and POSTs it to the callback's URL.
//!
//! # Life of a delivery
//! 1. A state with a callback turns pending (its id arrives in [`crate::engine::Effects::pending`]
//!    with `callback: true`), or this node has just become leader and finds it in the
//!    `PendingCallback` index.
//! 2. The dispatcher proposes [`Op::LeaseForCallback`] with a fresh token and a lease
//!    for the attempt only: the callback's timeout plus `LEASE_MARGIN_MS` (2 s) to act
//!    on the answer. The engine answers with the leased state, or with nothing if
//!    someone else got there first.
//! 3. It POSTs the full state (lease included) with `Slct-State-Id`, `Slct-Lease`,
//!    `Slct-Attempt`, `Idempotency-Key: {id}:{version}` and, with a secret,
//!    `Slct-Signature: sha256=<hex HMAC-SHA256 of the body>`.
//! 4. A 2xx with a JSON body is applied as the update under that lease; 202, 204 or
//!    an empty 2xx mean the receiver will PUT the update itself, so the lease is
//!    extended ([`Op::ExtendLease`], same token) to `--callback-defer-ms` from then.
//!    Anything else — a status, a refused connection, a timeout, a body that is not a
//!    valid update — is [`Op::CallbackFailed`] with an exponential, jittered backoff.
//!
//! # Why the lease is short, and extended on deferral
//! If the leader dies with an attempt in flight, nobody records its outcome: the new
//! leader can deliver again only when that attempt's lease lapses. So the lease covers
//! the attempt and no more, and failover redelivers within about the callback's
//! timeout. Only a receiver that defers needs longer (it PUTs later, within the lease),
//! and it gets that time once it has said so. The extension can find the lease gone:
//! the receiver's own PUT came first (it ends the lease), or the answer came so late
//! that the lease had lapsed and the state is redelivered as usual. Either way that
//! is logged and nothing else is done.
//!
//! # Why retries survive a change of leader
//! A failed attempt keeps the dispatcher's lease until the retry time; the lease's
//! expiry (applied by whoever leads then) makes the state pending again, which is step
//! 1 once more. Nothing about a retry lives only in this process.
//!
//! Attempts run on their own tasks, at most `concurrency` at once, each bounded by
//! the callback's `timeout_ms`; the apply path only ever sends to a broadcast channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use tokio::sync::{broadcast, watch, Semaphore};
use uuid::Uuid;

use crate::api::metrics::Metrics;
use crate::engine::types::State;
use crate::engine::wire::StateBody;
use crate::engine::{keys, Error, Op, Response, Store, Table};
use crate::node::Node;

/// Default `--callback-max-attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 20;
/// Default number of callback attempts in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// First retry delay.
pub const BACKOFF_BASE_MS: u64 = 200;
/// Longest retry delay.
pub const BACKOFF_MAX_MS: u64 = 60_000;
/// Default `--callback-defer-ms`.
pub const DEFAULT_DEFER_MS: u64 = 30_000;
/// Lease beyond the callback's timeout, for the answer to be applied (or the lease
/// extended).
const LEASE_MARGIN_MS: u64 = 2_000;
/// Ids read from the `PendingCallback` index at a time.
const SCAN_PAGE: usize = 256;

/// How callbacks are delivered.
#[derive(Clone, Debug)]
pub struct CallbackConfig {
    /// `--callback-secret`: sign bodies with HMAC-SHA256.
    pub secret: Option<String>,
    /// `--callback-max-attempts`: after this many failures the state is `failed`.
    pub max_attempts: u32,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// `--callback-defer-ms`: after a 202 or 204, the receiver has this long to PUT
    /// the update with the attempt's lease.
    pub defer_ms: u64,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            secret: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            concurrency: DEFAULT_CONCURRENCY,
            defer_ms: DEFAULT_DEFER_MS,
        }
    }
}

/// The delay before retry number `attempts + 1`: 200 ms doubling up to 60 s, with
/// "equal jitter" (between half the delay and the whole), so that a crowd of failed
/// callbacks does not come back in step.
pub fn backoff_ms(attempts: u32, rng: &mut impl Rng) -> u64 {
    let base = BACKOFF_BASE_MS
        .saturating_mul(1u64 << attempts.min(20))
        .min(BACKOFF_MAX_MS);
    base / 2 + rng.gen_range(0..=base / 2)
}

/// `sha256=<hex HMAC-SHA256 of body>`, the `Slct-Signature` header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The dispatcher's shared parts.
struct Dispatcher {
    node: Node,
    config: CallbackConfig,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    /// States with an attempt in flight → whether another was asked for meanwhile.
    in_flight: Mutex<HashMap<String, bool>>,
}

impl Dispatcher {
    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// If an attempt for `id` is in flight, asks it to look again when it ends.
    fn ask_again(&self, id: &str) -> bool {
        match self.lock_in_flight().get_mut(id) {
            Some(again) => {
                *again = true;
                true
            }
            None => false,
        }
    }
}

/// Starts the dispatcher: it works while this node leads, until `stop` changes.
pub fn spawn(node: Node, config: CallbackConfig, metrics: Arc<Metrics>, stop: watch::Receiver<()>) {
    let d = Arc::new(Dispatcher {
        permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
        client: reqwest::Client::new(),
        in_flight: Mutex::default(),
        node,
        config,
        metrics,
    });
    tokio::spawn(run(d, stop));
}

async fn run(d: Arc<Dispatcher>, mut stop: watch::Receiver<()>) {
    let mut leadership = d.node.leadership();
    loop {
        let leading = *leadership.borrow_and_update();
        tokio::select! {
            _ = stop.changed() => return,
            changed = leadership.changed() => if changed.is_err() { return },
            () = lead(&d), if leading => return,
        }
    }
}

/// While leader: everything already pending, then every state that turns pending.
async fn lead(d: &Arc<Dispatcher>) {
    let mut effects = d.node.subscribe();
    scan(d).await;
    loop {
        match effects.recv().await {
            Ok(e) => {
                for p in e.pending.iter().filter(|p| p.callback) {
                    dispatch(d, &p.id).await;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => scan(d).await,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Dispatches every state in the `PendingCallback` index, a page at a time (the
/// index may be large; only a page of ids is in memory).
async fn scan(d: &Arc<Dispatcher>) {
    let mut from = Vec::new();
    loop {
        let page: Vec<Vec<u8>> = d
            .node
            .store()
            .scan_from(Table::PendingCallback, &from)
            .filter_map(Result::ok)
            .map(|(key, _)| key)
            .filter(|key| *key != from)
            .take(SCAN_PAGE)
            .collect();
        let Some(last) = page.last().cloned() else {
            return;
        };
        for key in page {
            dispatch(d, &keys::parse_at_state(&key).1).await;
        }
        from = last;
    }
}

/// Starts an attempt for `id` once a permit is free, or asks the attempt in flight
/// to look again when it ends. Waiting for a permit holds up the caller (the effects
/// loop): effects then queue up, and if they overflow, the next scan of the index
/// picks up whatever was missed. So memory stays bounded however many are due.
async fn dispatch(d: &Arc<Dispatcher>, id: &str) {
    if d.ask_again(id) {
        return;
    }
    let Ok(permit) = d.permits.clone().acquire_owned().await else {
        return;
    };
    // Registered only now that nothing is awaited before the spawn: a dispatch dropped
    // while it waits for a permit (leadership lost) leaves nothing behind.
    if d.ask_again(id) {
        return;
    }
    d.lock_in_flight().insert(id.to_owned(), false);
    let (d, id) = (d.clone(), id.to_owned());
    tokio::spawn(async move {
        let _permit = permit;
        loop {
            attempt(&d, &id).await;
            let mut in_flight = d.lock_in_flight();
            match in_flight.get_mut(&id) {
                Some(again) if *again => *again = false,
                _ => {
                    in_flight.remove(&id);
                    return;
                }
            }
        }
    });
}

/// One delivery attempt.
async fn attempt(d: &Dispatcher, id: &str) {
    let Some(timeout_ms) = callback_timeout(d, id) else {
        return;
    };
    let token = Uuid::new_v4();
    let op = Op::LeaseForCallback {
        id: id.to_owned(),
        token,
        lease_ms: timeout_ms.saturating_add(LEASE_MARGIN_MS),
    };
    let state = match d.node.write(op).await.map(|a| a.reply) {
        Ok(Ok(Response::CallbackLease(Some(state)))) => state,
        Ok(_) => return,
        Err(e) => return tracing::debug!(id, error = %e, "callback lease not taken"),
    };
    let error = match post(d, &state, token).await {
        Ok(None) => return defer(d, id, token).await,
        Ok(Some(update)) => match apply_update(d, id, token, update).await {
            Ok(()) => return d.metrics.callback("applied"),
            Err(e) => e,
        },
        Err(e) => e,
    };
    fail(d, &state, token, error).await;
}

/// The callback's timeout, if the state (still) has a callback.
fn callback_timeout(d: &Dispatcher, id: &str) -> Option<u64> {
    let bytes = d.node.store().get(Table::States, id.as_bytes()).ok()??;
    let state: State = serde_json::from_slice(&bytes).ok()?;
    state.callback.map(|c| c.timeout_ms)
}

/// POSTs the state; `Ok(Some(body))` is an update to apply, `Ok(None)` a deferral.
async fn post(d: &Dispatcher, state: &State, token: Uuid) -> Result<Option<StateBody>, String> {
    let callback = state
        .callback
        .as_ref()
        .ok_or("the state lost its callback")?;
    let body = serde_json::to_vec(&state.view(true)).map_err(|e| e.to_string())?;
    let mut request = d
        .client
        .post(&callback.url)
        .timeout(Duration::from_millis(callback.timeout_ms))
        .header("content-type", "application/json")
        .header("slct-state-id", &state.id)
        .header("slct-lease", token.to_string())
        .header("slct-attempt", (state.attempts + 1).to_string())
        .header("idempotency-key", format!("{}:{}", state.id, state.version));
    if let Some(secret) = &d.config.secret {
        request = request.header("slct-signature", signature(secret, &body));
    }
    let response = request.body(body).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("callback answered HTTP {}", status.as_u16()));
    }
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if status.as_u16() == 202 || status.as_u16() == 204 || bytes.iter().all(u8::is_ascii_whitespace)
    {
        return Ok(None);
    }
    crate::api::extract::parse::<StateBody>(&bytes)
        .map(Some)
        .map_err(|e| format!("callback answered an invalid state: {}", e.message))
}

/// Applies the callback's answer as the update under its lease.
async fn apply_update(
    d: &Dispatcher,
    id: &str,
    token: Uuid,
    body: StateBody,
) -> Result<(), String> {
    let invalid = |e: Error| format!("callback answered an invalid update: {e}");
    let op = Op::UpdateState {
        id: id.to_owned(),
        token,
        selects: body.selects().map_err(invalid)?,
        callback: body.callback().map_err(invalid)?,
        data: body.data,
    };
    match d.node.write(op).await {
        Ok(applied) => applied.reply.map(|_| ()).map_err(invalid),
        Err(e) => Err(format!("the update could not be applied: {e}")),
    }
}

/// The receiver will PUT the update itself: give it `defer_ms` from now.
async fn defer(d: &Dispatcher, id: &str, token: Uuid) {
    d.metrics.callback("deferred");
    let op = Op::ExtendLease {
        id: id.to_owned(),
        token,
        extend_ms: d.config.defer_ms,
    };
    match d.node.write(op).await.map(|a| a.reply) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::info!(
            id,
            error = %e,
            "deferred callback: lease not extended (updated already, or lapsed)"
        ),
        Err(e) => tracing::info!(id, error = %e, "deferred callback: lease not extended"),
    }
}

/// Records a failed attempt: retry later, or give up.
async fn fail(d: &Dispatcher, state: &State, token: Uuid, error: String) {
    let backoff_ms = backoff_ms(state.attempts, &mut rand::thread_rng());
    let gave_up = state.attempts + 1 >= d.config.max_attempts;
    tracing::info!(id = %state.id, attempt = state.attempts + 1, %error, "callback failed");
    let op = Op::CallbackFailed {
        id: state.id.clone(),
        token,
        error,
        max_attempts: d.config.max_attempts,
        backoff_ms,
    };
    match d.node.write(op).await.map(|a| a.reply) {
        Ok(Ok(_)) => d
            .metrics
            .callback(if gave_up { "gave_up" } else { "failed" }),
        Ok(Err(e)) => tracing::debug!(id = %state.id, error = %e, "callback failure not recorded"),
        Err(e) => tracing::debug!(id = %state.id, error = %e, "callback failure not recorded"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_with_jitter_up_to_a_minute() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempts in 0..40 {
            let base = (200u64 << attempts.min(20)).min(60_000);
            let ms = backoff_ms(attempts, &mut rng);
            assert!(ms >= base / 2 && ms <= base, "{attempts}: {ms}");
        }
        assert!(backoff_ms(0, &mut rng) <= 200);
        assert!(backoff_ms(30, &mut rng) >= 30_000);
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
