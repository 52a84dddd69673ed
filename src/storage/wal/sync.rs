//! Group commit: one `fdatasync` for every append waiting at that moment.
//!
//! Writers `pwrite` their records under the log's lock, note the write here (each gets a
//! number), and hand over a callback. A sync takes the newest number written, syncs the
//! current segment once, and calls back every waiter up to that number; appends that
//! arrive during the sync share the next one. Segment files doomed by a purge are
//! removed only after a sync that covers the purge record, so no restart can find the
//! entries gone while the purge point is not on disk.
//!
//! # Who syncs
//! The writer says ([`super::SyncBy`]). One that may sync itself and finds no sync
//! running and nobody waiting runs the sync on its own thread ([`Shared::sync_here`]),
//! and its callback fires before it returns. That suits a write whose caller can do
//! nothing until it is durable, as a follower, which answers the leader only then: a
//! thread to hand the sync to would add two thread wake-ups (there, and the callback
//! back) and there is no other write to share the sync with. A writer that must go on
//! at once (the leader's own entries, which openraft replicates while they sync), or
//! that finds a sync running, hands its callback to the sync thread, which syncs once
//! any running sync ends, for every write waiting by then; so no writer ever waits for
//! a sync that does not cover its write, and concurrent writers still share one.
//!
//! A failed `fdatasync` is never retried (the kernel may have dropped the dirty pages and
//! cleared the error, so a retry that succeeds proves nothing): the log stops, every
//! waiter and every later call gets the error, and the node must stop.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::fs::{Dir, SegmentFile};
use super::WalError;

/// Called once the write it waits for is durable, or with the error that stopped the log.
pub type Waiter = Box<dyn FnOnce(Result<(), WalError>) + Send>;

/// What writers and the sync thread share.
pub struct Shared {
    state: Mutex<SyncState>,
    wake: Condvar,
    /// The log's directory, where doomed segments are removed.
    dir: Arc<dyn Dir>,
}

struct SyncState {
    /// Number of the latest write.
    written: u64,
    /// Every write up to this number is durable.
    synced: u64,
    /// The segment being written (earlier ones were synced when they filled).
    file: Arc<dyn SegmentFile>,
    path: PathBuf,
    waiters: Vec<(u64, Waiter)>,
    /// Segment files to remove once the write numbered with them is durable.
    doomed: Vec<(u64, String)>,
    failed: Option<WalError>,
    stop: bool,
    /// A sync is running (on the sync thread or in a writer).
    syncing: bool,
}

impl Shared {
    /// Starts with `file` of `dir` as the segment being written, everything in it durable.
    pub fn new(dir: Arc<dyn Dir>, file: Arc<dyn SegmentFile>, path: PathBuf) -> Arc<Shared> {
        Arc::new(Shared {
            dir,
            state: Mutex::new(SyncState {
                written: 0,
                synced: 0,
                file,
                path,
                waiters: Vec::new(),
                doomed: Vec::new(),
                failed: None,
                stop: false,
                syncing: false,
            }),
            wake: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a write (already done); returns its number.
    pub fn wrote(&self) -> u64 {
        let mut state = self.lock();
        state.written += 1;
        state.written
    }

    /// Calls `waiter` once write `seq` is durable.
    pub fn wait(&self, seq: u64, waiter: Waiter) {
        let mut state = self.lock();
        if let Some(e) = &state.failed {
            let e = e.clone();
            drop(state);
            return waiter(Err(e));
        }
        if seq <= state.synced {
            drop(state);
            return waiter(Ok(()));
        }
        state.waiters.push((seq, waiter));
        self.wake.notify_one();
    }

    /// Calls `waiter` once write `seq` is durable, syncing on this thread if no sync is
    /// running and nobody else waits (see "Who syncs"); otherwise as [`Shared::wait`].
    pub fn sync_here(&self, seq: u64, waiter: Waiter) {
        let (target, file, path) = {
            let mut state = self.lock();
            let busy = state.syncing || !state.waiters.is_empty();
            if busy || state.failed.is_some() || seq <= state.synced {
                drop(state);
                return self.wait(seq, waiter);
            }
            state.waiters.push((seq, waiter));
            state.syncing = true;
            (state.written, state.file.clone(), state.path.clone())
        };
        self.sync(target, &*file, &path);
    }

    /// Syncs `file` (taken with `syncing` set, when `target` was the latest write), then
    /// calls back every waiter it covers and removes the segments that waited for it;
    /// a failure stops the log. Wakes the sync thread if writes arrived meanwhile.
    fn sync(&self, target: u64, file: &dyn SegmentFile, path: &Path) {
        if let Err(e) = file.sync_data() {
            let error = WalError::io(format!("fdatasync of {}", path.display()), e);
            tracing::error!(%error, "the write-ahead log stops");
            self.lock().syncing = false;
            return self.fail(error);
        }
        let (ready, doomed) = {
            let mut state = self.lock();
            state.syncing = false;
            state.synced = state.synced.max(target);
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut state.waiters)
                .into_iter()
                .partition(|(seq, _)| *seq <= target);
            state.waiters = waiting;
            let (doomed, kept) = std::mem::take(&mut state.doomed)
                .into_iter()
                .partition(|(after, _)| *after <= target);
            state.doomed = kept;
            if !state.waiters.is_empty() {
                self.wake.notify_one();
            }
            (ready, doomed)
        };
        for (_, name) in doomed {
            if let Err(e) = self.dir.remove(&name) {
                tracing::warn!(file = %self.dir.path(&name).display(), error = %e,
                    "could not remove a purged write-ahead log segment");
            }
        }
        for (_, waiter) in ready {
            waiter(Ok(()));
        }
    }

    /// From now on the sync thread syncs `file`.
    pub fn set_file(&self, file: Arc<dyn SegmentFile>, path: PathBuf) {
        let mut state = self.lock();
        state.file = file;
        state.path = path;
    }

    /// Removes segment file `name` once write `after` is durable.
    pub fn doom(&self, name: String, after: u64) {
        self.lock().doomed.push((after, name));
    }

    /// The error that stopped the log, if one did.
    pub fn failed(&self) -> Option<WalError> {
        self.lock().failed.clone()
    }

    /// Stops the log with `error`: every waiter gets it, now and later.
    pub fn fail(&self, error: WalError) {
        let waiters = {
            let mut state = self.lock();
            state.failed.get_or_insert(error.clone());
            std::mem::take(&mut state.waiters)
        };
        self.wake.notify_one();
        for (_, waiter) in waiters {
            waiter(Err(error.clone()));
        }
    }

    /// Asks the sync thread to end; waiters still queued get [`WalError::Closed`].
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
    }
}

/// The sync thread's loop: syncs for the writers that found a sync running.
pub fn run(shared: Arc<Shared>) {
    loop {
        let (target, file, path) = {
            let mut state = shared.lock();
            while !state.stop
                && state.failed.is_none()
                && (state.syncing || state.waiters.is_empty())
            {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.stop || state.failed.is_some() {
                let error = state.failed.clone().unwrap_or(WalError::Closed);
                let waiters = std::mem::take(&mut state.waiters);
                drop(state);
                for (_, waiter) in waiters {
                    waiter(Err(error.clone()));
                }
                return;
            }
            state.syncing = true;
            (state.written, state.file.clone(), state.path.clone())
        };
        shared.sync(target, &*file, &path);
    }
}
