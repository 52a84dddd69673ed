//! The state machine's tables in sled: one tree per [`Table`], committed atomically.
//!
//! # Atomicity
//! A command (or a batch of them) is applied into a [`Tx`](crate::engine::Tx) overlay and committed here in
//! one sled transaction across every touched tree, together with whatever the Raft layer
//! adds to the [`Table::Meta`] tree (the applied index). sled transactions are atomic:
//! after `kill -9` at any instant a restarted node sees either all of a batch or none.
//!
//! # Durability, and sled issue #1452
//! `sled::Db::flush` writes its log with `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`
//! on Linux. That pushes dirty pages to the device but does not flush the device's
//! volatile write cache and does not persist file metadata (such as a grown file size),
//! so a flushed write survives a process crash (`kill -9`: the page cache survives
//! anyway) but not necessarily a power loss or kernel crash. [`SledStore::flush_durable`]
//! therefore follows `flush` with `fdatasync` on sled's data file, which does both; the
//! Raft log store calls it before it reports an append as flushed.
//!
//! # Blobs
//! sled writes a page larger than a quarter of its segment (2 MiB with our
//! [`SLED_SEGMENT_BYTES`]; a large value or a log entry carrying one) not into `db` but into a
//! file of its own, `blobs/<lsn>`, and never syncs it: `db` then holds only a pointer,
//! and after a power loss an acknowledged write could point at a file that is empty or
//! gone. So `flush_durable` also syncs every blob file it has not synced yet, and then
//! the `blobs/` directory (which holds their names), before syncing `db`. Blob files are
//! written once under a new name and never changed, so remembering each name with the
//! length it had when synced is enough to sync each file once — and again only if it
//! was caught half-written (its length changed). By the time `flush` returns, every
//! blob that the flushed log refers to is complete, so the sync that follows covers it.
//! sled deletes blobs it no longer needs at any time; a file that vanishes on the way
//! is skipped and forgotten.

use std::collections::HashMap;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::engine::store::{Scan, Store, StoreError, Table, WriteSet};

/// sled's page cache: what a node keeps of the state machine in memory.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// sled's log segment size. A page larger than a quarter of a segment goes to a blob
/// file of its own, which costs a file creation and two fsyncs at the next flush; the
/// default (512 KiB) sent group-commit log entries and leaves full of 1 KiB values there
/// at 64 concurrent writers. 8 MiB keeps pages up to 2 MiB (the largest log entry) inline.
/// sled records it in the database's `conf`: a directory made with another size does not
/// open.
const SLED_SEGMENT_BYTES: usize = 8 << 20;

/// sled's main data file inside the database directory.
const SLED_DATA_FILE: &str = "db";
/// The directory where sled keeps pages too large for its log segments.
const SLED_BLOBS_DIR: &str = "blobs";

/// A sled database holding the state machine tables (and, in other trees, the Raft log).
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    data_file: Arc<File>,
    blobs: Arc<BlobSync>,
}

/// The blob files synced so far (see "Blobs" in the module docs).
struct BlobSync {
    dir: PathBuf,
    /// File name → its length when it was synced.
    synced: Mutex<HashMap<String, u64>>,
}

