//! The storage the engine runs on: ordered key-value tables, read through a write
//! overlay so that one command — or a whole batch — commits atomically.
//!
//! The engine never holds the state machine in memory: it reads what a command touches
//! from a [`Store`] (sled in production, [`MemStore`] in tests), stages every write in a
//! [`Tx`], and the owner of the store commits the staged writes in one atomic step
//! together with the Raft applied index. Reads through the `Tx` see its own writes,
//! including in ordered scans (a merge of the overlay and the store), which is what the
//! queue and index look-ups need.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, CodecError};

/// A table of the state machine. In sled each is its own tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// State id → state.
    States,
    /// Channel name → channel metadata.
    Chans,
    /// (channel, position) → buffered value.
    Buffers,
    /// (channel, position) → blocked sender.
    Senders,
    /// (channel, position) → blocked receiver.
    Receivers,
    /// (deadline, what) → (): select timers and parked HTTP operations, by deadline.
    Timers,
    /// (expiry, state id) → (): leases, by expiry.
    Leases,
    /// (priority, pending since, state id) → (): deliverable states resumed by polling,
    /// highest priority first, then oldest first.
    PendingPoll,
    /// (state id, priority, pending since) → (): the same states by id, so a poll with
    /// a prefix finds its own without walking the others.
    PendingPollIds,
    /// (status or paused, state id) → (): states by status, for filtered listings.
    ByStatus,
    /// Operation id → parked HTTP send or receive.
    Ops,
    /// (state id, number of the first event) → a chunk of a state's history (the
    /// newest events are in the state's record, see `history`).
    History,
    /// Engine bookkeeping (log clock) and, for the Raft layer, applied index and membership.
    Meta,
    /// (deadline, state id) → (): `done` states to delete once their `retain_ms` has
    /// passed, by deadline.
    Retention,
    /// Idempotency key → the first reply of the write sent with it.
    Idempotency,
    /// (expiry, idempotency key) → (): idempotency records by expiry.
    IdempotencyExpiry,
}

impl Table {
    /// Every table, in a fixed order (snapshots and sled trees follow it).
    pub const ALL: [Table; 16] = [
        Table::States,
        Table::Chans,
        Table::Buffers,
        Table::Senders,
        Table::Receivers,
        Table::Timers,
        Table::Leases,
        Table::PendingPoll,
        Table::PendingPollIds,
        Table::ByStatus,
        Table::Ops,
        Table::History,
        Table::Meta,
        Table::Retention,
        Table::Idempotency,
        Table::IdempotencyExpiry,
    ];

    /// Stable name, used for sled tree names.
    pub fn name(self) -> &'static str {
        match self {
            Table::States => "sm_states",
            Table::Chans => "sm_chans",
            Table::Buffers => "sm_buffers",
            Table::Senders => "sm_senders",
            Table::Receivers => "sm_receivers",
            Table::Timers => "sm_timers",
            Table::Leases => "sm_leases",
            Table::PendingPoll => "sm_pending_poll",
            Table::PendingPollIds => "sm_pending_poll_ids",
            Table::ByStatus => "sm_by_status",
            Table::Ops => "sm_ops",
            Table::History => "sm_history",
            Table::Meta => "sm_meta",
            Table::Retention => "sm_retention",
            Table::Idempotency => "sm_idempotency",
            Table::IdempotencyExpiry => "sm_idempotency_expiry",
        }
    }

    /// Position in [`Table::ALL`] (the variants are declared in that order).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A storage failure. Fatal to apply: a replica that cannot read or write its state
