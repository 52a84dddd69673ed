//! States: creation, updates under a lease (design.md §3.2), deletion, and the lease
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

use uuid::Uuid;

use super::command::Response;
use super::counts::{Counter, DeleteReason};
use super::ctx::Ctx;
use super::data::Data;
use super::error::Error;
use super::history::{self, What};
use super::keys;
use super::store::{Scan, Store, StoreError, Table};
use super::types::{Callback, Listed, Select, State};
use super::validate;
use crate::codec;

/// What an operation returns: a deterministic reply, or a fatal storage failure.
pub type OpResult = Result<Result<Response, Error>, StoreError>;

/// The settings a new state is created with.
pub struct Settings {
    /// 0–9: polls hand out higher priorities first.
    pub priority: u8,
    /// Deliveries without an update before the state turns `failed` (0: no limit).
    pub max_deliveries: u32,
    /// A `done` state is deleted this long after its last change (0: kept).
    pub retain_ms: u64,
}

/// What an update under a lease changes; `None` keeps the field's value.
pub struct Update {
    /// New data (`null` clears it).
    pub data: Option<Data>,
    /// Still-blocked selects (unchanged) and new ones.
    pub selects: Option<Vec<Select>>,
    /// New callback; `Some(None)` removes it.
    pub callback: Option<Option<Callback>>,
    /// New priority.
    pub priority: Option<u8>,
    /// New delivery limit.
    pub max_deliveries: Option<u32>,
    /// New retention.
    pub retain_ms: Option<u64>,
}

/// Most states one command of a bulk delete removes, so no entry grows large.
pub const MAX_DELETE_BATCH: u32 = 1000;
/// Most entries one command of a bulk delete examines, so that walking states that do
/// not match holds up the commands behind it no longer than a listing's page takes.
pub const MAX_DELETE_SCAN: usize = super::list::MAX_SCAN;

/// The states one batch of a bulk delete picked, and where the next batch starts.
struct Picked {
    ids: Vec<String>,
    /// The last id examined, if the walk stopped before the end of the prefix.
    next: Option<String>,
}

/// Walks `scan` while its keys (a state id after `skip` bytes) start with `prefix`,
/// keeping the ids whose value `matches`, until `limit` are kept or
/// [`MAX_DELETE_SCAN`] entries are examined.
fn pick(
    scan: Scan<'_>,
    prefix: &[u8],
    skip: usize,
    limit: u32,
    mut matches: impl FnMut(&[u8]) -> Result<bool, StoreError>,
) -> Result<Picked, StoreError> {
    let mut picked = Picked {
        ids: Vec::new(),
        next: None,
    };
    let mut last = None;
    for (examined, entry) in scan.enumerate() {
        let (key, value) = entry?;
        if !key.starts_with(prefix) {
            break;
        }
        if examined == MAX_DELETE_SCAN || picked.ids.len() == limit as usize {
            picked.next = last;
            break;
        }
        let id = String::from_utf8_lossy(&key[skip..]).into_owned();
        if matches(&value)? {
            picked.ids.push(id.clone());
        }
        last = Some(id);
    }
    Ok(picked)
}

impl<S: Store + ?Sized> Ctx<'_, '_, S> {
    /// `PUT /state/{id}` of a new state.
    pub fn create_state(
        &mut self,
        id: &str,
        data: Data,
        selects: Vec<Select>,
        callback: Option<Callback>,
        settings: Settings,
    ) -> OpResult {
        let Settings {
            priority,
            max_deliveries,
            retain_ms,
        } = settings;
        let valid = validate::name("state id", id)
            .and(validate::selects(&selects))
            .and(validate::priority(priority));
        if let Err(e) = valid {
            return Ok(Err(e));
        }
        if self.state(id)?.is_some() {
            return Ok(Err(Error::Exists(format!(
                "state {id:?} already exists: update it under a lease (`Slct-Lease`), or \
                 delete it first"
            ))));
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
            deliveries: 0,
            max_deliveries,
            retain_ms,
            last_error: None,
            failed: false,
            paused: false,
            priority,
            next_event: history::FIRST,
        };
        self.put_state(state)?;
        self.note(id, What::Created);
        for select in selects {
            self.register(id, select)?;
        }
        self.reply_state(id)
    }

