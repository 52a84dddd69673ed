//! The replicated state machine: committed batches through the engine into sled.
//!
//! # Applying
//! openraft hands over committed entries a run at a time. Every command of every entry in
//! the run goes through [`engine::apply`] into one [`Tx`] overlay; the last applied log
//! id and the last membership go into [`Table::Meta`] of the same overlay, and
//! [`SledStore::commit`] commits it all at once, in memory. A checkpoint every
//! `--checkpoint-interval` writes the commits into sled in one sled transaction and
//! flushes them, so `kill -9` at any instant leaves a replica at an entry boundary,
//! never between a command's writes and the applied index that says it happened
//! (design.md §4). Nothing is written to disk per apply: the entries are durable in the
//! Raft log, and the checkpoint publishes the durable applied index
//! ([`Checkpoints`]); after a crash the node replays the log from there (openraft
//! re-applies from the applied id it reads back up to the committed one), and the log
//! is never purged past it. A build also checkpoints, and an install ends flushed.
//!
//! A storage failure while applying is returned to openraft, which stops the node: a
//! replica that cannot write its state must stop rather than diverge.
//!
//! After the commit, the effects of each command (those that are not empty) go out on
//! the node's broadcast channel in apply order, and [`Progress`] — the log clock, the
//! next deadline and whether HTTP operations are parked, which the leader's ticker
//! watches — is published.
//!
//! # Snapshots
//! A build holds applies back only for the instant it reads the applied index and opens
//! a [`PointInTime`](crate::storage::sm::point_in_time::PointInTime) view of the tables (it
//! holds the read side of a lock whose write side `apply` and `install` take). It then
//! streams the view to a file under `snapshots/` (see [`snapshot`]) while applies go on,
//! links the value files it refers to into `snapshots/values/` ([`snapshot_files`]), and
//! renames it to `current.snap`. One build or install runs at a time. Installing takes
//! the received stream apart into a tables file and value files ([`snapshot_data`]),
//! makes it `current.snap`, then clears and reloads the tables; an `installing` marker
//! written before the clear makes a restart after a crash halfway finish the install
//! from that file. A restart also reloads `current.snap` when it is ahead of the tables
//! (their unflushed tail was lost while the synced snapshot survived), since the log
//! behind it may be purged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use openraft_legacy::network_v1::SnapshotReceiverFactory;
use tokio::sync::{broadcast, watch, Mutex, RwLock};

use super::snapshot::{self, Meta};
use super::snapshot_data::{self, Outgoing, SnapshotData};
use super::snapshot_files::{self, SnapshotFiles};
use super::{storage_err, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::engine::types::Millis;
use crate::engine::{self, Effects, Store, Table, Tx};
use crate::storage::sm::checkpoint::Checkpoints;
use crate::storage::sm::point_in_time::PointInTime;
use crate::storage::sm::SledStore;

/// A snapshot as openraft hands it around: its meta and its data.
type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// [`Table::Meta`] key of the last applied log id.
const KEY_APPLIED: &[u8] = b"raft/applied";
/// [`Table::Meta`] key of the last applied membership.
const KEY_MEMBERSHIP: &[u8] = b"raft/membership";
/// The snapshot openraft serves and that a restart reinstalls after a crash mid-install.
const CURRENT: &str = "current.snap";
/// Prefix of the files that snapshots from the leader are streamed into.
const RECEIVED: &str = "recv";
/// Present while an install is clearing and reloading the tables.
const INSTALLING: &str = "installing";

/// Where the replica's log time and next deadline stand after the latest apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The log clock (latest applied command time).
    pub clock: Millis,
    /// The earliest timer, parked operation or lease deadline still to come.
    pub next_deadline: Option<Millis>,
    /// Some HTTP operation is parked (a new leader withdraws those of earlier terms).
    pub parked: bool,
}

