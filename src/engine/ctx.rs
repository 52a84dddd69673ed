//! The context of one command: its log time and random source, the effects it
//! produces, and decoded caches of the states and channels it touches.
//!
//! Every read and write of a state or channel goes through the cache, so code that
//! completes one select (and thereby withdraws it from other queues) never works on a
//! stale copy. [`Ctx::flush`] encodes what changed into the transaction and keeps the
//! indexes derived from a state — its lease, its place in a pending queue, its selects'
//! timers — in step by diffing the state's index keys before and after.
//!
//! Flushing also hands every deliverable state that has a callback to the callback
//! dispatcher, in the same command that made it deliverable: it leases it (a token from
//! the command's seeded generator, for the callback's timeout plus
//! [`CALLBACK_LEASE_MARGIN_MS`]) and reports it in [`Effects::pending`]. The leader's
//! dispatcher then POSTs it at once, so resuming by callback costs two commits: the
//! one that completes a select, and the update the callback answers.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::command::{Effects, TurnedPending};
use super::counts::{self, Counter};
use super::history::{self, What};
use super::keys;
use super::rng::Rng;
use super::store::{get_record, put_record, Store, StoreError, Table, Tx};
use super::types::{Case, Chan, Lease, Listed, Millis, State, Status};

/// A state as loaded, with the index keys it had in the store.
struct CachedState {
    stored_index: BTreeSet<(Table, Vec<u8>)>,
    stored_status: Option<Status>,
    current: Option<State>,
    /// The newest events of its history, kept in its record.
    tail: history::Tail,
    changed: bool,
}

/// A channel as loaded and as changed; written back only if changed.
struct CachedChan {
    /// Its blocked senders and receivers as stored, for the running totals.
    stored_waiters: (u64, u64),
    chan: Chan,
    changed: bool,
}

/// Everything one command works with.
pub(crate) struct Ctx<'a, 's, S: Store + ?Sized> {
    /// The transaction being built.
    pub tx: &'a mut Tx<'s, S>,
    /// Log time of this command.
    pub now: Millis,
    /// Chooses among ready cases.
    pub rng: Rng,
    /// What others must hear of.
    pub effects: Effects,
    /// Raft index of the entry being applied (for history events).
    index: u64,
    /// Events kept per state (0: no history).
    history_limit: u32,
    states: BTreeMap<String, CachedState>,
    chans: BTreeMap<String, CachedChan>,
    counts: BTreeMap<Counter, i64>,
    events: BTreeMap<String, Vec<What>>,
}

impl<'a, 's, S: Store + ?Sized> Ctx<'a, 's, S> {
    pub fn new(tx: &'a mut Tx<'s, S>, now: Millis, seed: u64) -> Self {
        Ctx {
            tx,
            now,
            rng: Rng::new(seed),
            effects: Effects::default(),
            index: 0,
            history_limit: 0,
            states: BTreeMap::new(),
            chans: BTreeMap::new(),
            counts: BTreeMap::new(),
            events: BTreeMap::new(),
        }
    }

    /// Records history for the command at Raft `index`, keeping `limit` events a state.
    pub fn with_history(mut self, index: u64, limit: u32) -> Self {
        self.index = index;
        self.history_limit = limit;
        self
    }

    /// Notes an event in state `id`'s history (written when the context flushes).
    pub fn note(&mut self, id: &str, what: What) {
        if self.history_limit > 0 {
            self.events.entry(id.to_owned()).or_default().push(what);
        }
    }

    /// The state `id`, if it exists.
    pub fn state(&mut self, id: &str) -> Result<Option<State>, StoreError> {
        if !self.states.contains_key(id) {
            let (stored, tail) = match self.tx.get(Table::States, id.as_bytes())? {
                Some(bytes) => {
                    let (state, tail) = history::decode_state(&bytes)?;
                    (Some(state), tail)
                }
                None => (None, history::Tail::default()),
            };
            let stored_index = stored.as_ref().map(index_keys).unwrap_or_default();
            let cached = CachedState {
                stored_index,
                stored_status: stored.as_ref().map(State::status),
                current: stored,
                tail,
                changed: false,
            };
            self.states.insert(id.to_owned(), cached);
        }
        Ok(self.states[id].current.clone())
    }

