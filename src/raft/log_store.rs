//! The Raft log, vote, committed index and purge point, in sled trees beside the state
//! machine's.
//!
//! Entries live in the `raft_log` tree under their index in big-endian bytes, so sled's
//! key order is log order and the last entry is the tree's last key. The vote, the
//! committed log id and the last purged log id live in `raft_state`. Entries are in the
//! binary [`codec`]; the vote and log ids are small JSON.
//!
//! # Durability
//! openraft may count an entry towards a majority as soon as the flush callback of
//! [`RaftLogStorage::append`] fires, so the callback fires only after
//! [`SledStore::flush_durable`] returned: sled's own flush, which on Linux uses
//! `sync_file_range` and so survives a process crash but not a power loss (sled issue
//! #1452), followed by `fdatasync` of sled's data file, which does. A vote is flushed the
//! same way before `save_vote` returns. Truncation and purging are not flushed by
//! themselves: a crash may bring back truncated (never committed) or purged (already in a
//! snapshot) entries, which Raft tolerates, and the next append flushes them anyway.
//!
//! # Snapshot installs
//! A follower that gets a snapshot from the leader is told by openraft 0.9, in one step,
//! to install it (on the state machine's task) and to purge its log up to the
//! snapshot's last entry (here). Were that purge point durable before the install, a
//! `kill -9` in between would leave a node whose state machine stands before the purge
//! point with the entries between gone: it could never restart. So while the state
//! machine's [`InstallGate`] is open, a purge past the applied index removes the entries
//! but keeps the purge point in memory only. The next append waits until the state
//! machine has applied up to that point; only then does it record the purge point and
//! acknowledge anything. A crash in between restarts from the old purge point, with
//! `committed` cut back to what the log can replay from the applied index (no entry past
//! the snapshot was acknowledged, so none is lost), and the leader sends the snapshot
//! again.
//!
//! Every value is [`seal`]ed: an entry or vote that comes back damaged is a storage
//! error naming the data file, never applied or sent to a follower.
//!
//! The flush runs on the blocking pool, so a slow disk stalls Raft's log I/O — as it
//! must — but not the runtime's other tasks.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::state_machine::{applied_log_id, InstallGate};
use super::{StorageError, TypeConfig};
use crate::engine::codec;
use crate::storage::{seal, sm::SledStore};

/// sled tree of log entries.
const LOG_TREE: &str = "raft_log";
/// sled tree of the vote, committed and purged log ids.
const STATE_TREE: &str = "raft_state";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";

/// The log storage of one node. Clones share the trees (the clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    store: SledStore,
    log: sled::Tree,
    state: sled::Tree,
    /// The committed index + 1 (0: none), for readiness checks outside openraft.
    committed: Arc<AtomicU64>,
    /// Open while the state machine receives or installs a snapshot.
    installing: InstallGate,
    /// A purge point past the applied index, made during an install and not yet stored.
    pending_purge: Arc<Mutex<Option<LogId<u64>>>>,
}

impl LogStore {
    /// Opens the log trees in the store's database.
    pub fn open(store: &SledStore) -> Result<Self, StorageError> {
        let open = |name| store.db().open_tree(name).map_err(|e| read_err(&e));
        let log_store = LogStore {
            store: store.clone(),
            log: open(LOG_TREE)?,
            state: open(STATE_TREE)?,
            committed: Arc::new(AtomicU64::new(0)),
            installing: InstallGate::default(),
            pending_purge: Arc::default(),
        };
        let committed: Option<LogId<u64>> = log_store.get_json(KEY_COMMITTED)?;
        log_store.note_committed(committed);
        Ok(log_store)
    }

    /// Follows the state machine's snapshot installs (module docs, "Snapshot installs").
    pub fn follow_installs(mut self, installing: InstallGate) -> Self {
        self.installing = installing;
        self
    }

    fn pending_purge(&self) -> std::sync::MutexGuard<'_, Option<LogId<u64>>> {
        self.pending_purge.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a purge point held back during an install, once the state machine has
    /// applied up to it (the install is durable).
    async fn settle_purge(&self) -> Result<(), StorageError> {
        loop {
            let Some(pending) = *self.pending_purge() else {
                return Ok(());
            };
            // Subscribe before reading, so an install that ends in between wakes us.
            let next_install = self.installing.next_install();
            if applied_log_id(&self.store)? >= Some(pending) {
                self.put_json(KEY_PURGED, &pending)?;
                *self.pending_purge() = None;
                return Ok(());
            }
            next_install.await;
        }
    }

    /// The last index that the log holds without a gap after the applied entry.
    fn replayable_through(&self, applied: u64) -> Result<u64, StorageError> {
        let mut through = applied;
        for entry in self.log.range(index_key(applied + 1)..) {
            let (key, _) = entry.map_err(|e| read_err(&e))?;
            if parse_index(&key)? != through + 1 {
                break;
            }
            through += 1;
        }
        Ok(through)
    }

