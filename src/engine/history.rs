//! Each state's history (design.md §3.6): what happened to the process, newest first.
//!
//! Operations note events on the command's [`Ctx`](super::ctx) as they go; when the
//! context flushes, each state's events are numbered from the state's own counter and
//! kept as ONE [`Record`] per state and command, with the command's log time and Raft
//! index, which all its events share. Only the last `history_limit` events of a state
//! are shown — the command carries the limit (the leader's `--history-limit`), so every
//! replica keeps the same. A deleted state's history goes with it. With a limit of 0
//! nothing is recorded.
//!
//! Where the records lie, and why: sled's cost in an apply is per key written, and the
//! state's own record is written by every command that notes an event of it. So a
//! state's newest records ride in its own record, after the state's encoding (the
//! [`Tail`]; a record without one is a state with no recent events, as format 4 first
//! wrote them). Once the tail holds [`TAIL_EVENTS`] events or [`TAIL_BYTES`] bytes, it
//! moves to [`Table::History`] as one chunk, under (state id, number of its first event):
//! one key for many commands, not one per command. A chunk is its records one after
//! the other, so a record written alone under its own key (as before tails) is a chunk
//! of one. Events older than the limit are dropped from the tail at once; a chunk is
//! deleted when the tail moves and every event in it is too old, and until then reads
//! skip what is below the tail's `keep_from`.
//!
//! postcard rather than JSON: a state created blocked notes two events, which in JSON,
//! a key each, cost more than the state itself. The JSON shape operators see is
//! [`Event`]'s; [`StoredWhat`] mirrors [`What`] without the JSON-only attributes that
//! postcard cannot read back (the compiler checks that the two agree). A completed case
//! records its value's size, not the value (the state's results hold values while they
//! matter).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys;
use super::store::{Store, StoreError, Table, Tx};
use super::types::{Millis, State};
use crate::codec::{decode_prefix, encode};

/// The number of a state's first event.
pub const FIRST: u64 = 1;

/// A tail of this many events moves to the history table.
pub const TAIL_EVENTS: usize = 16;

/// A tail of this many bytes (encoded) moves to the history table, however few its
/// events: every command that changes the state writes its tail again.
pub const TAIL_BYTES: usize = 1024;

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

/// The events one command recorded of one state, numbered on from the number of the
/// record before it (the first of a chunk or tail: the number its key or tail gives).
#[derive(Serialize, Deserialize)]
struct Record {
    /// Log time of the command.
    at: Millis,
    /// Raft index of its entry.
    index: u64,
    events: Vec<Stored>,
}

/// A state's newest records, kept in its own record after the state.
#[derive(Default, Serialize, Deserialize)]
pub struct Tail {
    /// Number of the oldest event shown: older ones may still lie in a chunk that also
    /// holds newer ones.
    keep_from: u64,
    /// Number of the first event in `records`.
    first: u64,
    records: Vec<Record>,
}

impl Tail {
    fn events(&self) -> usize {
        self.records.iter().map(|r| r.events.len()).sum()
    }

    /// Drops the events numbered below `keep_from`.
    fn drop_before(&mut self, keep_from: u64) {
        while self.first < keep_from && !self.records.is_empty() {
            let record = &mut self.records[0];
            let gone = ((keep_from - self.first) as usize).min(record.events.len());
            record.events.drain(..gone);
            self.first += gone as u64;
            if record.events.is_empty() {
                self.records.remove(0);
            }
        }
    }
}

/// State `id`'s record: the state, then its history's tail. A tail of [`TAIL_BYTES`]
/// or more moves to the history table first: its size is known once it is encoded,
/// and the record encodes it anyway.
pub fn encode_state<S: Store + ?Sized>(
    tx: &mut Tx<'_, S>,
    id: &str,
    state: &State,
    tail: &mut Tail,
) -> Result<Vec<u8>, StoreError> {
    let mut bytes = encode(state)?;
    if !tail.records.is_empty() || tail.keep_from > 0 {
        let mut encoded = encode(tail)?;
        if encoded.len() >= TAIL_BYTES && !tail.records.is_empty() {
            spill(tx, id, tail)?;
            encoded = encode(tail)?;
        }
        bytes.extend(encoded);
    }
    Ok(bytes)
}

