//! Checkpoints: the state machine made durable now and then, not on every apply.
//!
//! A batch of entries is committed with its applied log index and held in memory
//! (see `super::overlay`): the entries are durable in the Raft log already, so after a
//! crash the node replays them from the last index sled holds. A checkpoint writes the
//! commits into sled and flushes it durably ([`SledStore::flush_durable`]) every
//! `--checkpoint-interval` (and when a snapshot is
//! built or installed), and publishes the index it made durable: the *durable applied
//! index*. The log may drop entries only up to it (or up to a durable snapshot), never
//! beyond: those it would need to replay after a power loss (docs/design.md §4).
//!
//! The index a checkpoint publishes is read *before* its flush starts: every commit
//! that recorded it happened before, so the flush covers it.
//!
//! A flush that fails is not retried (the pages it failed to write may be gone from the
//! cache, see the fsync notes in the write-ahead log): the error is kept and every
//! later apply returns it, which stops Raft and the node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::SledStore;
use crate::engine::StoreError;

/// The default `--checkpoint-interval`.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// The checkpoints of one state machine. Cheap to clone.
#[derive(Clone)]
pub struct Checkpoints {
    store: SledStore,
    /// The last applied index committed to sled (`None`: nothing applied).
    applied: Arc<watch::Sender<Option<u64>>>,
    /// The highest index known durable: the last checkpoint's, or a durable snapshot's.
    durable: Arc<watch::Sender<Option<u64>>>,
    /// The error of a failed flush, once there was one.
    failed: Arc<Mutex<Option<String>>>,
    /// One checkpoint at a time.
    running: Arc<Mutex<()>>,
}

impl Checkpoints {
    /// Checkpoints of `store`, whose tables hold entries up to `applied`. Makes what
    /// the store holds durable first: after `kill -9` it may hold commits that are in
    /// the page cache but not on the disk.
    pub fn open(store: SledStore, applied: Option<u64>) -> Result<Checkpoints, StoreError> {
        store.flush_durable()?;
        Ok(Checkpoints {
            store,
            applied: Arc::new(watch::Sender::new(applied)),
            durable: Arc::new(watch::Sender::new(applied)),
            failed: Arc::default(),
            running: Arc::default(),
        })
    }

    /// Records that the tables now hold entries up to `index` (after a commit).
    pub fn applied(&self, index: Option<u64>) {
        self.applied.send_if_modified(|applied| {
            let moved = *applied != index;
            *applied = index;
            moved
        });
    }

    /// Records that a snapshot of entries up to `index` is durable.
    pub fn snapshot_durable(&self, index: Option<u64>) {
        self.publish(index);
    }

    /// Follows the durable applied index.
    pub fn durable(&self) -> watch::Receiver<Option<u64>> {
        self.durable.subscribe()
    }

