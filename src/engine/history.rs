//! Each state's history (design.md §3.6): what happened to the process, newest first.
//!
//! Operations note events on the command's [`Ctx`](super::ctx) as they go; when the
//! context flushes, each state's events are numbered from the state's own counter and
//! written to [`Table::History`] as ONE record per state and command, under (state id,
//! number of its first event), with the command's log time and Raft index, which all
//! its events share. Only the last `history_limit` events of a state are kept — the
//! command carries the limit (the leader's `--history-limit`), so every replica keeps
//! the same — and older ones are deleted in the same command: a record all of whose
//! events are too old goes, one that straddles the limit is written again with the
//! events that remain, under the number of the first of them. A deleted state's history
//! goes with it. With a limit of 0 nothing is recorded.
//!
//! A record per command rather than per event, and postcard rather than JSON: a state
//! created blocked notes two events, and a key of their own each, in JSON, cost more
//! than the state itself — on disk and in the apply (sled's cost is per key). The JSON
//! shape operators see is [`Event`]'s; [`StoredWhat`] mirrors [`What`] without the
//! JSON-only attributes that postcard cannot read back (the compiler checks that the
//! two agree). A completed case records its value's size, not the value (the state's
//! results hold values while they matter).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys;
use super::store::{put_record, Store, StoreError, Table, Tx};
use super::types::Millis;
use crate::codec::decode;

/// The number of a state's first event.
pub const FIRST: u64 = 1;

/// One event in a state's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Numbers a state's events in order (1, 2, ...).
    pub seq: u64,
    /// Log time of the command that produced it.
    pub at: Millis,
    /// Raft index of the entry that produced it.
    pub index: u64,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

/// What happened to a state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum What {
    /// The state was created.
    Created,
    /// A select was registered (it may complete in the same command).
    SelectRegistered {
        /// Select id.
        select: String,
    },
    /// A select completed through one of its cases.
    CaseCompleted {
        /// Select id.
        select: String,
        /// Index of the case.
        case: usize,
        /// `recv`, `send`, `timer` or `default`.
        op: String,
        /// Channel of a recv or send.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chan: Option<String>,
        /// Size in bytes of the value received (JSON text).
        size: usize,
        /// False for a receive from or send on a closed channel.
        ok: bool,
    },
    /// A lease was taken.
    Leased {
        /// `poller` or `callback`.
        to: String,
        /// The lease token.
        token: Uuid,
        /// When it lapses (log time).
        expires_at: Millis,
    },
    /// A lease was extended.
    LeaseExtended {
        /// The new expiry (log time).
        expires_at: Millis,
    },
    /// The holder gave the lease back.
    LeaseReleased,
    /// The lease lapsed.
    LeaseExpired,
    /// An update was applied under the lease.
    Updated {
        /// The state's version after it.
        version: u64,
    },
    /// A callback attempt failed.
    CallbackFailed {
        /// Attempt number.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// How long the attempt took. The API shows it to the admin token only: it
        /// tells a closed port from a silent one (design.md §3.4).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
    },
    /// Callback attempts were exhausted: the state is `failed`.
    Failed,
    /// A failed state was re-armed.
    Retried,
    /// The state was paused.
    Paused,
    /// The state was resumed.
    Resumed,
}

/// The stored form of [`What`] (serde's remote derive: same variants and fields, in
/// postcard's plain encoding).
#[derive(Serialize, Deserialize)]
#[serde(remote = "What")]
enum StoredWhat {
    Created,
    SelectRegistered {
        select: String,
    },
    CaseCompleted {
        select: String,
        case: usize,
        op: String,
        chan: Option<String>,
        size: usize,
        ok: bool,
    },
    Leased {
        to: String,
        token: Uuid,
        expires_at: Millis,
    },
    LeaseExtended {
        expires_at: Millis,
    },
    LeaseReleased,
    LeaseExpired,
    Updated {
        version: u64,
    },
    CallbackFailed {
        attempt: u32,
        error: String,
        duration_ms: Option<u64>,
    },
    Failed,
    Retried,
    Paused,
    Resumed,
}