/// machine must stop rather than diverge. The variants tell what failed, so callers
/// and tests match on them, never on message text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Stored bytes are not what was written: a checksum that does not hold, a key of
    /// the wrong shape, a data file that lost writes it had made durable. Such a record
    /// is never served, applied or replicated.
    #[error(
        "damaged record{}{}{}: {what}. It is not served or replicated; restore this \
         node's data directory or replace it with an empty node",
        .file.as_ref().map(|f| format!(" in {}", f.display())).unwrap_or_default(),
        .table.as_ref().map(|t| format!(", table {t:?}")).unwrap_or_default(),
        .key.as_ref().map(|k| format!(", key {}", printable(k))).unwrap_or_default()
    )]
    Corruption {
        /// The file it was read from, when the layer that found it knows.
        file: Option<PathBuf>,
        /// The table (sled tree) it was read from, when known.
        table: Option<String>,
        /// Its key, when the damage is in one record.
        key: Option<Vec<u8>>,
        /// What is wrong with it.
        what: String,
    },
    /// The disk or the file system failed.
    #[error(
        "I/O error{}: {source}",
        .file.as_ref().map(|f| format!(" on {}", f.display())).unwrap_or_default()
    )]
    Io {
        /// The file, when known.
        file: Option<PathBuf>,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A value did not encode, or stored bytes (checksum intact) did not decode as the
    /// type expected of them.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Something that cannot happen did: the tables are in a state the engine never
    /// leaves them in (a counted waiter that is not there, a counter going below zero),
    /// or the storage layer was used against its rules.
    #[error("broken invariant of the state machine: {0}")]
    Invariant(String),
}

impl StoreError {
    /// A key that does not have the shape its table gives its keys.
    pub fn bad_key(key: &[u8], what: &str) -> StoreError {
        StoreError::Corruption {
            file: None,
            table: None,
            key: Some(key.to_vec()),
            what: what.to_owned(),
        }
    }
}

/// A key for an error message: as text if it is printable, else in hex.
pub fn printable(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
        _ => format!("0x{}", hex::encode(key)),
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// An ordered scan that may fail.
pub type Scan<'a> = Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a>;

/// Read access to ordered tables.
pub trait Store {
    /// The value under `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with keys `>= from`, ascending.
    fn scan_from<'a>(&'a self, table: Table, from: &[u8]) -> Scan<'a>;
}

/// A store that can only be read: all that a node's readers (the API, the callbacks)
/// get of its replica, which Raft alone writes. Cheap to clone when `S` is, so that a
/// read can be moved to the blocking pool.
#[derive(Clone)]
pub struct ReadOnly<S>(S);

impl<S: Store> ReadOnly<S> {
    /// `store`, to be read only.
    pub fn new(store: S) -> Self {
        ReadOnly(store)
    }
}

impl<S: Store> Store for ReadOnly<S> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(table, key)
    }

    fn scan_from<'a>(&'a self, table: Table, from: &[u8]) -> Scan<'a> {
        self.0.scan_from(table, from)
    }
}

/// Staged writes: per table, key → new value (`None` deletes).
pub type WriteSet = [BTreeMap<Vec<u8>, Option<Vec<u8>>>; Table::ALL.len()];

/// A write overlay over a store.
///
/// # The base's first keys
/// Every command looks for what is due in the four deadline-ordered tables, and every
/// applied batch for the earliest deadline: a scan each, which in sled is an iterator
/// walked from the root. Within one transaction the base store does not change (the
/// apply holds the only writer, and its transaction commits only once it ends), so the
/// first key of a table in the base is read once and kept ([`Tx::first_key`],
/// [`Tx::keys_below`]); most of the time it tells that nothing in the base is due and
/// only the staged writes need looking at. A transaction over a store that others
/// write meanwhile (a reader's) must not use those two.
pub struct Tx<'s, S: Store + ?Sized> {
    base: &'s S,
    writes: WriteSet,
    /// Per table, the base's first key (`None`: the table is empty there), once read.
    base_first: [OnceCell<Option<Vec<u8>>>; Table::ALL.len()],
}

impl<'s, S: Store + ?Sized> Tx<'s, S> {
    /// An empty overlay over `base`.
    pub fn new(base: &'s S) -> Self {
        Tx {
            base,
            writes: Default::default(),
            base_first: Default::default(),
        }
    }

    /// The first key of `table` in the base store, read once per transaction (see "The
    /// base's first keys").
    fn base_first(&self, table: Table) -> Result<Option<&[u8]>, StoreError> {
        let cell = &self.base_first[table.index()];
        if cell.get().is_none() {
            let first = self.base.scan_from(table, &[]).next().transpose()?;
            let _ = cell.set(first.map(|(key, _)| key));
        }
        Ok(cell.get().and_then(|first| first.as_deref()))
    }