/// The state machine of one node.
pub struct StateMachine {
    store: SledStore,
    /// Makes the store durable now and then, and says how far it is.
    checkpoints: Checkpoints,
    dir: PathBuf,
    /// The value files the snapshots share with the store.
    files: Arc<SnapshotFiles>,
    /// Write side taken by apply and install; read side held while a snapshot build
    /// opens its view.
    lock: Arc<RwLock<()>>,
    /// Held by a snapshot build or install for its whole length: an install clears the
    /// tables, which a build's view would not see. Taken before `lock`.
    one_snapshot: Arc<Mutex<()>>,
    effects: broadcast::Sender<Arc<Effects>>,
    progress: watch::Sender<Progress>,
}

/// The applied log id recorded in `store` (what a restart resumes from).
pub fn applied_log_id(store: &SledStore) -> Result<Option<LogId>, StorageError> {
    get_meta(store, KEY_APPLIED)
}

impl StateMachine {
    /// Opens the state machine on `store` with snapshots under `dir`, finishing an
    /// install that a crash interrupted.
    pub fn open(
        store: SledStore,
        dir: &Path,
        effects: broadcast::Sender<Arc<Effects>>,
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| snapshot_write_err(&e))?;
        for entry in std::fs::read_dir(dir).map_err(|e| snapshot_read_err(&e))? {
            let path = entry.map_err(|e| snapshot_read_err(&e))?.path();
            if path.extension().is_some_and(|ext| ext == "tmp") {
                std::fs::remove_file(&path).map_err(|e| snapshot_write_err(&e))?;
            }
        }
        if dir.join(INSTALLING).exists() || snapshot_is_newer(&store, dir)? {
            reload(&store, dir)?;
        }
        // After the reload, which takes files from the links that this prunes.
        let files =
            SnapshotFiles::open(dir, &dir.join(CURRENT)).map_err(|e| snapshot_write_err(&e))?;
        let progress = watch::Sender::new(read_progress(&Tx::new(&store))?);
        let applied = applied_log_id(&store)?.map(|id| id.index);
        let checkpoints =
            Checkpoints::open(store.clone(), applied).map_err(|e| sm_write_err(&e))?;
        if let Some(snapshot) = current_snapshot_meta(dir)? {
            checkpoints.snapshot_durable(snapshot.last_log_id.map(|id| id.index));
        }
        Ok(StateMachine {
            checkpoints,
            store,
            dir: dir.to_owned(),
            files,
            lock: Arc::new(RwLock::new(())),
            one_snapshot: Arc::default(),
            effects,
            progress,
        })
    }

    /// The checkpoints of this state machine: the task that makes it durable (for the
    /// node to run) and the durable applied index (for the log's purges).
    pub fn checkpoints(&self) -> Checkpoints {
        self.checkpoints.clone()
    }

    /// Follows the log clock and the next deadline.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    fn applied(&self) -> Result<Option<LogId>, StorageError> {
        get_meta(&self.store, KEY_APPLIED)
    }

    /// Takes a received snapshot apart into place and loads the tables from it; a crash
    /// after it is in place is finished by [`StateMachine::open`] (the `installing`
    /// mark).
    async fn install(
        &self,
        meta: &SnapshotMeta,
        mut received: SnapshotData,
    ) -> Result<(), StorageError> {
        let _change = self.files.change();
        let tmp = self.tmp_path("install");
        snapshot_data::unpack(&mut received, &tmp, &self.files)
            .await
            .map_err(|e| snapshot_write_err(&e))?;
        drop(received);
        self.remove_received()?;
        let (dir, expected) = (self.dir.clone(), meta.clone());
        tokio::task::spawn_blocking(move || {
            let found = snapshot::read_meta(&std::fs::File::open(&tmp)?)?;
            if found.last_log_id != expected.last_log_id {
                return Err(std::io::Error::other(
                    "snapshot file does not match its meta",
                ));
            }
            std::fs::rename(&tmp, dir.join(CURRENT))?;
            std::fs::File::create(dir.join(INSTALLING))?.sync_all()?;
            sync_dir(&dir)
        })
        .await
        .map_err(|e| snapshot_write_err(&e))?
        .map_err(|e| snapshot_write_err(&e))?;
        let (store, dir) = (self.store.clone(), self.dir.clone());
        tokio::task::spawn_blocking(move || reload(&store, &dir))
            .await
            .map_err(|e| snapshot_write_err(&e))??;
        self.progress
            .send_replace(read_progress(&Tx::new(&self.store))?);
        // `reload` flushed the tables durably.
        let installed = meta.last_log_id.map(|id| id.index);
        self.checkpoints.applied(installed);
        self.checkpoints.snapshot_durable(installed);
        tracing::info!(last = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    /// Deletes the files that received snapshots were streamed into.
    fn remove_received(&self) -> Result<(), StorageError> {
        for entry in std::fs::read_dir(&self.dir).map_err(|e| snapshot_read_err(&e))? {
            let path = entry.map_err(|e| snapshot_read_err(&e))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with(RECEIVED) {
                std::fs::remove_file(&path).map_err(|e| snapshot_write_err(&e))?;
            }
        }
        Ok(())
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        self.dir
            .join(format!("{what}-{}.tmp", uuid::Uuid::new_v4().simple()))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let membership = get_meta(&self.store, KEY_MEMBERSHIP)?.unwrap_or_default();
        Ok((self.applied()?, membership))
    }

    /// Applies the run of entries in one overlay and commits it; only then is each
    /// entry's writer answered, with its batch's replies.
    async fn apply<S>(&mut self, mut entries: S) -> Result<(), StorageError>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, std::io::Error>> + Unpin + OptionalSend,
    {
        let _apply = self.lock.write().await;
        if let Some(failure) = self.checkpoints.failure() {
            return Err(sm_write_err(&format!("a checkpoint failed: {failure}")));
        }
        let mut tx = Tx::new(&self.store);
        let mut replies = Vec::new();
        let mut effects = Vec::new();
        let mut last = None;
        while let Some(next) = entries.next().await {
            let (entry, responder) = next?;
            let log_id = entry.log_id;
            last = Some(log_id);
            let mut batch_replies = Vec::new();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    // The log's tail may hold the batch too: then its commands are copied.
                    for command in Arc::unwrap_or_clone(batch.0) {
                        let mut applied =
                            engine::apply(&mut tx, command, log_id.index, log_id.leader_id.term)
                                .map_err(|e| storage_err(&format!("applying entry {log_id}"), e))?;
                        if !applied.effects.is_empty() {
                            // The effects go to the listeners; the reply is for the writer.
                            effects.push(Arc::new(std::mem::take(&mut applied.effects)));
                        }
                        batch_replies.push(applied);
                    }
                }
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(log_id), membership);
                    put_meta(&mut tx, KEY_MEMBERSHIP, &stored)?;
                }
            }
            replies.push((responder, batch_replies));
        }
        if let Some(log_id) = last {
            put_meta(&mut tx, KEY_APPLIED, &log_id)?;
        }
        // Read through the transaction, which sees what the commit will hold, and keeps
        // the first keys that the commands' look for due deadlines read already.
        let progress = read_progress(&tx)?;
        self.store
            .commit(tx.into_writes())
            .map_err(|e| sm_write_err(&e))?;
        if last.is_some() {
            self.checkpoints.applied(last.map(|id| id.index));
        }
        for effect in effects {
            // Nobody listening is fine: effects are notifications, not state.
            let _ = self.effects.send(effect);
        }
        self.progress.send_replace(progress);
        for (responder, batch_replies) in replies {
            if let Some(responder) = responder {
                responder.send(batch_replies);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            dir: self.dir.clone(),
            files: self.files.clone(),
            lock: self.lock.clone(),
            one_snapshot: self.one_snapshot.clone(),
            tmp: self.tmp_path("build"),
            checkpoints: self.checkpoints.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        received: SnapshotData,
    ) -> Result<(), StorageError> {
        let one_snapshot = self.one_snapshot.clone();
        let _only_one = one_snapshot.lock().await;
        let lock = self.lock.clone();
        let _install = lock.write().await;
        self.install(meta, received).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        // The stream counts as a reader before the file is opened, so that no prune
        // between the two takes its links.
        let reader = self.files.reader();
        let file = match std::fs::File::open(self.dir.join(CURRENT)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snapshot_read_err(&e)),
        };
        let (meta, outgoing) =
            Outgoing::open(file, &self.files, reader).map_err(|e| snapshot_read_err(&e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: SnapshotData::Outgoing(outgoing),
        }))
    }
}