/// One event as stored.
#[derive(Serialize, Deserialize)]
struct Stored(#[serde(with = "StoredWhat")] What);

/// The events one command recorded of one state, numbered from the number in the key.
#[derive(Serialize, Deserialize)]
struct Record {
    /// Log time of the command.
    at: Millis,
    /// Raft index of its entry.
    index: u64,
    events: Vec<Stored>,
}

/// Writes `events` of state `id`, produced at log time `at` by the entry at Raft
/// `index`, as numbers `next..` in one record, and deletes its events older than the
/// last `limit`. Returns the next number.
pub fn write<S: Store + ?Sized>(
    tx: &mut Tx<'_, S>,
    id: &str,
    next: u64,
    (at, index): (Millis, u64),
    events: Vec<What>,
    limit: u32,
) -> Result<u64, StoreError> {
    let after = next + events.len() as u64;
    let keep_from = after.saturating_sub(u64::from(limit));
    let first = next.max(keep_from);
    let kept: Vec<Stored> = events
        .into_iter()
        .skip((first - next) as usize)
        .map(Stored)
        .collect();
    if !kept.is_empty() {
        let record = Record {
            at,
            index,
            events: kept,
        };
        put_record(tx, Table::History, keys::state_seq(id, first), &record)?;
    }
    trim(tx, id, keep_from)?;
    Ok(after)
}

/// Deletes the events of state `id` numbered below `keep_from`, writing again, under
/// `keep_from`, the record that straddles it.
fn trim<S: Store + ?Sized>(tx: &mut Tx<'_, S>, id: &str, keep_from: u64) -> Result<(), StoreError> {
    if keep_from <= FIRST {
        return Ok(());
    }
    let prefix = keys::state_prefix(id);
    let mut old = Vec::new();
    for entry in tx.scan_prefix(Table::History, &prefix) {
        let (key, bytes) = entry?;
        let first = keys::seq_of(&key)?;
        if first >= keep_from {
            break;
        }
        old.push((key, first, bytes));
    }
    for (key, first, bytes) in old {
        tx.delete(Table::History, key);
        let mut record: Record = decode(&bytes)?;
        let gone = (keep_from - first) as usize;
        if gone < record.events.len() {
            record.events.drain(..gone);
            put_record(tx, Table::History, keys::state_seq(id, keep_from), &record)?;
        }
    }
    Ok(())
}

/// Deletes every event of state `id`.
pub fn delete_all<S: Store + ?Sized>(tx: &mut Tx<'_, S>, id: &str) -> Result<(), StoreError> {
    let prefix = keys::state_prefix(id);
    let all: Vec<Vec<u8>> = tx
        .scan_prefix(Table::History, &prefix)
        .map(|e| e.map(|(k, _)| k))
        .collect::<Result<_, _>>()?;
    for key in all {
        tx.delete(Table::History, key);
    }
    Ok(())
}

/// Up to `limit` events of state `id` numbered below `before` (all if `None`), newest
/// first.
pub fn read<S: Store + ?Sized>(
    store: &S,
    id: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let prefix = keys::state_prefix(id);
    let tx = Tx::new(store);
    let mut events: Vec<Event> = Vec::new();
    'records: for entry in tx.scan_prefix(Table::History, &prefix) {
        let (key, bytes) = entry?;
        let record: Record = decode(&bytes)?;
        for (seq, Stored(what)) in (keys::seq_of(&key)?..).zip(record.events) {
            if before.is_some_and(|b| seq >= b) {
                break 'records;
            }
            events.push(Event {
                seq,
                at: record.at,
                index: record.index,
                what,
            });
        }
    }
    events.reverse();
    events.truncate(limit);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::store::MemStore;

    /// Writes `n` `Updated` events as one command at time `at`; returns the next number.
    fn command(store: &mut MemStore, next: u64, at: Millis, n: u64, limit: u32) -> u64 {
        let mut tx = Tx::new(&*store);
        let events = (0..n).map(|version| What::Updated { version }).collect();
        let next = write(&mut tx, "s", next, (at, at * 10), events, limit).unwrap();
        let writes = tx.into_writes();
        store.commit(writes);
        next
    }

    fn seqs_and_times(store: &MemStore, before: Option<u64>) -> Vec<(u64, Millis, u64)> {
        let events = read(store, "s", before, 1000).unwrap();
        events.iter().map(|e| (e.seq, e.at, e.index)).collect()
    }

    #[test]
    fn one_record_per_command_trimmed_to_the_last_limit_events() {
        let mut store = MemStore::new();
        let mut next = command(&mut store, FIRST, 1, 2, 3);
        assert_eq!(store.len(Table::History), 1, "two events, one record");
        next = command(&mut store, next, 2, 2, 3);
        // Events 1-2 at time 1, 3-4 at time 2; the last 3 are 2, 3, 4: the first record
        // straddles the limit and keeps event 2 under its own number.
        assert_eq!(
            seqs_and_times(&store, None),
            [(4, 2, 20), (3, 2, 20), (2, 1, 10)]
        );
        assert_eq!(store.len(Table::History), 2);
        assert_eq!(seqs_and_times(&store, Some(4)), [(3, 2, 20), (2, 1, 10)]);
        assert_eq!(seqs_and_times(&store, Some(3)), [(2, 1, 10)]);
        // More events in one command than the limit: only the last ones are written,
        // and every older record goes.
        next = command(&mut store, next, 3, 5, 3);
        assert_eq!(next, 10);
        assert_eq!(
            seqs_and_times(&store, None),
            [(9, 3, 30), (8, 3, 30), (7, 3, 30)]
        );
        assert_eq!(store.len(Table::History), 1);
        // A larger limit from now on keeps what is there and adds to it.
        next = command(&mut store, next, 4, 1, 100);
        assert_eq!(seqs_and_times(&store, None).len(), 4);
        let events = read(&store, "s", None, 1).unwrap();
        assert_eq!(events[0].what, What::Updated { version: 0 });
        assert_eq!(next, 11);
    }

    #[test]
    fn delete_all_removes_every_record_of_the_state_only() {
        let mut store = MemStore::new();
        command(&mut store, FIRST, 1, 2, 100);
        let mut tx = Tx::new(&store);
        write(&mut tx, "s2", FIRST, (1, 1), vec![What::Created], 100).unwrap();
        delete_all(&mut tx, "s").unwrap();
        let writes = tx.into_writes();
        store.commit(writes);
        assert!(read(&store, "s", None, 100).unwrap().is_empty());
        assert_eq!(read(&store, "s2", None, 100).unwrap().len(), 1);
    }
}