    /// The first key of `table`, seeing staged writes: what `scan_from(table, &[])`
    /// would give first, without walking the base again unless a staged delete took
    /// the base's first key (see "The base's first keys").
    pub fn first_key(&self, table: Table) -> Result<Option<Vec<u8>>, StoreError> {
        let staged = &self.writes[table.index()];
        let base = self.base_first(table)?;
        if let Some(first) = base {
            if matches!(staged.get(first), Some(None)) {
                let first = self.scan_from(table, &[]).next().transpose()?;
                return Ok(first.map(|(key, _)| key));
            }
        }
        let staged_first = staged
            .iter()
            .find(|(_, value)| value.is_some())
            .map(|(key, _)| key.as_slice());
        Ok(match (base, staged_first) {
            (Some(b), Some(s)) => Some(b.min(s).to_vec()),
            (b, s) => b.or(s).map(<[u8]>::to_vec),
        })
    }

    /// The keys of `table` below `bound`, ascending, seeing staged writes: what a scan
    /// from the start would give up to `bound`. The base is walked only if its first
    /// key is below `bound` (see "The base's first keys").
    pub fn keys_below(&self, table: Table, bound: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let base_below = self.base_first(table)?.is_some_and(|first| first < bound);
        if base_below {
            return self
                .scan_from(table, &[])
                .map(|entry| entry.map(|(key, _)| key))
                .take_while(|key| key.as_ref().map_or(true, |k| k.as_slice() < bound))
                .collect();
        }
        Ok(self.writes[table.index()]
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(bound)))
            .filter(|(_, value)| value.is_some())
            .map(|(key, _)| key.clone())
            .collect())
    }

    /// Reads a key, seeing staged writes.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes[table.index()].get(key) {
            Some(staged) => Ok(staged.clone()),
            None => self.base.get(table, key),
        }
    }

    /// Stages a write.
    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.writes[table.index()].insert(key, Some(value));
    }

    /// Stages a delete.
    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.writes[table.index()].insert(key, None);
    }

    /// Entries with keys `>= from`, ascending, seeing staged writes.
    pub fn scan_from<'a>(&'a self, table: Table, from: &[u8]) -> Scan<'a> {
        let staged = self.writes[table.index()]
            .range(from.to_vec()..)
            .map(|(k, v)| (k.clone(), v.clone()));
        merge(self.base.scan_from(table, from), staged)
    }

    /// Entries whose key starts with `prefix`, ascending.
    pub fn scan_prefix<'a>(&'a self, table: Table, prefix: &'a [u8]) -> Scan<'a> {
        Box::new(
            self.scan_from(table, prefix)
                .take_while(move |e| e.as_ref().map_or(true, |(k, _)| k.starts_with(prefix))),
        )
    }

    /// The first entry whose key starts with `prefix`.
    pub fn first_with_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Option<Entry>, StoreError> {
        self.scan_prefix(table, prefix).next().transpose()
    }

    /// The staged writes, for the owner of the store to commit.
    pub fn into_writes(self) -> WriteSet {
        self.writes
    }
}

/// A transaction reads like a store: its own writes, then the store's.
impl<S: Store + ?Sized> Store for Tx<'_, S> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Tx::get(self, table, key)
    }

    fn scan_from<'a>(&'a self, table: Table, from: &[u8]) -> Scan<'a> {
        Tx::scan_from(self, table, from)
    }
}

/// Merges a store scan with staged writes (key → value, `None`: deleted) in key order
/// over the same range: staged entries win, staged deletes hide stored entries.
pub fn merge<'a, I>(base: Scan<'a>, staged: I) -> Scan<'a>
where
    I: Iterator<Item = (Vec<u8>, Option<Vec<u8>>)> + 'a,
{
    Box::new(Merge {
        base: base.peekable(),
        staged: staged.peekable(),
    })
}

struct Merge<'a, I: Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>> {
    base: Peekable<Scan<'a>>,
    staged: Peekable<I>,
}