    /// Replaces (or creates) a state.
    pub fn put_state(&mut self, state: State) -> Result<(), StoreError> {
        self.state(&state.id)?;
        let id = state.id.clone();
        if let Some(cached) = self.states.get_mut(&id) {
            cached.current = Some(state);
            cached.changed = true;
        }
        Ok(())
    }

    /// Deletes a state.
    pub fn remove_state(&mut self, id: &str) -> Result<(), StoreError> {
        self.state(id)?;
        if let Some(cached) = self.states.get_mut(id) {
            cached.current = None;
            cached.changed = true;
        }
        Ok(())
    }

    /// The channel `name` (an implicit empty channel if nothing is stored).
    pub fn chan(&mut self, name: &str) -> Result<&Chan, StoreError> {
        Ok(&self.cached_chan(name)?.chan)
    }

    /// The channel `name`, to change: it is written back when the command flushes.
    pub fn chan_mut(&mut self, name: &str) -> Result<&mut Chan, StoreError> {
        let cached = self.cached_chan(name)?;
        cached.changed = true;
        Ok(&mut cached.chan)
    }

    /// Counts a change of a running total (see [`counts`]).
    pub fn count(&mut self, counter: Counter, delta: i64) {
        *self.counts.entry(counter).or_default() += delta;
    }

    /// Changes a channel's metadata in place.
    pub fn update_chan(&mut self, name: &str, f: impl FnOnce(&mut Chan)) -> Result<(), StoreError> {
        f(self.chan_mut(name)?);
        Ok(())
    }

    /// Writes every cached change into the transaction, updates the derived indexes,
    /// records which states turned pending, and empties the caches.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.flush_keeping(None).map(drop)
    }

    /// [`Ctx::flush`], returning state `keep` as it was written if this flush wrote it
    /// (what reading it back would give, without decoding its record again).
    pub fn flush_keeping(&mut self, keep: Option<&str>) -> Result<Option<State>, StoreError> {
        let mut kept = None;
        for (id, cached) in std::mem::take(&mut self.states) {
            let events = self.events.remove(&id).unwrap_or_default();
            if cached.changed {
                let wanted = keep == Some(id.as_str());
                let written = self.flush_state(id, cached, events)?;
                if wanted {
                    kept = written;
                }
            }
        }
        for (name, cached) in std::mem::take(&mut self.chans) {
            if cached.changed {
                self.flush_chan(name, cached)?;
            }
        }
        for (counter, delta) in std::mem::take(&mut self.counts) {
            counts::add(self.tx, counter, delta)?;
        }
        Ok(kept)
    }

    /// Channel `name` in the cache, loaded from the store on first use.
    fn cached_chan(&mut self, name: &str) -> Result<&mut CachedChan, StoreError> {
        if !self.chans.contains_key(name) {
            let chan: Chan =
                get_record(self.tx, Table::Chans, name.as_bytes())?.unwrap_or_default();
            let cached = CachedChan {
                stored_waiters: (chan.senders, chan.receivers),
                chan,
                changed: false,
            };
            self.chans.insert(name.to_owned(), cached);
        }
        self.chans
            .get_mut(name)
            .ok_or_else(|| StoreError::Invariant(format!("channel {name:?} left the cache")))
    }
}

