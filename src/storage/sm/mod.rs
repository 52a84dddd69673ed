//! The state machine's tables in sled: one tree per [`Table`], committed atomically.
//!
//! # Atomicity
//! A command (or a batch of them) is applied into a [`Tx`](crate::engine::Tx) overlay
//! and committed here, together with whatever the Raft layer adds to the
//! [`Table::Meta`] tree (the applied index), into an in-memory layer (see [`overlay`]),
//! where it lands whole. [`SledStore::write_back`] (when the layer has grown, and first
//! thing in [`SledStore::flush_durable`], a checkpoint) writes the layer into sled in
//! one sled transaction across every touched tree. sled transactions are atomic: after
//! `kill -9` at any instant a restarted node sees either all of a write-back or none,
//! so it is at an entry boundary.
//!
//! # Durability, and sled issue #1452
//! `sled::Db::flush` writes its log with `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`
//! on Linux. That pushes dirty pages to the device but does not flush the device's
//! volatile write cache and does not persist file metadata (such as a grown file size),
//! so a flushed write survives a process crash (`kill -9`: the page cache survives
//! anyway) but not necessarily a power loss or kernel crash. [`SledStore::flush_durable`]
//! therefore follows `flush` with `fdatasync` on sled's data file, which does both; the
//! checkpoints call it.
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
//!
//! # Large values
//! A value of [`values::LARGE_VALUE_BYTES`] or more is not put into sled at all: it is
//! written to a file of its own under `values/` and sled holds a reference to it (see
//! [`values`]), so sled's leaves, and with them its blobs, stay small.
//!
//! # Point-in-time views
//! A Raft snapshot is streamed from a [`point_in_time::PointInTime`], which sees the
//! tables as they were when it opened while commits go on (sled has no snapshots of its
//! own; see that module).
//!
//! # Damage
//! Every value goes in [`seal`]ed with a checksum and comes out checked: a damaged value
//! is an error naming the database file, the tree and the key, never data. Each durable
//! flush is numbered and the number recorded beside the database ([`marker`]), so a data
//! file that lost flushed writes (a damaged record that sled's recovery stops at, a cut
//! tail) is refused on opening. Opening also checks every value once, and turns a panic
//! of sled's recovery into an error, so a node with a damaged data file does not start.
//! Damage after the last durable flush's number is not found: sled drops it as a torn
//! write, with nothing a checkpoint vouched for (docs/storage.md, "Damage").
//!
//! # Unfinished sled snapshots
//! sled writes its own snapshot (an index of its log, not data) to
//! `snap.<lsn>.generating`, syncs it and renames it to `snap.<lsn>`. A write that fails
//! on the way (a full disk) or a crash before the rename leaves the `.generating` file,
//! and sled 0.34 reads the name that sorts last as its snapshot: that file, empty or
//! cut, so it refuses to open ("corrupted data"). A nemesis soak hit this: a node
//! restarted on a full disk never started again. Such a file is by construction
//! unfinished, and the snapshot before it is still there (sled removes old ones only
//! after the rename) or sled recovers from its log alone, so opening removes it first;
//! the checks above still refuse a database that lost flushed writes.

pub mod checkpoint;
mod overlay;
pub mod point_in_time;
pub mod values;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::ErrorKind;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::marker::{self, FlushMarker};
use super::seal;
use crate::engine::{self, Scan, Store, StoreError, Table, WriteSet};
use overlay::{Found, Overlay, Pressure};
use point_in_time::Capture;
use values::{ReadError, Reference, ValueFiles, LARGE_VALUE_BYTES, VALUES_DIR};

/// sled's page cache: what a node keeps of the state machine in memory.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// sled's log segment size. A page larger than a quarter of a segment goes to a blob
/// file of its own, which costs a file creation and two fsyncs at the next flush; the
/// default (512 KiB) sent group-commit log entries and leaves full of 1 KiB values there
/// at 64 concurrent writers. 8 MiB keeps pages up to 2 MiB (the largest log entry) inline.
/// sled records it in the database's `conf`: a directory made with another size does not
/// open.
pub const SLED_SEGMENT_BYTES: usize = 8 << 20;

