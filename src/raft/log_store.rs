//! The Raft log, vote, committed index and purge point: a thin openraft adapter over the
//! write-ahead log ([`crate::storage::wal`]), which keeps its files in `wal/` of the data
//! directory, apart from the state machine's sled database.
//!
//! Entries are stored in the binary [`codec`]; the vote and log ids as small JSON. The
//! log checks every record with its CRC-32C, so an entry or vote that comes back damaged
//! is a storage error naming the segment file and offset, never applied or sent.
//!
//! # Durability
//! openraft may count an entry towards a majority as soon as the flush callback of
//! [`RaftLogStorage::append`] fires, so it fires once the `fdatasync` covering the entry
//! returned (docs/design.md §4, "Who syncs"). Who runs that sync depends on whose
//! entries they are:
//! - the leader's own (proposed by this node): the log's sync thread, so `append`
//!   returns at once and openraft sends the entries to the followers while the leader's
//!   sync runs; the leader's and a follower's `fdatasync` overlap;
//! - a follower's, from the leader: the appending thread itself when no sync is running
//!   (the usual case: the follower answers the leader only once the sync is done, so a
//!   hand-off would add two thread wake-ups and gain nothing), else the sync thread,
//!   where appends that arrive meanwhile share the next one. Such a sync blocks the
//!   tokio worker for as long as the disk takes, so `append` first yields to whatever
//!   is queued on that worker.
//!
//! A vote is durable before `save_vote` returns. The committed id, truncations
//! and purges ride on the next sync: a crash may bring back truncated (never committed)
//! or purged (already in a snapshot) entries, which Raft tolerates. A failed `fdatasync`
//! stops the log for good; openraft gets the error and stops, and so does the node.
//!
//! # Answering writes
//! Since the leader's sync no longer comes before replication, two followers can make
//! an entry committed while the leader's own sync is still running, or after it failed
//! and before openraft has stopped. So the log also says how far it is durable
//! ([`LogStore::synced`]), and a leader answers a write only once its own copy of the
//! entry is durable too: never on the strength of a sync that failed. It costs nothing
//! in the usual case, where the leader's sync, begun first, ends before the quorum's.
//!
//! # Purging: one rule
//! The state machine is made durable by checkpoints, not on every apply
//! ([`crate::storage::sm::checkpoint`]), so after a crash the node replays the log from
//! the last checkpoint's applied index. Hence the rule: the log never purges past the
//! *durable* applied index (or a durable snapshot), which the state machine publishes
//! and this store follows ([`LogStore::follow_durable`]). A purge that openraft asks for
//! beyond it is held in memory (the log reports it, reads skip the entries) and done
//! once the durable index reaches it.
//!
//! That is also what makes a snapshot install safe. A follower that gets a snapshot is
//! told by openraft, in one step, to install it (on the state machine's task) and to
//! purge its log up to the snapshot's last entry (here); were that purge durable before
//! the install, a `kill -9` in between would leave a node whose state machine stands
//! before the purge point with the entries between gone. The install ends with the
//! tables flushed, which raises the durable index to the snapshot. An append that would
//! leave a gap after a held purge waits for that, so nothing past the snapshot is
//! acknowledged before the install is durable. A crash in between restarts from the old
//! purge point, with `committed` cut back to what the log can replay from the applied
//! index (no entry past the snapshot was acknowledged, so none is lost), and the leader
//! sends the snapshot again.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::Serialize;

use tokio::sync::watch;

use super::log_tail::{Tail, TAIL_BYTES};
use super::state_machine::applied_log_id;
use super::{storage_err, Entry, LogId, StorageError, TypeConfig, Vote};
use crate::codec;
use crate::storage::sm::SledStore;
use crate::storage::wal::{self, SyncBy, Wal, WalError};

/// The log storage of one node. Clones share the log (the clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    wal: Wal,
    /// This node's id: its own entries are synced on the log's sync thread
    /// ("Durability"). `None` until [`LogStore::of_node`]: then every append may sync on
    /// the appending thread.
    node_id: Option<u64>,
    /// The state machine's store, for the applied index a restart replays from.
    store: SledStore,
    /// The committed index + 1 (0: none), for readiness checks outside openraft.
    committed: Arc<AtomicU64>,
    /// How far the log may be purged: the durable applied index ("Purging: one rule").
    durable: watch::Receiver<Option<u64>>,
    /// A purge point past the durable applied index, not yet done.
    pending_purge: Arc<Mutex<Option<LogId>>>,
    /// The bytes of the entries the log holds, after each change.
    held_bytes: Arc<watch::Sender<u64>>,
    /// A change of `held_bytes` is notified only when it leaves at least this many.
    notify_held_from: Arc<AtomicU64>,
    /// The newest entries, decoded, for reads soon after the append ([`log_tail`]).
    tail: Arc<Mutex<Tail>>,
    /// How far the log is durable ("Answering writes").
    synced: Arc<watch::Sender<LogSynced>>,
}