impl<S: Store + ?Sized> Ctx<'_, '_, S> {
    /// Writes back one changed state with its history, and its index entries by their
    /// difference from the stored ones; returns the state as written (`None`: deleted).
    fn flush_state(
        &mut self,
        id: String,
        cached: CachedState,
        mut events: Vec<What>,
    ) -> Result<Option<State>, StoreError> {
        let CachedState {
            stored_index,
            stored_status,
            current,
            mut tail,
            ..
        } = cached;
        if let Some(status) = stored_status {
            self.count(Counter::States(status), -1);
        }
        let Some(mut state) = current else {
            return self.delete_records(&id, stored_index).map(|()| None);
        };
        self.settle(&mut state, &mut events);
        if !events.is_empty() {
            let stamp = (self.now, self.index);
            let (next, limit) = (state.next_event, self.history_limit);
            state.next_event = history::write(self.tx, &id, next, stamp, events, limit, &mut tail)?;
        }
        self.count(Counter::States(state.status()), 1);
        self.update_index(&id, &stored_index, index_keys(&state));
        let record = history::encode_state(self.tx, &id, &state, &mut tail)?;
        self.tx.put(Table::States, id.into_bytes(), record);
        Ok(Some(state))
    }

    /// A deleted state: its record, its history and its index entries go.
    fn delete_records(
        &mut self,
        id: &str,
        stored_index: BTreeSet<(Table, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        self.count(Counter::Timers, -timer_count(&stored_index));
        history::delete_all(self.tx, id)?;
        self.tx.delete(Table::States, id.as_bytes().to_vec());
        for (table, key) in stored_index {
            self.tx.delete(table, key);
        }
        Ok(())
    }

    /// What a changed state turns into before it is written: failed once delivered
    /// `max_deliveries` times, stamped with when it turned pending, and leased to the
    /// callback dispatcher if it is deliverable and has a callback. Adds the events.
    fn settle(&mut self, state: &mut State, events: &mut Vec<What>) {
        let history = self.history_limit > 0;
        if is_pending(state) && state.max_deliveries > 0 && state.deliveries >= state.max_deliveries
        {
            // Delivered as often as allowed and never updated: the dead letter
            // (design.md §3.2), instead of redelivery for ever.
            state.failed = true;
            state.last_error = Some(MAX_DELIVERIES_REACHED.to_owned());
            if history {
                events.push(What::Failed);
            }
        }
        if is_pending(state) && state.pending_since.is_none() {
            state.pending_since = Some(self.now);
        }
        if let Some(leased) = self.lease_to_dispatcher(state) {
            if history {
                events.push(leased);
            }
            self.effects.pending.push(TurnedPending {
                id: state.id.clone(),
                callback: true,
            });
        }
    }

    /// Deletes the index entries of state `id` it no longer implies and adds the new
    /// ones, counting its timers; an entry new in the polled pending queue is a state
    /// turned pending for the pollers.
    fn update_index(
        &mut self,
        id: &str,
        stored: &BTreeSet<(Table, Vec<u8>)>,
        index: BTreeSet<(Table, Vec<u8>)>,
    ) {
        self.count(Counter::Timers, timer_count(&index) - timer_count(stored));
        for (table, key) in stored.difference(&index) {
            self.tx.delete(*table, key.clone());
        }
        for (table, key) in index.difference(stored) {
            self.tx.put(*table, key.clone(), Vec::new());
            if *table == Table::PendingPoll {
                self.effects.pending.push(TurnedPending {
                    id: id.to_owned(),
                    callback: false,
                });
            }
        }
    }

    /// Writes back one changed channel (or deletes it, vacant) and counts the change
    /// in its waiters.
    fn flush_chan(&mut self, name: String, cached: CachedChan) -> Result<(), StoreError> {
        let CachedChan {
            stored_waiters: (senders, receivers),
            chan,
            ..
        } = cached;
        self.count(Counter::Senders, chan.senders as i64 - senders as i64);
        self.count(Counter::Receivers, chan.receivers as i64 - receivers as i64);
        if chan.is_vacant() {
            self.tx.delete(Table::Chans, name.into_bytes());
            Ok(())
        } else {
            put_record(self.tx, Table::Chans, name.into_bytes(), &chan)
        }
    }

    /// Leases a deliverable state with a callback to the dispatcher; the history event
    /// if it did.
    fn lease_to_dispatcher(&mut self, state: &mut State) -> Option<What> {
        let timeout_ms = state.callback.as_ref()?.timeout_ms;
        if !is_deliverable(state) {
            return None;
        }
        let token = self.rng.uuid();
        let lease_ms = timeout_ms.saturating_add(CALLBACK_LEASE_MARGIN_MS);
        Some(self.grant_lease(state, token, lease_ms, "callback"))
    }

    /// Puts `state` under lease `token` for `lease_ms` from now, held by `to` (a poller
    /// or the callback dispatcher); returns the history event. The lease covers the
    /// results the state holds now.
    pub(crate) fn grant_lease(
        &self,
        state: &mut State,
        token: Uuid,
        lease_ms: u64,
        to: &str,
    ) -> What {
        let expires_at = self.now.saturating_add(lease_ms);
        state.lease = Some(Lease {
            token,
            expires_at,
            granted_at: self.now,
            through_seq: state.results.last().map_or(0, |r| r.seq),
        });
        state.deliveries = state.deliveries.saturating_add(1);
        state.version += 1;
        What::Leased {
            to: to.to_owned(),
            token,
            expires_at,
        }
    }
}

/// `last_error` of a state that was delivered `max_deliveries` times without an update.
pub const MAX_DELIVERIES_REACHED: &str = "max deliveries reached";

/// How long a callback attempt's lease outlasts the callback's timeout: time to apply
/// the answer (or to extend the lease on a deferral).
pub const CALLBACK_LEASE_MARGIN_MS: u64 = 2_000;

/// How many of the index entries are timers.
fn timer_count(index: &BTreeSet<(Table, Vec<u8>)>) -> i64 {
    index.iter().filter(|(t, _)| *t == Table::Timers).count() as i64
}

/// Pending: has results, is not leased and has not failed.
pub fn is_pending(state: &State) -> bool {
    !state.results.is_empty() && state.lease.is_none() && !state.failed
}

/// Pending and not paused: to be handed to a poller or the callback dispatcher.
pub fn is_deliverable(state: &State) -> bool {
    is_pending(state) && !state.paused
}

/// The index entries a state implies: its status unless that is `waiting` (see
/// [`Listed::indexed`]) and whether it is paused, its lease, when it is to be deleted if
/// it is `done` with a retention, its place in a pending queue if it is deliverable (by
/// priority and time, and for polled states by id too), and one timer entry per blocked
/// select (at the select's earliest timer).
fn index_keys(state: &State) -> BTreeSet<(Table, Vec<u8>)> {
    let mut keys = BTreeSet::new();
    let status = Listed::Status(state.status());
    if status.indexed() {
        keys.insert((Table::ByStatus, keys::by_status(status.tag(), &state.id)));
    }
    if state.paused {
        keys.insert((
            Table::ByStatus,
            keys::by_status(super::types::PAUSED, &state.id),
        ));
    }
    if let Some(lease) = &state.lease {
        keys.insert((Table::Leases, keys::at_state(lease.expires_at, &state.id)));
    }
    if let Some(at) = state.delete_at() {
        keys.insert((Table::Retention, keys::at_state(at, &state.id)));
    }
    let polled = state.callback.is_none();
    if let (true, true, Some(since)) = (polled, is_deliverable(state), state.pending_since) {
        let (id, priority) = (&state.id, state.priority);
        keys.insert((Table::PendingPoll, keys::pending(priority, since, id)));
        let by_id = keys::pending_by_id(id, priority, since);
        keys.insert((Table::PendingPollIds, by_id));
    }
    for select in &state.selects {
        let earliest = select
            .cases
            .iter()
            .filter_map(|case| match case {
                Case::Timer { at, .. } => Some(*at),
                _ => None,
            })
            .min();
        if let Some(at) = earliest {
            let due = keys::Due::Select {
                state: state.id.clone(),
                select: select.id.clone(),
            };
            keys.insert((Table::Timers, keys::timer(at, &due)));
        }
    }
    keys
}