impl SnapshotReceiverFactory<TypeConfig> for StateMachine {
    type SnapshotReceiver = SnapshotData;

    async fn begin_receiving_snapshot(&mut self) -> Result<SnapshotData, StorageError> {
        // openraft receives one snapshot at a time: a new one supersedes any unfinished.
        self.remove_received()?;
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.tmp_path(RECEIVED))
            .await
            .map_err(|e| snapshot_write_err(&e))?;
        Ok(SnapshotData::Incoming(file))
    }
}

/// Builds a snapshot of the state machine as it stands when the build gets the lock.
pub struct SnapshotBuilder {
    store: SledStore,
    dir: PathBuf,
    files: Arc<SnapshotFiles>,
    lock: Arc<RwLock<()>>,
    one_snapshot: Arc<Mutex<()>>,
    tmp: PathBuf,
    checkpoints: Checkpoints,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let only_one = self.one_snapshot.clone().lock_owned().await;
        let applies_held = self.lock.clone().read_owned().await;
        let (store, dir, tmp) = (self.store.clone(), self.dir.clone(), self.tmp.clone());
        let (files, checkpoints) = (self.files.clone(), self.checkpoints.clone());
        let started = std::time::Instant::now();
        let (meta, outgoing, records) = tokio::task::spawn_blocking(move || {
            let _only_one = only_one;
            let _change = files.change();
            let meta = current_meta(&store)?;
            let view = store.point_in_time().map_err(|e| snapshot_write_err(&e))?;
            drop(applies_held);
            let (file, records) =
                build(&view, &meta, &tmp, &dir, &files).map_err(|e| snapshot_write_err(&e))?;
            drop(view);
            checkpoints.snapshot_durable(meta.last_log_id.map(|id| id.index));
            checkpoints.checkpoint().map_err(|e| sm_write_err(&e))?;
            let (_, outgoing) =
                Outgoing::open(file, &files, files.reader()).map_err(|e| snapshot_read_err(&e))?;
            Ok::<_, StorageError>((meta, outgoing, records))
        })
        .await
        .map_err(|e| snapshot_write_err(&e))??;
        tracing::info!(
            last = ?meta.last_log_id,
            records,
            millis = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        Ok(Snapshot {
            meta,
            snapshot: SnapshotData::Outgoing(outgoing),
        })
    }
}