/// sled's main data file inside the database directory.
const SLED_DATA_FILE: &str = "db";
/// How long an open waits for sled's lock on its data file, held by a store of this
/// process that was just dropped (see [`SledStore::open_with_cache`]).
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// The directory where sled keeps pages too large for its log segments.
const SLED_BLOBS_DIR: &str = "blobs";

/// A sled database holding the state machine tables.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    dir: PathBuf,
    trees: Vec<sled::Tree>,
    data_file: Arc<File>,
    blobs: Arc<BlobSync>,
    /// Large values, kept out of sled (see [`values`]).
    values: Arc<ValueFiles>,
    marker: Arc<FlushMarker>,
    /// The last flush generation written into the database.
    generation: Arc<Mutex<u64>>,
    /// What commits keep for an open [`point_in_time::PointInTime`].
    capture: Capture,
    /// Commits not yet written into sled (see [`overlay`]).
    overlay: Arc<Overlay>,
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
    ///
    /// Fails, naming the data file, if sled cannot recover the database, if it lost
    /// writes that were flushed, or if any stored value is damaged (see "Damage").
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let data = dir.join(SLED_DATA_FILE);
        remove_unfinished_snapshots(dir)?;
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .segment_size(SLED_SEGMENT_BYTES)
            // Flushes are ours: checkpoints (`checkpoint`) and `flush_durable`.
            .flush_every_ms(None);
        // sled locks its data file, and may hold the lock for a moment after the last
        // handle to a database was dropped. Another process is kept out by the data
        // directory's own `LOCK` (`storage`), so a lock found here is this process's
        // store that was just closed (a restart in place): wait for it, briefly.
        let waited_from = std::time::Instant::now();
        let db = loop {
            match std::panic::catch_unwind(AssertUnwindSafe(|| config.open())) {
                Ok(Ok(db)) => break db,
                Ok(Err(e)) if is_lock_held(&e) && waited_from.elapsed() < SLED_LOCK_WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Ok(Err(e)) => return Err(sled_err(e, &data)),
                Err(panic) => return Err(recovery_panicked(&data, &panic)),
            }
        };
        let store = Self::with_db(db, dir)?;
        store.check_generation()?;
        let referenced = store.verify_all()?;
        let deleted = store.values.delete_unreferenced(&referenced)?;
        if deleted > 0 {
            tracing::info!(
                deleted,
                "deleted value files that nothing refers to (left by a crash)"
            );
        }
        Ok(store)
    }

    fn with_db(db: sled::Db, dir: &Path) -> Result<Self, StoreError> {
        let trees = Table::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| sled_err(e, &dir.join(SLED_DATA_FILE)))?;
        let data_file = File::open(dir.join(SLED_DATA_FILE)).map_err(|source| StoreError::Io {
            file: Some(dir.join(SLED_DATA_FILE)),
            source,
        })?;
        let blobs = BlobSync {
            dir: dir.join(SLED_BLOBS_DIR),
            synced: Mutex::default(),
        };
        let (marker, _) = FlushMarker::open(dir)?;
        let values = ValueFiles::open(&dir.join(VALUES_DIR))?;
        Ok(SledStore {
            db,
            dir: dir.to_owned(),
            trees,
            data_file: Arc::new(data_file),
            blobs: Arc::new(blobs),
            values: Arc::new(values),
            marker: Arc::new(marker),
            generation: Arc::default(),
            capture: Capture::default(),
            overlay: Arc::default(),
        })
    }

    /// Refuses a database that holds an older flush generation than its marker records
    /// (it lost flushed writes); continues numbering from the higher of the two.
    fn check_generation(&self) -> Result<(), StoreError> {
        let (_, recorded) = FlushMarker::open(&self.dir)?;
        let key = marker::GENERATION_KEY;
        let found = match self.db.get(key).map_err(|e| self.read_err(e))? {
            Some(stored) => {
                let bytes = self.unseal(&self.db, key, stored)?;
                marker::decode_generation(&bytes).ok_or_else(|| self.damaged(&self.db, key))?
            }
            None => 0,
        };
        if found < recorded {
            return Err(StoreError::Corruption {
                file: Some(self.data_path()),
                table: None,
                key: None,
                what: format!(
                    "it lost writes that were made durable (flush generation {found} in the \
                     database, {recorded} recorded in {}): it is damaged or was cut short, \
                     and this node may have forgotten Raft entries it acknowledged or the \
                     vote it cast, so it refuses to start",
                    self.marker.path().display()
                ),
            });
        }
        *self.generation.lock().unwrap_or_else(|e| e.into_inner()) = found.max(recorded);
        Ok(())
    }

    /// Checks the seal of every value in every tree, and every value file referred to;
    /// returns the ids of those files.
    fn verify_all(&self) -> Result<HashSet<u128>, StoreError> {
        let mut referenced = HashSet::new();
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name).map_err(|e| self.read_err(e))?;
            for entry in tree.iter() {
                let (key, stored) = entry.map_err(|e| self.read_err(e))?;
                if let Some(reference) = Reference::in_stored(&key, &stored) {
                    referenced.insert(reference.id());
                }
                self.unseal(&tree, &key, stored)?;
            }
        }
        Ok(referenced)
    }

    /// sled's main data file.
    pub fn data_path(&self) -> PathBuf {
        self.dir.join(SLED_DATA_FILE)
    }

    /// The value inside `stored`, read from `tree` under `key` (from its value file if
    /// it is a reference); an error naming the data file, the tree and the key if its
    /// checksum does not hold, or the value file if that is missing or damaged.
    pub fn unseal(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        stored: sled::IVec,
    ) -> Result<Vec<u8>, StoreError> {
        let Some(reference) = Reference::in_stored(key, &stored) else {
            return seal::unseal(key, stored.to_vec()).ok_or_else(|| self.damaged(tree, key));
        };
        match self.values.read(key, &reference) {
            Ok(value) => Ok(value),
            Err(ReadError::Store(e)) => Err(e),
            Err(ReadError::Gone(path)) => Err(self.missing(tree, key, path)),
        }
    }

    /// The value `key` holds in `tree`, given what was read there a moment ago
    /// (`stored`). A value file deleted since (the key changed meanwhile, and a
    /// checkpoint has passed) means reading the key again (see [`values`]).
    fn value_now(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        mut stored: sled::IVec,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        loop {
            let Some(reference) = Reference::in_stored(key, &stored) else {
                return self.unseal(tree, key, stored).map(Some);
            };
            match self.values.read(key, &reference) {
                Ok(value) => return Ok(Some(value)),
                Err(ReadError::Store(e)) => return Err(e),
                Err(ReadError::Gone(path)) => match tree.get(key).map_err(|e| self.read_err(e))? {
                    Some(now) if now != stored => stored = now,
                    Some(_) => return Err(self.missing(tree, key, path)),
                    None => return Ok(None),
                },
            }
        }
    }

    /// The error for a value file that a stored reference names but that is gone.
    fn missing(&self, tree: &sled::Tree, key: &[u8], path: PathBuf) -> StoreError {
        let error = StoreError::Corruption {
            file: Some(path),
            table: Some(String::from_utf8_lossy(&tree.name()).into_owned()),
            key: Some(key.to_vec()),
            what: "the value file is missing".into(),
        };
        tracing::error!("{error}");
        error
    }

    /// `value` as it goes into sled under `key`: sealed, or — if large — written to a
    /// value file and replaced by a sealed reference to it.
    fn stored_form(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
        if value.len() >= LARGE_VALUE_BYTES {
            self.values.write(key, value)
        } else {
            Ok(seal::seal(key, value))
        }
    }

    /// The error for a damaged value, logged as it is made.
    fn damaged(&self, tree: &sled::Tree, key: &[u8]) -> StoreError {
        let error = StoreError::Corruption {
            file: Some(self.data_path()),
            table: Some(String::from_utf8_lossy(&tree.name()).into_owned()),
            key: Some(key.to_vec()),
            what: "checksum mismatch".into(),
        };
        tracing::error!("{error}");
        error
    }

    /// A sled read failure, naming the data file.
    fn read_err(&self, e: sled::Error) -> StoreError {
        sled_err(e, &self.data_path())
    }

    /// The tree of a table.
    fn tree(&self, table: Table) -> &sled::Tree {
        &self.trees[table.index()]
    }

    /// Writes `records` (key, value) into `table` in one batch, sealed; for loading a
    /// snapshot into tables that [`SledStore::clear`] emptied. Not atomic across
    /// tables (the caller marks the load so that a crash halfway repeats it).
    pub fn load(&self, table: Table, records: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut files = false;
        for (key, value) in records {
            files |= value.len() >= LARGE_VALUE_BYTES;
            batch.insert(key.as_slice(), self.stored_form(key, value)?);
        }
        if files {
            self.values.sync_dir()?;
        }
        self.tree(table)
            .apply_batch(batch)
            .map_err(|e| self.read_err(e))
    }

    /// Writes `records` into `table` in one batch, each a key and the value file that
    /// holds its value (a snapshot's link, and the reference it was stored under there):
    /// the file is linked in under a new id ([`ValueFiles::adopt`]), as a large value
    /// [`SledStore::load`] would write. For loading a snapshot, as `load`.
    pub fn load_files(
        &self,
        table: Table,
        records: &[(Vec<u8>, Reference, PathBuf)],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, reference, from) in records {
            batch.insert(key.as_slice(), self.values.adopt(key, reference, from)?);
        }
        self.values.sync_dir()?;
        self.tree(table)
            .apply_batch(batch)
            .map_err(|e| self.read_err(e))
    }

    /// Commits staged writes, all in one step. They are held in memory (see
    /// [`overlay`]) and written into sled by the next [`SledStore::flush_durable`] or
    /// [`SledStore::write_back`] — at once if the writes held have grown past
    /// [`overlay::WRITE_BACK_BYTES`]; past [`overlay::WRITE_BACK_SOON_KEYS`] keys,
    /// [`SledStore::layer_grown`] says so.
    pub fn commit(&self, writes: WriteSet) -> Result<(), StoreError> {
        if self.overlay.commit(writes) == Pressure::Now {
            self.write_back()?;
        }
        Ok(())
    }

    /// Waits until the commits held in memory ask for a write-back before the next
    /// checkpoint (see "Write-back size" in [`overlay`]).
    pub async fn layer_grown(&self) {
        self.overlay.grown().await;
    }

    /// Writes every commit held in memory into sled (not durably).
    pub fn write_back(&self) -> Result<(), StoreError> {
        let _one = self.overlay.one_write_back();
        self.write_back_held()
    }

    /// [`SledStore::write_back`], for a caller that holds [`Overlay::one_write_back`].
    fn write_back_held(&self) -> Result<(), StoreError> {
        while let Some(frozen) = self.overlay.freeze() {
            let started = std::time::Instant::now();
            let writes = frozen.writes();
            self.write_to_sled(&writes)?;
            tracing::debug!(
                keys = writes.iter().map(BTreeMap::len).sum::<usize>(),
                micros = started.elapsed().as_micros() as u64,
                "wrote commits back into sled"
            );
            drop(writes);
            self.overlay.written_back();
        }
        Ok(())
    }

    /// Writes `writes` to every touched tree in one atomic sled transaction (after
    /// keeping what an open [`point_in_time::PointInTime`] needs of the old values).
    /// Large values are written to durable value files first; the files of the values
    /// it replaces or removes are deleted after the next durable flush (see [`values`]).
    fn write_to_sled(&self, writes: &WriteSet) -> Result<(), StoreError> {
        self.capture.keep_pre_images(self, writes)?;
        let mut files = false;
        let mut trees = Vec::new();
        let mut staged = Vec::new();
        for (i, writes) in writes.iter().enumerate() {
            if writes.is_empty() {
                continue;
            }
            let mut sealed = Vec::with_capacity(writes.len());
            for (key, value) in writes {
                let stored = match value {
                    Some(v) => {
                        files |= v.len() >= LARGE_VALUE_BYTES;
                        Some(sled::IVec::from(self.stored_form(key, v)?))
                    }
                    None => None,
                };
                sealed.push((key, stored));
            }
            trees.push(self.trees[i].clone());
            staged.push(sealed);
        }
        if trees.is_empty() {
            return Ok(());
        }
        if files {
            self.values.sync_dir()?;
        }
        let result: Result<Vec<Reference>, TransactionError<()>> =
            trees.as_slice().transaction(|views| {
                let mut dropped = Vec::new();
                for (view, writes) in views.iter().zip(&staged) {
                    for (key, stored) in writes {
                        let old = match stored {
                            Some(stored) => view.insert(key.as_slice(), stored.clone())?,
                            None => view.remove(key.as_slice())?,
                        };
                        dropped.extend(old.and_then(|old| Reference::in_stored(key, &old)));
                    }
                }
                Ok::<_, ConflictableTransactionError<()>>(dropped)
            });
        let dropped = result.map_err(|e| match e {
            TransactionError::Storage(e) => self.read_err(e),
            TransactionError::Abort(()) => {
                StoreError::Invariant("a commit's sled transaction aborted".into())
            }
        })?;
        self.values.dropped(dropped);
        Ok(())
    }

    /// Makes every write so far durable: the commits held in memory written into sled,
    /// sled's flush, then `fsync` of new blob files and their directory, then
    /// `fdatasync` of the data file (see module docs).
    /// The flush is numbered (see "Damage") and its number recorded once it is durable.
    ///
    /// Then deletes the value files that commits before the flush stopped referring to,
    /// unless a point-in-time view is open (see [`values`]).
    pub fn flush_durable(&self) -> Result<(), StoreError> {
        self.write_back()?;
        let generation = self.next_generation()?;
        let dropped = self.values.take_dropped();
        self.db.flush().map_err(|e| self.read_err(e))?;
        self.blobs.sync_new()?;
        self.data_file
            .sync_data()
            .map_err(|source| StoreError::Io {
                file: Some(self.data_path()),
                source,
            })?;
        self.marker.record(generation)?;
        if self.capture.is_open() {
            self.values.keep_dropped(dropped);
            Ok(())
        } else {
            self.values.delete(&dropped)
        }
    }

    /// Writes the next flush generation into the database. Under the lock, so the
    /// database's generation only grows.
    fn next_generation(&self) -> Result<u64, StoreError> {
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let next = *generation + 1;
        let key = marker::GENERATION_KEY;
        let value = seal::seal(key, &marker::encode_generation(next));
        self.db.insert(key, value).map_err(|e| self.read_err(e))?;
        *generation = next;
        Ok(next)
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

    /// Where large values are kept (see [`values`]).
    pub fn values_dir(&self) -> &Path {
        self.values.dir()
    }

    /// Follows the bytes of large values written to files of their own since the
    /// store opened (see [`values`]).
    pub fn large_values_written(&self) -> tokio::sync::watch::Receiver<u64> {
        self.values.written()
    }

    /// Empties every state machine table (before installing a snapshot). Refused while
    /// a point-in-time view is open, since it would not see the change.
    pub fn clear(&self) -> Result<(), StoreError> {
        if self.capture.is_open() {
            return Err(StoreError::Invariant(
                "cannot clear the tables while a point-in-time view is open".into(),
            ));
        }
        let _one = self.overlay.one_write_back();
        self.overlay.clear();
        self.trees
            .iter()
            .try_for_each(|t| t.clear().map_err(|e| self.read_err(e)))?;
        self.values.drop_all()
    }
}