    /// The highest index this node knows to be committed, if any.
    pub fn committed_index(&self) -> Option<u64> {
        self.committed.load(Ordering::Acquire).checked_sub(1)
    }

    fn note_committed(&self, committed: Option<LogId<u64>>) {
        let value = committed.map_or(0, |id| id.index + 1);
        self.committed.fetch_max(value, Ordering::AcqRel);
    }

    fn get_json<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.state.get(key).map_err(|e| read_err(&e))? {
            Some(stored) => {
                let bytes = self
                    .store
                    .unseal(&self.state, key, stored)
                    .map_err(|e| read_err(&e))?;
                Ok(Some(
                    serde_json::from_slice(&bytes).map_err(|e| read_err(&e))?,
                ))
            }
            None => Ok(None),
        }
    }

    fn put_json<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| write_err(&e))?;
        self.state
            .insert(key, seal::seal(key, &bytes))
            .map_err(|e| write_err(&e))?;
        Ok(())
    }

    /// The entry stored under `key`, checked and decoded.
    fn decode_entry(
        &self,
        key: &[u8],
        stored: sled::IVec,
    ) -> Result<Entry<TypeConfig>, StorageError> {
        let bytes = self
            .store
            .unseal(&self.log, key, stored)
            .map_err(|e| read_err(&e))?;
        codec::decode(&bytes).map_err(|e| read_err(&e))
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, StorageError> {
        match self.log.last().map_err(|e| read_err(&e))? {
            Some((key, stored)) => Ok(Some(self.decode_entry(&key, stored)?.log_id)),
            None => Ok(None),
        }
    }

    /// Removes every entry with an index in `range`.
    fn remove_range(&self, range: impl RangeBounds<Vec<u8>>) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for entry in self.log.range(range) {
            let (key, _) = entry.map_err(|e| read_err(&e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| write_err(&e))
    }

    /// Waits for [`SledStore::flush_durable`] on the blocking pool.
    async fn flush(&self) -> Result<(), StorageError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush_durable())
            .await
            .map_err(|e| write_err(&e))?
            .map_err(|e| write_err(&e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for item in self.log.range(index_key(start)..) {
            let (key, stored) = item.map_err(|e| read_err(&e))?;
            if !range.contains(&parse_index(&key)?) {
                break;
            }
            entries.push(self.decode_entry(&key, stored)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let stored: Option<LogId<u64>> = self.get_json(KEY_PURGED)?;
        let last_purged_log_id = stored.max(*self.pending_purge());
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.put_json(KEY_VOTE, vote)?;
        self.flush().await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.get_json(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        self.put_json(KEY_COMMITTED, &committed)?;
        self.note_committed(committed);
        Ok(())
    }

    /// The stored committed log id, cut back to what can be replayed: after a crash
    /// during a snapshot install it may lie past a gap (module docs).
    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        let committed = self
            .get_json::<Option<LogId<u64>>>(KEY_COMMITTED)?
            .flatten();
        let Some(committed_id) = committed else {
            return Ok(None);
        };
        let applied = applied_log_id(&self.store)?;
        let from = applied.map_or(0, |id| id.index);
        if committed_id.index <= from {
            return Ok(committed);
        }
        let through = self.replayable_through(from)?;
        if through >= committed_id.index {
            return Ok(committed);
        }
        tracing::warn!(
            committed = committed_id.index,
            replayable = through,
            "the log has a gap after the applied entry (a snapshot install was cut \
             short); resuming from what it holds"
        );
        if through == from {
            return Ok(applied);
        }
        let stored = self.log.get(index_key(through)).map_err(|e| read_err(&e))?;
        match stored {
            Some(stored) => Ok(Some(self.decode_entry(&index_key(through), stored)?.log_id)),
            None => Ok(applied),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        self.settle_purge().await?;
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(|e| write_err(&e))?;
            let key = index_key(entry.log_id.index);
            let stored = seal::seal(&key, &bytes);
            batch.insert(key, stored);
        }
        self.log.apply_batch(batch).map_err(|e| write_err(&e))?;
        self.flush().await?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.remove_range(index_key(log_id.index)..)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let applied = applied_log_id(&self.store)?;
        if self.installing.is_open() && Some(log_id) > applied {
            *self.pending_purge() = Some(log_id);
        } else {
            self.put_json(KEY_PURGED, &log_id)?;
        }
        self.remove_range(..=index_key(log_id.index))
    }
}

/// The sled key of a log index: big-endian, so key order is index order.
fn index_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

fn parse_index(key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StorageIOError::read_logs(openraft::AnyError::error("bad log key")))?;
    Ok(u64::from_be_bytes(bytes))
}

fn read_err(e: &(impl std::error::Error + 'static)) -> StorageError {
    StorageIOError::read_logs(e).into()
}

fn write_err(e: &(impl std::error::Error + 'static)) -> StorageError {
    StorageIOError::write_logs(e).into()
}