/// How far a node's log is durable: every entry below `below`, unless it `failed`.
#[derive(Clone, Copy, Debug)]
struct LogSynced {
    below: u64,
    /// Raised by each truncation: a sync called back for an append made before it says
    /// nothing of the entries appended at those indexes since.
    epoch: u64,
    failed: bool,
}

/// Follows how far this node's log is durable (module docs, "Answering writes").
#[derive(Clone)]
pub struct Synced(watch::Receiver<LogSynced>);

impl Synced {
    /// Waits until entry `index` is durable in this node's log; `false` once the log has
    /// failed, even for an entry synced before: the node stops, and answers nothing more.
    pub async fn through(&mut self, index: u64) -> bool {
        self.0
            .wait_for(|log| log.failed || log.below > index)
            .await
            .is_ok_and(|log| !log.failed)
    }
}

impl LogStore {
    /// Opens (or creates) the write-ahead log in `dir`, beside the state machine `store`.
    pub fn open(dir: &Path, store: &SledStore) -> Result<Self, StorageError> {
        let wal = Wal::open(dir, wal::Options::default()).map_err(|e| read_err(&e))?;
        Self::over(wal, store)
    }

    /// The log store over an opened write-ahead log.
    fn over(wal: Wal, store: &SledStore) -> Result<Self, StorageError> {
        // What the log holds on opening is durable: opening synced it.
        let synced = LogSynced {
            below: wal.log_state().next_index,
            epoch: 0,
            failed: false,
        };
        let held_bytes = Arc::new(watch::Sender::new(wal.held_bytes()));
        let log_store = LogStore {
            wal,
            node_id: None,
            store: store.clone(),
            committed: Arc::new(AtomicU64::new(0)),
            durable: watch::channel(Some(u64::MAX)).1,
            pending_purge: Arc::default(),
            held_bytes,
            notify_held_from: Arc::new(AtomicU64::new(u64::MAX)),
            tail: Arc::new(Mutex::new(Tail::new(TAIL_BYTES))),
            synced: Arc::new(watch::Sender::new(synced)),
        };
        let committed = log_store.stored_committed()?;
        log_store.note_committed(committed);
        Ok(log_store)
    }

    /// The log of node `id`: entries it proposed as leader are synced on the log's sync
    /// thread, so that openraft replicates them meanwhile (module docs, "Durability").
    pub fn of_node(mut self, id: u64) -> Self {
        self.node_id = Some(id);
        self
    }

    /// Purges only up to the index `durable` says is durable in the state machine
    /// (module docs, "Purging: one rule"). Without it, purges are not held back.
    pub fn follow_durable(mut self, durable: watch::Receiver<Option<u64>>) -> Self {
        self.durable = durable;
        self
    }

    /// How far this log is durable, followed (module docs, "Answering writes").
    pub fn synced(&self) -> Synced {
        Synced(self.synced.subscribe())
    }

    fn pending_purge(&self) -> std::sync::MutexGuard<'_, Option<LogId>> {
        self.pending_purge.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Does a held purge if the durable index has reached it; whether none is held.
    fn purge_if_durable(&self) -> Result<bool, StorageError> {
        let mut pending = self.pending_purge();
        let Some(wanted) = *pending else {
            return Ok(true);
        };
        if *self.durable.borrow() < Some(wanted.index) {
            return Ok(false);
        }
        self.purge_log(wanted)?;
        *pending = None;
        Ok(true)
    }

    /// Before an append: does a held purge that has become durable, and waits for one
    /// that the append would otherwise leave a gap behind (module docs).
    async fn settle_purge(&self) -> Result<(), StorageError> {
        let mut durable = self.durable.clone();
        loop {
            durable.mark_unchanged();
            if self.purge_if_durable()? {
                return Ok(());
            }
            let next = self.wal.log_state().next_index;
            if self.pending_purge().is_some_and(|p| p.index < next) {
                return Ok(());
            }
            if durable.changed().await.is_err() {
                return Err(write_err(
                    &"the state machine is gone while a purge waits for it",
                ));
            }
        }
    }

    fn purge_log(&self, log_id: LogId) -> Result<(), StorageError> {
        let id = json(&log_id).map_err(|e| write_err(&e))?;
        self.wal
            .purge(log_id.index, id)
            .map_err(|e| write_err(&e))?;
        self.tail().purged(log_id.index);
        self.note_held_bytes();
        Ok(())
    }