impl Store for SledStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Found::InLayer(value) = self.overlay.get(table, key) {
            return Ok(value);
        }
        let tree = self.tree(table);
        match tree.get(key).map_err(|e| self.read_err(e))? {
            Some(stored) => self.value_now(tree, key, stored),
            None => Ok(None),
        }
    }

    fn scan_from<'a>(&'a self, table: Table, from: &[u8]) -> Scan<'a> {
        let tree = self.tree(table);
        // The layers are taken before sled's iterator starts (see "Scans" in
        // [`overlay`]).
        let layers = self.overlay.scan(table, from);
        // A key whose value file went with a change since the scan read it shows as it
        // is now, or not at all if it is gone, as sled's own iterators do.
        let stored = Box::new(tree.range(from.to_vec()..).filter_map(move |entry| {
            let found = entry
                .map_err(|e| self.read_err(e))
                .and_then(|(key, stored)| {
                    let value = self.value_now(tree, &key, stored)?;
                    Ok(value.map(|value| (key.to_vec(), value)))
                });
            found.transpose()
        }));
        engine::merge(stored, layers)
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
        let io = |path: &Path, source| StoreError::Io {
            file: Some(path.to_owned()),
            source,
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&self.dir, e)),
        };
        let mut synced = self.lock();
        let mut present = std::collections::HashSet::new();
        let mut any = false;
        for entry in entries {
            let entry = entry.map_err(|e| io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            present.insert(name.clone());
            let len = match entry.metadata() {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&entry.path(), e)),
            };
            if synced.get(&name) == Some(&len) {
                continue;
            }
            match sync_file(&entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&entry.path(), e)),
            }
            synced.insert(name, len);
            any = true;
        }
        synced.retain(|name, _| present.contains(name));
        if any {
            sync_file(&self.dir).map_err(|e| io(&self.dir, e))?;
        }
        Ok(())
    }
}