/// The metadata of a snapshot of the store as it is.
fn current_meta(store: &SledStore) -> Result<Meta, StorageError> {
    Ok(SnapshotMeta {
        last_log_id: get_meta(store, KEY_APPLIED)?,
        last_membership: get_meta(store, KEY_MEMBERSHIP)?.unwrap_or_default(),
    })
}

/// Writes the snapshot to `tmp`, links the value files it refers to (while `view`
/// keeps them in place), makes it the current one, and returns it opened for reading
/// (the handle stays valid if a newer snapshot replaces the file) with the number of
/// records it holds.
fn build(
    view: &PointInTime<'_>,
    meta: &Meta,
    tmp: &Path,
    dir: &Path,
    files: &SnapshotFiles,
) -> std::io::Result<(std::fs::File, u64)> {
    let file = std::fs::File::create(tmp)?;
    let written = snapshot::write(view, meta, &file)?;
    files.link(view.values_dir(), &written.files)?;
    let reader = std::fs::File::open(tmp)?;
    std::fs::rename(tmp, dir.join(CURRENT))?;
    sync_dir(dir)?;
    Ok((reader, written.records))
}

/// Loads `current.snap` into the tables, makes it durable, and drops the install marker.
fn reload(store: &SledStore, dir: &Path) -> Result<(), StorageError> {
    let files = dir.join(snapshot_files::FILES_DIR);
    snapshot::load(store, &dir.join(CURRENT), &files).map_err(|e| snapshot_read_err(&e))?;
    store.flush_durable().map_err(|e| sm_write_err(&e))?;
    match std::fs::remove_file(dir.join(INSTALLING)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(snapshot_write_err(&e)),
        _ => {}
    }
    sync_dir(dir).map_err(|e| snapshot_write_err(&e))
}