    /// `PUT /state/{id}` with a lease. Omitted fields (`None`) keep their values.
    pub fn update_state(&mut self, id: &str, token: Uuid, update: Update) -> OpResult {
        let Update {
            data,
            selects,
            callback,
            priority,
            max_deliveries,
            retain_ms,
        } = update;
        let mut state = match self.leased_state(id, token)? {
            Ok(state) => state,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = priority.map_or(Ok(()), validate::priority) {
            return Ok(Err(e));
        }
        let through = state.lease.as_ref().map_or(0, |l| l.through_seq);
        let fresh = match selects {
            None => Vec::new(),
            Some(selects) => {
                let checked = validate::selects(&selects)
                    .and_then(|()| new_selects(&state, through, selects));
                match checked {
                    Ok(fresh) => fresh,
                    Err(e) => return Ok(Err(e)),
                }
            }
        };
        state.results.retain(|r| r.seq > through);
        if let Some(data) = data {
            state.data = data;
        }
        if let Some(callback) = callback {
            state.callback = callback;
        }
        if let Some(priority) = priority {
            state.priority = priority;
        }
        if let Some(max_deliveries) = max_deliveries {
            state.max_deliveries = max_deliveries;
        }
        if let Some(retain_ms) = retain_ms {
            state.retain_ms = retain_ms;
        }
        state.lease = None;
        state.pending_since = None;
        state.attempts = 0;
        state.deliveries = 0;
        state.last_error = None;
        state.version += 1;
        state.updated_at = self.now;
        let version = state.version;
        self.put_state(state)?;
        self.note(id, What::Updated { version });
        for select in fresh {
            self.register(id, select)?;
        }
        self.reply_state(id)
    }

    /// `DELETE /state/{id}`, or its retention ran out: the state goes, and its selects
    /// leave every queue.
    pub fn delete_state(&mut self, id: &str, reason: DeleteReason) -> OpResult {
        let Some(state) = self.state(id)? else {
            return Ok(Err(not_found(id)));
        };
        for select in &state.selects {
            self.leave_queues(select, None)?;
        }
        self.remove_state(id)?;
        self.count(Counter::Deleted(reason), 1);
        Ok(Ok(Response::Done))
    }

    /// One batch of `DELETE /states`: up to `limit` states of `prefix` (with `status`,
    /// if given), in id order from just after `after`. The batch examines at most
    /// [`MAX_DELETE_SCAN`] entries; with an unindexed status (`waiting`) it walks the
    /// states of the prefix, so it may stop early with none deleted. `next` is where
    /// the following batch starts; it is `None` once the prefix is walked to its end.
    pub fn delete_states(
        &mut self,
        prefix: &str,
        status: Option<&str>,
        limit: u32,
        after: Option<&str>,
    ) -> OpResult {
        let listed = match status.map(|s| Listed::parse(s).ok_or(s)).transpose() {
            Ok(listed) => listed,
            Err(s) => return Ok(Err(Error::Invalid(format!("unknown status {s:?}")))),
        };
        if limit == 0 || limit > MAX_DELETE_BATCH {
            return Ok(Err(Error::Invalid(format!(
                "a batch deletes 1 to {MAX_DELETE_BATCH} states"
            ))));
        }
        self.flush()?;
        let from = super::list::start_key(prefix, after);
        let picked = match listed {
            Some(listed) if listed.indexed() => {
                let mut from_key = vec![listed.tag()];
                from_key.extend_from_slice(&from);
                let scan = self.tx.scan_from(Table::ByStatus, &from_key);
                let prefix = keys::by_status(listed.tag(), prefix);
                pick(scan, &prefix, 1, limit, |_| Ok(true))?
            }
            _ => {
                let scan = self.tx.scan_from(Table::States, &from);
                pick(scan, prefix.as_bytes(), 0, limit, |bytes| {
                    let state: State = codec::decode(bytes)?;
                    Ok(listed.is_none_or(|listed| listed.matches(&state)))
                })?
            }
        };
        let mut count = 0;
        for id in &picked.ids {
            if self.delete_state(id, DeleteReason::Request)?.is_ok() {
                count += 1;
            }
        }
        Ok(Ok(Response::Deleted {
            count,
            next: picked.next,
        }))
    }

    /// A poll: lease the best deliverable polled states with `prefix` (one per token).
    pub fn lease_pending(
        &mut self,
        prefix: &str,
        min_priority: u8,
        tokens: &[Uuid],
        lease_ms: u64,
    ) -> OpResult {
        let valid = validate::lease_ms(lease_ms).and(validate::priority(min_priority));
        if let Err(e) = valid {
            return Ok(Err(e));
        }
        self.flush()?;
        let ids = super::poll::candidates(&*self.tx, prefix, min_priority, tokens.len())?;
        for (id, token) in ids.iter().zip(tokens) {
            self.take_lease(id, *token, lease_ms, "poller")?;
        }
        self.flush()?;
        let mut leased = Vec::with_capacity(ids.len());
        for id in &ids {
            leased.extend(self.state(id)?);
        }
        Ok(Ok(Response::States(leased)))
    }

    /// Heartbeat: the lease now ends `extend_ms` from now.
    pub fn extend_lease(&mut self, id: &str, token: Uuid, extend_ms: u64) -> OpResult {
        if let Err(e) = validate::lease_ms(extend_ms) {
            return Ok(Err(e));
        }
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
        let expires_at = lease.expires_at;
        self.note(id, What::LeaseExtended { expires_at });
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
        self.note(id, What::LeaseReleased);
        Ok(Ok(Response::Done))
    }

    /// `POST /state/{id}/pause` and `/resume`: idempotent; a paused state keeps its
    /// selects (they still complete) but is not handed to pollers or callbacks.
    pub fn set_paused(&mut self, id: &str, paused: bool) -> OpResult {
        let Some(mut state) = self.state(id)? else {
            return Ok(Err(not_found(id)));
        };
        if state.paused != paused {
            state.paused = paused;
            state.version += 1;
            state.updated_at = self.now;
            self.put_state(state)?;
            self.note(id, if paused { What::Paused } else { What::Resumed });
        }
        self.reply_state(id)
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
        duration_ms: u64,
    ) -> OpResult {
        if let Err(e) = validate::lease_ms(backoff_ms) {
            return Ok(Err(e));
        }
        let mut state = match self.leased_state(id, token)? {
            Ok(state) => state,
            Err(e) => return Ok(Err(e)),
        };
        let error = validate::last_error(error);
        state.attempts += 1;
        // The attempt is counted in `attempts`, which has its own budget.
        state.deliveries = state.deliveries.saturating_sub(1);
        state.last_error = Some(error.clone());
        let attempt = state.attempts;
        let gave_up = attempt >= max_attempts;
        if gave_up {
            state.failed = true;
            state.lease = None;
        } else if let Some(lease) = state.lease.as_mut() {
            lease.expires_at = self.now.saturating_add(backoff_ms);
        }
        state.version += 1;
        self.put_state(state)?;
        self.note(
            id,
            What::CallbackFailed {
                attempt,
                error,
                duration_ms: Some(duration_ms),
            },
        );
        if gave_up {
            self.note(id, What::Failed);
        }
        Ok(Ok(Response::Done))
    }

    /// `POST /state/{id}/retry`: a failed state is pending again, attempts and
    /// deliveries start over.
    pub fn retry_failed(&mut self, id: &str) -> OpResult {
        let Some(mut state) = self.state(id)? else {
            return Ok(Err(not_found(id)));
        };
        if !state.failed {
            return Ok(Err(Error::Conflict(format!("state {id:?} has not failed"))));
        }
        state.failed = false;
        state.attempts = 0;
        state.deliveries = 0;
        state.version += 1;
        self.put_state(state)?;
        self.note(id, What::Retried);
        self.reply_state(id)
    }

    /// Leases the state `to` a poller or the callback dispatcher.
    fn take_lease(
        &mut self,
        id: &str,
        token: Uuid,
        lease_ms: u64,
        to: &str,
    ) -> Result<(), StoreError> {
        if let Some(mut state) = self.state(id)? {
            let leased = self.grant_lease(&mut state, token, lease_ms, to);
            self.put_state(state)?;
            self.note(id, leased);
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
        let written = self.flush_keeping(Some(id))?;
        let state = match written {
            Some(state) => Some(state),
            None => self.state(id)?,
        };
        Ok(match state {
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