/// `fsync` of a file or directory (opened read-only, which is enough on Linux).
fn sync_file(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// The error for a panic in sled's recovery (sled 0.34 panics on some damaged files).
fn recovery_panicked(data: &Path, panic: &Box<dyn std::any::Any + Send>) -> StoreError {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    StoreError::Corruption {
        file: Some(data.to_owned()),
        table: None,
        key: None,
        what: format!("sled's recovery of it failed ({what}), so this node refuses to start"),
    }
}

/// Whether sled refused to open because its data file is locked: the only error sled
/// reports as its own `io::Error` with this message (sled 0.34, `config.rs`).
fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(source)
        if source.kind() == ErrorKind::Other
            && source.to_string().starts_with("could not acquire lock"))
}

/// A sled failure on the database whose data file is `data`, as a storage failure.
fn sled_err(e: sled::Error, data: &Path) -> StoreError {
    let file = Some(data.to_owned());
    match e {
        sled::Error::Io(source) => StoreError::Io { file, source },
        sled::Error::Corruption { .. } => StoreError::Corruption {
            file,
            table: None,
            key: None,
            what: format!("sled: {e}"),
        },
        other => StoreError::Invariant(format!("sled ({}): {other}", data.display())),
    }
}

/// Removes the snapshots sled began and never finished (see "Unfinished sled
/// snapshots").
fn remove_unfinished_snapshots(dir: &Path) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Io {
                file: Some(dir.to_owned()),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!("removing sled's unfinished snapshot {name}");
            std::fs::remove_file(entry.path()).map_err(|source| StoreError::Io {
                file: Some(entry.path()),
                source,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_sled_snapshot_is_removed_and_the_store_opens() {
        let dir = filled(200);
        // What a snapshot write that met a full disk leaves: an empty file whose name
        // sorts after every finished snapshot.
        let unfinished = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
        File::create(&unfinished).unwrap();
        let store = SledStore::open(dir.path()).expect("the store opens");
        assert!(!unfinished.exists());
        let got = store.get(Table::States, b"s000199").unwrap();
        assert!(got.is_some_and(|v| v.ends_with(b"-000199")));
    }

    /// A restart in place opens the store right after dropping it, while sled may
    /// still hold its lock: the open waits for the lock instead of failing.
    #[test]
    fn a_store_opens_again_right_after_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20u32 {
            let store = SledStore::open(dir.path()).unwrap();
            let mut writes = WriteSet::default();
            let key = i.to_be_bytes().to_vec();
            writes[Table::States.index()].insert(key, Some(b"v".to_vec()));
            store.commit(writes).unwrap();
            store.flush_durable().unwrap();
            assert_eq!(store.scan_from(Table::States, b"").count(), i as usize + 1);
        }
        let other = tempfile::tempdir().unwrap();
        let held = sled::Config::new().path(other.path()).open().unwrap();
        let refused = sled::Config::new().path(other.path()).open().err().unwrap();
        assert!(is_lock_held(&refused), "{refused:?}");
        drop(held);
    }

    /// A store holding `n` flushed states whose values end in `-{i:06}`; then closed.
    fn filled(n: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for i in 0..n {
            let mut writes = WriteSet::default();
            let value = format!("{}-{i:06}", "v".repeat(64)).into_bytes();
            writes[Table::States.index()].insert(format!("s{i:06}").into_bytes(), Some(value));
            store.commit(writes).unwrap();
            store.flush_durable().unwrap();
        }
        dir
    }

    fn open_error(dir: &Path) -> StoreError {
        match SledStore::open(dir) {
            Ok(_) => panic!("a damaged database opened"),
            Err(e) => e,
        }
    }

    /// Whether `error` is damage found in the data file of the store in `dir`.
    fn is_damage_in(error: &StoreError, dir: &Path) -> bool {
        let data = dir.join(SLED_DATA_FILE);
        matches!(error, StoreError::Corruption { file: Some(f), .. } if f == &data)
    }

    #[test]
    fn a_data_file_cut_short_is_refused_naming_it() {
        let dir = filled(2000);
        let data = dir.path().join(SLED_DATA_FILE);
        let len = std::fs::metadata(&data).unwrap().len();
        File::options()
            .write(true)
            .open(&data)
            .unwrap()
            .set_len(len - 4096)
            .unwrap();
        let error = open_error(dir.path());
        assert!(is_damage_in(&error, dir.path()), "{error:?}");
    }

    #[test]
    fn a_flipped_byte_in_the_latest_record_is_refused_naming_the_file() {
        let dir = filled(2000);
        let data = dir.path().join(SLED_DATA_FILE);
        let mut bytes = std::fs::read(&data).unwrap();
        let needle = b"-001999";
        let at = bytes
            .windows(needle.len())
            .rposition(|w| w == needle)
            .expect("the last value is in the data file");
        bytes[at + 3] ^= 0x01;
        std::fs::write(&data, &bytes).unwrap();
        let error = open_error(dir.path());
        assert!(is_damage_in(&error, dir.path()), "{error:?}");
    }

    #[test]
    fn a_damaged_value_is_an_error_naming_file_tree_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // A value written behind the seal's back stands for one damaged on disk.
        store.tree(Table::States).insert(b"s1", b"data").unwrap();
        let damaged = |error: &StoreError| {
            is_damage_in(error, dir.path())
                && matches!(error, StoreError::Corruption { table: Some(t), key: Some(k), .. }
                    if t == "sm_states" && k == b"s1")
        };
        let error = store.get(Table::States, b"s1").unwrap_err();
        assert!(damaged(&error), "{error:?}");
        let message = error.to_string();
        for part in ["sm_states", "\"s1\"", SLED_DATA_FILE] {
            assert!(message.contains(part), "{part} in {message}");
        }
        let scanned: Result<Vec<_>, _> = store.scan_from(Table::States, b"").collect();
        assert!(damaged(&scanned.unwrap_err()));
        store.flush_durable().unwrap();
        drop(store);
        assert!(damaged(&open_error(dir.path())));
    }

    #[test]
    fn a_large_value_lands_in_a_blob_that_flush_durable_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // Above a quarter of a segment (SLED_SEGMENT_BYTES).
        store.db.insert(b"big", vec![7u8; 3 << 20]).unwrap();
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
            on_disk.values().any(|&len| len >= 3 << 20),
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