impl<I: Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>> Iterator for Merge<'_, I> {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.base.peek(), self.staged.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(Ok(_)), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(Ok((bk, _))), Some((sk, _))) => bk.cmp(sk),
            };
            if order == Ordering::Equal {
                self.base.next();
            }
            let take_staged = order != Ordering::Less;
            if !take_staged {
                return self.base.next();
            }
            if let Some((k, Some(v))) = self.staged.next() {
                return Some(Ok((k, v)));
            }
        }
    }
}

/// An in-memory store for tests and the reference runs: ordered maps per table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStore {
    tables: [BTreeMap<Vec<u8>, Vec<u8>>; Table::ALL.len()],
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies staged writes.
    pub fn commit(&mut self, writes: WriteSet) {
        for (table, staged) in self.tables.iter_mut().zip(writes) {
            for (k, v) in staged {
                match v {
                    Some(v) => table.insert(k, v),
                    None => table.remove(&k),
                };
            }
        }
    }

    /// Number of entries in a table.
    pub fn len(&self, table: Table) -> usize {
        self.tables[table.index()].len()
    }

    /// Whether every table is empty.
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(BTreeMap::is_empty)
    }

    /// Whether every table but [`Table::Meta`] (which keeps the log clock) is empty.
    pub fn is_empty_but_meta(&self) -> bool {
        Table::ALL
            .iter()
            .filter(|t| **t != Table::Meta)
            .all(|t| self.tables[t.index()].is_empty())
    }

    /// All entries of a table, in order.
    pub fn entries(&self, table: Table) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.tables[table.index()].iter()
    }
}

impl Store for MemStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tables[table.index()].get(key).cloned())
    }

    fn scan_from<'a>(&'a self, table: Table, from: &[u8]) -> Scan<'a> {
        Box::new(
            self.tables[table.index()]
                .range(from.to_vec()..)
                .map(|(k, v)| Ok((k.clone(), v.clone()))),
        )
    }
}

/// Reads and decodes a record.
pub fn get_record<S: Store + ?Sized, T: DeserializeOwned>(
    tx: &Tx<'_, S>,
    table: Table,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match tx.get(table, key)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
    }
}

/// Encodes and stages a record.
pub fn put_record<S: Store + ?Sized, T: Serialize>(
    tx: &mut Tx<'_, S>,
    table: Table,
    key: Vec<u8>,
    value: &T,
) -> Result<(), StoreError> {
    tx.put(table, key, codec::encode(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a scan from the start gives: the answers `first_key` and `keys_below` must
    /// match without walking the base.
    fn scanned(tx: &Tx<'_, MemStore>, table: Table) -> Vec<Vec<u8>> {
        tx.scan_from(table, &[]).map(|e| e.unwrap().0).collect()
    }

    /// A step of a transaction: stage a write (`Some`) or a delete (`None`) of a
    /// one-byte key, then ask both questions with a one-byte bound.
    fn step() -> impl Strategy<Value = (u8, Option<u8>, u8)> {
        (0..16u8, proptest::option::of(any::<u8>()), 0..18u8)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random base tables, then random staged writes and deletes: after each, the
        /// first key and the keys below a bound are what a full merged scan gives.
        #[test]
        fn first_keys_and_keys_below_agree_with_a_scan(
            base in proptest::collection::btree_set(0..16u8, 0..8),
            steps in proptest::collection::vec(step(), 1..24),
        ) {
            let mut store = MemStore::new();
            let mut writes = WriteSet::default();
            for key in base {
                writes[Table::Timers.index()].insert(vec![key], Some(vec![key]));
            }
            store.commit(writes);
            let mut tx = Tx::new(&store);
            for (key, value, bound) in steps {
                match value {
                    Some(value) => tx.put(Table::Timers, vec![key], vec![value]),
                    None => tx.delete(Table::Timers, vec![key]),
                }
                let all = scanned(&tx, Table::Timers);
                prop_assert_eq!(tx.first_key(Table::Timers).unwrap(), all.first().cloned());
                let below: Vec<Vec<u8>> =
                    all.iter().filter(|k| k.as_slice() < [bound].as_slice()).cloned().collect();
                prop_assert_eq!(tx.keys_below(Table::Timers, &[bound]).unwrap(), below);
            }
        }
    }
}
