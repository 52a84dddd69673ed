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

use std::fs::File;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::engine::store::{Scan, Store, StoreError, Table, WriteSet};

/// sled's page cache: what a node keeps of the state machine in memory.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// sled's main data file inside the database directory.
const SLED_DATA_FILE: &str = "db";

/// A sled database holding the state machine tables (and, in other trees, the Raft log).
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    data_file: std::sync::Arc<File>,
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
        Ok(SledStore {
            db,
            trees,
            data_file: std::sync::Arc::new(data_file),
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

    /// Makes every write so far durable: sled's flush, then `fdatasync` (see module docs).
    pub fn flush_durable(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(sled_err)?;
        self.data_file
            .sync_data()
            .map_err(|e| StoreError(format!("fdatasync: {e}")))
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

/// A sled failure as a storage failure.
pub fn sled_err(e: sled::Error) -> StoreError {
    StoreError(format!("sled: {e}"))
}
