//! States: creation, updates under a lease (DESIGN §3.2), deletion, and the lease
//! life cycle shared by pollers and the callback dispatcher.
//!
//! Choices where Go has no answer, made as a production queue would:
//! - A lease covers the results present when it was taken (`through_seq`); results that
//!   arrive during the lease are kept by the update and make the state pending again.
//! - A select that completed during the lease may be sent back by the holder as if still
//!   blocked (it could not know); it is recognised by id and not registered again.
//! - An expired lease returns the state to its original place in the pending order, so
//!   redelivery does not send a state to the back of the queue.
//! - A failed callback keeps the dispatcher's lease until the retry time; the lease's
//!   expiry makes the state pending again, so retries survive a change of leader.

use std::collections::BTreeSet;

use serde_json::Value;
use uuid::Uuid;

use super::command::Response;
use super::ctx::Ctx;
use super::error::Error;
use super::keys;
use super::store::{Store, StoreError, Table};
use super::types::{Callback, Lease, Select, State, Status};
use super::validate;

/// What an operation returns: a deterministic reply, or a fatal storage failure.
pub type OpResult = Result<Result<Response, Error>, StoreError>;

impl<S: Store + ?Sized> Ctx<'_, '_, S> {
    /// `PUT /state/{id}` of a new state.
    pub fn create_state(
        &mut self,
        id: &str,
        data: Value,
        selects: Vec<Select>,
        callback: Option<Callback>,
    ) -> OpResult {
        if let Err(e) = validate::name("state id", id).and(validate::selects(&selects)) {
            return Ok(Err(e));
        }
        if self.state(id)?.is_some() {
            return Ok(Err(Error::Exists(format!("state {id:?} already exists"))));
        }
        let state = State {
            id: id.to_owned(),
            data,
            selects: Vec::new(),
            results: Vec::new(),
            callback,
            version: 1,
            lease: None,
            created_at: self.now,
            updated_at: self.now,
            next_seq: 1,
            pending_since: None,
            attempts: 0,
            last_error: None,
            failed: false,
        };
        self.put_state(state)?;
        for select in selects {
            self.register(id, select)?;
        }
        self.reply_state(id)
    }

