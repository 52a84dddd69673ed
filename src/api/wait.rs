//! Time a request spends waiting by design — a long-poll asleep until a state turns
//! pending, a blocking send or receive parked for a partner — kept apart from its
//! service time, so a healthy cluster's latency is not its pollers' `wait`.
//!
//! A handler runs its wait under [`waiting`]; the metrics' recording runs the request
//! under [`measured`] and records the two times in their own series. A follower that
//! relays a request learns the leader's wait from the [`WAITED_HEADER`] of the answer
//! and adds it with [`add_wait`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Header on a relayed answer: milliseconds the leader spent waiting. Only on answers
/// to forwarded requests; the relaying node removes it.
pub const WAITED_HEADER: &str = "slct-waited-ms";

tokio::task_local! {
    /// Nanoseconds the current request has waited, for [`measured`].
    static WAITED: Arc<AtomicU64>;
}

/// Runs `request` (a request's whole handling) and returns its output with the time
/// it waited.
pub async fn measured<T>(request: impl Future<Output = T>) -> (T, Duration) {
    let waited = Arc::new(AtomicU64::new(0));
    let out = WAITED.scope(waited.clone(), request).await;
    (out, Duration::from_nanos(waited.load(Ordering::Relaxed)))
}

/// Runs `wait` (a long-poll's sleep, a parked operation's wait) and counts its time as
/// the current request's wait rather than its service time.
pub async fn waiting<T>(wait: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = wait.await;
    add_wait(started.elapsed());
    out
}

/// Adds `d` to the current request's wait (no-op outside a request).
pub fn add_wait(d: Duration) {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let _ = WAITED.try_with(|w| w.fetch_add(nanos, Ordering::Relaxed));
}