/// A state's record read back (a record with nothing after the state: no tail).
pub fn decode_state(bytes: &[u8]) -> Result<(State, Tail), StoreError> {
    let (state, rest) = decode_prefix(bytes)?;
    let tail = if rest.is_empty() {
        Tail::default()
    } else {
        decode_prefix(rest)?.0
    };
    Ok((state, tail))
}

/// Adds `events` of state `id`, produced at log time `at` by the entry at Raft
/// `index`, as numbers `next..` to its tail, moving the tail to the history table once
/// it holds [`TAIL_EVENTS`] (or `limit`, if fewer), and drops its events older than the
/// last `limit`. Returns the next number.
pub fn write<S: Store + ?Sized>(
    tx: &mut Tx<'_, S>,
    id: &str,
    next: u64,
    (at, index): (Millis, u64),
    events: Vec<What>,
    limit: u32,
    tail: &mut Tail,
) -> Result<u64, StoreError> {
    let after = next + events.len() as u64;
    // Never lower: events once hidden by a smaller limit stay hidden.
    let keep_from = after.saturating_sub(u64::from(limit)).max(tail.keep_from);
    if tail.records.is_empty() {
        tail.first = next;
    }
    let events = events.into_iter().map(Stored).collect();
    tail.records.push(Record { at, index, events });
    tail.drop_before(keep_from);
    tail.keep_from = keep_from;
    if !tail.records.is_empty() && tail.events() >= TAIL_EVENTS.min(limit as usize) {
        spill(tx, id, tail)?;
    }
    Ok(after)
}

/// Moves the tail of state `id` to the history table as one chunk, and deletes the
/// chunks wholly older than its `keep_from`.
fn spill<S: Store + ?Sized>(
    tx: &mut Tx<'_, S>,
    id: &str,
    tail: &mut Tail,
) -> Result<(), StoreError> {
    let mut chunk = Vec::new();
    for record in &tail.records {
        chunk.extend(encode(record)?);
    }
    tx.put(Table::History, keys::state_seq(id, tail.first), chunk);
    trim(tx, id, tail.keep_from)?;
    tail.first += tail.events() as u64;
    tail.records.clear();
    Ok(())
}

/// A chunk's records, one after the other in its bytes.
fn decode_chunk(mut bytes: &[u8]) -> Result<Vec<Record>, StoreError> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let (record, rest) = decode_prefix(bytes)?;
        records.push(record);
        bytes = rest;
    }
    Ok(records)
}

/// `records` with the number of each one's first event, the first's being `first`.
fn numbered(first: u64, records: Vec<Record>) -> impl Iterator<Item = (u64, Record)> {
    records.into_iter().scan(first, |seq, record| {
        let start = *seq;
        *seq += record.events.len() as u64;
        Some((start, record))
    })
}

/// Deletes the chunks of state `id` whose every event is numbered below `keep_from`.
/// Chunks follow one another, so a chunk ends where the next begins (or before, if
/// events between were dropped, and those were older than `keep_from`): every chunk
/// followed by one that begins at or below `keep_from` goes, and none is read.
fn trim<S: Store + ?Sized>(tx: &mut Tx<'_, S>, id: &str, keep_from: u64) -> Result<(), StoreError> {
    let prefix = keys::state_prefix(id);
    let mut old = Vec::new();
    let mut previous = None;
    for entry in tx.scan_prefix(Table::History, &prefix) {
        let (key, _) = entry?;
        if keys::seq_of(&key)? > keep_from {
            break;
        }
        old.extend(previous.replace(key));
    }
    for key in old {
        tx.delete(Table::History, key);
    }
    Ok(())
}

