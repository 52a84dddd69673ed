//! Resuming states by callback (design.md §3.4): the leader POSTs each state that the
//! engine leased to the callback dispatcher to the callback's URL.
//!
//! # Life of a delivery
//! 1. A state with a callback turns deliverable. The same command leases it to the
//!    dispatcher, for the attempt only: the callback's timeout plus
//!    [`CALLBACK_LEASE_MARGIN_MS`](crate::engine::CALLBACK_LEASE_MARGIN_MS) (2 s) to act on the answer (see the engine's `ctx`);
//!    its id arrives in [`crate::engine::Effects::pending`] with `callback: true`.
//! 2. The dispatcher reads the leased state from this node's replica; nothing more is
//!    proposed before the POST, so a resume costs two commits: the one that made the
//!    state deliverable and the update the callback answers.
//! 3. It POSTs the full state (lease included) with `Slct-State-Id`, `Slct-Lease`,
//!    `Slct-Attempt`, `Idempotency-Key: {id}:{version}` and, with a secret,
//!    `Slct-Timestamp: <unix ms>` and `Slct-Signature: sha256=<hex HMAC-SHA256 of
//!    "<timestamp>.<body>">` (see [`signature`]).
//! 4. A 2xx with a JSON body is applied as the update under that lease; 202, 204 or
//!    an empty 2xx mean the receiver will PUT the update itself, so the lease is
//!    extended ([`Op::ExtendLease`], same token) to `--callback-defer-ms` from then.
//!    Anything else — a status, a redirect, a refused connection, a timeout, an answer
//!    larger than `--max-body`, a body that is not a valid update, a target that
//!    `--callback-allow` no longer permits — is [`Op::CallbackFailed`] with an
//!    exponential, jittered backoff.
//!
//! # What a callback target can and cannot make the leader do
//! The URL comes from whoever may PUT a state, so the leader treats the target as
//! untrusted: redirects are never followed (a 3xx is a failed attempt, so the lease and
//! signature go only to the URL the state names), the answer is read only up to
//! `--max-body` bytes (the same limit as a PUT; the rest is never buffered), and
//! `last_error` says only "no valid HTTP answer" for every transport failure — it does
//! not tell a refused connection from a timeout or a non-HTTP service, so it cannot be
//! used to map which ports of the leader's network are open. Every other `last_error`
//! is a fixed sentence with the answer's HTTP status and nothing of the answer's
//! content (not even a parser's quote of it), at most 200 bytes: what a client reads
//! back of a target is its status. `--callback-allow` ([`allow`]) restricts targets to
//! listed hosts and networks.
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
//! expiry (applied by whoever leads then) makes the state deliverable again, which is
//! step 1 once more, with a new token. Nothing about a retry lives only in this process:
//! a leased state whose POST never happened (this node lost leadership, or fell behind
//! the effects broadcast) is delivered when its lease lapses.
//!
//! # Why a slow target delays no other
//! Attempts are grouped by target (`host:port` of the URL): at most
//! [`PER_TARGET`] run at once for one target, the rest of its states wait in that
//! target's own queue, and a target's worker takes the next one when an attempt ends.
//! Across targets at most `concurrency` attempts run at once, each bounded by the
//! callback's `timeout_ms` (at most a minute). So 64 callbacks to a tarpit hold 8 slots
//! and their queue, and a healthy target's callback starts at once. The effects loop
//! never waits: it reads the state's target and queues it; past [`MAX_QUEUED`] waiting
//! states it drops the dispatch, and the lease's expiry delivers the state again later.
//! The apply path only ever sends to a broadcast channel.
//!
//! # Where it runs
//! The dispatcher is a service of the node, started beside its HTTP server
//! ([`crate::server::serve`]) with [`start`], and stopped when the [`Dispatcher`]
//! handle it returns is dropped. It records attempts in the node's [`Metrics`].
//!
//! # Layout
//! - this module: the configuration, and the queues by target that workers take
//!   states from;
//! - `attempt`: one delivery — the POST, reading the answer, proposing its outcome;
//! - `sign`: the HMAC signature of a body ([`signature`]);
//! - [`allow`]: `--callback-allow`, the targets callbacks may have.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use allow::CallbackAllow;
use rand::Rng;
use tokio::sync::{broadcast, watch, Semaphore};

pub mod allow;
mod attempt;
mod sign;

pub use sign::signature;

use crate::metrics::Metrics;
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
/// Most attempts in flight to one target (`host:port`) at once.
pub const PER_TARGET: usize = 8;
/// Most states waiting in the targets' queues, across targets.
pub const MAX_QUEUED: usize = 10_000;