    /// The error of the flush that failed, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Flushes sled durably and publishes the applied index it covers. Blocking.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let _one = self.running.lock().unwrap_or_else(|e| e.into_inner());
        self.not_failed()?;
        let applied = *self.applied.borrow();
        self.store
            .flush_durable()
            .inspect_err(|e| self.fail("checkpoint", e))?;
        self.publish(applied);
        Ok(())
    }

    /// Writes the commits held in memory into sled, not durably (see
    /// `super::overlay`): between checkpoints, when they have grown. A failure stops
    /// the node as a checkpoint's does.
    fn write_back(&self) -> Result<(), StoreError> {
        self.not_failed()?;
        self.store
            .write_back()
            .inspect_err(|e| self.fail("write-back", e))
    }

    /// An error if a checkpoint or write-back failed before.
    fn not_failed(&self) -> Result<(), StoreError> {
        match self.failure() {
            Some(failure) => Err(StoreError::Invariant(format!(
                "an earlier checkpoint failed: {failure}"
            ))),
            None => Ok(()),
        }
    }

    /// Keeps the error that stops the node.
    fn fail(&self, what: &str, e: &StoreError) {
        tracing::error!("{what} failed, the node stops: {e}");
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
    }

    /// Checkpoints every `interval` while entries are applied, and writes back
    /// between checkpoints when the commits held have grown, until `shutdown`; then
    /// checkpoints once more.
    pub async fn run(self, interval: Duration, shutdown: watch::Receiver<bool>) {
        tokio::join!(
            self.write_backs(shutdown.clone()),
            self.checkpoints(interval, shutdown)
        );
    }

    async fn write_backs(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = self.store.layer_grown() => {}
            }
            let this = self.clone();
            let done = tokio::task::spawn_blocking(move || this.write_back()).await;
            if !matches!(done, Ok(Ok(()))) {
                return;
            }
        }
    }

    async fn checkpoints(&self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut applied = self.applied.subscribe();
        // Whatever was applied before this task began is checkpointed too.
        applied.mark_changed();
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                changed = applied.changed() => if changed.is_err() { break },
            }
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                () = tokio::time::sleep(interval) => {}
            }
            applied.mark_unchanged();
            if !self.checkpoint_blocking().await {
                return;
            }
        }
        self.checkpoint_blocking().await;
    }

    /// [`Checkpoints::checkpoint`] on the blocking pool; whether it succeeded.
    async fn checkpoint_blocking(&self) -> bool {
        let this = self.clone();
        matches!(
            tokio::task::spawn_blocking(move || this.checkpoint()).await,
            Ok(Ok(()))
        )
    }

    /// Raises the durable index to `index` (it never goes back).
    fn publish(&self, index: Option<u64>) {
        self.durable.send_if_modified(|durable| {
            let raised = index > *durable;
            if raised {
                *durable = index;
            }
            raised
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::overlay::WRITE_BACK_SOON_KEYS;
    use super::*;
    use crate::engine::{Table, WriteSet};

    fn commit(store: &SledStore, key: &str) {
        let mut writes = WriteSet::default();
        writes[Table::States.index()].insert(key.as_bytes().to_vec(), Some(b"v".to_vec()));
        store.commit(writes).unwrap();
    }

    #[test]
    fn a_checkpoint_publishes_what_was_applied_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let checkpoints = Checkpoints::open(store.clone(), Some(3)).unwrap();
        let durable = checkpoints.durable();
        assert_eq!(*durable.borrow(), Some(3), "what the store held at open");
        commit(&store, "s1");
        checkpoints.applied(Some(4));
        assert_eq!(*durable.borrow(), Some(3), "applied is not durable yet");
        checkpoints.checkpoint().unwrap();
        assert_eq!(*durable.borrow(), Some(4));
        checkpoints.snapshot_durable(Some(2));
        assert_eq!(*durable.borrow(), Some(4), "never goes back");
        checkpoints.snapshot_durable(Some(9));
        assert_eq!(*durable.borrow(), Some(9));
    }

    #[tokio::test]
    async fn the_task_writes_back_a_grown_layer_before_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let checkpoints = Checkpoints::open(store.clone(), None).unwrap();
        let durable = checkpoints.durable();
        let (stop, shutdown) = watch::channel(false);
        let hour = Duration::from_secs(3600);
        let task = tokio::spawn(checkpoints.clone().run(hour, shutdown));
        for key in 0..WRITE_BACK_SOON_KEYS {
            commit(&store, &key.to_string());
        }
        checkpoints.applied(Some(1));
        let in_sled = || store.tree(Table::States).len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while in_sled() < WRITE_BACK_SOON_KEYS {
            assert!(tokio::time::Instant::now() < deadline, "no write-back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*durable.borrow(), None, "a write-back is not a checkpoint");
        stop.send_replace(true);
        task.await.unwrap();
        assert_eq!(*durable.borrow(), Some(1), "the checkpoint at shutdown");
    }

    #[tokio::test]
    async fn the_task_checkpoints_after_applies_and_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let checkpoints = Checkpoints::open(store.clone(), None).unwrap();
        let mut durable = checkpoints.durable();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(checkpoints.clone().run(Duration::from_millis(1), shutdown));
        commit(&store, "s1");
        checkpoints.applied(Some(1));
        durable.wait_for(|d| *d == Some(1)).await.unwrap();
        commit(&store, "s2");
        checkpoints.applied(Some(2));
        stop.send_replace(true);
        task.await.unwrap();
        assert_eq!(
            *durable.borrow(),
            Some(2),
            "the last checkpoint at shutdown"
        );
    }
}