/// Whether `current.snap` holds more than the tables: the tables lost their latest
/// commits in a crash (they are not flushed on commit) while the snapshot, which is
/// synced, survived — and the log behind it may be purged, so it must be reloaded.
fn snapshot_is_newer(store: &SledStore, dir: &Path) -> Result<bool, StorageError> {
    let Some(meta) = current_snapshot_meta(dir)? else {
        return Ok(false);
    };
    let applied: Option<LogId> = get_meta(store, KEY_APPLIED)?;
    Ok(meta.last_log_id > applied)
}

/// The size of the current snapshot's tables file in the snapshot directory `dir` (0:
/// none): what a build writes, the value files it shares aside.
pub fn snapshot_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(CURRENT)).map_or(0, |m| m.len())
}

/// Bytes of the value files that only the current snapshot in the snapshot directory
/// `dir` still holds (see [`snapshot_files::bytes_held_alone`]).
pub fn snapshot_bytes_held_alone(dir: &Path) -> std::io::Result<u64> {
    snapshot_files::bytes_held_alone(&dir.join(snapshot_files::FILES_DIR), &dir.join(CURRENT))
}

/// The meta of `current.snap`, if there is one.
fn current_snapshot_meta(dir: &Path) -> Result<Option<Meta>, StorageError> {
    let file = match std::fs::File::open(dir.join(CURRENT)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(snapshot_read_err(&e)),
    };
    snapshot::read_meta(&file)
        .map(Some)
        .map_err(|e| snapshot_read_err(&e))
}

fn read_progress(tx: &Tx<'_, SledStore>) -> Result<Progress, StorageError> {
    let read = |e: engine::StoreError| storage_err("reading the state machine", e);
    Ok(Progress {
        clock: engine::clock(tx).map_err(read)?,
        next_deadline: engine::next_deadline(tx).map_err(read)?,
        parked: engine::chan::any_parked(tx).map_err(read)?,
    })
}

fn get_meta<T: serde::de::DeserializeOwned>(
    store: &SledStore,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    let read = |e: &dyn std::fmt::Display| storage_err("reading the state machine", e);
    match store.get(Table::Meta, key).map_err(|e| read(&e))? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| read(&e)),
        None => Ok(None),
    }
}

fn put_meta<S: Store + ?Sized>(
    tx: &mut Tx<'_, S>,
    key: &[u8],
    value: &impl serde::Serialize,
) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(value).map_err(|e| sm_write_err(&e))?;
    tx.put(Table::Meta, key.to_vec(), bytes);
    Ok(())
}

/// Makes renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn snapshot_read_err(e: &impl std::fmt::Display) -> StorageError {
    storage_err("reading a snapshot", e)
}

fn snapshot_write_err(e: &impl std::fmt::Display) -> StorageError {
    storage_err("writing a snapshot", e)
}

fn sm_write_err(e: &impl std::fmt::Display) -> StorageError {
    storage_err("writing the state machine", e)
}