/// Deletes every event of state `id` in the history table (its tail goes with its
/// record).
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
/// first; none if there is no such state.
///
/// The state's record is read before the history table: a tail that moves to the
/// table in between is then found in both (the same events under the same numbers,
/// taken once), never in neither.
pub fn read<S: Store + ?Sized>(
    store: &S,
    id: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let Some(bytes) = store.get(Table::States, id.as_bytes())? else {
        return Ok(Vec::new());
    };
    let (_, tail) = decode_state(&bytes)?;
    let mut records = Vec::new();
    let prefix = keys::state_prefix(id);
    for entry in Tx::new(store).scan_prefix(Table::History, &prefix) {
        let (key, bytes) = entry?;
        records.extend(numbered(keys::seq_of(&key)?, decode_chunk(&bytes)?));
    }
    records.extend(numbered(tail.first, tail.records));
    let mut events = BTreeMap::new();
    for (first, record) in records {
        for (seq, Stored(what)) in (first..).zip(record.events) {
            let shown = seq >= tail.keep_from && before.is_none_or(|b| seq < b);
            if shown {
                let (at, index) = (record.at, record.index);
                events.insert(
                    seq,
                    Event {
                        seq,
                        at,
                        index,
                        what,
                    },
                );
            }
        }
    }
    Ok(events.into_values().rev().take(limit).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::data::Data;
    use crate::engine::store::{put_record, MemStore};

    fn state(id: &str) -> State {
        State {
            id: id.to_owned(),
            data: Data::null(),
            selects: Vec::new(),
            results: Vec::new(),
            callback: None,
            version: 1,
            lease: None,
            created_at: 0,
            updated_at: 0,
            next_seq: 1,
            pending_since: None,
            attempts: 0,
            deliveries: 0,
            max_deliveries: 0,
            retain_ms: 0,
            last_error: None,
            failed: false,
            paused: false,
            priority: 0,
            next_event: FIRST,
        }
    }

    /// State "s" and its history, written as a command's flush writes them.
    struct History {
        store: MemStore,
        tail: Tail,
        next: u64,
    }

    impl History {
        fn new() -> History {
            let (store, tail, next) = (MemStore::new(), Tail::default(), FIRST);
            let mut history = History { store, tail, next };
            history.command(0, Vec::new(), 100);
            history
        }

        /// One command at time `at` noting `events` of "s".
        fn command(&mut self, at: Millis, events: Vec<What>, limit: u32) {
            let mut tx = Tx::new(&self.store);
            if !events.is_empty() {
                let stamp = (at, at * 10);
                let tail = &mut self.tail;
                self.next = write(&mut tx, "s", self.next, stamp, events, limit, tail).unwrap();
            }
            let record = encode_state(&mut tx, "s", &state("s"), &mut self.tail).unwrap();
            tx.put(Table::States, b"s".to_vec(), record);
            let writes = tx.into_writes();
            self.store.commit(writes);
        }

        /// `n` `Updated` events in one command.
        fn updates(&mut self, at: Millis, n: u64, limit: u32) {
            let events = (0..n).map(|version| What::Updated { version }).collect();
            self.command(at, events, limit);
        }

        fn seqs_and_times(&self, before: Option<u64>) -> Vec<(u64, Millis, u64)> {
            let events = read(&self.store, "s", before, 1000).unwrap();
            events.iter().map(|e| (e.seq, e.at, e.index)).collect()
        }

        fn chunks(&self) -> usize {
            self.store.len(Table::History)
        }
    }

    #[test]
    fn the_newest_events_ride_in_the_state_record_until_the_tail_is_full() {
        let mut history = History::new();
        for at in 1..=7 {
            history.updates(at, 2, 100);
        }
        assert_eq!(history.chunks(), 0, "14 events, all in the tail");
        let shown = history.seqs_and_times(None);
        assert_eq!(shown.len(), 14);
        assert_eq!((shown[0], shown[13]), ((14, 7, 70), (1, 1, 10)));
        // The 16th event fills the tail: one key for eight commands.
        history.updates(8, 2, 100);
        assert_eq!(history.chunks(), 1);
        assert!(history.tail.records.is_empty());
        history.updates(9, 1, 100);
        let shown = history.seqs_and_times(None);
        assert_eq!(shown.len(), 17);
        assert_eq!(
            (shown[0], shown[1], shown[16]),
            ((17, 9, 90), (16, 8, 80), (1, 1, 10))
        );
        assert_eq!(history.seqs_and_times(Some(17))[0], (16, 8, 80));
        assert_eq!(history.seqs_and_times(Some(3)), [(2, 1, 10), (1, 1, 10)]);
        let newest = read(&history.store, "s", None, 1).unwrap();
        assert_eq!(newest[0].what, What::Updated { version: 0 });
    }

    #[test]
    fn only_the_last_limit_events_show_and_chunks_wholly_older_go() {
        let mut history = History::new();
        for at in 1..=40 {
            history.updates(at, 1, 20);
        }
        let seqs: Vec<u64> = history.seqs_and_times(None).iter().map(|e| e.0).collect();
        assert_eq!(seqs, (21..=40).rev().collect::<Vec<_>>());
        // Chunks of 16 events: 1-16 and 17-32 in the table, 33-40 in the tail. 1-16 is
        // wholly older than 21 but goes only when the tail moves next.
        assert_eq!(history.chunks(), 2);
        // More events in one command than the limit: only the last ones are kept.
        history.updates(41, 30, 20);
        let seqs: Vec<u64> = history.seqs_and_times(None).iter().map(|e| e.0).collect();
        assert_eq!(seqs, (51..=70).rev().collect::<Vec<_>>());
        assert_eq!(history.chunks(), 1, "the older chunk went");
    }

    #[test]
    fn a_small_limit_keeps_the_tail_at_the_limit() {
        let mut history = History::new();
        for at in 1..=5 {
            history.updates(at, 2, 3);
            assert!(
                history.chunks() <= 1,
                "older chunks go when a new one moves"
            );
        }
        assert_eq!(
            history.seqs_and_times(None),
            [(10, 5, 50), (9, 5, 50), (8, 4, 40)]
        );
        // A larger limit from now on keeps what is shown and adds to it: events once
        // hidden stay hidden.
        history.updates(6, 1, 100);
        assert_eq!(history.seqs_and_times(None).len(), 4);
    }

    #[test]
    fn a_large_event_moves_the_tail_by_its_bytes() {
        let mut history = History::new();
        history.updates(1, 1, 100);
        let error = "x".repeat(TAIL_BYTES);
        let events = vec![What::CallbackFailed {
            attempt: 1,
            error,
            duration_ms: None,
        }];
        history.command(2, events, 100);
        assert_eq!(history.chunks(), 1);
        assert_eq!(history.seqs_and_times(None), [(2, 2, 20), (1, 1, 10)]);
    }

    #[test]
    fn records_of_one_command_per_key_and_states_without_a_tail_still_read() {
        // As format 4 first wrote them: every command's record under its own key, and
        // nothing after the state in its record.
        let mut store = MemStore::new();
        let mut tx = Tx::new(&store);
        put_record(&mut tx, Table::States, b"s".to_vec(), &state("s")).unwrap();
        for (first, at, n) in [(1, 1, 2), (3, 2, 1)] {
            let events = (0..n)
                .map(|version| Stored(What::Updated { version }))
                .collect();
            let record = Record {
                at,
                index: at * 10,
                events,
            };
            put_record(
                &mut tx,
                Table::History,
                keys::state_seq("s", first),
                &record,
            )
            .unwrap();
        }
        let writes = tx.into_writes();
        store.commit(writes);
        let mut history = History {
            store,
            tail: Tail::default(),
            next: 4,
        };
        let (_, tail) =
            decode_state(&history.store.get(Table::States, b"s").unwrap().unwrap()).unwrap();
        assert!(tail.records.is_empty() && tail.keep_from == 0);
        assert_eq!(
            history.seqs_and_times(None),
            [(3, 2, 20), (2, 1, 10), (1, 1, 10)]
        );
        // Written on with a limit of 3: the old records show while within it, and go
        // when the tail moves.
        history.updates(3, 1, 3);
        assert_eq!(
            history.seqs_and_times(None),
            [(4, 3, 30), (3, 2, 20), (2, 1, 10)]
        );
        assert_eq!(history.chunks(), 2);
        history.updates(4, 2, 3);
        assert_eq!(
            history.seqs_and_times(None),
            [(6, 4, 40), (5, 4, 40), (4, 3, 30)]
        );
        assert_eq!(
            history.chunks(),
            1,
            "the tail's chunk; both old records went"
        );
    }

    #[test]
    fn delete_all_removes_every_record_of_the_state_only() {
        let mut history = History::new();
        for at in 1..=20 {
            history.updates(at, 1, 100);
        }
        let mut tx = Tx::new(&history.store);
        let mut tail = Tail::default();
        write(
            &mut tx,
            "s2",
            FIRST,
            (1, 1),
            vec![What::Created; 17],
            100,
            &mut tail,
        )
        .unwrap();
        delete_all(&mut tx, "s").unwrap();
        tx.delete(Table::States, b"s".to_vec());
        let record = encode_state(&mut tx, "s2", &state("s2"), &mut tail).unwrap();
        tx.put(Table::States, b"s2".to_vec(), record);
        let writes = tx.into_writes();
        history.store.commit(writes);
        assert!(read(&history.store, "s", None, 100).unwrap().is_empty());
        assert_eq!(history.chunks(), 1, "s2's chunk");
        assert_eq!(read(&history.store, "s2", None, 100).unwrap().len(), 17);
    }
}
