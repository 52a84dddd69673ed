//! Running totals of what the state machine holds — states by status, blocked senders
//! and receivers, armed timers — and of the states deleted (by request, by retention),
//! kept in [`Table::Meta`] as commands change them.
//!
//! `/metrics` reads them in constant time; counting the tables instead would walk a
//! million entries per scrape on a node with a million waiting selects. They are part of
//! the state machine (deterministic, in snapshots), so every replica reports the same.

use serde::{Deserialize, Serialize};

use super::store::{get_record, put_record};
use super::store::{Store, StoreError, Table, Tx};
use super::types::Status;

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Counter {
    /// States with this status.
    States(Status),
    /// Blocked senders in all channel queues (selects, detached and HTTP sends).
    Senders,
    /// Blocked receivers in all channel queues.
    Receivers,
    /// Armed timers: blocked selects with a timer, and parked HTTP operations.
    Timers,
    /// States deleted since the log began, for this reason (only ever grows).
    Deleted(DeleteReason),
    /// Detached sends discarded by closes since the log began.
    Discarded,
}

/// Why a state was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeleteReason {
    /// `DELETE /state/{id}` or `DELETE /states`.
    Request,
    /// It was `done` for its `retain_ms`.
    Retention,
}

impl Counter {
    fn key(self) -> &'static [u8] {
        match self {
            Counter::States(Status::Waiting) => b"count/waiting",
            Counter::States(Status::Pending) => b"count/pending",
            Counter::States(Status::Leased) => b"count/leased",
            Counter::States(Status::Done) => b"count/done",
            Counter::States(Status::Failed) => b"count/failed",
            Counter::Senders => b"count/senders",
            Counter::Receivers => b"count/receivers",
            Counter::Timers => b"count/timers",
            Counter::Deleted(DeleteReason::Request) => b"count/deleted/request",
            Counter::Deleted(DeleteReason::Retention) => b"count/deleted/retention",
            Counter::Discarded => b"count/discarded",
        }
    }
}

/// The totals, as `/metrics` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// States waiting.
    pub waiting: u64,
    /// States pending.
    pub pending: u64,
    /// States leased.
    pub leased: u64,
    /// States done.
    pub done: u64,
    /// States failed.
    pub failed: u64,
    /// Blocked senders.
    pub senders: u64,
    /// Blocked receivers.
    pub receivers: u64,
    /// Armed timers.
    pub timers: u64,
    /// States deleted by `DELETE /state/{id}` and `DELETE /states`, ever.
    pub deleted_by_request: u64,
    /// States deleted when their retention ran out, ever.
    pub deleted_by_retention: u64,
    /// Detached sends discarded by closes, ever.
    pub discarded: u64,
}

impl Counts {
    /// All states.
    pub fn states(&self) -> u64 {
        self.waiting + self.pending + self.leased + self.done + self.failed
    }
}

/// Reads the totals from a store.
pub fn counts<S: Store + ?Sized>(store: &S) -> Result<Counts, StoreError> {
    let tx = Tx::new(store);
    let get = |c: Counter| -> Result<u64, StoreError> {
        Ok(get_record(&tx, Table::Meta, c.key())?.unwrap_or(0))
    };
    Ok(Counts {
        waiting: get(Counter::States(Status::Waiting))?,
        pending: get(Counter::States(Status::Pending))?,
        leased: get(Counter::States(Status::Leased))?,
        done: get(Counter::States(Status::Done))?,
        failed: get(Counter::States(Status::Failed))?,
        senders: get(Counter::Senders)?,
        receivers: get(Counter::Receivers)?,
        timers: get(Counter::Timers)?,
        deleted_by_request: get(Counter::Deleted(DeleteReason::Request))?,
        deleted_by_retention: get(Counter::Deleted(DeleteReason::Retention))?,
        discarded: get(Counter::Discarded)?,
    })
}

/// Adds `delta` to a counter in the transaction.
pub fn add<S: Store + ?Sized>(
    tx: &mut Tx<'_, S>,
    counter: Counter,
    delta: i64,
) -> Result<(), StoreError> {
    if delta == 0 {
        return Ok(());
    }
    let current: u64 = get_record(tx, Table::Meta, counter.key())?.unwrap_or(0);
    let updated = current.checked_add_signed(delta).ok_or_else(|| {
        StoreError::Invariant(format!(
            "counter {counter:?} would go from {current} by {delta}"
        ))
    })?;
    put_record(tx, Table::Meta, counter.key().to_vec(), &updated)
}