    /// Follows the bytes of the entries the log holds (for snapshots by size,
    /// [`crate::node`]). The value is always current, but a change is notified only
    /// when it leaves the log holding at least what [`LogStore::notify_held_from`] last
    /// set (nothing before that): the size the node waits for, so that an append below
    /// it wakes no task (docs/performance.md, "Hand-offs per write").
    pub fn held_bytes(&self) -> watch::Receiver<u64> {
        self.held_bytes.subscribe()
    }

    /// From now on, notifies changes of [`LogStore::held_bytes`] that leave at least
    /// `bytes`. Set before looking at the value: the value is updated and the threshold
    /// read under the watch's lock, so a change in between is seen or notified.
    pub fn notify_held_from(&self, bytes: u64) {
        self.notify_held_from.store(bytes, Ordering::SeqCst);
    }

    /// The bytes of the entries the log holds up to index `through`.
    pub fn held_bytes_through(&self, through: u64) -> u64 {
        self.wal.held_bytes_through(through)
    }

    fn note_held_bytes(&self) {
        let bytes = self.wal.held_bytes();
        let from = &self.notify_held_from;
        self.held_bytes.send_if_modified(|held| {
            let changed = *held != bytes;
            *held = bytes;
            changed && bytes >= from.load(Ordering::SeqCst)
        });
    }

    /// The highest index this node knows to be committed, if any.
    pub fn committed_index(&self) -> Option<u64> {
        self.committed.load(Ordering::Acquire).checked_sub(1)
    }

    fn note_committed(&self, committed: Option<LogId>) {
        let value = committed.map_or(0, |id| id.index + 1);
        self.committed.fetch_max(value, Ordering::AcqRel);
    }

    fn stored_committed(&self) -> Result<Option<LogId>, StorageError> {
        match self.wal.log_state().committed {
            Some(bytes) => from_json::<Option<LogId>>(&bytes),
            None => Ok(None),
        }
    }

    /// The purge point: what the log stored, or one held back (module docs).
    fn purged(&self, state: &wal::LogState) -> Result<Option<LogId>, StorageError> {
        let stored = match &state.purged {
            Some((_, id)) => Some(from_json::<LogId>(id)?),
            None => None,
        };
        Ok(stored.max(*self.pending_purge()))
    }

    /// The entries with indexes in `start..end` that the log holds, decoded.
    fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let start = match *self.pending_purge() {
            Some(pending) => start.max(pending.index + 1),
            None => start,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.tail().read(start, end, self.wal.next_index()) {
            return Ok(entries);
        }
        let found = self.wal.read(start..end).map_err(|e| read_err(&e))?;
        found
            .iter()
            .map(|(_, bytes)| codec::decode(bytes).map_err(|e| read_err(&e)))
            .collect()
    }