impl SledStore {
    /// Opens (or creates) the database in `dir` with the default page cache.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the database in `dir`; sled keeps at most about
    /// `cache_bytes` of pages in memory, whatever the size of the data.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .segment_size(SLED_SEGMENT_BYTES)
            .open()
            .map_err(sled_err)?;
        Self::with_db(db, dir)
    }

    fn with_db(db: sled::Db, dir: &Path) -> Result<Self, StoreError> {
        let trees = Table::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sled_err)?;
        let data_file = File::open(dir.join(SLED_DATA_FILE))
            .map_err(|e| StoreError(format!("open sled data file: {e}")))?;
        let blobs = BlobSync {
            dir: dir.join(SLED_BLOBS_DIR),
            synced: Mutex::default(),
        };
        Ok(SledStore {
            db,
            trees,
            data_file: Arc::new(data_file),
            blobs: Arc::new(blobs),
        })
    }

    /// The underlying database (the Raft log store keeps its own trees in it).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The tree of a table.
    pub fn tree(&self, table: Table) -> &sled::Tree {
        &self.trees[table.index()]
    }

    /// Commits staged writes to every touched tree in one atomic transaction.
    pub fn commit(&self, writes: WriteSet) -> Result<(), StoreError> {
        let (trees, staged): (Vec<sled::Tree>, Vec<_>) = writes
            .into_iter()
            .enumerate()
            .filter(|(_, w)| !w.is_empty())
            .map(|(i, w)| (self.trees[i].clone(), w))
            .unzip();
        if trees.is_empty() {
            return Ok(());
        }
        let result: Result<(), TransactionError<()>> = trees.as_slice().transaction(|views| {
            for (view, writes) in views.iter().zip(&staged) {
                for (key, value) in writes {
                    match value {
                        Some(v) => view.insert(key.as_slice(), v.as_slice())?,
                        None => view.remove(key.as_slice())?,
                    };
                }
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        result.map_err(|e| StoreError(format!("commit: {e:?}")))
    }

    /// Makes every write so far durable: sled's flush, then `fsync` of new blob files and
    /// their directory, then `fdatasync` of the data file (see module docs).
    pub fn flush_durable(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(sled_err)?;
        self.blobs.sync_new()?;
        self.data_file
            .sync_data()
            .map_err(|e| StoreError(format!("fdatasync: {e}")))
    }

    /// The blob files synced so far and the length each had when it was synced, by
    /// file name (sled's log sequence number). For tests and diagnostics.
    pub fn synced_blobs(&self) -> HashMap<String, u64> {
        self.blobs.lock().clone()
    }

    /// Where sled keeps its blob files.
    pub fn blobs_dir(&self) -> &Path {
        &self.blobs.dir
    }

    /// Empties every state machine table (before installing a snapshot).
    pub fn clear(&self) -> Result<(), StoreError> {
        self.trees
            .iter()
            .try_for_each(|t| t.clear().map_err(sled_err))
    }
}

impl Store for SledStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(table)
            .get(key)
            .map_err(sled_err)?
            .map(|v| v.to_vec()))
    }

    fn scan_from<'a>(&'a self, table: Table, from: &[u8]) -> Scan<'a> {
        Box::new(self.tree(table).range(from.to_vec()..).map(|entry| {
            entry
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(sled_err)
        }))
    }
}

impl BlobSync {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.synced.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Syncs every blob file not synced at its present length, then the directory if
    /// any was; forgets files that are gone. One sync at a time (the lock is held), so
    /// two flushes never both sync the same file.
    fn sync_new(&self) -> Result<(), StoreError> {
        let io = |what: &str, e: std::io::Error| StoreError(format!("{what}: {e}"));
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("list sled blobs", e)),
        };
        let mut synced = self.lock();
        let mut present = std::collections::HashSet::new();
        let mut any = false;
        for entry in entries {
            let entry = entry.map_err(|e| io("list sled blobs", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            present.insert(name.clone());
            let len = match entry.metadata() {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io("stat sled blob", e)),
            };
            if synced.get(&name) == Some(&len) {
                continue;
            }
            match sync_file(&entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io("fsync sled blob", e)),
            }
            synced.insert(name, len);
            any = true;
        }
        synced.retain(|name, _| present.contains(name));
        if any {
            sync_file(&self.dir).map_err(|e| io("fsync sled blobs directory", e))?;
        }
        Ok(())
    }
}

/// `fsync` of a file or directory (opened read-only, which is enough on Linux).
fn sync_file(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// A sled failure as a storage failure.
pub fn sled_err(e: sled::Error) -> StoreError {
    StoreError(format!("sled: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_value_lands_in_a_blob_that_flush_durable_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.db().insert(b"big", vec![7u8; 300 << 10]).unwrap();
        store.flush_durable().unwrap();

        let on_disk: HashMap<String, u64> = std::fs::read_dir(store.blobs_dir())
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        assert!(
            on_disk.values().any(|&len| len >= 300 << 10),
            "the value is in a blob file: {on_disk:?}"
        );
        assert_eq!(
            store.synced_blobs(),
            on_disk,
            "every blob file synced at its length"
        );
        // Nothing new: nothing synced again, and the record stays as it is.
        store.flush_durable().unwrap();
        assert_eq!(store.synced_blobs(), on_disk);
    }
}