/// How callbacks are delivered.
#[derive(Clone, Debug)]
pub struct CallbackConfig {
    /// `--callback-secret`: sign bodies with HMAC-SHA256.
    pub secret: Option<String>,
    /// `--callback-allow`: the hosts and networks callbacks may target (empty: any).
    pub allow: CallbackAllow,
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
            allow: CallbackAllow::default(),
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

/// `last_error` for every transport failure: deliberately one sentence, so that a
/// client who may set callback URLs learns nothing about the leader's network from it.
pub const NO_VALID_ANSWER: &str =
    "no valid HTTP answer (connection failed, timed out, or not HTTP)";

/// The dispatcher's shared parts.
struct Shared {
    node: Node,
    config: CallbackConfig,
    /// Largest answer read, in bytes (`--max-body`).
    max_answer: usize,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    /// States with an attempt in flight or queued → whether another was asked for
    /// meanwhile.
    in_flight: Mutex<HashMap<String, bool>>,
    /// Per target (`host:port`): attempts running and states waiting.
    targets: Mutex<HashMap<String, Target>>,
}

/// One callback target's share of the dispatcher.
#[derive(Default)]
struct Target {
    /// Workers running for it (at most [`PER_TARGET`]).
    running: usize,
    /// States waiting for one of its workers, in arrival order.
    waiting: VecDeque<String>,
}

impl Shared {
    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_targets(&self) -> std::sync::MutexGuard<'_, HashMap<String, Target>> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An attempt for `id` ended: true if it is done with, false if another attempt
    /// was asked for meanwhile.
    fn finished(&self, id: &str) -> bool {
        let mut in_flight = self.lock_in_flight();
        match in_flight.get_mut(id) {
            Some(again) if *again => {
                *again = false;
                false
            }
            _ => {
                in_flight.remove(id);
                true
            }
        }
    }

    /// The next state for a worker of `target`, or `None` and the worker stops.
    fn next_for(&self, target: &str) -> Option<String> {
        let mut targets = self.lock_targets();
        let t = targets.get_mut(target)?;
        if let Some(id) = t.waiting.pop_front() {
            return Some(id);
        }
        t.running -= 1;
        if t.running == 0 {
            targets.remove(target);
        }
        None
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

/// The running dispatcher of one node: dropping it stops the dispatcher.
#[must_use = "the dispatcher stops when its handle is dropped"]
pub struct Dispatcher {
    _stop: watch::Sender<()>,
}

/// Starts the dispatcher of `node` (inside a tokio runtime): it works while the node
/// leads, until the handle is dropped. Answers longer than `max_answer` bytes are
/// failed attempts.
pub fn start(
    node: Node,
    config: CallbackConfig,
    max_answer: usize,
    metrics: Arc<Metrics>,
) -> Dispatcher {
    let (stop, stopped) = watch::channel(());
    let client = crate::http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let d = Arc::new(Shared {
        permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
        client,
        in_flight: Mutex::default(),
        targets: Mutex::default(),
        node,
        config,
        max_answer,
        metrics,
    });
    tokio::spawn(run(d, stopped));
    Dispatcher { _stop: stop }
}

async fn run(d: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let mut leadership = d.node.leadership();
    loop {
        let leading = leadership.borrow_and_update().is_some();
        tokio::select! {
            _ = stop.changed() => return,
            changed = leadership.changed() => if changed.is_err() { return },
            () = lead(&d), if leading => return,
        }
    }
}

/// While leader: every state leased to the dispatcher. What it misses (effects applied
/// before it led, or lost when it lagged) is leased again, and delivered, when the
/// lease lapses.
async fn lead(d: &Arc<Shared>) {
    let mut effects = d.node.subscribe();
    loop {
        match effects.recv().await {
            Ok(e) => {
                for p in e.pending.iter().filter(|p| p.callback) {
                    dispatch(d, &p.id);
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "callback dispatch fell behind; leases will lapse and retry"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Hands `id` to a worker of its target, or queues it there, or asks the attempt in
/// flight to look again when it ends. Never waits (see "Why a slow target delays no
/// other" above); a state it drops is delivered when its lease lapses.
fn dispatch(d: &Arc<Shared>, id: &str) {
    if d.ask_again(id) {
        return;
    }
    let Some(target) = target_of(d, id) else {
        return;
    };
    let mut targets = d.lock_targets();
    let t = targets.entry(target.clone()).or_default();
    if t.running < PER_TARGET.min(d.config.concurrency.max(1)) {
        t.running += 1;
        d.lock_in_flight().insert(id.to_owned(), false);
        tokio::spawn(work(d.clone(), target, id.to_owned()));
    } else if d.lock_in_flight().len() < MAX_QUEUED {
        t.waiting.push_back(id.to_owned());
        d.lock_in_flight().insert(id.to_owned(), false);
    } else {
        tracing::warn!(
            id,
            "callback queues are full; the state is delivered when its lease lapses"
        );
    }
}

/// The target (`host:port`) of the callback of the state `id`, if it has one.
fn target_of(d: &Shared, id: &str) -> Option<String> {
    let state = crate::engine::load_state(&d.node.reader(), id).ok()??;
    let url = reqwest::Url::parse(&state.callback?.url).ok()?;
    Some(format!(
        "{}:{}",
        url.host_str()?,
        url.port_or_known_default()?
    ))
}

/// A worker of `target`: attempts `id`, then the target's next waiting state, until
/// its queue is empty. While this node does not lead it attempts nothing: the states
/// it drops are delivered by the next leader when their leases lapse.
async fn work(d: Arc<Shared>, target: String, mut id: String) {
    loop {
        let permit = if d.node.is_leader() {
            d.permits.clone().acquire_owned().await.ok()
        } else {
            None
        };
        match permit {
            Some(_permit) => {
                let mut last = None;
                loop {
                    last = attempt::attempt(&d, &id, last).await.or(last);
                    if d.finished(&id) {
                        break;
                    }
                }
            }
            None => {
                d.lock_in_flight().remove(&id);
            }
        }
        match d.next_for(&target) {
            Some(next) => id = next,
            None => return,
        }
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
}