    /// The log id of entry `index`, if the log holds it.
    fn log_id_at(&self, index: u64) -> Result<Option<LogId>, StorageError> {
        let end = index.saturating_add(1);
        Ok(self.read(index, end)?.pop().map(|entry| entry.log_id))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        self.read(start, end)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        match self.wal.log_state().vote {
            Some(bytes) => Ok(Some(from_json(&bytes)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let state = self.wal.log_state();
        let last_purged_log_id = self.purged(&state)?;
        let last_held = match state.next_index.checked_sub(1) {
            Some(last) if state.next_index > state.first_index => self.log_id_at(last)?,
            _ => None,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last_held.max(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = json(vote).map_err(|e| vote_err(&e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The write may sync on this thread (see "Durability").
        tokio::task::yield_now().await;
        self.wal
            .save_vote(bytes, move |result| {
                let _ = tx.send(result);
            })
            .map_err(|e| vote_err(&e))?;
        rx.await
            .unwrap_or(Err(WalError::Closed))
            .map_err(|e| vote_err(&e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = json(&committed).map_err(|e| write_err(&e))?;
        self.wal.save_committed(bytes).map_err(|e| write_err(&e))?;
        self.note_committed(committed);
        Ok(())
    }

    /// The stored committed log id, cut back to what can be replayed: after a crash
    /// during a snapshot install it may lie past a gap (module docs).
    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed = self.stored_committed()?;
        let Some(committed_id) = committed else {
            return Ok(None);
        };
        let applied = applied_log_id(&self.store)?;
        let from = applied.map_or(0, |id| id.index);
        if committed_id.index <= from {
            return Ok(committed);
        }
        let state = self.wal.log_state();
        let through = if state.first_index <= from + 1 {
            state.next_index.saturating_sub(1).max(from)
        } else {
            from
        };
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
        Ok(self.log_id_at(through)?.or(applied))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.settle_purge().await?;
        let first = self.wal.log_state().first_index;
        let mut encoded = Vec::new();
        let mut appended = Vec::new();
        let mut own = self.node_id.is_some();
        // Entries below the purge point are already in the state machine (openraft's
        // storage suite appends such).
        for entry in entries.into_iter().filter(|e| e.log_id.index >= first) {
            let bytes = codec::encode_sized(&entry).map_err(|e| write_err(&e))?;
            let size = bytes.len();
            own &= Some(entry.log_id.leader_id.node_id) == self.node_id;
            encoded.push((entry.log_id.index, bytes));
            appended.push((entry, size));
        }
        let by = if own {
            SyncBy::SyncThread
        } else {
            // The write may sync on this thread (see "Durability").
            tokio::task::yield_now().await;
            SyncBy::Caller
        };
        let last = encoded.last().map(|(index, _)| *index);
        let epoch = self.synced.borrow().epoch;
        let synced = self.synced.clone();
        self.wal
            .append(encoded, by, move |result| {
                note_synced(&synced, epoch, last, result.is_ok());
                callback.io_completed(result.map_err(std::io::Error::other));
            })
            .map_err(|e| {
                note_synced(&self.synced, epoch, None, false);
                write_err(&e)
            })?;
        let mut tail = self.tail();
        for (entry, size) in appended {
            tail.appended(entry, size);
        }
        drop(tail);
        self.note_held_bytes();
        Ok(())
    }

    async fn truncate_after(&mut self, last_kept: Option<LogId>) -> Result<(), StorageError> {
        let from = last_kept.map_or(0, |id| id.index + 1);
        if from >= self.wal.log_state().next_index {
            return Ok(());
        }
        self.wal.truncate(from).map_err(|e| write_err(&e))?;
        self.synced.send_modify(|log| {
            log.epoch += 1;
            log.below = log.below.min(from);
        });
        self.tail().truncated(from);
        self.note_held_bytes();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut pending = self.pending_purge();
            *pending = (*pending).max(Some(log_id));
        }
        let done = self.purge_if_durable()?;
        tracing::debug!(through = log_id.index, held = !done, "purged the log");
        Ok(())
    }
}

/// Records a sync called back for an append through `last`, made in `epoch`; or that
/// the log failed.
fn note_synced(synced: &watch::Sender<LogSynced>, epoch: u64, last: Option<u64>, ok: bool) {
    synced.send_if_modified(|log| match last {
        _ if !ok => !std::mem::replace(&mut log.failed, true),
        Some(last) if log.epoch == epoch && log.below <= last => {
            log.below = last + 1;
            true
        }
        _ => false,
    });
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| read_err(&e))
}

fn read_err(e: &impl std::fmt::Display) -> StorageError {
    storage_err("reading the log", e)
}

fn write_err(e: &impl std::fmt::Display) -> StorageError {
    storage_err("writing the log", e)
}

fn vote_err(e: &impl std::fmt::Display) -> StorageError {
    storage_err("saving the vote", e)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::storage::IOFlushed;
    use openraft::EntryPayload;

    use super::*;
    use crate::raft::LeaderId;
    use crate::storage::wal::sim::SimDisk;

    fn blank(node_id: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(LeaderId { term: 1, node_id }, index),
            payload: EntryPayload::Blank,
        }
    }

    /// What `synced` says of entry `index` once it has settled.
    async fn settled(synced: &mut Synced, index: u64) -> bool {
        tokio::time::timeout(Duration::from_secs(60), synced.through(index))
            .await
            .expect("the sync settles")
    }

    /// Whether `synced` still waits for entry `index` (its sync is held, or it is cut):
    /// looked at for a moment, in which nothing can change.
    async fn waits(synced: &mut Synced, index: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(50), synced.through(index))
            .await
            .is_err()
    }

    #[tokio::test]
    async fn an_entry_is_durable_here_once_its_sync_returns_and_never_after_a_failed_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let disk = SimDisk::default();
        let wal = Wal::open_in(Arc::new(disk.clone()), wal::Options::default()).unwrap();
        let mut log = LogStore::over(wal, &store).unwrap().of_node(1);
        let mut synced = log.synced();

        disk.hold_syncs();
        log.append([blank(1, 0)], IOFlushed::noop()).await.unwrap();
        disk.await_held_sync();
        assert!(waits(&mut synced, 0).await, "durable before its sync");
        disk.release_syncs();
        assert!(settled(&mut synced, 0).await);

        // A truncation takes back what it cut.
        log.truncate_after(None).await.unwrap();
        assert!(waits(&mut synced, 0).await, "a cut entry is not durable");
        log.append([blank(1, 0)], IOFlushed::noop()).await.unwrap();
        assert!(settled(&mut synced, 0).await);

        disk.hold_syncs();
        log.append([blank(1, 1)], IOFlushed::noop()).await.unwrap();
        disk.await_held_sync();
        disk.fail_syncs();
        disk.release_syncs();
        assert!(
            !settled(&mut synced, 1).await,
            "an entry whose sync failed is never durable"
        );
        assert!(
            !settled(&mut synced, 0).await,
            "nothing is answered once the log failed"
        );
    }
}
