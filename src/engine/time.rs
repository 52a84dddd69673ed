//! The passing of log time: timers fire, parked HTTP operations and leases expire, and
//! `done` states whose retention ran out are deleted.
//!
//! Every command first advances the log clock to its `now` (never backwards) and does
//! whatever fell due up to then, in deadline order, before its own work. So a timer due
//! before a command's time has fired before that command looks at its select, exactly
//! as if time had been continuous; a `tick` is a command that does only this.

use super::chan::Completion;
use super::counts::DeleteReason;
use super::ctx::Ctx;
use super::error::Error;
use super::history::What;
use super::keys::{self, Due};
use super::store::{get_record, put_record};
use super::store::{Store, StoreError, Table, Tx};
use super::types::{Case, Millis};

/// The log clock: the latest time any applied command carried.
pub fn clock<S: Store + ?Sized>(tx: &Tx<'_, S>) -> Result<Millis, StoreError> {
    Ok(get_record(tx, Table::Meta, keys::META_CLOCK)?.unwrap_or(0))
}

/// The earliest deadline (timer, parked operation, lease, retention or idempotency
/// record) still to come, so the leader knows when to propose a tick.
pub fn next_deadline<S: Store + ?Sized>(tx: &Tx<'_, S>) -> Result<Option<Millis>, StoreError> {
    let mut earliest = None;
    for table in [
        Table::Timers,
        Table::Leases,
        Table::Retention,
        Table::IdempotencyExpiry,
    ] {
        if let Some(key) = tx.first_key(table)? {
            let at = keys::deadline(&key)?;
            earliest = Some(earliest.map_or(at, |e: Millis| e.min(at)));
        }
    }
    Ok(earliest)
}

/// How far one command may move log time ahead. A leader whose clock is further ahead
/// (after a long outage) catches up in steps of this size (see the node's batcher and
/// ticker); anything further is a buggy or hostile entry, refused by [`log_time`].
pub const MAX_CLOCK_JUMP_MS: Millis = 3_600_000;

/// The latest log time a command may carry: 2^53 - 1 ms (year 287,396), the largest
/// integer every JSON client reads exactly.
pub const MAX_LOG_TIME: Millis = (1 << 53) - 1;

/// The log time of a command carrying `proposed`: never earlier than the clock; an
/// error if `proposed` jumps more than [`MAX_CLOCK_JUMP_MS`] past a running clock (the
/// first command of a fresh log sets it) or beyond [`MAX_LOG_TIME`].
pub fn log_time<S: Store + ?Sized>(
    tx: &Tx<'_, S>,
    proposed: Millis,
) -> Result<Result<Millis, Error>, StoreError> {
    let clock = clock(tx)?;
    let jump = clock > 0 && proposed > clock.saturating_add(MAX_CLOCK_JUMP_MS);
    if jump || proposed > MAX_LOG_TIME {
        return Ok(Err(Error::ClockJump(format!(
            "the command's time {proposed} is too far ahead of log time {clock}"
        ))));
    }
    Ok(Ok(proposed.max(clock)))
}

/// Longest a parked HTTP operation may wait, in log time: an hour (the API allows 300 s).
pub const MAX_PARK_MS: Millis = 3_600_000;

/// A parked operation's deadline must lie within [`MAX_PARK_MS`] of `now`, so no entry
/// can park an operation forever.
pub fn check_deadline(now: Millis, deadline: Millis) -> Result<(), Error> {
    if deadline > now.saturating_add(MAX_PARK_MS) {
        return Err(Error::Invalid(format!(
            "a parked operation waits at most {MAX_PARK_MS} ms"
        )));
    }
    Ok(())
}

impl<S: Store + ?Sized> Ctx<'_, '_, S> {
    /// Records the clock and does everything due up to `self.now`.
    pub fn advance(&mut self) -> Result<(), StoreError> {
        put_record(self.tx, Table::Meta, keys::META_CLOCK.to_vec(), &self.now)?;
        for due in self.due(Table::Timers)? {
            match keys::parse_timer(&due)?.1 {
                Due::Select { state, select } => self.fire_timer(&state, &select)?,
                Due::Op(op) => {
                    self.withdraw_op(op)?;
                }
            }
        }
        for due in self.due(Table::Leases)? {
            let (expires_at, id) = keys::parse_at_state(&due)?;
            if let Some(mut state) = self.state(&id)? {
                if state
                    .lease
                    .as_ref()
                    .is_some_and(|l| l.expires_at == expires_at)
                {
                    state.lease = None;
                    state.version += 1;
                    self.put_state(state)?;
                    self.note(&id, What::LeaseExpired);
                }
            }
        }
        // `done` states whose retention ran out (design.md §3.2). Nothing above can
        // change a `done` state, so the index read here is current.
        for due in self.due(Table::Retention)? {
            let (_, id) = keys::parse_at_state(&due)?;
            let state = self.state(&id)?;
            let expired = state
                .and_then(|s| s.delete_at())
                .is_some_and(|at| at <= self.now);
            if expired {
                // The state is there: this cannot be `not_found`.
                let _ = self.delete_state(&id, DeleteReason::Retention)?;
            }
        }
        for due in self.due(Table::IdempotencyExpiry)? {
            let (_, key) = keys::parse_at_state(&due)?;
            self.forget_idempotency(&key)?;
        }
        self.flush()
    }

    /// Keys of a deadline-ordered table that are due at `self.now`. A key starts with
    /// its deadline, big-endian, so those due sort below `now + 1` (log time stays far
    /// below `u64::MAX`, see [`MAX_LOG_TIME`]).
    fn due(&self, table: Table) -> Result<Vec<Vec<u8>>, StoreError> {
        let after = self.now.saturating_add(1).to_be_bytes();
        self.tx.keys_below(table, &after)
    }

    /// A blocked select's earliest timer fired: it completes through that timer case
    /// (through one of them, chosen uniformly, if several share the deadline).
    fn fire_timer(&mut self, state_id: &str, select_id: &str) -> Result<(), StoreError> {
        let Some(state) = self.state(state_id)? else {
            return Ok(());
        };
        let Some(select) = state.selects.iter().find(|s| s.id == select_id) else {
            return Ok(());
        };
        let timers: Vec<(usize, Millis)> = select
            .cases
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                Case::Timer { at, .. } => Some((i, *at)),
                _ => None,
            })
            .collect();
        let Some(earliest) = timers.iter().map(|t| t.1).min() else {
            return Ok(());
        };
        if earliest > self.now {
            return Ok(());
        }
        let tied: Vec<usize> = timers
            .iter()
            .filter(|t| t.1 == earliest)
            .map(|t| t.0)
            .collect();
        let case = tied[self.rng.below(tied.len())];
        self.complete_select(state_id, select_id, case, Completion::Sent { ok: true })?;
        Ok(())
    }
}