    /// `PUT /state/{id}` with a lease.
    pub fn update_state(
        &mut self,
        id: &str,
        token: Uuid,
        data: Value,
        selects: Vec<Select>,
        callback: Option<Callback>,
    ) -> OpResult {
        let mut state = match self.leased_state(id, token)? {
            Ok(state) => state,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = validate::selects(&selects) {
            return Ok(Err(e));
        }
        let through = state.lease.as_ref().map_or(0, |l| l.through_seq);
        let fresh = match new_selects(&state, through, selects) {
            Ok(fresh) => fresh,
            Err(e) => return Ok(Err(e)),
        };
        state.results.retain(|r| r.seq > through);
        state.data = data;
        state.callback = callback;
        state.lease = None;
        state.pending_since = None;
        state.attempts = 0;
        state.last_error = None;
        state.version += 1;
        state.updated_at = self.now;
        self.put_state(state)?;
        for select in fresh {
            self.register(id, select)?;
        }
        self.reply_state(id)
    }

    /// `DELETE /state/{id}`: the state goes, and its selects leave every queue.
    pub fn delete_state(&mut self, id: &str) -> OpResult {
        let Some(state) = self.state(id)? else {
            return Ok(Err(not_found(id)));
        };
        for select in &state.selects {
            self.leave_queues(select, None)?;
        }
        self.remove_state(id)?;
        Ok(Ok(Response::Done))
    }

    /// A poll: lease the oldest pending states (without callback) whose id has `prefix`.
    pub fn lease_pending(&mut self, prefix: &str, tokens: &[Uuid], lease_ms: u64) -> OpResult {
        let mut ids = Vec::new();
        for entry in self.tx.scan_from(Table::PendingPoll, &[]) {
            if ids.len() == tokens.len() {
                break;
            }
            let (_, id) = keys::parse_at_state(&entry?.0);
            if id.starts_with(prefix) {
                ids.push(id);
            }
        }
        for (id, token) in ids.iter().zip(tokens) {
            self.take_lease(id, *token, lease_ms)?;
        }
        self.flush()?;
        let mut leased = Vec::with_capacity(ids.len());
        for id in &ids {
            leased.extend(self.state(id)?);
        }
        Ok(Ok(Response::States(leased)))
    }

    /// The dispatcher leases a pending state with a callback; `None` if it is not due.
    pub fn lease_for_callback(&mut self, id: &str, token: Uuid, lease_ms: u64) -> OpResult {
        let due = self
            .state(id)?
            .is_some_and(|s| s.callback.is_some() && s.status() == Status::Pending);
        if !due {
            return Ok(Ok(Response::CallbackLease(None)));
        }
        self.take_lease(id, token, lease_ms)?;
        self.flush()?;
        Ok(Ok(Response::CallbackLease(self.state(id)?.map(Box::new))))
    }

    /// Heartbeat: the lease now ends `extend_ms` from now.
    pub fn extend_lease(&mut self, id: &str, token: Uuid, extend_ms: u64) -> OpResult {
        let mut state = match self.leased_state(id, token)? {
            Ok(state) => state,
            Err(e) => return Ok(Err(e)),
        };
        let Some(mut lease) = state.lease.take() else {
            return Ok(Err(Error::LeaseLost));
        };
        lease.expires_at = self.now.saturating_add(extend_ms);
        state.lease = Some(lease.clone());
        self.put_state(state)?;
        Ok(Ok(Response::Lease(lease)))
    }

    /// The holder gives the state back; it is pending again.
    pub fn release_lease(&mut self, id: &str, token: Uuid) -> OpResult {
        let mut state = match self.leased_state(id, token)? {
            Ok(state) => state,
            Err(e) => return Ok(Err(e)),
        };
        state.lease = None;
        state.version += 1;
        self.put_state(state)?;
        Ok(Ok(Response::Done))
    }

    /// A callback attempt failed: retry after `backoff_ms` (the lease lapses then), or
    /// give up after `max_attempts`.
    pub fn callback_failed(
        &mut self,
        id: &str,
        token: Uuid,
        error: String,
        max_attempts: u32,
        backoff_ms: u64,
    ) -> OpResult {
        let mut state = match self.leased_state(id, token)? {
            Ok(state) => state,
            Err(e) => return Ok(Err(e)),
        };
        state.attempts += 1;
        state.last_error = Some(error);
        if state.attempts >= max_attempts {
            state.failed = true;
            state.lease = None;
        } else if let Some(lease) = state.lease.as_mut() {
            lease.expires_at = self.now.saturating_add(backoff_ms);
        }
        state.version += 1;
        self.put_state(state)?;
        Ok(Ok(Response::Done))
    }

    /// `POST /state/{id}/retry`: a failed state is pending again, attempts start over.
    pub fn retry_failed(&mut self, id: &str) -> OpResult {
        let Some(mut state) = self.state(id)? else {
            return Ok(Err(not_found(id)));
        };
        if !state.failed {
            return Ok(Err(Error::Conflict(format!("state {id:?} has not failed"))));
        }
        state.failed = false;
        state.attempts = 0;
        state.version += 1;
        self.put_state(state)?;
        self.reply_state(id)
    }

    fn take_lease(&mut self, id: &str, token: Uuid, lease_ms: u64) -> Result<(), StoreError> {
        if let Some(mut state) = self.state(id)? {
            state.lease = Some(Lease {
                token,
                expires_at: self.now.saturating_add(lease_ms),
                through_seq: state.results.last().map_or(0, |r| r.seq),
            });
            state.version += 1;
            self.put_state(state)?;
        }
        Ok(())
    }

    /// The state, if `token` is its live lease.
    fn leased_state(&mut self, id: &str, token: Uuid) -> Result<Result<State, Error>, StoreError> {
        let Some(state) = self.state(id)? else {
            return Ok(Err(not_found(id)));
        };
        let live = state
            .lease
            .as_ref()
            .is_some_and(|l| l.token == token && l.expires_at > self.now);
        Ok(if live {
            Ok(state)
        } else {
            Err(Error::LeaseLost)
        })
    }

    fn reply_state(&mut self, id: &str) -> OpResult {
        self.flush()?;
        Ok(match self.state(id)? {
            Some(state) => Ok(Response::State(Box::new(state))),
            None => Err(not_found(id)),
        })
    }
}

/// Checks an update's selects against the blocked ones and returns those to register:
/// every blocked select must come back unchanged; selects that completed during the
/// lease are recognised and skipped; the rest are new.
fn new_selects(state: &State, through: u64, written: Vec<Select>) -> Result<Vec<Select>, Error> {
    for blocked in &state.selects {
        let Some(w) = written.iter().find(|w| w.id == blocked.id) else {
            return Err(Error::InvalidUpdate(format!(
                "select {:?} is still blocked and must be sent back unchanged",
                blocked.id
            )));
        };
        let same = w.cases.len() == blocked.cases.len()
            && blocked
                .cases
                .iter()
                .zip(&w.cases)
                .all(|(b, w)| b.same_as_written(w));
        if !same {
            return Err(Error::InvalidUpdate(format!(
                "select {:?} is still blocked; its cases cannot change",
                blocked.id
            )));
        }
    }
    let blocked: BTreeSet<&str> = state.selects.iter().map(|s| s.id.as_str()).collect();
    let completed_during_lease: BTreeSet<&str> = state
        .results
        .iter()
        .filter(|r| r.seq > through)
        .map(|r| r.select.as_str())
        .collect();
    let fresh: Vec<Select> = written
        .into_iter()
        .filter(|w| {
            !blocked.contains(w.id.as_str()) && !completed_during_lease.contains(w.id.as_str())
        })
        .collect();
    if blocked.len() + fresh.len() > validate::MAX_SELECTS {
        return Err(Error::Invalid(format!(
            "a state may have at most {} selects",
            validate::MAX_SELECTS
        )));
    }
    Ok(fresh)
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no state {id:?}"))
}
