//! The context of one command: its log time and random source, the effects it
//! produces, and decoded caches of the states and channels it touches.
//!
//! Every read and write of a state or channel goes through the cache, so code that
//! completes one select (and thereby withdraws it from other queues) never works on a
//! stale copy. [`Ctx::flush`] encodes what changed into the transaction and keeps the
//! indexes derived from a state — its lease, its place in a pending queue, its selects'
//! timers — in step by diffing the state's index keys before and after.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::command::{Effects, TurnedPending};
use super::counts::{self, Counter};
use super::keys;
use super::rng::Rng;
use super::store::{Store, StoreError, Table, Tx};
use super::types::{Case, Chan, Millis, State, Status};

/// A state as loaded, with the index keys it had in the store.
struct CachedState {
    stored_index: BTreeSet<(Table, Vec<u8>)>,
    stored_status: Option<Status>,
    current: Option<State>,
    changed: bool,
}

/// A channel as loaded and as changed; written back only if changed.
struct CachedChan {
    stored: Chan,
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
    states: BTreeMap<String, CachedState>,
    chans: BTreeMap<String, CachedChan>,
    counts: BTreeMap<Counter, i64>,
}

impl<'a, 's, S: Store + ?Sized> Ctx<'a, 's, S> {
    pub fn new(tx: &'a mut Tx<'s, S>, now: Millis, seed: u64) -> Self {
        Ctx {
            tx,
            now,
            rng: Rng::new(seed),
            effects: Effects::default(),
            states: BTreeMap::new(),
            chans: BTreeMap::new(),
            counts: BTreeMap::new(),
        }
    }

    /// The state `id`, if it exists.
    pub fn state(&mut self, id: &str) -> Result<Option<State>, StoreError> {
        if !self.states.contains_key(id) {
            let stored: Option<State> = get_json(self.tx, Table::States, id.as_bytes())?;
            let stored_index = stored.as_ref().map(index_keys).unwrap_or_default();
            let cached = CachedState {
                stored_index,
                stored_status: stored.as_ref().map(State::status),
                current: stored,
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
    pub fn chan(&mut self, name: &str) -> Result<Chan, StoreError> {
        if let Some(cached) = self.chans.get(name) {
            return Ok(cached.chan.clone());
        }
        let chan: Chan = get_json(self.tx, Table::Chans, name.as_bytes())?.unwrap_or_default();
        let cached = CachedChan {
            stored: chan.clone(),
            chan: chan.clone(),
            changed: false,
        };
        self.chans.insert(name.to_owned(), cached);
        Ok(chan)
    }

    /// Replaces a channel's metadata.
    pub fn put_chan(&mut self, name: &str, chan: Chan) -> Result<(), StoreError> {
        self.chan(name)?;
        if let Some(cached) = self.chans.get_mut(name) {
            cached.chan = chan;
            cached.changed = true;
        }
        Ok(())
    }

    /// Counts a change of a running total (see [`counts`]).
    pub fn count(&mut self, counter: Counter, delta: i64) {
        *self.counts.entry(counter).or_default() += delta;
    }

    /// Changes a channel's metadata in place.
    pub fn update_chan(&mut self, name: &str, f: impl FnOnce(&mut Chan)) -> Result<(), StoreError> {
        let mut chan = self.chan(name)?;
        f(&mut chan);
        self.put_chan(name, chan)
    }

    /// Writes every cached change into the transaction, updates the derived indexes,
    /// records which states turned pending, and empties the caches.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        for (id, cached) in std::mem::take(&mut self.states) {
            let CachedState {
                stored_index,
                stored_status,
                current,
                changed,
            } = cached;
            if !changed {
                continue;
            }
            if let Some(status) = stored_status {
                self.count(Counter::States(status), -1);
            }
            let timers = |index: &BTreeSet<(Table, Vec<u8>)>| {
                index.iter().filter(|(t, _)| *t == Table::Timers).count() as i64
            };
            let stored_timers = timers(&stored_index);
            let Some(mut state) = current else {
                self.count(Counter::Timers, -stored_timers);
                self.tx.delete(Table::States, id.into_bytes());
                for (table, key) in stored_index {
                    self.tx.delete(table, key);
                }
                continue;
            };
            if is_pending(&state) && state.pending_since.is_none() {
                state.pending_since = Some(self.now);
            }
            let index = index_keys(&state);
            self.count(Counter::States(state.status()), 1);
            self.count(Counter::Timers, timers(&index) - stored_timers);
            for (table, key) in stored_index.difference(&index) {
                self.tx.delete(*table, key.clone());
            }
            for (table, key) in index.difference(&stored_index) {
                self.tx.put(*table, key.clone(), Vec::new());
                if matches!(table, Table::PendingPoll | Table::PendingCallback) {
                    self.effects.pending.push(TurnedPending {
                        id: id.clone(),
                        callback: *table == Table::PendingCallback,
                    });
                }
            }
            put_json(self.tx, Table::States, id.into_bytes(), &state)?;
        }
        for (name, cached) in std::mem::take(&mut self.chans) {
            let CachedChan {
                stored,
                chan,
                changed,
            } = cached;
            if !changed {
                continue;
            }
            self.count(
                Counter::Senders,
                chan.senders as i64 - stored.senders as i64,
            );
            self.count(
                Counter::Receivers,
                chan.receivers as i64 - stored.receivers as i64,
            );
            if chan.is_vacant() {
                self.tx.delete(Table::Chans, name.into_bytes());
            } else {
                put_json(self.tx, Table::Chans, name.into_bytes(), &chan)?;
            }
        }
        for (counter, delta) in std::mem::take(&mut self.counts) {
            counts::add(self.tx, counter, delta)?;
        }
        Ok(())
    }
}

/// Pending: has results, is not leased and has not failed.
pub fn is_pending(state: &State) -> bool {
    !state.results.is_empty() && state.lease.is_none() && !state.failed
}

/// The index entries a state implies: its lease, its place in a pending queue, and one
/// timer entry per blocked select (at the select's earliest timer).
fn index_keys(state: &State) -> BTreeSet<(Table, Vec<u8>)> {
    let mut keys = BTreeSet::new();
    if let Some(lease) = &state.lease {
        keys.insert((Table::Leases, keys::at_state(lease.expires_at, &state.id)));
    }
    if let (true, Some(since)) = (is_pending(state), state.pending_since) {
        let table = if state.callback.is_some() {
            Table::PendingCallback
        } else {
            Table::PendingPoll
        };
        keys.insert((table, keys::at_state(since, &state.id)));
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

/// Reads and decodes a JSON value.
pub fn get_json<S: Store + ?Sized, T: DeserializeOwned>(
    tx: &Tx<'_, S>,
    table: Table,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match tx.get(table, key)? {
        None => Ok(None),
        Some(bytes) => decode(&bytes).map(Some),
    }
}

/// Decodes a stored JSON value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError(format!("corrupt record: {e}")))
}

/// Encodes and stages a JSON value.
pub fn put_json<S: Store + ?Sized, T: Serialize>(
    tx: &mut Tx<'_, S>,
    table: Table,
    key: Vec<u8>,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError(format!("encode: {e}")))?;
    tx.put(table, key, bytes);
    Ok(())
}
