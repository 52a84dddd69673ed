//! Waiting for a condition: the one way tests wait, so no test sleeps in place of a
//! condition it can check.

use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] checks again: short against in-process nodes, and a few
/// dozen loopback requests a second against a cluster of processes.
const POLL: Duration = Duration::from_millis(20);

/// What a check of [`eventually`] gives: `true` or a value once the condition holds.
pub trait Settled {
    /// What [`eventually`] returns.
    type Value;
    /// `Some` once the condition holds.
    fn settled(self) -> Option<Self::Value>;
}

impl Settled for bool {
    type Value = ();
    fn settled(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Settled for Option<T> {
    type Value = T;
    fn settled(self) -> Option<T> {
        self
    }
}

/// Checks `check` until it holds (`true`, or `Some(value)`: returned) and panics with
/// `what` once `limit` has passed. The limit is a generous bound for a loaded machine,
/// never a measurement.
pub async fn eventually<F, Fut>(
    limit: Duration,
    what: &str,
    check: F,
) -> <Fut::Output as Settled>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Settled,
{
    within(limit, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// [`eventually`] for a caller that says itself what went wrong: `None` once `limit`
/// has passed.
pub async fn within<F, Fut>(
    limit: Duration,
    mut check: F,
) -> Option<<Fut::Output as Settled>::Value>
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Settled,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await.settled() {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}
